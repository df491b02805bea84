//! `mayfly git-token`: the git tokens saved on the server for your sessions (never shown back).

use crate::client::Client;
use crate::{cells, secret};
use mayfly_proto::accounts::SaveGitCredential;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum GitTokenCmd {
    /// Save a git token for a host (read from stdin, prompted without echo on a terminal).
    Set {
        /// e.g. github.com or git.example.com:8443
        host: String,
        /// The user name git sends with it (default: the server's, x-access-token).
        #[arg(long, value_name = "U")]
        username: Option<String>,
    },
    /// List the hosts you saved a git token for.
    Ls,
    /// Delete the saved git token of a host.
    Rm { host: String },
}

pub async fn run(client: &Client, cmd: GitTokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        GitTokenCmd::Set { host, username } => {
            let token = secret::read(&format!("git token for {host}"))?.trim().to_string();
            let saved = client.save_git_credential(&host, &SaveGitCredential { token, username }).await?;
            println!("saved a git token for {}", saved.host);
        }
        GitTokenCmd::Ls => {
            let list = client.git_credentials().await?;
            println!("{:<32} {:<20} UPDATED", "HOST", "USERNAME");
            for c in list {
                println!("{:<32} {:<20} {}", c.host, cells::opt(c.username.as_deref()), cells::time(&c.updated_at));
            }
        }
        GitTokenCmd::Rm { host } => {
            client.delete_git_credential(&host).await?;
            println!("deleted the git token for {host}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

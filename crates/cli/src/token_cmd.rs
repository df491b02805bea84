//! `mayfly token`: the caller's API tokens (create, list, revoke).

use crate::cells;
use crate::client::Client;
use mayfly_proto::accounts::CreateToken;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Create an API token; prints its secret, which is shown only this once.
    Create {
        name: String,
        /// Days until it expires (default: the server's, 90).
        #[arg(long)]
        days: Option<u32>,
    },
    /// List your API tokens.
    Ls,
    /// Revoke an API token: it stops working at once.
    Rm { id: String },
}

pub async fn run(client: &Client, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Create { name, days } => {
            let t = client.create_token(&CreateToken { name, expires_in_days: days }).await?;
            println!("{}", t.token);
            eprintln!(
                "token {} ({}), expires {}: store the secret above now, it is not shown again",
                t.info.id,
                t.info.name,
                cells::opt_time(t.info.expires_at.as_deref())
            );
        }
        TokenCmd::Ls => {
            let tokens = client.tokens().await?;
            println!("{:<24} {:<20} {:<21} {:<21} LAST USED", "ID", "NAME", "CREATED", "EXPIRES");
            for t in tokens {
                println!(
                    "{:<24} {:<20} {:<21} {:<21} {}",
                    t.id,
                    t.name,
                    cells::time(&t.created_at),
                    cells::opt_time(t.expires_at.as_deref()),
                    cells::opt_time(t.last_used_at.as_deref())
                );
            }
        }
        TokenCmd::Rm { id } => {
            client.revoke_token(&id).await?;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

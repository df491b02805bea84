//! `mayfly user` (admins): add, list, change and remove users, and set their quotas.

use crate::client::Client;
use crate::{cells, secret};
use mayfly_proto::accounts::{CreateUser, Quotas, Role, UpdateUser, User};
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Admin,
    Member,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Member => Role::Member,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum UserCmd {
    /// Add a user (default role: member).
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Read a sign-in password (at least 10 characters) from stdin; without one the user
        /// signs in with OpenID Connect only.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    Ls,
    /// Change a user; a quota given here replaces only that quota of the user's own values.
    Set {
        id: String,
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        #[arg(long)]
        name: Option<String>,
        /// Read a new sign-in password from stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Remove a user: their tokens and sign-ins stop working and their sessions end.
    Rm { id: String },
}

#[derive(clap::Args)]
pub struct QuotaArgs {
    /// Live sessions at once.
    #[arg(long, value_name = "N")]
    max_sessions: Option<u32>,
    /// vCPUs summed over the live sessions.
    #[arg(long, value_name = "N")]
    max_vcpus: Option<u32>,
    /// Guest memory summed over the live sessions.
    #[arg(long, value_name = "N")]
    max_memory_mib: Option<u32>,
    /// Agent runs started in the last 24 hours.
    #[arg(long, value_name = "N")]
    agent_runs_per_day: Option<u32>,
}

impl QuotaArgs {
    fn any(&self) -> bool {
        self.max_sessions.is_some()
            || self.max_vcpus.is_some()
            || self.max_memory_mib.is_some()
            || self.agent_runs_per_day.is_some()
    }

    /// `own` with the values given here in place of its own.
    fn over(&self, own: Quotas) -> Quotas {
        Quotas {
            max_sessions: self.max_sessions,
            max_vcpus: self.max_vcpus,
            max_memory_mib: self.max_memory_mib,
            agent_runs_per_day: self.agent_runs_per_day,
        }
        .over(own)
    }
}

pub async fn run(client: &Client, cmd: UserCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCmd::Add { email, name, role, password_stdin } => {
            let password = if password_stdin { Some(secret::read("password")?) } else { None };
            let u = client
                .create_user(&CreateUser { email, name, role: role.map(Role::from), password, quotas: None })
                .await?;
            println!("{}\t{}\t{}", u.id, u.email, u.role.as_str());
        }
        UserCmd::Ls => {
            let users = client.users().await?;
            println!(
                "{:<24} {:<30} {:<20} {:<7} {:<9} {:<21} QUOTAS",
                "ID", "EMAIL", "NAME", "ROLE", "SOURCE", "LAST SIGN-IN"
            );
            for u in users {
                println!(
                    "{:<24} {:<30} {:<20} {:<7} {:<9} {:<21} {}",
                    u.id,
                    u.email,
                    cells::opt(Some(&u.name)),
                    u.role.as_str(),
                    u.source,
                    cells::opt_time(u.last_sign_in_at.as_deref()),
                    quotas(&u.quotas)
                );
            }
        }
        UserCmd::Set { id, role, name, password_stdin, quotas: q } => {
            let password = if password_stdin { Some(secret::read("password")?) } else { None };
            // Quotas are replaced as a whole by the server: read the user's own, change the given ones.
            let quotas = if q.any() { Some(q.over(client.user(&id).await?.quotas)) } else { None };
            let req = UpdateUser { name, role: role.map(Role::from), password, quotas };
            anyhow::ensure!(
                req != UpdateUser::default(),
                "nothing to change: give --role, --name, --password-stdin or a quota"
            );
            let u = client.update_user(&id, &req).await?;
            show(&u);
        }
        UserCmd::Rm { id } => {
            client.delete_user(&id).await?;
            println!("removed user {id}: their tokens and sign-ins no longer work, and their sessions end");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(u: &User) {
    println!("id:     {}", u.id);
    println!("email:  {}", u.email);
    println!("name:   {}", cells::opt(Some(&u.name)));
    println!("role:   {}", u.role.as_str());
    println!("quotas: {}", quotas(&u.quotas));
}

/// The user's own quota values, compact: `max_sessions=2,max_vcpus=4`, or "-" (the role's apply).
fn quotas(q: &Quotas) -> String {
    let parts: Vec<String> = [
        ("max_sessions", q.max_sessions),
        ("max_vcpus", q.max_vcpus),
        ("max_memory_mib", q.max_memory_mib),
        ("agent_runs_per_day", q.agent_runs_per_day),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_flag_keeps_the_users_other_values() {
        let own = Quotas { max_sessions: Some(2), max_vcpus: Some(4), ..Default::default() };
        let args =
            QuotaArgs { max_sessions: None, max_vcpus: Some(8), max_memory_mib: None, agent_runs_per_day: Some(3) };
        let q = args.over(own);
        assert_eq!(
            q,
            Quotas { max_sessions: Some(2), max_vcpus: Some(8), max_memory_mib: None, agent_runs_per_day: Some(3) }
        );
        assert_eq!(quotas(&q), "max_sessions=2,max_vcpus=8,agent_runs_per_day=3");
        assert_eq!(quotas(&Quotas::default()), "-");
    }
}

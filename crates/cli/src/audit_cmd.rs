//! `mayfly audit` (admins): the audit log as a table, newest first.

use crate::accounts_api::AuditQuery;
use crate::cells;
use crate::client::Client;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only this user's actions (a user id).
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// Only this action, e.g. sign_in, token_create, session_create, user_delete.
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Only entries about this session.
    #[arg(long, value_name = "S")]
    session: Option<String>,
    /// Entries at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    /// Continue a listing: entries older than this sequence number.
    #[arg(long, value_name = "SEQ")]
    before: Option<i64>,
    /// At most this many entries (default 100).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

pub async fn run(client: &Client, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let q = AuditQuery {
        user: a.user,
        action: a.action,
        session: a.session,
        since: a.since,
        until: a.until,
        before: a.before,
        limit: a.limit,
    };
    let page = client.audit(&q).await?;
    println!("{:<21} {:<26} {:<22} {:<14} {:<40} IP", "TIME", "ACTOR", "ACTION", "SESSION", "DETAIL");
    for e in page.entries {
        let detail = if e.detail.is_null() { "-".to_string() } else { e.detail.to_string() };
        println!(
            "{:<21} {:<26} {:<22} {:<14} {:<40} {}",
            cells::time(&e.at),
            e.actor,
            e.action,
            cells::opt(e.session.as_deref()),
            detail,
            cells::opt(e.ip.as_deref())
        );
    }
    if let Some(b) = page.next_before {
        eprintln!("more entries: add --before {b}");
    }
    Ok(ExitCode::SUCCESS)
}

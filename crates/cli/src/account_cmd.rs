//! Who the CLI acts as: `login` (check a token, save it for the server's URL), `logout`, `whoami`.

use crate::client::{self, Client, TokenSource};
use crate::credentials::{self, Credentials, Entry};
use crate::secret;
use anyhow::Context;
use mayfly_proto::accounts::Me;
use std::process::ExitCode;

pub async fn login(url: Option<String>, token: Option<String>) -> anyhow::Result<ExitCode> {
    let path = credentials::path();
    let mut creds = Credentials::load(&path)?;
    let url = client::server_url(url.as_deref(), &creds);
    let token = match token {
        Some(t) => t.trim().to_string(),
        None => secret::read(&format!("API token for {url}"))?.trim().to_string(),
    };
    anyhow::ensure!(!token.is_empty(), "the token is empty");
    let me = Client::new(&url, token.clone(), TokenSource::Login)
        .me()
        .await
        .with_context(|| format!("checking the token with {url}; nothing was saved"))?;
    creds.servers.insert(url.clone(), Entry { token });
    creds.save(&path)?;
    println!("Logged in to {url} as {}", who(&me));
    eprintln!("token saved in {}", path.display());
    if std::env::var("MAYFLY_TOKEN").is_ok_and(|t| !t.is_empty()) {
        eprintln!("note: MAYFLY_TOKEN is set in this environment and takes precedence over the saved token");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logout(url: Option<String>) -> anyhow::Result<ExitCode> {
    let path = credentials::path();
    let mut creds = Credentials::load(&path)?;
    let url = client::server_url(url.as_deref(), &creds);
    let Some(removed) = creds.servers.remove(&url) else {
        println!("No saved token for {url} in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    creds.save(&path)?;
    println!("Logged out of {url}: its token is removed from {}", path.display());
    if removed.token.starts_with("mfy_") {
        eprintln!("(the API token stays valid on the server until it expires or `mayfly token rm` revokes it)");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(client: &Client) -> anyhow::Result<ExitCode> {
    let me = client.me().await?;
    println!("server: {} (token from {})", client.base(), client.source());
    let Some(user) = &me.user else {
        println!("{}", who(&me));
        return Ok(ExitCode::SUCCESS);
    };
    println!("email:  {}", user.email);
    if !user.name.is_empty() {
        println!("name:   {}", user.name);
    }
    println!("id:     {}", user.id);
    println!("role:   {}", me.role.as_str());
    println!();
    println!("{:<18} {:>6} {:>8}", "QUOTA", "USED", "LIMIT");
    let q = me.quotas;
    let u = me.usage;
    for (name, used, limit) in [
        ("sessions", u.sessions, q.max_sessions),
        ("vcpus", u.vcpus, q.max_vcpus),
        ("memory (MiB)", u.memory_mib, q.max_memory_mib),
        ("agent runs (24h)", u.agent_runs_today, q.agent_runs_per_day),
    ] {
        let limit = limit.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
        println!("{name:<18} {used:>6} {limit:>8}");
    }
    Ok(ExitCode::SUCCESS)
}

/// "alice@example.com (member)", or "server token (admin)".
fn who(me: &Me) -> String {
    match &me.user {
        Some(u) => format!("{} ({})", u.email, me.role.as_str()),
        None if me.bootstrap => format!("server token ({})", me.role.as_str()),
        None => me.role.as_str().to_string(),
    }
}

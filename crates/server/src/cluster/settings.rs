//! The cluster settings of [`ServerConfig`]: checked at load, resolved at start.

use crate::config::{ConfigError, ServerConfig};
use crate::redacted::Redacted;

/// Shortest `cluster_secret` accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Checks `node_name`, `advertise_url`, `cluster_secret` and `node_lease_seconds`.
pub fn validate(cfg: &ServerConfig) -> Result<(), ConfigError> {
    let bad = |field: &'static str, message: &str| Err(ConfigError::Invalid { field, message: message.to_string() });
    if !cfg.node_name.is_empty() && !valid_name(&cfg.node_name) {
        return bad("node_name", "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit");
    }
    if let Some(url) = &cfg.advertise_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad("advertise_url", "must start with http:// or https://");
        }
    }
    if let Some(secret) = &cfg.cluster_secret {
        if secret.expose().len() < MIN_SECRET_LEN {
            return Err(ConfigError::Invalid {
                field: "cluster_secret",
                message: format!("must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"),
            });
        }
    }
    if let Some(url) = cfg.database_url.as_ref().map(Redacted::expose).filter(|u| !crate::store::pool::is_postgres_url(u)) {
        let scheme = url.split(':').next().unwrap_or("");
        return Err(ConfigError::Invalid {
            field: "database_url",
            message: format!("must start with postgres:// or postgresql:// (or be unset for the embedded SQLite), not {scheme:?}"),
        });
    }
    if !(3..=600).contains(&cfg.node_lease_seconds) {
        return bad("node_lease_seconds", "must be between 3 and 600");
    }
    if shared_database(cfg) && cfg.cluster_secret.is_none() {
        return bad(
            "cluster_secret",
            "is required with a PostgreSQL database_url: every node of the deployment sets the same one",
        );
    }
    Ok(())
}

/// True when the store is a database other nodes can share (PostgreSQL).
pub fn shared_database(cfg: &ServerConfig) -> bool {
    cfg.database_url.as_ref().map(Redacted::expose).is_some_and(crate::store::pool::is_postgres_url)
}

/// A node name: a DNS label in lower case.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// `node_name`, else the host name made into a valid name (`node` when there is none).
pub fn node_name(cfg: &ServerConfig) -> String {
    if !cfg.node_name.is_empty() {
        return cfg.node_name.clone();
    }
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let cleaned: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_start_matches('-').to_string();
    if valid_name(&cleaned) {
        cleaned
    } else {
        "node".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "node-1", "x9", "0abc"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_name(&node_name(&ServerConfig::default())));
    }

    #[test]
    fn bad_settings_are_named() {
        let check = |f: fn(&mut ServerConfig), field: &str| {
            let mut c = ServerConfig::default();
            f(&mut c);
            let e = validate(&c).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        check(|c| c.node_name = "Node_1".into(), "node_name");
        check(|c| c.advertise_url = Some("10.0.0.1:7070".into()), "advertise_url");
        check(|c| c.cluster_secret = Some("short".into()), "cluster_secret");
        check(|c| c.node_lease_seconds = 1, "node_lease_seconds");
        check(|c| c.database_url = Some("mysql://x".into()), "database_url");
        check(|c| c.database_url = Some("postgres://db/x".into()), "cluster_secret");
        validate(&ServerConfig::default()).unwrap();
    }
}

//! The credentials file of `mayfly login`: one token per server URL, in
//! `$XDG_CONFIG_HOME/mayfly/credentials.json` (else `~/.config/mayfly/credentials.json`), mode
//! 0600, replaced atomically (a temporary file in the same directory, then a rename).
//!
//! ```json
//! {"servers": {"https://mayfly.example.com": {"token": "mfy_…"}}}
//! ```

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// Server URL (no trailing slash) → its entry.
    #[serde(default)]
    pub servers: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub token: String,
}

/// `$XDG_CONFIG_HOME/mayfly/credentials.json`, else `~/.config/mayfly/credentials.json`.
pub fn path() -> PathBuf {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(".config"),
    };
    config.join("mayfly").join("credentials.json")
}

/// A URL as the file keys it: without trailing slashes.
pub fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

impl Credentials {
    /// The file at `path`; empty if there is none.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid credentials file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn token_for(&self, url: &str) -> Option<&str> {
        self.servers.get(&normalize(url)).map(|e| e.token.as_str())
    }

    /// The URL of the only entry, if there is exactly one.
    pub fn only_url(&self) -> Option<&str> {
        match self.servers.len() {
            1 => self.servers.keys().next().map(String::as_str),
            _ => None,
        }
    }

    /// Writes the file: a private temporary file beside it, synced, then renamed over it.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("the credentials path has no directory")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".credentials.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(serde_json::to_string_pretty(self).expect("json").as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write()
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_privately_and_keys_by_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mayfly/credentials.json");
        let mut c = Credentials::load(&path).unwrap();
        assert!(c.servers.is_empty());
        c.servers.insert(normalize("http://a:1/"), Entry { token: "t1".into() });
        c.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut c = Credentials::load(&path).unwrap();
        assert_eq!(c.token_for("http://a:1"), Some("t1"));
        assert_eq!(c.only_url(), Some("http://a:1"));
        c.servers.insert(normalize("http://b:2"), Entry { token: "t2".into() });
        c.save(&path).unwrap();
        let c = Credentials::load(&path).unwrap();
        assert_eq!(c.only_url(), None);
        assert_eq!(c.token_for("http://b:2/"), Some("t2"));
        assert_eq!(std::fs::read_dir(dir.path().join("mayfly")).unwrap().count(), 1, "no temporary file left");
    }
}

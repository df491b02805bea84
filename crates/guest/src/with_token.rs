//! `mayfly-guest with-token HOST [--env NAME]… -- CMD ARGS…`: runs a program with the session's
//! token for `HOST` in its environment only (default `GH_TOKEN`), asked for at that moment from
//! the daemon exactly as git's credential helper asks ([`crate::credential`]). Nothing is
//! written to disk, and the variable is seen by that program and its children alone.
//!
//! The `dev` image links `/usr/local/bin/gh` to this binary: run under the name `gh`, it is
//! `with-token ${GH_HOST:-github.com} -- /usr/bin/gh ARGS…` (a `GH_TOKEN` the user set is kept).

use serde_json::Value;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Where the real `gh` lives (Debian's package); the shim on `PATH` comes first.
pub const GH: &str = "/usr/bin/gh";

#[derive(Debug, thiserror::Error)]
pub enum WithTokenError {
    #[error("cannot ask the Mayfly daemon for a token for {host}")]
    Daemon {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this session has no token for {host}: {reason} (give one when creating the session: `git_credentials`)")]
    NoToken { host: String, reason: String },
    #[error("cannot run {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// The session's token for `host` (as git names it: `host[:port]`).
pub fn token_for(socket: &Path, host: &str) -> Result<String, WithTokenError> {
    let mut q = serde_json::Map::new();
    q.insert("protocol".into(), Value::String("https".into()));
    q.insert("host".into(), Value::String(host.into()));
    let a = crate::credential::ask_daemon(socket, q).map_err(|source| WithTokenError::Daemon { host: host.into(), source })?;
    match a["password"].as_str() {
        Some(t) if !t.is_empty() => Ok(t.to_string()),
        _ => Err(WithTokenError::NoToken { host: host.into(), reason: a["error"].as_str().unwrap_or("no answer").to_string() }),
    }
}

/// Replaces this process with `cmd` (never returns on success), `vars` set to the token.
pub fn run(socket: &Path, host: &str, vars: &[String], cmd: &[OsString]) -> Result<(), WithTokenError> {
    let (program, args) = cmd.split_first().expect("clap requires a command");
    let token = token_for(socket, host)?;
    let mut c = std::process::Command::new(program);
    c.args(args);
    for v in vars {
        c.env(v, &token);
    }
    let source = c.exec();
    Err(WithTokenError::Exec { program: program.to_string_lossy().into_owned(), source })
}

/// Run as `gh`: the real gh with `GH_TOKEN` (and `GH_ENTERPRISE_TOKEN`, which gh reads for a
/// `GH_HOST` other than github.com) from the session, unless the user set one.
pub fn gh(socket: &Path, args: Vec<OsString>) -> Result<(), WithTokenError> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let mut cmd = vec![OsString::from(GH)];
    cmd.extend(args);
    if set("GH_TOKEN") || set("GH_ENTERPRISE_TOKEN") {
        let source = std::process::Command::new(GH).args(&cmd[1..]).exec();
        return Err(WithTokenError::Exec { program: GH.into(), source });
    }
    let host = std::env::var("GH_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "github.com".into());
    run(socket, &host, &["GH_TOKEN".into(), "GH_ENTERPRISE_TOKEN".into()], &cmd)
}

/// True when this process was started under the name `gh` (the image's shim link).
pub fn invoked_as_gh(argv0: Option<&OsString>) -> bool {
    argv0.and_then(|a| Path::new(a).file_name()).is_some_and(|n| n == "gh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gh_name_is_recognised_by_its_file_name() {
        assert!(invoked_as_gh(Some(&"/usr/local/bin/gh".into())));
        assert!(invoked_as_gh(Some(&"gh".into())));
        assert!(!invoked_as_gh(Some(&"/usr/local/sbin/mayfly-guest".into())));
        assert!(!invoked_as_gh(Some(&"/usr/bin/ghc".into())));
        assert!(!invoked_as_gh(None));
    }

    /// A daemon stand-in on a real socket answering one question with `answer`.
    fn daemon(answer: &'static str) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut q = String::new();
            std::io::BufReader::new(&s).read_line(&mut q).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            q
        });
        (dir, path, t)
    }

    #[test]
    fn the_token_comes_from_the_daemon_or_a_clear_error() {
        let (_d, path, t) = daemon("{\"username\":\"x-access-token\",\"password\":\"tok\"}\n");
        assert_eq!(token_for(&path, "github.com").unwrap(), "tok");
        let q: Value = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!((q["protocol"].as_str(), q["host"].as_str()), (Some("https"), Some("github.com")));
        let (_d, path, _t) = daemon("{\"error\":\"this session has no git token for https://github.com\"}\n");
        let e = token_for(&path, "github.com").unwrap_err().to_string();
        assert!(e.starts_with("this session has no token for github.com: this session has no git token"), "{e}");
    }

    #[test]
    fn a_missing_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = token_for(&dir.path().join("none.sock"), "github.com").unwrap_err();
        assert!(e.to_string().contains("cannot ask the Mayfly daemon for a token for github.com"), "{e}");
    }
}

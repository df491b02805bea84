//! A session's repository: validated at creation, cloned into the workspace once the VM is
//! ready, with git's progress published as `repo` events. A failed clone leaves the session
//! usable; the error (git's own words) is in the session's `repo` field and the event.
//!
//! git runs in the VM as any user's git would: through the egress proxy (so the session's
//! network policy applies) and with Mayfly's credential helper (so tokens are asked for, never
//! written down).

use super::{Envelope, LiveSession, SessionError, SessionManager};
use mayfly_proto::api::{GitCredential, RepoSpec, RepoState, RepoStatus, SessionEvent};
use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest};
use mayfly_proto::mux::Event;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where repositories go (the IDE's workspace).
pub(super) const WORKSPACE: &str = "/root";
const CLONE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Progress events at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Bytes of git's stderr kept for the error message.
const ERROR_TAIL: usize = 1500;

/// Checks a requested repository; returns its status before the clone.
pub fn validate_repo(spec: &RepoSpec) -> Result<RepoStatus, SessionError> {
    let bad = |why: &str| SessionError::Invalid(format!("repo.url: {why}"));
    let url = url::Url::parse(&spec.url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("only https:// and http:// URLs are supported"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL: it holds a secret.
        return Err(bad("credentials in the URL are refused; pass a token in git_credentials instead"));
    }
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let name = url
        .path_segments()
        .and_then(|mut s| s.rfind(|p| !p.is_empty()).map(|p| p.trim_end_matches(".git").to_string()))
        .filter(|n| !n.is_empty() && n != "." && n != ".." && !n.starts_with('-'))
        .unwrap_or_else(|| host.to_string());
    if let Some(r) = &spec.git_ref {
        if r.is_empty() || r.starts_with('-') || r.contains(char::is_whitespace) || r.contains("..") {
            return Err(SessionError::Invalid(format!("repo.ref {r:?} is not a valid git ref")));
        }
    }
    Ok(RepoStatus {
        url: url.to_string(),
        git_ref: spec.git_ref.clone(),
        path: format!("{WORKSPACE}/{name}"),
        state: RepoState::Cloning,
        message: None,
    })
}

pub fn validate_credentials(creds: &[GitCredential]) -> Result<(), SessionError> {
    for c in creds {
        let h = &c.host;
        if h.is_empty() || h.contains(['/', '@', ' ']) || h.contains("://") {
            return Err(SessionError::Invalid(format!("git_credentials: host {h:?} must be a bare host or host:port")));
        }
        if c.token.is_empty() || c.token.contains(['\n', '\r']) {
            return Err(SessionError::Invalid(format!("git_credentials: the token for {h} is empty or has a line break")));
        }
    }
    Ok(())
}

/// The credential for git's `host` (exactly as git names it, `host[:port]`).
pub fn credential_for<'a>(creds: &'a [GitCredential], protocol: &str, host: &str) -> Option<&'a GitCredential> {
    if !matches!(protocol, "https" | "http") {
        return None;
    }
    creds.iter().find(|c| c.host.eq_ignore_ascii_case(host))
}

/// The last progress line of git's stderr (progress lines end in `\r`).
fn last_line(text: &str) -> Option<String> {
    text.split(['\r', '\n']).map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string)
}

impl SessionManager {
    fn set_repo(&self, s: &LiveSession, status: RepoStatus) {
        *s.repo.lock().expect("repo lock") = Some(status.clone());
        let _ = self.events.send(Envelope { seq: None, event: SessionEvent::Repo { session: s.id.clone(), repo: status } });
    }

    /// Clones the session's repository (if it has one). Never fails the session.
    pub(super) async fn clone_repo(self: Arc<Self>, s: Arc<LiveSession>, vm: Arc<dyn mayfly_vm::Vm>) {
        let Some(mut status) = s.repo.lock().expect("repo lock").clone() else { return };
        self.set_repo(&s, status.clone());
        let mut cmd = vec!["git".to_string(), "clone".into(), "--progress".into()];
        if let Some(r) = &status.git_ref {
            cmd.extend(["--branch".into(), r.clone()]);
        }
        cmd.extend(["--".into(), status.url.clone(), status.path.clone()]);
        let started = Instant::now();
        let result = tokio::select! {
            r = self.run_streaming(&s, &vm, cmd, &mut status) => r,
            _ = s.cancel.cancelled() => return,
        };
        status.state = match &result {
            Ok(()) => RepoState::Ready,
            Err(_) => RepoState::Failed,
        };
        status.message = match result {
            Ok(()) => None,
            Err(git) => Some(match self.policy_refusal(&s, &status.url).await {
                Some(why) => format!("{git}\n{why}"),
                None => git,
            }),
        };
        tracing::info!(session = %s.id, ok = status.state == RepoState::Ready, ms = started.elapsed().as_millis() as u64, "repository clone finished");
        self.set_repo(&s, status);
        // A restarted server shows the outcome, not "cloning".
        self.save_runtime(&s).await;
    }

    /// Why the session's egress policy refuses the repository's host, if it does.
    async fn policy_refusal(&self, s: &LiveSession, url: &str) -> Option<String> {
        let url = url::Url::parse(url).ok()?;
        let (host, port) = (url.host_str()?.to_string(), url.port_or_known_default()?);
        match self.egress.decide(&s.policy, &host, port).await {
            Err(crate::egress::EgressError::Denied(why)) => Some(why),
            _ => None,
        }
    }

    /// Runs `cmd` in the VM, publishing git's progress (stderr: fd 1); `Err` holds the end of
    /// its stderr.
    async fn run_streaming(&self, s: &LiveSession, vm: &Arc<dyn mayfly_vm::Vm>, cmd: Vec<String>, status: &mut RepoStatus) -> Result<(), String> {
        let req = ExecRequest {
            cmd,
            env: s.env.clone(),
            cwd: Some(WORKSPACE.into()),
            timeout_ms: Some(CLONE_TIMEOUT.as_millis() as u64),
        };
        let mut stream = vm.channel().open(&OpenRequest::Exec(req)).await.map_err(|e| format!("cannot run git: {e}"))?;
        let mut stderr = String::new();
        let mut last_sent = Instant::now() - PROGRESS_EVERY;
        loop {
            match stream.recv().await {
                Event::Data { fd: 1, data } => {
                    stderr.push_str(&String::from_utf8_lossy(&data));
                    if stderr.len() > 64 * 1024 {
                        stderr.drain(..stderr.len() - ERROR_TAIL);
                    }
                    if last_sent.elapsed() >= PROGRESS_EVERY {
                        last_sent = Instant::now();
                        status.message = last_line(&stderr);
                        self.set_repo(s, status.clone());
                    }
                }
                Event::Data { .. } => {}
                Event::Ctrl(Ctrl::Exit { code: Some(0), .. }) => return Ok(()),
                Event::Ctrl(Ctrl::Exit { timed_out: true, .. }) => return Err(format!("git clone did not finish within {CLONE_TIMEOUT:?}")),
                Event::Ctrl(Ctrl::Exit { .. }) => return Err(error_text(&stderr, "git clone failed")),
                Event::Ctrl(Ctrl::Error { message, .. }) => return Err(format!("cannot run git: {message}")),
                Event::Ctrl(_) => {}
                Event::Eof | Event::Reset(_) => return Err(format!("the VM stopped answering during the clone; {}", error_text(&stderr, ""))),
            }
        }
    }
}

/// git's error lines (progress lines dropped), at most [`ERROR_TAIL`] bytes from the end;
/// `fallback` when git said nothing.
pub(super) fn error_text(stderr: &str, fallback: &str) -> String {
    let lines: Vec<&str> = stderr
        .split('\n')
        .filter_map(|l| l.rsplit('\r').next())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Cloning into"))
        .collect();
    let text = lines.join("\n");
    let start = text.len().saturating_sub(ERROR_TAIL);
    let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    if text.is_empty() {
        fallback.into()
    } else {
        text[start..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, r: Option<&str>) -> RepoSpec {
        RepoSpec { url: url.into(), git_ref: r.map(String::from) }
    }

    #[test]
    fn repos_are_checked_and_named() {
        let s = validate_repo(&spec("https://github.com/acme/widget.git", Some("main"))).unwrap();
        assert_eq!((s.path.as_str(), s.state), ("/root/widget", RepoState::Cloning));
        assert_eq!(validate_repo(&spec("http://127.0.0.1:8080/git/app/", None)).unwrap().path, "/root/app");
        assert_eq!(validate_repo(&spec("https://example.com/", None)).unwrap().path, "/root/example.com");
        for (url, needle) in [
            ("ssh://git@github.com/a/b", "only https"),
            ("file:///etc", "only https"),
            ("https://user:secret@github.com/a/b", "credentials in the URL"),
            ("https://tok@github.com/a/b", "credentials in the URL"),
            ("not a url", "repo.url"),
        ] {
            let e = validate_repo(&spec(url, None)).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("secret"), "the secret is not echoed: {e}");
        }
        for r in ["", "-x", "a b", "a..b"] {
            assert!(validate_repo(&spec("https://h/r", Some(r))).is_err(), "{r:?}");
        }
    }

    #[test]
    fn credentials_match_the_exact_host() {
        let c = |h: &str| GitCredential { host: h.into(), username: None, token: "t".into() };
        let creds = [c("github.com"), c("127.0.0.1:8080")];
        assert!(credential_for(&creds, "https", "GitHub.com").is_some());
        assert!(credential_for(&creds, "http", "127.0.0.1:8080").is_some());
        assert!(credential_for(&creds, "http", "127.0.0.1").is_none(), "the port is part of the host");
        assert!(credential_for(&creds, "https", "evil.github.com").is_none());
        assert!(credential_for(&creds, "ssh", "github.com").is_none());
        assert!(validate_credentials(&[c("https://github.com")]).is_err());
        assert!(validate_credentials(&[GitCredential { host: "h".into(), username: None, token: "".into() }]).is_err());
        assert!(format!("{:?}", c("h")).contains("redacted"), "Debug hides the token");
    }

    #[test]
    fn errors_keep_gits_words_without_progress() {
        let err = "Cloning into '/root/x'...\nremote: Counting objects: 50% (1/2)\rremote: Counting objects: 100% (2/2), done.\nfatal: Authentication failed for 'http://h/x/'\n";
        assert_eq!(error_text(err, "x"), "remote: Counting objects: 100% (2/2), done.\nfatal: Authentication failed for 'http://h/x/'");
        assert_eq!(last_line("Receiving objects:  10% (1/10)\rReceiving objects:  20% (2/10)\r").as_deref(), Some("Receiving objects:  20% (2/10)"));
    }
}

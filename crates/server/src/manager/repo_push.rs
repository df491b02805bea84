//! Auto-push at session end (`auto_push`): when a session whose repository was cloned is
//! deleted or reaped, its work — commits, uncommitted changes and new files (what `.gitignore`
//! does not exclude) — is pushed to `refs/heads/mayfly/<session id>` on `origin`, before the VM
//! and the session's tokens go. The user's branch, index and working tree are left alone: the
//! snapshot is built in a temporary index and committed on top of `HEAD` with `commit-tree`
//! (`HEAD` itself when nothing changed). The outcome is a `repo_push` event and a log line; a
//! failed push never stops the deletion. A crashed server pushes nothing (its VMs are gone).

use super::repo::{error_text, WORKSPACE};
use super::{Envelope, LiveSession, SessionManager};
use mayfly_proto::api::{RepoState, SessionEvent};
use mayfly_proto::msg::ExecRequest;
use std::time::Duration;

/// How long the whole snapshot-and-push may take in the VM.
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Output kept from git (its error goes into the event).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// `sh -c SCRIPT sh SESSION_ID REPO_PATH`; prints the pushed commit on success.
const SCRIPT: &str = r#"set -e
cd "$2"
head=$(git rev-parse --verify -q HEAD) || { echo "the repository has no commit to build on" >&2; exit 1; }
idx=$(mktemp)
trap 'rm -f "$idx"' EXIT
real=$(git rev-parse --git-path index)
if [ -f "$real" ]; then cp "$real" "$idx"; else rm -f "$idx"; fi
GIT_INDEX_FILE=$idx git add -A
tree=$(GIT_INDEX_FILE=$idx git write-tree)
commit=$head
if [ "$tree" != "$(git rev-parse "$head^{tree}")" ]; then
  GIT_AUTHOR_NAME=$(git config user.name || echo Mayfly)
  GIT_AUTHOR_EMAIL=$(git config user.email || echo mayfly@localhost)
  export GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
  commit=$(git commit-tree "$tree" -p "$head" -m "Mayfly: work left in session $1")
fi
git push --quiet origin "+$commit:refs/heads/mayfly/$1"
echo "$commit"
"#;

impl SessionManager {
    /// Pushes the session's work if it asked for that and its clone succeeded; never fails.
    pub(super) async fn push_at_end(&self, s: &LiveSession) {
        let repo = s.repo.lock().expect("repo lock").clone();
        let (Some(repo), true) = (repo, s.auto_push) else { return };
        if repo.state != RepoState::Ready {
            tracing::info!(session = %s.id, "auto-push skipped: the repository was not cloned");
            return;
        }
        let Some(vm) = s.vm() else { return };
        let branch = format!("mayfly/{}", s.id);
        let req = ExecRequest {
            cmd: ["sh", "-c", SCRIPT, "sh", &s.id, &repo.path].map(String::from).to_vec(),
            env: s.env.clone(),
            cwd: Some(WORKSPACE.into()),
            timeout_ms: Some(PUSH_TIMEOUT.as_millis() as u64),
        };
        let run = vm.channel().exec(req, OUTPUT_LIMIT);
        let result = match tokio::time::timeout(PUSH_TIMEOUT + Duration::from_secs(5), run).await {
            Ok(Ok(out)) if out.exit_code == Some(0) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                stdout.lines().last().map(str::to_string).ok_or_else(|| "git printed no commit".to_string())
            }
            Ok(Ok(out)) if out.timed_out => Err(format!("the push did not finish within {PUSH_TIMEOUT:?}")),
            Ok(Ok(out)) => Err(error_text(&String::from_utf8_lossy(&out.stderr), "git push failed")),
            Ok(Err(e)) => Err(format!("cannot run git in the VM: {e}")),
            Err(_) => Err(format!("the VM did not answer within {PUSH_TIMEOUT:?}")),
        };
        match &result {
            Ok(sha) => tracing::info!(session = %s.id, %branch, %sha, "auto-push: work pushed"),
            Err(e) => tracing::warn!(session = %s.id, %branch, error = %e, "auto-push failed; deleting the session anyway"),
        }
        let (sha, error) = match result {
            Ok(sha) => (Some(sha), None),
            Err(e) => (None, Some(e)),
        };
        let event = SessionEvent::RepoPush { session: s.id.clone(), branch, sha, error };
        let _ = self.events.send(Envelope { seq: None, event });
    }
}

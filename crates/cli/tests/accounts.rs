//! The account commands against a real `mayfly serve` (no VMs): login and the credentials file,
//! whoami, API tokens, users and quotas, the audit log, saved git tokens, logout and the token
//! fall-back order.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Generous: the machine may be slow and loaded.
const DEADLINE: Duration = Duration::from_secs(180);
const ADMIN_TOKEN: &str = "accounts-test-server-token-0123456789";
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path) -> Server {
        let log = data.join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mayfly"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data)
            .env("MAYFLY_DATA_DIR", data.join("server"))
            .env("MAYFLY_BIND", "127.0.0.1:0")
            .env("MAYFLY_TOKEN", ADMIN_TOKEN)
            .env("MAYFLY_ON_SHUTDOWN", "end")
            .env("MAYFLY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("mayfly listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let base = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("mayfly serve did not listen:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        Server { child: Some(child), base, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(DEADLINE).expect("mayfly serve stops in time").unwrap();
        assert!(status.success(), "mayfly serve exited with {status:?}:\n{}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client's world: its own HOME, XDG_CONFIG_HOME and data dir; no MAYFLY_* from outside.
struct Cli {
    home: PathBuf,
    data: PathBuf,
}

impl Cli {
    fn new(root: &Path) -> Cli {
        let home = root.join("home");
        let data = root.join("cli-data");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        Cli { home, data }
    }

    fn credentials(&self) -> PathBuf {
        self.home.join("config/mayfly/credentials.json")
    }

    /// Runs `mayfly ARGS` with `env` and `stdin`; waits (bounded) for it.
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mayfly"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("MAYFLY_DATA_DIR", &self.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_string();
        std::thread::spawn(move || {
            let _ = input.write_all(stdin.as_bytes());
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        rx.recv_timeout(DEADLINE)
            .unwrap_or_else(|_| {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                panic!("mayfly {args:?} did not finish in {DEADLINE:?}")
            })
            .unwrap()
    }

    /// Runs and expects success; returns stdout (stderr goes into the failure message).
    fn ok(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (String, String) {
        let out = self.run(args, env, stdin);
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "mayfly {args:?} failed ({:?}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
        let out = self.run(args, env, stdin);
        let (stdout, stderr) = texts(&out);
        assert!(!out.status.success(), "mayfly {args:?} should have failed:\nstdout:\n{stdout}\nstderr:\n{stderr}");
        stderr
    }
}

fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The member's first API token, the honest way: a password sign-in (cookie), then
/// `POST /api/v1/tokens` with that cookie and this origin (as the browser UI does it).
fn member_token_by_password(base: &str, email: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder().timeout(DEADLINE).build().unwrap();
        let r = http
            .post(format!("{base}/api/v1/auth/password"))
            .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "password sign-in: {}", r.text().await.unwrap_or_default());
        let cookie = r
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("mayfly_session="))
            .and_then(|v| v.split(';').next())
            .expect("a sign-in cookie")
            .to_string();
        let r = http
            .post(format!("{base}/api/v1/tokens"))
            .header(reqwest::header::COOKIE, &cookie)
            .header(reqwest::header::ORIGIN, base)
            .json(&serde_json::json!({ "name": "first" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: serde_json::Value = r.json().await.unwrap();
        body["token"].as_str().expect("a token").to_string()
    })
}

/// The first column of the line of `table` that contains `needle`.
fn id_of(table: &str, needle: &str) -> String {
    let line = table.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{table}"));
    line.split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_member_logs_in_and_manages_tokens_users_audit_and_git_tokens() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let base = server.base.clone();
    let cli = Cli::new(root.path());
    let admin = [("MAYFLY_URL", base.as_str()), ("MAYFLY_TOKEN", ADMIN_TOKEN)];

    // The server token adds a member with a password, and sets quotas one at a time.
    let email = "member@example.com";
    let (out, _) =
        cli.ok(&["user", "add", email, "--name", "Mem Ber", "--password-stdin"], &admin, &format!("{PASSWORD}\n"));
    let member_id = out.split('\t').next().unwrap().trim().to_string();
    assert!(out.contains(email) && out.contains("member"), "{out}");
    cli.ok(&["user", "set", &member_id, "--max-sessions", "3"], &admin, "");
    let (out, _) = cli.ok(&["user", "set", &member_id, "--max-vcpus", "5"], &admin, "");
    assert!(out.contains("max_sessions=3,max_vcpus=5"), "the other quota stays:\n{out}");
    let (users, _) = cli.ok(&["user", "ls"], &admin, "");
    assert!(users.contains(email) && users.contains("max_sessions=3,max_vcpus=5"), "{users}");

    // The member's token (from a password sign-in), given to `login` on stdin.
    let token = member_token_by_password(&base, email);
    let (out, _) = cli.ok(&["login", "--url", &base], &[], &format!("{token}\n"));
    assert!(out.contains(&format!("{email} (member)")), "{out}");
    let creds = cli.credentials();
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&creds).unwrap();
    assert!(saved.contains(&base) && saved.contains(&token), "{saved}");

    // With one saved server and no MAYFLY_URL, every command uses it.
    let (out, _) = cli.ok(&["whoami"], &[], "");
    assert!(out.contains(email) && out.contains("role:   member"), "{out}");
    assert!(out.contains("credentials file"), "names the token's source:\n{out}");
    let sessions_line = out.lines().find(|l| l.starts_with("sessions")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(sessions_line.split_whitespace().collect::<Vec<_>>(), ["sessions", "0", "3"], "{out}");

    // API tokens: create (secret once), list, revoke; the revoked one is refused clearly.
    let (secret, note) = cli.ok(&["token", "create", "laptop", "--days", "7"], &[], "");
    let secret = secret.trim().to_string();
    assert!(secret.starts_with("mfy_"), "{secret}");
    assert!(note.contains("not shown again"), "{note}");
    let (list, _) = cli.ok(&["token", "ls"], &[], "");
    assert!(list.contains("first") && list.contains("laptop") && list.contains("LAST USED"), "{list}");
    assert!(!list.contains(&secret), "the secret is never listed:\n{list}");
    let laptop = id_of(&list, "laptop");
    let (out, _) = cli.ok(&["whoami"], &[("MAYFLY_TOKEN", &secret)], "");
    assert!(out.contains(email) && out.contains("MAYFLY_TOKEN"), "{out}");
    cli.ok(&["token", "rm", &laptop], &[], "");
    let err = cli.fails(&["whoami"], &[("MAYFLY_TOKEN", &secret)], "");
    assert!(err.contains("unauthorized") && err.contains("MAYFLY_TOKEN"), "{err}");
    let (list, _) = cli.ok(&["token", "ls"], &[], "");
    assert!(!list.contains("laptop"), "{list}");

    // A member is no admin.
    let err = cli.fails(&["user", "ls"], &[], "");
    assert!(err.contains("only an admin may do this"), "{err}");
    let err = cli.fails(&["audit"], &[], "");
    assert!(err.contains("only an admin may do this"), "{err}");

    // The admin sees the member's token actions in the audit log.
    let (audit, _) = cli.ok(&["audit", "--user", &member_id], &admin, "");
    assert!(audit.contains("token_create") && audit.contains("token_revoke") && audit.contains(email), "{audit}");
    assert!(!audit.contains(&secret) && !audit.contains(&token), "no secret in the audit log:\n{audit}");
    let (audit, _) = cli.ok(&["audit", "--action", "user_create", "--limit", "5"], &admin, "");
    assert!(audit.contains("user_create") && !audit.contains("token_create"), "{audit}");
    let err = cli.fails(&["audit", "--since", "yesterday"], &admin, "");
    assert!(err.contains("RFC 3339"), "{err}");

    // Saved git tokens: set (from stdin), list, delete; the value is never printed.
    let git_secret = "ghp_never_shown_0123456789";
    let (out, err) = cli.ok(&["git-token", "set", "github.com", "--username", "octo"], &[], &format!("{git_secret}\n"));
    assert!(out.contains("github.com") && !out.contains(git_secret) && !err.contains(git_secret), "{out}{err}");
    let (list, err) = cli.ok(&["git-token", "ls"], &[], "");
    assert!(list.contains("github.com") && list.contains("octo") && !list.contains(git_secret), "{list}{err}");
    cli.ok(&["git-token", "rm", "github.com"], &[], "");
    let (list, _) = cli.ok(&["git-token", "ls"], &[], "");
    assert!(!list.contains("github.com"), "{list}");

    // Two saved servers: without MAYFLY_URL the default URL is used, and it has no token.
    let other = base.replace("127.0.0.1", "localhost");
    cli.ok(&["login", "--url", &other, "--token", &token], &[], "");
    let err = cli.fails(&["whoami"], &[], "");
    assert!(err.contains("no token for http://127.0.0.1:7070") && err.contains("MAYFLY_TOKEN"), "{err}");
    let (out, _) = cli.ok(&["whoami"], &[("MAYFLY_URL", &other)], "");
    assert!(out.contains(email), "{out}");
    let (out, _) = cli.ok(&["logout", "--url", &other], &[], "");
    assert!(out.contains("Logged out"), "{out}");

    // Logout; then the next command falls back to <data_dir>/token, and says what it tried.
    let (out, _) = cli.ok(&["logout"], &[], "");
    assert!(out.contains(&format!("Logged out of {base}")), "{out}");
    assert!(!std::fs::read_to_string(&creds).unwrap().contains(&token));
    let (out, _) = cli.ok(&["logout", "--url", &base], &[], "");
    assert!(out.contains("No saved token"), "{out}");
    let err = cli.fails(&["whoami"], &[("MAYFLY_URL", &base)], "");
    assert!(
        err.contains("MAYFLY_TOKEN is unset") && err.contains("credentials.json") && err.contains("token"),
        "{err}"
    );
    std::fs::write(cli.data.join("token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let (out, _) = cli.ok(&["whoami"], &[("MAYFLY_URL", &base)], "");
    assert!(out.contains("server token (admin)") && out.contains("server token file"), "{out}");
    // No sessions, so no OWNER column.
    let (out, _) = cli.ok(&["ls"], &[("MAYFLY_URL", &base)], "");
    assert!(out.starts_with("ID") && !out.contains("OWNER"), "{out}");

    // Removing the user: their token stops working.
    let (out, _) = cli.ok(&["user", "rm", &member_id], &admin, "");
    assert!(out.contains("sessions end"), "{out}");
    let err = cli.fails(&["whoami"], &[("MAYFLY_URL", &base), ("MAYFLY_TOKEN", &token)], "");
    assert!(err.contains("unauthorized"), "{err}");

    server.stop();
}

#[test]
fn login_with_a_bad_token_or_no_server_saves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let cli = Cli::new(root.path());

    let err = cli.fails(&["login", "--url", &server.base, "--token", "nonsense"], &[], "");
    assert!(err.contains("unauthorized") && err.contains("nothing was saved"), "{err}");
    assert!(!cli.credentials().exists(), "nothing stored");

    let err = cli.fails(&["login", "--url", &server.base], &[], "\n");
    assert!(err.contains("no API token"), "{err}");
    assert!(!cli.credentials().exists(), "nothing stored");

    // Port 1: nothing listens there.
    let err = cli.fails(&["login", "--url", "http://127.0.0.1:1", "--token", "mfy_x"], &[], "");
    assert!(err.contains("cannot reach the Mayfly server at http://127.0.0.1:1"), "{err}");
    assert!(!cli.credentials().exists(), "nothing stored");

    // The server token may be saved too.
    let (out, _) = cli.ok(&["login", "--url", &format!("{}/", server.base), "--token", ADMIN_TOKEN], &[], "");
    assert!(out.contains("server token (admin)"), "{out}");
    let (out, _) = cli.ok(&["whoami"], &[], "");
    assert!(out.contains("server token (admin)"), "{out}");

    server.stop();
}

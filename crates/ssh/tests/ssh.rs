//! The SSH door end to end: the real `mayfly serve` binary with `ssh_listen` set, a real VM
//! (the `minimal` image) and the real OpenSSH client (`ssh`, `scp`, `sftp`) under tmux where a
//! terminal is needed. One server and one session serve every step (a VM under TCG is slow to
//! boot); each step reports on its own, the server is stopped whatever happens, then the test
//! fails if any step did.
//!
//! Users: alice (member) owns the session; bob (member) must be refused on it; carol (admin)
//! reaches it (and is audited). Each has a key of their own; a fourth key is registered nowhere.
//!
//! Needs: `cargo build --release --workspace --bins`, `MAYFLY_DATA_DIR` with the minimal image,
//! `openssh-client` and `tmux` (scripts/install-deps --test).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "ssh-e2e-token-0123456789abcdef";
/// Bound for anything that waits on the VM (TCG, a loaded machine).
const SLOW: Duration = Duration::from_secs(120);

fn mayfly_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("mayfly");
    assert!(bin.is_file(), "{} is missing: cargo build --release --workspace --bins", bin.display());
    bin
}

fn image_data_dir() -> PathBuf {
    let dir = std::env::var_os("MAYFLY_DATA_DIR").map(PathBuf::from).expect("MAYFLY_DATA_DIR must hold the minimal image");
    assert!(dir.join("images/minimal/current").exists(), "the minimal image is not built in {}", dir.display());
    dir
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

struct User {
    token: String,
    key: PathBuf,
}

struct Fixture {
    dir: tempfile::TempDir,
    child: Child,
    base: String,
    ssh_port: u16,
    http: reqwest::Client,
    session: String,
    alice: User,
    bob: User,
    carol: User,
    /// Registered by nobody.
    stranger: PathBuf,
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    path
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(mayfly_binary())
            .arg("serve")
            .env("MAYFLY_DATA_DIR", dir.path())
            .env("MAYFLY_BIND", "127.0.0.1:0")
            .env("MAYFLY_SSH_LISTEN", "127.0.0.1:0")
            .env("MAYFLY_TOKEN", TOKEN)
            .env("MAYFLY_IMAGE_DATA_DIR", image_data_dir())
            .env("MAYFLY_DEFAULT_IMAGE", "minimal")
            // Idle sessions pause quickly: the activity step checks an open channel prevents it.
            .env("MAYFLY_PAUSE_IDLE_SECONDS", "3")
            .env("MAYFLY_REAPER_INTERVAL_SECONDS", "1")
            .env("MAYFLY_LOG", std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut ssh_port) = (None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("mayfly listening on ") {
                base = Some(addr.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("mayfly ssh listening on ") {
                let addr: std::net::SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                ssh_port = Some(addr.port());
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (Some(base), Some(ssh_port)) = (base, ssh_port) else {
            let _ = child.kill();
            panic!("mayfly serve did not start the SSH gateway:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        let http = reqwest::Client::builder()
            .default_headers([(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap())].into_iter().collect())
            .build()
            .unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let (alice_key, bob_key, carol_key, stranger) =
            (keygen(&keys, "alice"), keygen(&keys, "bob"), keygen(&keys, "carol"), keygen(&keys, "stranger"));
        let setup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt().block_on(async {
            let alice = make_user(&http, &base, "alice@example.test", "member", alice_key).await;
            let bob = make_user(&http, &base, "bob@example.test", "member", bob_key).await;
            let carol = make_user(&http, &base, "carol@example.test", "admin", carol_key).await;
            let r = http
                .post(format!("{base}/api/v1/sessions"))
                .bearer_auth(&alice.token)
                .json(&json!({}))
                .timeout(SLOW)
                .send()
                .await
                .unwrap();
            let s: Value = r.json().await.unwrap();
            assert_eq!(s["state"], "ready", "{s}");
            (alice, bob, carol, s["id"].as_str().unwrap().to_string())
        })));
        let (alice, bob, carol, session) = match setup {
            Ok(v) => v,
            Err(panic) => {
                // Never leave a server (and its VM) behind.
                let _ = nix_term(&mut child);
                eprintln!("server log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                std::panic::resume_unwind(panic);
            }
        };
        Fixture { dir, child, base, ssh_port, http, session, alice, bob, carol, stranger }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn ssh_opts(&self, key: &Path) -> Vec<String> {
        [
            "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=60",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-i".to_string(), key.display().to_string()])
        .collect()
    }

    /// `ssh` to `user@gateway` with `key` and `args` after the destination.
    fn ssh(&self, key: &Path, user: &str, extra: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.ssh_opts(key)).args(["-p", &self.ssh_port.to_string()]).args(extra).arg(format!("{user}@127.0.0.1")).args(args);
        c
    }
}

async fn make_user(http: &reqwest::Client, base: &str, email: &str, role: &str, key: PathBuf) -> User {
    let password = format!("pw-{email}-0123456789");
    let r = http.post(format!("{base}/api/v1/users")).json(&json!({"email": email, "role": role, "password": password})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let browser = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = browser.post(format!("{base}/api/v1/auth/password")).json(&json!({"email": email, "password": password})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = browser
        .post(format!("{base}/api/v1/tokens"))
        .header("origin", base)
        .json(&json!({"name": "ssh tests", "expires_in_days": 1}))
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = http
        .post(format!("{base}/api/v1/me/ssh-keys"))
        .bearer_auth(&token)
        .json(&json!({"public_key": public}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    User { token, key }
}

/// Runs `cmd` with `stdin`, bounded by [`SLOW`].
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let ereader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + SLOW;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.join();
    Output { status, stdout: reader.join().unwrap(), stderr: ereader.join().unwrap() }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `f` returns `Some`, up to [`SLOW`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + SLOW;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    // Every byte value, in an order that is not a simple pattern.
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn refusals(f: &Fixture) {
    let out = run(f.ssh(&f.stranger, &f.session, &[], &["true"]), b"");
    assert_eq!(out.status.code(), Some(255), "an unregistered key is refused");
    assert!(text(&out.stderr).contains("Permission denied (publickey)"), "{}", text(&out.stderr));

    let out = run(f.ssh(&f.bob.key, &f.session, &[], &["true"]), b"");
    assert_eq!(out.status.code(), Some(255), "bob may not open alice's session");
    let theirs = text(&out.stderr);
    assert!(theirs.contains("no session") && theirs.contains(&f.session), "{theirs}");

    let out = run(f.ssh(&f.alice.key, "snosuchsess1", &[], &["true"]), b"");
    assert_eq!(out.status.code(), Some(255));
    let unknown = text(&out.stderr);
    assert!(unknown.contains("no session"), "{unknown}");
    assert_eq!(
        theirs.replace(&f.session, "ID"),
        unknown.replace("snosuchsess1", "ID"),
        "someone else's session and a missing one get the same answer"
    );
    // Each refusal is audited; the unknown key's once its connection is gone.
    wait_for("three ssh_refused audit entries", || {
        let audit: Value = rt().block_on(async {
            f.http.get(format!("{}/api/v1/audit?action=ssh_refused", f.base)).send().await.unwrap().json().await.unwrap()
        });
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        (entries.len() >= 3 && entries.iter().any(|e| e["detail"]["reason"] == "unknown key")).then_some(())
    });
}

fn keys_belong_to_their_user(f: &Fixture) {
    rt().block_on(async {
        let list = |token: &str| {
            let req = f.http.get(format!("{}/api/v1/me/ssh-keys", f.base)).bearer_auth(token.to_string());
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let alices = list(&f.alice.token).await;
        assert_eq!(alices.as_array().unwrap().len(), 1, "{alices}");
        let key_id = alices[0]["id"].as_str().unwrap().to_string();
        assert!(alices[0]["last_used_at"].is_string(), "sign-ins record the key's use: {alices}");
        let del = f.http.delete(format!("{}/api/v1/me/ssh-keys/{key_id}", f.base)).bearer_auth(&f.bob.token).send().await.unwrap();
        assert_eq!(del.status().as_u16(), 404, "bob cannot remove alice's key");
        let public = std::fs::read_to_string(f.alice.key.with_extension("pub")).unwrap();
        let dup = f.http.post(format!("{}/api/v1/me/ssh-keys", f.base)).bearer_auth(&f.bob.token).json(&json!({"public_key": public})).send().await.unwrap();
        assert_eq!(dup.status().as_u16(), 409, "a key signs in one user only");
        let bad = f.http.post(format!("{}/api/v1/me/ssh-keys", f.base)).bearer_auth(&f.bob.token).json(&json!({"public_key": "ssh-ed25519 nope"})).send().await.unwrap();
        assert_eq!(bad.status().as_u16(), 400);
        let server = f.http.post(format!("{}/api/v1/me/ssh-keys", f.base)).json(&json!({"public_key": public})).send().await.unwrap();
        assert_eq!(server.status().as_u16(), 400, "the server token has no keys");
        assert_eq!(list(&f.alice.token).await.as_array().unwrap().len(), 1);
        let me: Value = f.http.get(format!("{}/api/v1/me", f.base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["ssh_port"], f.ssh_port, "clients learn the gateway's port: {me}");
    });
}

fn cli_ssh_config(f: &Fixture) {
    let config = f.dir.path().join("ssh_config");
    std::fs::write(&config, "Host unrelated\n  User someone\n").unwrap();
    let out = Command::new(mayfly_binary())
        .args(["ssh-config", "--file"])
        .arg(&config)
        .env("MAYFLY_URL", &f.base)
        .env("MAYFLY_TOKEN", &f.alice.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.starts_with("Host unrelated\n  User someone\n"), "the rest is kept: {written}");
    assert!(written.contains(&format!("Host {}.mayfly", f.session)), "{written}");
    let mut c = Command::new("ssh");
    c.args(["-F"]).arg(&config).args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"]).arg(&f.alice.key);
    c.args([&format!("{}.mayfly", f.session), "echo via-config"]);
    let out = run(c, b"");
    assert_eq!(text(&out.stdout), "via-config\n", "ssh <id>.mayfly works: {}", text(&out.stderr));
}

fn cli_ssh(f: &Fixture) {
    let key = f.alice.key.display().to_string();
    let out = Command::new(mayfly_binary())
        .args(["ssh", &f.session, "--", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", &key, "echo", "via-cli", "$((1+1))"])
        .env("MAYFLY_URL", &f.base)
        .env("MAYFLY_TOKEN", &f.alice.token)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "via-cli 2\n", "mayfly ssh: {}", text(&out.stderr));
}

fn cli_ssh_key(f: &Fixture) {
    let key = keygen(&f.dir.path().join("keys"), "cli-key");
    let mayfly = |args: &[&str]| {
        let out = Command::new(mayfly_binary()).args(args).env("MAYFLY_URL", &f.base).env("MAYFLY_TOKEN", &f.alice.token).output().unwrap();
        assert!(out.status.success(), "mayfly {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let added = mayfly(&["ssh-key", "add", &key.with_extension("pub").display().to_string(), "--name", "from the cli"]);
    let id = added.split_whitespace().nth(3).unwrap().to_string();
    assert!(mayfly(&["ssh-key", "ls"]).contains("from the cli"));
    let out = run(f.ssh(&key, &f.session, &[], &["echo cli-key-works"]), b"");
    assert_eq!(text(&out.stdout), "cli-key-works\n", "{}", text(&out.stderr));
    mayfly(&["ssh-key", "rm", &id]);
    assert!(!mayfly(&["ssh-key", "ls"]).contains("from the cli"));
    let out = run(f.ssh(&key, &f.session, &[], &["true"]), b"");
    assert_eq!(out.status.code(), Some(255), "a removed key no longer signs in");
}

/// The session as listed (the list, unlike `GET /sessions/{id}`, does not count as activity).
fn session_json(f: &Fixture) -> Value {
    let all: Value = rt().block_on(async { f.http.get(format!("{}/api/v1/sessions", f.base)).send().await.unwrap().json().await.unwrap() });
    all.as_array().unwrap().iter().find(|s| s["id"] == f.session.as_str()).cloned().unwrap_or(Value::Null)
}

fn ssh_counts_as_activity(f: &Fixture) {
    // With nothing open the idle session pauses (pause_idle_seconds = 3)...
    wait_for("the idle session to pause", || (session_json(f)["paused"] == true).then_some(()));
    // ...an SSH command resumes it, and while its channel is open it does not pause again.
    let mut quiet = f.ssh(&f.alice.key, &f.session, &[], &["sleep 25; echo done"]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    wait_for("the session to resume", || (session_json(f)["paused"] == false).then_some(()));
    let mut samples = 0;
    while quiet.try_wait().unwrap().is_none() {
        let s = session_json(f);
        assert_eq!(s["paused"], false, "paused under an open SSH channel: {s}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut out = String::new();
    quiet.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "done\n");
    assert!(samples >= 10, "the channel stayed open for a while ({samples} samples)");
}

fn garbage_is_dropped(f: &Fixture) {
    use std::net::TcpStream;
    let mut s = TcpStream::connect(("127.0.0.1", f.ssh_port)).unwrap();
    s.set_read_timeout(Some(SLOW)).unwrap();
    let _ = s.write_all(b"SSH-2.0-junk\r\n\x00\x00\x00\x0c\x0a\x14garbage-packet-that-is-not-ssh\xff\xff\xff\xff");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(text(&buf).starts_with("SSH-2.0-mayfly"), "{}", text(&buf));
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["echo still-up"]), b"");
    assert_eq!(text(&out.stdout), "still-up\n", "the gateway goes on");
}

fn exec_binary_and_exit_codes(f: &Fixture) {
    let input = random_bytes(1 << 20);
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["cat; echo to-stderr >&2; exit 3"]), &input);
    assert_eq!(out.status.code(), Some(3), "exit code; stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len(), "every byte back");
    assert!(out.stdout == input, "binary-safe stdin/stdout");
    assert!(text(&out.stderr).contains("to-stderr"), "stderr apart: {}", text(&out.stderr));
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["echo", "$((6*7))"]), b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "42\n", "the command runs in a shell");
    let out = run(f.ssh(&f.alice.key, &f.session, &["-o", "SetEnv=LC_MAYFLY=fromclient"], &["echo $LC_MAYFLY"]), b"");
    assert_eq!(text(&out.stdout), "fromclient\n", "env requests reach the command");
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["no-such-program-here"]), b"");
    assert_eq!(out.status.code(), Some(127), "a missing program: {}", text(&out.stderr));
}

fn admin_reaches_any_session(f: &Fixture) {
    let out = run(f.ssh(&f.carol.key, &f.session, &[], &["echo admin-in"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "admin-in\n");
    let audit: Value = rt().block_on(async {
        f.http.get(format!("{}/api/v1/audit?session={}", f.base, f.session)).send().await.unwrap().json().await.unwrap()
    });
    let found = audit["entries"].as_array().unwrap().iter().any(|e| e["actor"] == "carol@example.test");
    assert!(found, "an admin's access to alice's session is audited: {audit}");
}

/// A tmux pane running `cmd`, `cols`×`rows`.
struct Pane(String);

impl Pane {
    fn start(name: &str, cols: u16, rows: u16, cmd: &str) -> Pane {
        let st = Command::new("tmux")
            .args(["new-session", "-d", "-s", name, "-x", &cols.to_string(), "-y", &rows.to_string(), cmd])
            .status()
            .unwrap();
        assert!(st.success());
        let _ = Command::new("tmux").args(["set-option", "-t", name, "remain-on-exit", "on"]).status();
        Pane(name.to_string())
    }
    fn screen(&self) -> String {
        text(&Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output().unwrap().stdout)
    }
    fn keys(&self, keys: &str) {
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.0, "-l", keys]).status().unwrap().success());
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.0, "Enter"]).status().unwrap().success());
    }
    fn wait_screen(&self, needle: &str) -> String {
        wait_for(&format!("{needle:?} on the screen"), || Some(self.screen()).filter(|s| s.contains(needle)))
    }
    fn resize(&self, cols: u16, rows: u16) {
        let st = Command::new("tmux")
            .args(["resize-window", "-t", &self.0, "-x", &cols.to_string(), "-y", &rows.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}

fn interactive_shell(f: &Fixture) {
    let status_file = f.dir.path().join("tty-exit");
    let cmd = format!(
        "ssh -tt {} -p {} {}@127.0.0.1; echo $? > {}",
        f.ssh_opts(&f.alice.key).join(" "),
        f.ssh_port,
        f.session,
        status_file.display()
    );
    let pane = Pane::start(&format!("mayfly-ssh-{}", std::process::id()), 100, 30, &cmd);
    pane.keys("echo typed-$((40+2))");
    pane.wait_screen("typed-42");
    pane.keys("stty size");
    pane.wait_screen("30 100");
    pane.resize(120, 40);
    // The new size reaches the VM's terminal (window-change).
    wait_for("the resize to reach the VM", || {
        pane.keys("stty size");
        std::thread::sleep(Duration::from_millis(500));
        Some(()).filter(|()| pane.screen().contains("40 120"))
    });
    pane.keys("exit 5");
    let status = wait_for("the ssh client to exit", || std::fs::read_to_string(&status_file).ok().filter(|s| s.ends_with('\n')));
    assert_eq!(status.trim(), "5", "the shell's exit status is ssh's: {}", pane.screen());
}

fn sftp_batch(f: &Fixture) {
    let work = f.dir.path().join("sftp");
    std::fs::create_dir_all(&work).unwrap();
    let data = random_bytes(6 << 20);
    std::fs::write(work.join("up.bin"), &data).unwrap();
    let batch = work.join("batch");
    std::fs::write(
        &batch,
        "mkdir /tmp/sftp-t\nput up.bin /tmp/sftp-t/a.bin\nls -l /tmp/sftp-t\nrename /tmp/sftp-t/a.bin /tmp/sftp-t/b.bin\nget /tmp/sftp-t/b.bin down.bin\nrm /tmp/sftp-t/b.bin\nls /tmp/sftp-t\n",
    )
    .unwrap();
    let mut c = Command::new("sftp");
    c.current_dir(&work).args(f.ssh_opts(&f.alice.key)).args(["-P", &f.ssh_port.to_string(), "-b"]).arg(&batch).arg(format!("{}@127.0.0.1", f.session));
    let out = run(c, b"");
    assert!(out.status.success(), "sftp: {}\n{}", text(&out.stdout), text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains("a.bin") && listing.contains(&data.len().to_string()), "{listing}");
    assert!(std::fs::read(work.join("down.bin")).unwrap() == data, "the file came back whole");
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["ls /tmp/sftp-t | wc -l"]), b"");
    assert_eq!(text(&out.stdout).trim(), "0", "rm removed it");
}

fn scp_both_ways(f: &Fixture) {
    let work = f.dir.path().join("scp");
    std::fs::create_dir_all(&work).unwrap();
    let data = random_bytes(3 << 20);
    std::fs::write(work.join("up.bin"), &data).unwrap();
    for (mode, flag) in [("sftp", None), ("legacy", Some("-O"))] {
        let remote = format!("{}@127.0.0.1:/tmp/scp-{mode}.bin", f.session);
        let scp = |from: &str, to: &str| {
            let mut c = Command::new("scp");
            c.current_dir(&work).args(f.ssh_opts(&f.alice.key)).args(["-P", &f.ssh_port.to_string()]);
            if let Some(flag) = flag {
                c.arg(flag);
            }
            c.args([from, to]);
            let out = run(c, b"");
            assert!(out.status.success(), "scp {mode} {from} {to}: {}", text(&out.stderr));
        };
        scp("up.bin", &remote);
        let down = format!("down-{mode}.bin");
        scp(&remote, &down);
        assert!(std::fs::read(work.join(&down)).unwrap() == data, "scp {mode}: the file came back whole");
    }
}

fn local_forward(f: &Fixture) {
    // A dev server in the VM, started over SSH and left running.
    let out = run(
        f.ssh(&f.alice.key, &f.session, &[], &["mkdir -p /tmp/www && echo served-by-vm > /tmp/www/index.html && cd /tmp/www && (setsid python3 -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 &)"]),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut fwd = f
        .ssh(&f.alice.key, &f.session, &["-N", "-L", &format!("{port}:localhost:8765"), "-o", "ExitOnForwardFailure=yes"], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = wait_for("the page through the forward", || {
        let out = Command::new("curl").args(["-s", "--max-time", "10", &format!("http://127.0.0.1:{port}/")]).output().ok()?;
        Some(text(&out.stdout)).filter(|b| b.contains("served-by-vm"))
    });
    assert!(body.contains("served-by-vm"));
    // A forward to a closed port fails that connection only.
    let out = Command::new("curl").args(["-s", "--max-time", "20", &format!("http://127.0.0.1:{port}/")]).output().unwrap();
    assert!(text(&out.stdout).contains("served-by-vm"), "the forward keeps working");
    let _ = fwd.kill();
    let _ = fwd.wait();
}

fn agent_forwarding(f: &Fixture) {
    let sock = f.dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the local ssh-agent", || sock.exists().then_some(()));
    let key = keygen(&f.dir.path().join("keys"), "laptop-key");
    let added = Command::new("ssh-add").env("SSH_AUTH_SOCK", &sock).arg(&key).output().unwrap();
    assert!(added.status.success(), "{}", text(&added.stderr));
    let listed = Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")).output().unwrap();
    let fingerprint = text(&listed.stdout).split_whitespace().nth(1).unwrap().to_string();
    let mut c = f.ssh(&f.alice.key, &f.session, &["-A"], &["ssh-add -l; echo sock=$SSH_AUTH_SOCK; ls ~/.ssh 2>/dev/null | wc -l"]);
    c.env("SSH_AUTH_SOCK", &sock);
    let out = run(c, b"");
    let _ = agent.kill();
    let _ = agent.wait();
    let seen = text(&out.stdout);
    assert!(out.status.success(), "ssh-add -l in the VM: {seen}{}", text(&out.stderr));
    assert!(seen.contains(&fingerprint), "the laptop's key is seen in the VM through the agent: {seen}");
    assert!(seen.contains("sock=/run/mayfly/agent/"), "{seen}");
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["echo sock=$SSH_AUTH_SOCK"]), b"");
    assert_eq!(text(&out.stdout), "sock=\n", "no agent without -A");
}

fn closed_port_forward(f: &Fixture) {
    // `ssh -W` is a direct-tcpip channel on stdio: a closed port fails that channel only.
    for target in ["localhost:1", "example.com:80"] {
        let out = run(f.ssh(&f.alice.key, &f.session, &["-W", target], &[]), b"");
        assert_eq!(out.status.code(), Some(255), "{target}");
        assert!(text(&out.stderr).contains("forwarding failed"), "{target}: {}", text(&out.stderr));
    }
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["echo fine"]), b"");
    assert_eq!(text(&out.stdout), "fine\n", "a failed forward harms nothing else");
}

fn many_channels_and_session_end(f: &Fixture) {
    // Many channels on one connection: a master connection and 20 commands multiplexed on it.
    let ctl = f.dir.path().join("ctl");
    let mut master = f
        .ssh(&f.alice.key, &f.session, &["-M", "-N", "-S", &ctl.display().to_string()], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the master connection", || ctl.exists().then_some(()));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let c = f.ssh(&f.alice.key, &f.session, &["-S", &ctl.display().to_string()], &[&format!("echo ch-{i}")]);
            std::thread::spawn(move || run(c, b""))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert_eq!(text(&out.stdout), format!("ch-{i}\n"), "{}", text(&out.stderr));
    }
    // A client that keeps opening channels hits the cap (64); the connection goes on. Each TCP
    // connection to a local forward is a channel; the VM's listener never answers, so they stay.
    let out = run(
        f.ssh(&f.alice.key, &f.session, &[], &["(setsid python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", 8766)); s.listen(256); time.sleep(900)' >/dev/null 2>&1 &)"]),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fwd = Command::new("ssh")
        .args(["-S", &ctl.display().to_string(), "-O", "forward", "-L", &format!("{port}:localhost:8766"), "x"])
        .output()
        .unwrap();
    assert!(fwd.status.success(), "{}", text(&fwd.stderr));
    std::thread::sleep(Duration::from_secs(2)); // the VM's listener starts
    let conns: Vec<std::net::TcpStream> = (0..72).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let refused = wait_for("channels beyond the cap to be refused", || {
        let closed = conns
            .iter()
            .filter(|c| {
                c.set_nonblocking(true).unwrap();
                matches!((&**c).read(&mut [0u8; 1]), Ok(0))
            })
            .count();
        (closed >= 8).then_some(closed)
    });
    assert_eq!(refused, 8, "64 channels stay open, the rest are refused");
    drop(conns);
    wait_for("channels to be usable again", || {
        let out = run(f.ssh(&f.alice.key, &f.session, &["-S", &ctl.display().to_string()], &["echo again"]), b"");
        (text(&out.stdout) == "again\n").then_some(())
    });
    // Ending the session closes its connections, with a message.
    let status = rt().block_on(async {
        f.http.delete(format!("{}/api/v1/sessions/{}", f.base, f.session)).timeout(SLOW).send().await.unwrap().status().as_u16()
    });
    assert_eq!(status, 204);
    let exited = wait_for("the master connection to close", || master.try_wait().unwrap());
    assert!(!exited.success());
    let mut err = String::new();
    master.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("has ended"), "the client is told why: {err}");
    let out = run(f.ssh(&f.alice.key, &f.session, &[], &["true"]), b"");
    assert!(text(&out.stderr).contains("no session"), "an ended session is refused: {}", text(&out.stderr));
}

#[test]
fn ssh_door_end_to_end() {
    let mut f = Fixture::start();
    type Step = fn(&Fixture);
    let steps: &[(&str, Step)] = &[
        ("refusals", refusals),
        ("exec_binary_and_exit_codes", exec_binary_and_exit_codes),
        ("admin_reaches_any_session", admin_reaches_any_session),
        ("keys_belong_to_their_user", keys_belong_to_their_user),
        ("cli_ssh_config", cli_ssh_config),
        ("cli_ssh", cli_ssh),
        ("cli_ssh_key", cli_ssh_key),
        ("garbage_is_dropped", garbage_is_dropped),
        ("interactive_shell", interactive_shell),
        ("sftp_batch", sftp_batch),
        ("scp_both_ways", scp_both_ways),
        ("local_forward", local_forward),
        ("agent_forwarding", agent_forwarding),
        ("closed_port_forward", closed_port_forward),
        ("ssh_counts_as_activity", ssh_counts_as_activity),
        // Last: it ends the session.
        ("many_channels_and_session_end", many_channels_and_session_end),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        let t = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&f))) {
            Ok(()) => eprintln!("step {name}: ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!("step {name}: FAILED");
                failed.push(*name);
            }
        }
    }
    let _ = nix_term(&mut f.child);
    if !failed.is_empty() {
        panic!("failed steps: {failed:?}\nserver log (tail):\n{}", tail(&f.log(), 80));
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM, then wait (the server stops its VMs).
fn nix_term(child: &mut Child) -> std::io::Result<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    let deadline = Instant::now() + SLOW;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

//! The `browser` tool: headless Chromium on the host, driven over the DevTools protocol on a
//! pipe (`cdp.rs`; no debugging port). Each visit launches a fresh browser with a throw-away profile, presents
//! the preview cookie for exactly the one preview host (signed like the proxy's own), opens the
//! page on this server's listener, and returns a PNG screenshot, the title, the start of the
//! page text and every console error, uncaught exception and failed load it saw.
//!
//! Chromium never gets the API token or the model key: only the host-only preview cookie.
//!
//! Confinement, when the server is root and VMs have their own uids (see docs/SECURITY.md):
//! * Chromium runs as the session VM's uid (no groups, no capabilities), with **its own sandbox
//!   on**, and a throw-away profile owned by that uid (0700). A renderer exploit lands in
//!   Chromium's sandbox; a sandbox escape lands as a uid that can touch only that session's VM.
//! * Network: every request goes to a dead proxy (a listener of ours that drops each
//!   connection) except the one preview origin (`host:port` of this server); loopback is not
//!   exempt (`<-loopback>`). So a page cannot reach the host's other ports, the control plane
//!   by IP, another session's preview or the internet; `file://` is not reachable from a page.

use super::cdp::{self, Cdp};
use base64::Engine;
use mayfly_agent::ToolOutput;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

/// Launch, load and capture, all together.
const VISIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Navigation to the load event; past it the page is captured as it is, saying so.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// `Browser.close` to the process's exit; then it is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Lines of Chromium's stderr kept for the error message of a failed visit.
const STDERR_LINES: usize = 20;
/// After the load event, how long late console errors may take to show up.
const SETTLE: Duration = Duration::from_millis(700);
/// Characters of page text returned.
const TEXT_LIMIT: usize = 2000;

pub struct Browser {
    path: PathBuf,
}

/// One visit: the preview `url` (host `host`, on this server's `port`), the preview cookie, and
/// the account Chromium runs as (`None`: the server's own, without Chromium's sandbox).
pub struct Visit<'a> {
    pub url: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub cookie_name: &'a str,
    pub cookie: &'a str,
    pub run_as: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
#[error("browser: {0}")]
struct BrowserError(String);

impl Browser {
    /// The configured executable, else the first Chromium found in /usr/bin.
    pub fn find(configured: Option<&Path>) -> Option<Browser> {
        let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
        let path = match configured {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from(candidates.into_iter().find(|c| Path::new(c).exists())?),
        };
        Some(Browser { path })
    }

    /// Opens the visit's URL (its host mapped to this machine) with the preview cookie.
    pub async fn visit(&self, v: &Visit<'_>) -> ToolOutput {
        let base = std::env::temp_dir().join(format!("mayfly-browser-{:016x}", rand::random::<u64>()));
        let r = match self.prepare(&base, v.run_as) {
            Ok(()) => tokio::time::timeout(VISIT_TIMEOUT, self.capture(v, &base)).await,
            Err(err) => Ok(Err(err)),
        };
        let _ = std::fs::remove_dir_all(&base);
        match r {
            Ok(Ok(out)) => out,
            Ok(Err(err)) => ToolOutput::error(err.to_string()),
            Err(_) => ToolOutput::error(format!("browser: {} did not load within {} s", v.url, VISIT_TIMEOUT.as_secs())),
        }
    }

    /// `base` (root's, 0711) holds the launcher script (root's) and the profile, owned by the
    /// account Chromium runs as (0700).
    fn prepare(&self, base: &Path, run_as: Option<(u32, u32)>) -> Result<(), BrowserError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| BrowserError(format!("{what}: {e}"))
        };
        std::fs::create_dir(base).map_err(io("creating the browser dir"))?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711)).map_err(io("chmod the browser dir"))?;
        let profile = base.join("profile");
        std::fs::create_dir(&profile).map_err(io("creating the profile"))?;
        std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod the profile"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::lchown(&profile, Some(uid), Some(gid)).map_err(io("handing the profile to the VM's uid"))?;
            // A launcher drops to the account, keeping the protocol's fds 3 and 4.
            let launcher = format!(
                "#!/bin/sh\nexec setpriv --reuid={uid} --regid={gid} --clear-groups --inh-caps=-all -- env HOME={home} {chromium} \"$@\"\n",
                home = profile.display(),
                chromium = self.path.display()
            );
            let path = base.join("chromium");
            std::fs::write(&path, launcher).map_err(io("writing the launcher"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod the launcher"))?;
        }
        Ok(())
    }

    async fn capture(&self, v: &Visit<'_>, base: &Path) -> Result<ToolOutput, BrowserError> {
        // Every connection but the preview's goes here and is dropped at once.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| BrowserError(format!("dead proxy: {e}")))?;
        let dead_port = dead.local_addr().map_err(|e| BrowserError(format!("dead proxy: {e}")))?.port();
        let dead_task = AbortOnDrop(tokio::spawn(async move {
            while let Ok((conn, _)) = dead.accept().await {
                drop(conn);
            }
        }));
        let mut cmd = match v.run_as {
            Some(_) => tokio::process::Command::new(base.join("chromium")),
            None => tokio::process::Command::new(&self.path),
        };
        cmd.args(CHROMIUM_ARGS)
            .arg(format!("--user-data-dir={}", base.join("profile").display()))
            .arg(format!("--host-resolver-rules=MAP {} 127.0.0.1", v.host))
            .arg(format!("--proxy-server=http://127.0.0.1:{dead_port}"))
            .arg(format!("--proxy-bypass-list=<-loopback>;{}:{}", v.host, v.port));
        if v.run_as.is_none() {
            // Chromium refuses its sandbox as root: only when the server has no VM accounts.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let (cdp, mut child, events) = Cdp::spawn(&mut cmd).map_err(|e| BrowserError(format!("launch {}: {e}", self.path.display())))?;
        let stderr = child.stderr.take().map(|e| tokio::spawn(last_lines(e)));
        let result = load(&cdp, events, v.url, v.cookie_name, v.cookie).await;
        let _ = cdp.call(None, "Browser.close", json!({})).await;
        if tokio::time::timeout(CLOSE_GRACE, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        drop(dead_task);
        match (result, stderr) {
            (Err(err), Some(lines)) => {
                let lines = lines.await.unwrap_or_default();
                Err(if lines.is_empty() { err } else { BrowserError(format!("{}; Chromium said:\n{lines}", err.0)) })
            }
            (r, _) => r,
        }
    }
}

/// Flags for a headless, quiet, throw-away browser (the visit adds the profile, the network
/// rules and the URL). `--remote-debugging-pipe`: the protocol runs over fds 3 and 4 (cdp.rs).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--remote-debugging-pipe",
    "--window-size=1280,800",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-breakpad",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
];

/// Opens `url` in a new page with the preview cookie and collects what the tool returns.
async fn load(
    cdp: &Cdp,
    mut events: mpsc::UnboundedReceiver<cdp::Event>,
    url: &str,
    cookie_name: &str,
    cookie: &str,
) -> Result<ToolOutput, BrowserError> {
    let call = |session: Option<String>, method: &'static str, params: Value| async move {
        cdp.call(session.as_deref(), method, params).await.map_err(BrowserError)
    };
    let target = call(None, "Target.createTarget", json!({ "url": "about:blank" })).await?;
    let attached = call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true })).await?;
    let session = attached["sessionId"].as_str().map(str::to_string).ok_or_else(|| BrowserError("attach: no session id".into()))?;
    let page = || Some(session.clone());
    for method in ["Page.enable", "Runtime.enable", "Log.enable"] {
        call(page(), method, json!({})).await?;
    }
    call(page(), "Page.setLifecycleEventsEnabled", json!({ "enabled": true })).await?;

    // The page's problems, and the loaders whose document finished loading.
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let (loaded_tx, mut loaded_rx) = watch::channel(Vec::<String>::new());
    let p = problems.clone();
    let ours = session.clone();
    let collector = AbortOnDrop(tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if ev.session.as_deref() != Some(ours.as_str()) {
                continue;
            }
            if ev.method == "Page.lifecycleEvent" && ev.params["name"] == "load" {
                let loader = ev.params["loaderId"].as_str().unwrap_or_default().to_string();
                loaded_tx.send_modify(|l| l.push(loader));
            } else if let Some(problem) = problem(&ev) {
                p.lock().expect("problems lock").push(problem);
            }
        }
    }));

    let cookie = json!({ "cookies": [ { "name": cookie_name, "value": cookie, "url": url, "httpOnly": true } ] });
    call(page(), "Network.setCookies", cookie).await.map_err(|e| BrowserError(format!("set the preview cookie: {}", e.0)))?;
    let nav = call(page(), "Page.navigate", json!({ "url": url })).await?;
    let load_error = match nav["errorText"].as_str() {
        Some(err) if !err.is_empty() => Some(err.to_string()),
        _ => {
            let loader = nav["loaderId"].as_str().unwrap_or_default().to_string();
            let done = loaded_rx.wait_for(|l| l.contains(&loader));
            match tokio::time::timeout(LOAD_TIMEOUT, done).await {
                Ok(Ok(_)) => None,
                Ok(Err(_)) => Some("the browser went away".to_string()),
                Err(_) => Some(format!("the load event did not come within {} s", LOAD_TIMEOUT.as_secs())),
            }
        }
    };
    tokio::time::sleep(SETTLE).await;
    let title = evaluate(cdp, &session, "document.title").await;
    let text: String = evaluate(cdp, &session, "document.body ? document.body.innerText : ''").await.chars().take(TEXT_LIMIT).collect();
    let shot = call(page(), "Page.captureScreenshot", json!({ "format": "png" })).await?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap_or_default())
        .map_err(|e| BrowserError(format!("screenshot: {e}")))?;
    drop(collector);
    let problems = problems.lock().expect("problems lock").clone();
    let mut out = format!("opened {url}\ntitle: {title}\n");
    if let Some(err) = load_error {
        out.push_str(&format!("load failed: {err}\n"));
    }
    if problems.is_empty() {
        out.push_str("console errors: none\n");
    } else {
        out.push_str(&format!("console errors ({}):\n", problems.len()));
        for p in &problems {
            out.push_str(&format!("- {p}\n"));
        }
    }
    out.push_str(&format!("page text:\n{text}\n(screenshot attached: {} bytes PNG)", png.len()));
    Ok(ToolOutput { text: out, image_png: Some(png), ..Default::default() })
}

/// A console error or assertion, an uncaught exception, or the browser's own error log entry
/// (a failed load, a refused request), as one line; `None` for everything else.
fn problem(ev: &cdp::Event) -> Option<String> {
    let p = &ev.params;
    match ev.method.as_str() {
        "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
            let parts: Vec<String> = p["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| match (&a["value"], a["description"].as_str()) {
                            (Value::String(s), _) => s.clone(),
                            (Value::Null, Some(d)) => d.to_string(),
                            (Value::Null, None) => String::new(),
                            (v, _) => v.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(format!("console.error: {}", parts.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let what = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("(no description)");
            Some(format!("uncaught exception: {what}"))
        }
        "Log.entryAdded" if p["entry"]["level"] == "error" => {
            let url = p["entry"]["url"].as_str();
            // The browser's own favicon request is not the page's fault.
            if url.is_some_and(|u| u.ends_with("/favicon.ico")) {
                return None;
            }
            let at = url.map(|u| format!(" ({u})")).unwrap_or_default();
            Some(format!("{}{at}", p["entry"]["text"].as_str().unwrap_or_default()))
        }
        _ => None,
    }
}

/// `expression`'s string value in the page, or "" (a page without a body, a script error).
async fn evaluate(cdp: &Cdp, session: &str, expression: &str) -> String {
    let r = cdp.call(Some(session), "Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await;
    r.ok().and_then(|v| v["result"]["value"].as_str().map(str::to_string)).unwrap_or_default()
}

/// The last lines Chromium wrote to stderr (for an error message when a visit fails).
async fn last_lines(stderr: tokio::process::ChildStderr) -> String {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut last = std::collections::VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if last.len() == STDERR_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
    Vec::from(last).join("\n")
}

/// Aborts a helper task when the visit ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

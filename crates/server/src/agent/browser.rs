//! The `browser` tool: headless Chromium on the host, driven over the DevTools protocol
//! ([`chromiumoxide`]). Each visit launches a fresh browser with a throw-away profile, presents
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

use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnable, EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::CookieParam;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::browser::BrowserConfig;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use mayfly_agent::ToolOutput;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Launch, load and capture, all together.
const VISIT_TIMEOUT: Duration = Duration::from_secs(60);
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

fn e(what: &str) -> impl FnOnce(chromiumoxide::error::CdpError) -> BrowserError + '_ {
    move |err| BrowserError(format!("{what}: {err}"))
}

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
            // chromiumoxide starts the executable itself: a launcher drops to the account.
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
        let dead_task = tokio::spawn(async move {
            while let Ok((conn, _)) = dead.accept().await {
                drop(conn);
            }
        });
        let mut builder = BrowserConfig::builder()
            .new_headless_mode()
            .user_data_dir(base.join("profile"))
            .window_size(1280, 800)
            .arg("--disable-gpu")
            .arg(("host-resolver-rules", format!("MAP {} 127.0.0.1", v.host).as_str()))
            .arg(("proxy-server", format!("http://127.0.0.1:{dead_port}").as_str()))
            .arg(("proxy-bypass-list", format!("<-loopback>;{}:{}", v.host, v.port).as_str()));
        builder = match v.run_as {
            Some(_) => builder.chrome_executable(base.join("chromium")),
            // Chromium refuses its sandbox as root: only when the server has no VM accounts.
            None => builder.chrome_executable(&self.path).no_sandbox(),
        };
        let config = builder.build().map_err(BrowserError)?;
        let launched = chromiumoxide::Browser::launch(config).await.map_err(e("launch"));
        let (mut browser, mut handler) = match launched {
            Ok(b) => b,
            Err(err) => {
                dead_task.abort();
                return Err(err);
            }
        };
        let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let result = self.load(&browser, v.url, v.cookie_name, v.cookie).await;
        let _ = browser.close().await;
        let _ = browser.wait().await;
        pump.abort();
        dead_task.abort();
        result
    }

    async fn load(&self, browser: &chromiumoxide::Browser, url: &str, cookie_name: &str, cookie: &str) -> Result<ToolOutput, BrowserError> {
        let page = browser.new_page("about:blank").await.map_err(e("new page"))?;
        page.execute(LogEnable::default()).await.map_err(e("enable log"))?;
        let problems = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut console = page.event_listener::<EventConsoleApiCalled>().await.map_err(e("listen"))?;
        let mut thrown = page.event_listener::<EventExceptionThrown>().await.map_err(e("listen"))?;
        let mut log = page.event_listener::<EventEntryAdded>().await.map_err(e("listen"))?;
        let p = problems.clone();
        let collector = tokio::spawn(async move {
            let push = |s: String| p.lock().expect("problems lock").push(s);
            loop {
                tokio::select! {
                    Some(ev) = console.next() => {
                        if matches!(ev.r#type, ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert) {
                            let parts: Vec<String> = ev.args.iter().map(|a| match (&a.value, &a.description) {
                                (Some(serde_json::Value::String(s)), _) => s.clone(),
                                (Some(v), _) => v.to_string(),
                                (None, Some(d)) => d.clone(),
                                (None, None) => String::new(),
                            }).collect();
                            push(format!("console.error: {}", parts.join(" ")));
                        }
                    }
                    Some(ev) = thrown.next() => {
                        let d = &ev.exception_details;
                        let what = d.exception.as_ref().and_then(|x| x.description.clone()).unwrap_or_else(|| d.text.clone());
                        push(format!("uncaught exception: {what}"));
                    }
                    Some(ev) = log.next() => {
                        // The browser's own favicon request is not the page's fault.
                        let favicon = ev.entry.url.as_deref().is_some_and(|u| u.ends_with("/favicon.ico"));
                        if ev.entry.level == LogEntryLevel::Error && !favicon {
                            let at = ev.entry.url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default();
                            push(format!("{}{at}", ev.entry.text));
                        }
                    }
                    else => break,
                }
            }
        });
        let c = CookieParam::builder().name(cookie_name).value(cookie).url(url).http_only(true).build().map_err(BrowserError)?;
        page.set_cookie(c).await.map_err(e("set the preview cookie"))?;
        let loaded = page.goto(url).await.map_err(e("open the page"));
        tokio::time::sleep(SETTLE).await;
        let title = page.get_title().await.ok().flatten().unwrap_or_default();
        let text: String = page
            .evaluate("document.body ? document.body.innerText : ''")
            .await
            .ok()
            .and_then(|r| r.into_value::<String>().ok())
            .unwrap_or_default()
            .chars()
            .take(TEXT_LIMIT)
            .collect();
        let png = page.screenshot(ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build()).await.map_err(e("screenshot"))?;
        collector.abort();
        let problems = problems.lock().expect("problems lock").clone();
        let mut out = format!("opened {url}\ntitle: {title}\n");
        if let Err(err) = loaded {
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
}

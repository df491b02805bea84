//! The `browser` tool: headless Chromium on the host, driven over the DevTools protocol
//! ([`chromiumoxide`]). Each visit launches a fresh browser with a throw-away profile, presents
//! the preview cookie for exactly the one preview host (signed like the proxy's own), opens the
//! page on this server's listener, and returns a PNG screenshot, the title, the start of the
//! page text and every console error, uncaught exception and failed load it saw.
//!
//! Chromium never gets the API token or the model key: only the host-only preview cookie.

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

    /// Opens `url` (whose host is `host`, mapped to this machine) with the preview cookie.
    pub async fn visit(&self, url: &str, host: &str, cookie_name: &str, cookie: &str) -> ToolOutput {
        let profile = std::env::temp_dir().join(format!("mayfly-browser-{:016x}", rand::random::<u64>()));
        let r = tokio::time::timeout(VISIT_TIMEOUT, self.capture(url, host, cookie_name, cookie, &profile)).await;
        let _ = std::fs::remove_dir_all(&profile);
        match r {
            Ok(Ok(out)) => out,
            Ok(Err(err)) => ToolOutput::error(err.to_string()),
            Err(_) => ToolOutput::error(format!("browser: {url} did not load within {} s", VISIT_TIMEOUT.as_secs())),
        }
    }

    async fn capture(&self, url: &str, host: &str, cookie_name: &str, cookie: &str, profile: &Path) -> Result<ToolOutput, BrowserError> {
        let config = BrowserConfig::builder()
            .chrome_executable(&self.path)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile)
            .window_size(1280, 800)
            .arg("--disable-gpu")
            .arg(("host-resolver-rules", format!("MAP {host} 127.0.0.1").as_str()))
            .build()
            .map_err(BrowserError)?;
        let (mut browser, mut handler) = chromiumoxide::Browser::launch(config).await.map_err(e("launch"))?;
        let pump = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let result = self.load(&browser, url, cookie_name, cookie).await;
        let _ = browser.close().await;
        let _ = browser.wait().await;
        pump.abort();
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

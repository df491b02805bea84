//! The agent's tools against one session's VM ([`mayfly_agent::Tools`]): files through the
//! guest's file operations, `search` via `rg` (or `grep -rn` where ripgrep is missing), `ports`
//! from the port watcher, `http` through the preview proxy on this server's own listener (so the
//! request takes the same path a browser's would), `browser` via [`super::browser`].
//! Relative paths are taken from `/root`. Every failure is an error result for the model.

use super::browser::Browser;
use crate::preview::access::Signer;
use super::shell::{read_text, AgentShell};
use crate::manager::{FileEntry, SessionError, SessionManager};
use mayfly_agent::{ToolOutput, Tools};
use mayfly_proto::api::ExecBody;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest file `read_file` and `edit_file` handle.
const FILE_LIMIT: usize = 1 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct VmTools {
    pub manager: Arc<SessionManager>,
    pub session: String,
    pub shell: AgentShell,
    pub shell_timeout: Duration,
    /// This server's listener and token, for `http` through the preview proxy.
    pub local: SocketAddr,
    pub token: String,
    /// The browser and the key to sign its preview cookie with.
    pub browser: Option<(Arc<Browser>, Arc<Signer>)>,
    /// Checked after every call: a tool that returned because the session ended ends the run.
    pub(crate) ended: super::session_end::SessionEnd,
}

fn abs(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/root/{}", path.trim_start_matches("./"))
    }
}

fn arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    args[name].as_str().ok_or_else(|| format!("missing string argument `{name}`"))
}

fn err(e: SessionError) -> String {
    e.to_string()
}

#[async_trait::async_trait]
impl Tools for VmTools {
    async fn call(&self, name: &str, args: Value) -> ToolOutput {
        let out = self.dispatch(name, args).await;
        self.ended.check();
        out
    }
}

impl VmTools {
    async fn dispatch(&self, name: &str, args: Value) -> ToolOutput {
        let mut paths = Vec::new();
        let r = match name {
            "shell" => self.shell(&args).await,
            "read_file" => self.read_file(&args).await,
            "write_file" => self.write_file(&args, &mut paths).await,
            "edit_file" => self.edit_file(&args, &mut paths).await,
            "list_dir" => self.list_dir(&args).await,
            "search" => self.search(&args).await,
            "ports" => self.ports().await,
            "http" => self.http(&args).await,
            "browser" => return self.browser(&args).await,
            other => Err(format!("unknown tool {other:?}")),
        };
        match r {
            Ok(text) => ToolOutput { paths, ..ToolOutput::ok(text) },
            Err(e) => ToolOutput::error(e),
        }
    }
}

impl VmTools {
    /// The agent acts as the server on the run's session (access was checked when it started).
    fn sref(&self) -> crate::access::SessionRef {
        crate::access::system(&self.session, "agent")
    }

    async fn shell(&self, args: &Value) -> Result<String, String> {
        let command = arg(args, "command")?;
        let timeout = match args["timeout_seconds"].as_u64() {
            Some(s) => Duration::from_secs(s.clamp(1, self.shell_timeout.as_secs().max(1) * 4)),
            None => self.shell_timeout,
        };
        let r = self.shell.run(command, timeout).await.map_err(err)?;
        let head = match (r.timed_out, r.exit_code) {
            (true, _) => format!("timed out after {} s; the command was killed", timeout.as_secs()),
            (false, Some(c)) => format!("exit code {c}"),
            (false, None) => "exit code unknown".to_string(),
        };
        Ok(format!("{head}\n{}", r.output))
    }

    async fn read_file(&self, args: &Value) -> Result<String, String> {
        let path = abs(arg(args, "path")?);
        read_text(&self.manager, &self.sref(), &path, FILE_LIMIT).await.map_err(err)
    }

    async fn write(&self, path: &str, content: &str, paths: &mut Vec<String>) -> Result<(), String> {
        self.manager.write_file(&self.sref(), path, content.as_bytes()).await.map_err(err)?;
        paths.push(path.to_string());
        Ok(())
    }

    async fn write_file(&self, args: &Value, paths: &mut Vec<String>) -> Result<String, String> {
        let path = abs(arg(args, "path")?);
        let content = arg(args, "content")?;
        self.write(&path, content, paths).await?;
        Ok(format!("wrote {} bytes to {path}", content.len()))
    }

    async fn edit_file(&self, args: &Value, paths: &mut Vec<String>) -> Result<String, String> {
        let path = abs(arg(args, "path")?);
        let old = arg(args, "old_string")?;
        let new = arg(args, "new_string")?;
        let text = read_text(&self.manager, &self.sref(), &path, FILE_LIMIT).await.map_err(err)?;
        let edited = replace_once(&text, old, new).map_err(|e| format!("{path}: {e}"))?;
        self.write(&path, &edited, paths).await?;
        Ok(format!("edited {path}"))
    }

    async fn list_dir(&self, args: &Value) -> Result<String, String> {
        let path = abs(args["path"].as_str().unwrap_or("/root"));
        match self.manager.read_path(&self.sref(), &path).await.map_err(err)? {
            FileEntry::File { size, .. } => Ok(format!("{path} is a file of {size} bytes")),
            FileEntry::Dir(entries) => {
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| match e.kind {
                        mayfly_proto::msg::FileType::Dir => format!("{}/", e.name),
                        _ => format!("{}  ({} bytes)", e.name, e.size),
                    })
                    .collect();
                Ok(if lines.is_empty() { format!("{path} is empty") } else { lines.join("\n") })
            }
        }
    }

    async fn search(&self, args: &Value) -> Result<String, String> {
        let pattern = arg(args, "pattern")?;
        let path = abs(args["path"].as_str().unwrap_or("/root"));
        // The pattern and path are positional parameters, never spliced into the script.
        let script = "if command -v rg >/dev/null 2>&1; then rg -n --no-heading --max-columns 300 -e \"$1\" \"$2\"; \
                      else grep -rnE --exclude-dir=.git -e \"$1\" \"$2\"; fi";
        let body = ExecBody {
            cmd: vec!["sh".into(), "-c".into(), script.into(), "search".into(), pattern.into(), path],
            cwd: None,
            env: Default::default(),
            timeout_seconds: Some(60),
        };
        let r = self.manager.exec(&self.sref(), body).await.map_err(err)?;
        match r.exit_code {
            Some(0) => Ok(r.stdout),
            Some(1) => Ok("no matches".into()),
            _ => Err(format!("search failed: {}{}", r.stderr, if r.timed_out { " (timed out)" } else { "" })),
        }
    }

    async fn ports(&self) -> Result<String, String> {
        let ports = self.manager.ports(&self.sref()).await.map_err(err)?;
        if ports.is_empty() {
            return Ok("no port is listening".into());
        }
        Ok(ports.iter().map(|p| format!("{}  {}", p.port, p.url)).collect::<Vec<_>>().join("\n"))
    }

    /// The preview host of `port` (the Host header the preview proxy routes on).
    fn preview_host(&self, port: u16) -> Result<String, String> {
        let url = self.manager.preview_url_of(&self.session, port);
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        Ok(rest.split('/').next().unwrap_or_default().to_string())
    }

    async fn http(&self, args: &Value) -> Result<String, String> {
        let port = port_arg(args)?;
        let path = request_path(args)?;
        let method: reqwest::Method =
            args["method"].as_str().unwrap_or("GET").to_ascii_uppercase().parse().map_err(|_| "invalid method".to_string())?;
        let client = reqwest::Client::builder().timeout(HTTP_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
        let mut req = client
            .request(method, format!("http://{}{path}", self.local))
            .header(reqwest::header::HOST, self.preview_host(port)?)
            .bearer_auth(&self.token);
        if let Some(b) = args["body"].as_str() {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("request failed: {e}"))?;
        let mut out = format!("HTTP {}\n", resp.status());
        for (k, v) in resp.headers() {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("<binary>")));
        }
        let body = resp.text().await.map_err(|e| format!("reading the body failed: {e}"))?;
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }

    async fn browser(&self, args: &Value) -> ToolOutput {
        let Some((browser, signer)) = &self.browser else {
            return ToolOutput::error("the browser tool is not available on this server (no Chromium found)");
        };
        let (port, path) = match (port_arg(args), request_path(args)) {
            (Ok(p), Ok(path)) => (p, path),
            (Err(e), _) | (_, Err(e)) => return ToolOutput::error(e),
        };
        let host = match self.preview_host(port) {
            Ok(h) => h,
            Err(e) => return ToolOutput::error(e),
        };
        // The preview host, but on this server's own listener (the public URL may be a proxy).
        let name = host.rsplit_once(':').map(|(n, _)| n).unwrap_or(&host).to_string();
        let url = format!("http://{name}:{}{path}", self.local.port());
        let target = crate::preview::host::Target { session: self.session.clone(), port };
        let expires = crate::preview::access::unix_now() + 600;
        let cookie = signer.sign(crate::preview::access::Kind::Cookie, &target, expires);
        // Chromium runs as the session VM's own uid: whatever a page does to it stays inside
        // this session's blast radius.
        let run_as = match self.manager.vm_account(&self.sref()).await {
            Ok(a) => a,
            Err(e) => return ToolOutput::error(format!("browser: {e}")),
        };
        let visit = crate::agent::browser::Visit { url: &url, host: &name, port: self.local.port(), cookie_name: crate::preview::access::COOKIE, cookie: &cookie, run_as };
        browser.visit(&visit).await
    }
}

fn port_arg(args: &Value) -> Result<u16, String> {
    args["port"].as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0).ok_or_else(|| "`port` must be a TCP port number".to_string())
}

fn request_path(args: &Value) -> Result<String, String> {
    let path = args["path"].as_str().unwrap_or("/");
    if !path.starts_with('/') {
        return Err(format!("`path` must start with /, got {path:?}"));
    }
    Ok(path.to_string())
}

/// `text` with the single occurrence of `old` replaced; an error when `old` is empty, missing or
/// ambiguous.
pub fn replace_once(text: &str, old: &str, new: &str) -> Result<String, String> {
    if old.is_empty() {
        return Err("old_string is empty".into());
    }
    match text.matches(old).count() {
        0 => Err("old_string was not found (it must match exactly, whitespace included); read the file again".into()),
        1 => Ok(text.replacen(old, new, 1)),
        n => Err(format!("old_string occurs {n} times; include more surrounding text so it matches once")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_once_table() {
        assert_eq!(replace_once("a b c", "b", "x"), Ok("a x c".into()));
        assert!(replace_once("a b c", "z", "x").unwrap_err().contains("not found"));
        assert!(replace_once("b b", "b", "x").unwrap_err().contains("occurs 2 times"));
        assert!(replace_once("abc", "", "x").is_err());
    }

    #[test]
    fn relative_paths_are_under_root() {
        assert_eq!(abs("app.py"), "/root/app.py");
        assert_eq!(abs("./src/x"), "/root/src/x");
        assert_eq!(abs("/etc/hosts"), "/etc/hosts");
    }
}

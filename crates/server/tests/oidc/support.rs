//! A real OpenID Connect provider (`provider.mjs`, the `oidc-provider` package under Node) as a
//! child process, and a browser-like client that signs in through its login form.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_server::users::oidc::{Oidc, OidcSettings, PendingLogin};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

/// Generous: Node starting on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(60);

/// Where the provider sends the browser back. Nothing listens there: the test stops at it.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/oidc/callback";
/// The confidential client Mayfly is registered as.
pub const CLIENT_ID: &str = "mayfly";
pub const CLIENT_SECRET: &str = "mayfly-test-secret";
/// Another confidential client (for wrong-audience tokens).
pub const OTHER_CLIENT_ID: &str = "other-app";
/// A public client (PKCE, no secret).
pub const PUBLIC_CLIENT_ID: &str = "mayfly-public";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Node as the project finds it: `.tools/node` (scripts/install-node) first, else `PATH`.
/// Missing Node or `oidc-provider` fails the test, saying what to run.
fn node() -> PathBuf {
    let root = repo_root();
    let package = root.join("web/node_modules/oidc-provider/package.json");
    assert!(
        package.is_file(),
        "{} is missing: the OpenID Connect tests need the web packages; run `npm ci` in web/",
        package.display()
    );
    let tools = root.join(".tools/node/node_modules/.bin/node");
    if tools.is_file() {
        return tools;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("node"))
        .find(|p| p.is_file())
        .expect("Node.js 20+ is needed for the OpenID Connect tests: run scripts/install-node (or install node), then `npm ci` in web/")
}

/// The provider process; killed when dropped.
pub struct Provider {
    pub issuer: String,
    _child: Child,
    _stdin: ChildStdin,
}

#[derive(Default)]
pub struct ProviderOptions {
    pub port: u16,
    pub id_token_ttl_secs: Option<u64>,
}

impl Provider {
    pub async fn start() -> Provider {
        Provider::start_with(ProviderOptions::default()).await
    }

    pub async fn start_with(options: ProviderOptions) -> Provider {
        let clients = json!([
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [REDIRECT_URI]},
            {"client_id": OTHER_CLIENT_ID, "client_secret": "other-secret", "redirect_uris": [REDIRECT_URI]},
            {"client_id": PUBLIC_CLIENT_ID, "redirect_uris": [REDIRECT_URI]},
        ]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut command = Command::new(node());
        command
            .arg(&script)
            .arg(options.port.to_string())
            .env("OIDC_CLIENTS", clients.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(ttl) = options.id_token_ttl_secs {
            command.env("OIDC_ID_TOKEN_TTL", ttl.to_string());
        }
        let mut child = command.spawn().expect("spawn node for the OpenID Connect provider");
        let stdin = child.stdin.take().expect("stdin");
        // Keep stderr (its warnings, or why it failed) for the failure message.
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = stderr_text.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if !line.contains("WARNING") {
                    eprintln!("[oidc-provider] {line}");
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(STARTUP, stdout.next_line()).await;
        let issuer = match line {
            Ok(Ok(Some(line))) => serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["issuer"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("unexpected first line from provider.mjs: {line}")),
            other => {
                // Let the stderr reader catch up before reporting.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the OpenID Connect provider did not start ({other:?}); its stderr:\n{}",
                    stderr_text.lock().unwrap()
                )
            }
        };
        // Keep reading stdout, so that nothing the provider prints there fails on a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Provider { issuer, _child: child, _stdin: stdin }
    }

    /// Settings for Mayfly's confidential client at this provider, asking for groups.
    pub fn settings(&self) -> OidcSettings {
        let mut s = OidcSettings::new(&self.issuer, CLIENT_ID);
        s.client_secret = Some(CLIENT_SECRET.to_string());
        s.display_name = "Test IdP".to_string();
        s.scopes = vec!["groups".to_string()];
        s
    }

    pub fn oidc(&self) -> Oidc {
        Oidc::new(self.settings(), REDIRECT_URI.to_string()).expect("valid settings")
    }
}

/// What the provider sent back to the redirect URI.
pub struct Callback {
    pub code: String,
    pub state: String,
}

/// Starts a sign-in and goes through the provider as a browser would, logging in as `login`.
pub async fn sign_in(oidc: &Oidc, login: &str) -> (PendingLogin, Callback) {
    let (url, pending) = oidc.start("/sessions").await.expect("start a sign-in");
    let callback = browse(url, login).await;
    (pending, callback)
}

/// Follows the provider's redirects and forms from `url` (cookies kept), filling the login
/// form with `login` and accepting consent, until it redirects to [`REDIRECT_URI`].
pub async fn browse(url: Url, login: &str) -> Callback {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut next = url;
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        if next.as_str().starts_with(REDIRECT_URI) {
            let query: std::collections::HashMap<_, _> = next.query_pairs().into_owned().collect();
            assert!(!query.contains_key("error"), "the provider answered with an error: {next}");
            return Callback {
                code: query.get("code").cloned().unwrap_or_else(|| panic!("no code in {next}")),
                state: query.get("state").cloned().unwrap_or_else(|| panic!("no state in {next}")),
            };
        }
        let response = match form.take() {
            Some(fields) => browser.post(next.clone()).form(&fields).send().await,
            None => browser.get(next.clone()).send().await,
        }
        .unwrap_or_else(|e| panic!("request to {next}: {e}"));
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers()["location"].to_str().unwrap().to_string();
            next = next.join(&location).unwrap();
            continue;
        }
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{status} from {next}:\n{body}");
        let (action, mut fields) = parse_form(&body).unwrap_or_else(|| panic!("no form at {next}:\n{body}"));
        if body.contains("name=\"login\"") {
            fields.push(("login".to_string(), login.to_string()));
            fields.push(("password".to_string(), "any password".to_string()));
        }
        next = next.join(&action).unwrap();
        form = Some(fields);
    }
    panic!("too many steps before reaching the redirect URI");
}

/// The first form's action and its hidden fields.
fn parse_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = &html[html.find("<form")?..];
    let form = &form[..form.find("</form>")?];
    let action = attribute(&form[..form.find('>')?], "action")?;
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if attribute(tag, "type").as_deref() == Some("hidden") {
            if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
                fields.push((name, value));
            }
        }
    }
    Some((action, fields))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&#x2F;", "/")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The (unverified) claims of a JWT, to read `exp` or tamper with them.
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `jwt` with its claims replaced, keeping the old signature.
pub fn with_claims(jwt: &str, claims: &Value) -> String {
    use base64::Engine;
    let parts: Vec<&str> = jwt.split('.').collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

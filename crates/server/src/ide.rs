//! The browser IDE's pages and assets: the `web/` front end, built by Vite into `web/dist` and
//! embedded in the binary (`build.rs` picks the folder). The pages only load; everything they
//! show comes from `/api/v1`.
//!
//! | path | serves |
//! |---|---|
//! | `/` | the sessions page (`index.html`) |
//! | `/login` | the login page (`login.html`); a browser already logged in goes on to `next` |
//! | `/account` | the account pages (`account.html`: API tokens, git tokens, quotas; users and audit for admins) |
//! | `/s/{id}` | the IDE of session `id` (`ide.html`) |
//! | `/assets/*` | hashed JS, CSS, fonts and workers |
//!
//! Pages need the login cookie (or token): a browser without it is redirected to
//! `/login?next=<path>`, never shown an empty page. Hashed assets are cacheable for a year
//! (`immutable`); pages are `no-cache` and revalidate with their ETag. Without a web build every
//! page says how to make one.

use crate::api::AppState;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

#[derive(rust_embed::RustEmbed)]
#[folder = "$MAYFLY_WEB_DIST"]
struct Dist;

/// Shown for every page when the binary was built without `web/dist`.
const NOT_BUILT: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Mayfly</title>
<style>body{background:#1e1e1e;color:#ccc;font:15px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0}
code{background:#2d2d2d;padding:2px 6px;border-radius:3px;color:#9cdcfe}main{max-width:560px;line-height:1.6}</style></head>
<body><main><h1>The Mayfly IDE is not built</h1><p>This binary was compiled before the web front end was built.
Run <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>, then <code>cargo build --release</code> again
(<code>scripts/run</code> does both). The API at <code>/api/v1</code> works meanwhile.</p></main></body></html>"#;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/account", get(account))
        .route("/s/{id}", get(ide))
        .route("/assets/{*path}", get(asset))
}

/// True when the request is signed in (any credential).
async fn signed_in(st: &AppState, headers: &HeaderMap) -> bool {
    st.auth.principal(st.manager.accounts(), headers).await.is_some()
}

async fn home(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !signed_in(&st, &headers).await {
        return to_login("/");
    }
    page("index.html", &headers)
}

async fn account(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !signed_in(&st, &headers).await {
        return to_login("/account");
    }
    page("account.html", &headers)
}

async fn ide(State(st): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !mayfly_vm::valid_id(&id) {
        return (StatusCode::NOT_FOUND, "no such session\n").into_response();
    }
    if !signed_in(&st, &headers).await {
        return to_login(&format!("/s/{id}"));
    }
    page("ide.html", &headers)
}

async fn login(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    if signed_in(&st, &headers).await {
        let next = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned());
        return redirect(safe_next(next.as_deref()));
    }
    page("login.html", &headers)
}

async fn asset(Path(path): Path<String>) -> Response {
    match Dist::get(&format!("assets/{path}")) {
        Some(f) => (
            [
                (CONTENT_TYPE, content_type(&path)),
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            f.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, [(CACHE_CONTROL, "no-store")], "no such asset\n").into_response(),
    }
}

/// Where to go after logging in: a path on this origin, else `/` (never another site).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) => n,
        _ => "/",
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(LOCATION, to.to_string()), (CACHE_CONTROL, "no-store".to_string())]).into_response()
}

fn to_login(next: &str) -> Response {
    let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
    redirect(&format!("/login?{query}"))
}

fn page(name: &str, headers: &HeaderMap) -> Response {
    let security = [(X_CONTENT_TYPE_OPTIONS, "nosniff"), (X_FRAME_OPTIONS, "DENY"), (REFERRER_POLICY, "same-origin")];
    let Some(f) = Dist::get(name) else {
        let html = [(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-store")];
        return (html, security, NOT_BUILT).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&f.metadata.sha256_hash()[..16]));
    let cache = [(ETAG, etag.clone()), (CACHE_CONTROL, "no-cache".to_string())];
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], cache, security, f.data).into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("ttf") => "font/ttf",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;

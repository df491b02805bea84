//! The HTML pages a preview answers with when it cannot forward: not listening yet (502, retries
//! by itself), session gone (404), bad address (400), sign-in needed (401/403). Each also says
//! what happened in the `X-Mayfly-Preview` header, for scripts and tests.

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, code: &'static str, title: &str, body_html: &str, extra_head: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title>{extra_head}<style>body{{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;\
         padding:0 1em;color:#222}}h1{{font-size:1.3em}}code{{background:#f2f2f2;padding:0 .2em}}.muted{{color:#777}}\
         </style></head><body><h1>{t}</h1>{body_html}<p class=\"muted\">Mayfly preview &middot; {status}</p></body></html>\n",
        t = esc(title),
        status = status.as_u16(),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-mayfly-preview", HeaderValue::from_static(code));
    r
}

/// Retries with backoff (1 s, 2 s, 4 s … 10 s) until the port answers, then reloads.
const RETRY_SCRIPT: &str = "<noscript><meta http-equiv=\"refresh\" content=\"3\"></noscript><script>\
(function(){var d=1000,n=document.getElementById('next');function tick(){fetch(location.href,{method:'HEAD',\
cache:'no-store',credentials:'include'}).then(function(r){if(r.headers.get('x-mayfly-preview')!=='not_listening')\
{location.reload();}else{wait();}},wait);}function wait(){if(n)n.textContent=Math.round(d/1000);setTimeout(tick,d);\
d=Math.min(d*2,10000);}wait();})();</script>";

pub fn not_listening(port: u16) -> Response {
    let body = format!(
        "<p>Nothing is listening on port <code>{port}</code> inside this session yet.</p>\
         <p>Start your server on port {port} (any address: <code>127.0.0.1</code>, <code>0.0.0.0</code> or \
         <code>::</code>); this page reloads by itself once it answers. Next try in <span id=\"next\">1</span> s.</p>"
    );
    let mut r = page(StatusCode::BAD_GATEWAY, "not_listening", &format!("Port {port} is not listening"), &body, RETRY_SCRIPT);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn starting(session: &str) -> Response {
    let body = format!("<p>Session <code>{}</code> is still starting; this page reloads by itself.</p>", esc(session));
    let mut r = page(StatusCode::SERVICE_UNAVAILABLE, "starting", "Session starting", &body, "<meta http-equiv=\"refresh\" content=\"2\">");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    r
}

pub fn bad_gateway(port: u16, why: &str) -> Response {
    let body = format!("<p>The server on port <code>{port}</code> failed: {}.</p><p>Reload to try again.</p>", esc(why));
    page(StatusCode::BAD_GATEWAY, "upstream_failed", &format!("Port {port} failed"), &body, "")
}

pub fn session_gone(session: &str) -> Response {
    let body = format!(
        "<p>There is no session <code>{}</code> (any more): it ended, was deleted or never existed.</p>",
        esc(session)
    );
    page(StatusCode::NOT_FOUND, "session_gone", "Session not found", &body, "")
}

pub fn bad_address(message: &str) -> Response {
    let body = format!("<p>{}</p>", esc(message));
    let mut r = page(StatusCode::BAD_REQUEST, "bad_address", "Bad preview address", &body, "");
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A request whose framing was ambiguous (both `Transfer-Encoding` and `Content-Length`).
pub fn ambiguous_framing() -> Response {
    let body = "<p>The request has both <code>Transfer-Encoding</code> and <code>Content-Length</code>; \
                it was refused and not forwarded.</p>";
    let mut r = page(StatusCode::BAD_REQUEST, "ambiguous_framing", "Bad request", body, "");
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pub fn unauthorized(main_origin: &str) -> Response {
    let body = format!(
        "<p>This preview is private. Sign in to Mayfly at <a href=\"{0}/\">{0}</a>, then reload this page, \
         or send <code>Authorization: Bearer &lt;token&gt;</code>.</p>",
        esc(main_origin)
    );
    page(StatusCode::UNAUTHORIZED, "unauthorized", "Sign-in needed", &body, "")
}

pub fn link_expired() -> Response {
    let body = "<p>The sign-in link for this preview is invalid or expired. Open the preview URL again.</p>";
    page(StatusCode::FORBIDDEN, "link_expired", "Sign-in link expired", body, "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_escape_what_they_echo() {
        let r = super::session_gone("<script>x</script>");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-mayfly-preview"], "session_gone");
        let r = super::not_listening(8000);
        assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (502, "1"));
        assert_eq!(super::esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}

use crate::common::*;
use super::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn kind(r: &reqwest::Response) -> String {
    r.headers().get("x-mayfly-preview").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_by_default_and_faults() {
    let server = TestServer::start(|_| {}).await;
    // A slow client that never finishes its request head is cut off by the header timeout.
    let slow_addr = addr(&server);
    let slow = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(slow_addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x").await.unwrap();
        let t = Instant::now();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(40), tcp.read_to_end(&mut buf)).await;
        t.elapsed()
    });
    let (a, b) = tokio::join!(
        server.ready_session(json!({"image": "minimal"})),
        server.ready_session(json!({"image": "minimal", "idle_timeout_seconds": 20}))
    );
    let b_ready = Instant::now();
    for id in [&a, &b] {
        install_srv(&server, id).await;
        spawn_in_vm(&server, id, "python3 /root/srv.py 8000", "/tmp/srv.out").await;
    }
    let (ha, hb) = (host(&server, &a, 8000), host(&server, &b, 8000));
    let c = client(&server, &[ha.clone(), hb.clone(), host(&server, &a, 9999), host(&server, "szzzzzzzzzzz", 8000)]);
    wait_serving(&c, &format!("http://{ha}/"), Some(TOKEN)).await;
    wait_serving(&c, &format!("http://{hb}/"), Some(TOKEN)).await;
    // From now on only preview traffic touches b (idle timeout 20 s), every 2 s.
    let stop_keeper = tokio_util::sync::CancellationToken::new();
    let keeper = tokio::spawn({
        let (c, hb, stop) = (c.clone(), hb.clone(), stop_keeper.clone());
        async move {
            while !stop.is_cancelled() {
                let r = c.get(format!("http://{hb}/headers")).bearer_auth(TOKEN).send().await.unwrap();
                assert_eq!(r.status(), 200, "session b was reaped while its preview was in use");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(2)) => {}, _ = stop.cancelled() => {} }
            }
        }
    });

    // The redirect exchange, followed by hand.
    let r = c.get(format!("http://{ha}/page?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to_main = location(&r);
    assert_eq!(to_main, format!("{}/preview/_auth?session={a}&port=8000&next=%2Fpage%3Fx%3D1", server.base));
    let r = c.get(&to_main).send().await.unwrap();
    let back = to_main.trim_start_matches(&server.base);
    let login_then_back = format!("/login?{}", form_urlencoded::Serializer::new(String::new()).append_pair("next", back).finish());
    assert_eq!((r.status().as_u16(), location(&r)), (302, login_then_back), "not signed in at the main origin");
    let login = format!("mayfly_token={TOKEN}");
    let r = c.get(&to_main).header("cookie", &login).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to_preview = location(&r);
    assert!(to_preview.starts_with(&format!("http://{ha}/__mayfly/auth?token=v1.x.{a}.8000.")), "{to_preview}");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let r = c.get(&to_preview).send().await.unwrap();
    assert_eq!((r.status().as_u16(), location(&r)), (302, "/page?x=1".into()));
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("mayfly_preview=v1.c.") && set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(!set_cookie.to_ascii_lowercase().contains("domain"), "host-only: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let r = c.get(format!("http://{ha}/headers")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap().get("cookie"), None, "the preview cookie is not passed on");

    // Another session's cookie and exchange token open nothing; neither does a forged cookie.
    let r = c.get(format!("http://{hb}/headers")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 302, "a's cookie on b's preview");
    let stolen = to_preview.replace(&ha, &hb);
    assert_eq!(c.get(&stolen).send().await.unwrap().status(), 403, "a's exchange token on b's host");
    let forged = cookie.replace(&format!(".{a}."), &format!(".{b}."));
    assert_eq!(c.get(format!("http://{hb}/headers")).header("cookie", &forged).send().await.unwrap().status(), 302);

    // API clients: the bearer token; requests that are not page loads get 401, not a redirect.
    assert_eq!(c.get(format!("http://{hb}/headers")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    assert_eq!(c.post(format!("http://{ha}/upload")).body("x").send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("http://{ha}/")).bearer_auth("wrong").send().await.unwrap().status(), 401);

    // Public and back to private.
    let patch = |v: &'static str| {
        server.http.patch(server.url(&format!("/api/v1/sessions/{a}/ports/8000"))).json(&json!({"visibility": v})).send()
    };
    assert_eq!(patch("public").await.unwrap().status(), 200);
    assert_eq!(c.get(format!("http://{ha}/headers")).send().await.unwrap().status(), 200, "public needs no auth");
    assert_eq!(c.get(format!("http://{hb}/headers")).send().await.unwrap().status(), 302, "only that port is public");
    assert_eq!(patch("private").await.unwrap().status(), 200);
    assert_eq!(c.get(format!("http://{ha}/headers")).send().await.unwrap().status(), 302);

    // A preview page may not use the user's login cookie on the API.
    let r = c.get(server.url("/api/v1/sessions")).header("cookie", &login).header("origin", format!("http://{ha}")).send().await.unwrap();
    assert_eq!(r.status(), 403, "cross-origin cookie use");
    let r = c.get(server.url("/api/v1/sessions")).header("cookie", &login).header("origin", server.base.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200, "same-origin cookie use");

    bad_addresses_and_faults(&server, &c, &a, &ha).await;
    // Preview traffic kept b alive for longer than its idle timeout.
    if let Some(rest) = Duration::from_secs(30).checked_sub(b_ready.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop_keeper.cancel();
    keeper.await.expect("b stayed alive while its preview was used");
    gone(&server, &c, &b, &hb).await;

    let waited = slow.await.unwrap();
    assert!(waited < Duration::from_secs(25), "slow client held the connection {waited:?}");
    server.stop().await;
}

async fn bad_addresses_and_faults(server: &TestServer, c: &reqwest::Client, a: &str, ha: &str) {
    // Nothing listening: a 502 page that retries; unknown session: 404.
    let r = c.get(format!("http://{}/", host(server, a, 9999))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!((r.status().as_u16(), kind(&r)), (502, "not_listening".into()));
    let page = r.text().await.unwrap();
    assert!(page.contains("Nothing is listening on port <code>9999</code>") && page.contains("location.reload"), "{page}");
    let r = c.get(format!("http://{}/", host(server, "szzzzzzzzzzz", 8000))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!((r.status().as_u16(), kind(&r)), (404, "session_gone".into()));

    // Bad addresses: clear 400s, over a raw connection (any Host header at all).
    let sp = port_of(server);
    for (bad, says) in [
        (format!("80-{a}.localhost:{sp}"), "privileged"),
        (format!("70000-{a}.localhost:{sp}"), "out of range"),
        (format!("{sp}-{a}.localhost:{sp}"), "control plane"),
        (format!("hello.localhost:{sp}"), "malformed"),
        (format!("8000-{a}.localhost:http"), "malformed"),
    ] {
        let out = raw_exchange(server, format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n").as_bytes(), Duration::from_secs(10)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad}: {out}");
        assert!(out.contains(says), "{bad}: {out}");
    }
    let r = c.get(server.url(&format!("/preview/{a}/22/"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Smuggling: Content-Length and Transfer-Encoding together → 400, nothing forwarded.
    for (host_header, what) in [(ha.to_string(), "preview"), (addr(server).to_string(), "API")] {
        let raw = format!(
            "POST /upload HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 40\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {ha}\r\n\r\n"
        );
        let out = raw_exchange(server, raw.as_bytes(), Duration::from_secs(10)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert_eq!(out.matches("HTTP/1.1").count(), 1, "{what}: one response, then close: {out}");
    }
    let log = server.http.get(server.url(&format!("/api/v1/sessions/{a}/files?path=/tmp/srv.log"))).send().await.unwrap();
    let log = log.text().await.unwrap();
    assert!(!log.contains("smuggled") && !log.contains("POST /upload"), "forwarded: {log}");
    assert_eq!(c.get(format!("http://{ha}/headers")).bearer_auth(TOKEN).send().await.unwrap().status(), 200, "still serving");
}

async fn gone(server: &TestServer, c: &reqwest::Client, b: &str, hb: &str) {
    // Left alone it is reaped (the session list does not count as activity); then its
    // previews are 404.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = server.get("/api/v1/sessions").await;
        if !list.as_array().unwrap().iter().any(|s| s["id"] == b && s["state"] == "ready") {
            break;
        }
        assert!(Instant::now() < deadline, "b was never reaped");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.get(format!("http://{hb}/")).bearer_auth(TOKEN).send().await.unwrap();
        if r.status() == 404 {
            assert_eq!(kind(&r), "session_gone");
            break;
        }
        assert!(Instant::now() < deadline, "preview of a reaped session answers {}", r.status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! Decisions of [`Egress::connect`] against real sockets on this host (no VM needed).

use super::*;
use tokio::net::TcpListener;

fn policy(mode: EgressMode, allow: &[&str]) -> Policy {
    Policy::parse(&Network { egress: mode, allow: allow.iter().map(|s| s.to_string()).collect() }).unwrap()
}

fn denied_reason(r: Result<TcpStream, EgressError>) -> String {
    match r {
        Err(EgressError::Denied(m)) => m,
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

#[tokio::test]
async fn loopback_is_refused_unless_the_operator_allows_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let plain = Egress::new(vec![]);
    let open = policy(EgressMode::Open, &[]);
    let m = denied_reason(plain.connect(&open, "127.0.0.1", port).await);
    assert!(m.contains("`open` policy") && m.contains("loopback"), "{m}");
    let m = denied_reason(plain.connect(&open, "localhost", port).await);
    assert!(m.contains("localhost names"), "{m}");
    let m = denied_reason(plain.connect(&open, "::ffff:127.0.0.1", port).await);
    assert!(m.contains("loopback"), "{m}");

    let operator = Egress::new(vec![format!("127.0.0.1:{port}").parse().unwrap()]);
    operator.connect(&open, "127.0.0.1", port).await.expect("operator exception");
    let listed = policy(EgressMode::Allowlist, &[&format!("127.0.0.1:{port}")]);
    operator.connect(&listed, "127.0.0.1", port).await.expect("listed and excepted");
    let m = denied_reason(operator.connect(&policy(EgressMode::Allowlist, &["pypi.org"]), "127.0.0.1", port).await);
    assert!(m.contains("not in the allowlist"), "{m}");
    let m = denied_reason(operator.connect(&policy(EgressMode::None, &[]), "127.0.0.1", port).await);
    assert!(m.contains("`none` policy") && m.contains("no network access"), "{m}");
    let m = denied_reason(operator.connect(&open, "127.0.0.1", port + 1).await);
    assert!(m.contains("loopback"), "the exception is for one port: {m}");
}

#[tokio::test]
async fn the_control_plane_is_refused_even_with_an_exception() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let e = Egress::new(vec![format!("127.0.0.0/8:{port}").parse().unwrap()]);
    e.set_control_port(port);
    let m = denied_reason(e.connect(&policy(EgressMode::Open, &[]), "127.0.0.1", port).await);
    assert!(m.contains("control plane"), "{m}");
}

#[tokio::test]
async fn names_outside_the_allowlist_are_refused_before_any_lookup() {
    let e = Egress::new(vec![]);
    let p = policy(EgressMode::Allowlist, &["pypi.org"]);
    // `.invalid` never resolves: a lookup would fail with "cannot resolve", not a refusal.
    let m = denied_reason(e.connect(&p, "mirror.invalid", 443).await);
    assert!(m.contains("not in the allowlist"), "{m}");
    let m = denied_reason(e.connect(&p, "pypi.org", 22).await);
    assert!(m.contains("not in the allowlist"), "web ports only: {m}");
    let m = denied_reason(e.connect(&p, "bad name!", 443).await);
    assert!(m.contains("not a valid host name"), "{m}");
    match e.connect(&policy(EgressMode::Open, &[]), "mirror.invalid", 443).await {
        Err(EgressError::Failed(m)) => assert!(m.contains("cannot resolve mirror.invalid"), "{m}"),
        other => panic!("{other:?}"),
    }
}

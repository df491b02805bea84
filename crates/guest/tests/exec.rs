//! `exec` against the real daemon binary.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ErrorKind, ExecRequest, OpenRequest};
use mayfly_proto::mux::Event;
use std::time::{Duration, Instant};

#[tokio::test]
async fn stdout_stderr_exit_code_env_and_cwd() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut req = exec_req(&["/bin/sh", "-c", "echo out; echo err >&2; echo \"$MAYFLY_TEST\"; pwd; exit 7"]);
    req.env.insert("MAYFLY_TEST".into(), "from-host".into());
    req.cwd = Some("/tmp".into());
    let r = call(&mux, OpenRequest::Exec(req)).await;
    assert_eq!(r.stdout(), "out\nfrom-host\n/tmp\n");
    assert_eq!(r.stderr(), "err\n");
    assert!(matches!(r.ctrls[0], Ctrl::Started { pid } if pid > 1), "{:?}", r.ctrls);
    assert_eq!(r.last(), &Ctrl::Exit { code: Some(7), signal: None, timed_out: false });

    // Default cwd is /root (or / where it is missing).
    let r = call(&mux, OpenRequest::Exec(exec_req(&["pwd"]))).await;
    let want = if std::path::Path::new("/root").is_dir() { "/root\n" } else { "/\n" };
    assert_eq!(r.stdout(), want);
}

#[tokio::test]
async fn stdin_streams_through_with_flow_control() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, OpenRequest::Exec(exec_req(&["wc", "-c"]))).await;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..5 {
        s.send_data(0, &chunk).await.unwrap();
    }
    s.send_eof().await.unwrap();
    let r = collect(&mut s).await;
    assert_eq!(r.stdout().trim(), "5242880");
    assert_eq!(r.last(), &Ctrl::Exit { code: Some(0), signal: None, timed_out: false });
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let g = Guest::start();
    let mux = g.connect().await;
    let req = ExecRequest { timeout_ms: Some(300), ..exec_req(&["/bin/sh", "-c", "sleep 30 & sleep 30; echo never"]) };
    let t0 = Instant::now();
    let r = call(&mux, OpenRequest::Exec(req)).await;
    // Without the kill the exec would last the 30 s of its sleeps; any bound below that proves it.
    assert!(t0.elapsed() < Duration::from_secs(25), "the timeout did not end the exec ({:?})", t0.elapsed());
    assert_eq!(r.last(), &Ctrl::Exit { code: None, signal: Some(9), timed_out: true });
    assert_eq!(r.stdout(), "");
}

#[tokio::test]
async fn missing_binary_is_not_found() {
    let g = Guest::start();
    let mux = g.connect().await;
    let r = call(&mux, OpenRequest::Exec(exec_req(&["/no/such/binary", "x"]))).await;
    assert_eq!(r.ctrls.len(), 1, "{:?}", r.ctrls);
    match r.last() {
        Ctrl::Error { kind: ErrorKind::NotFound, message } => assert!(message.contains("/no/such/binary"), "{message}"),
        other => panic!("{other:?}"),
    }
    let r =
        call(&mux, OpenRequest::Exec(ExecRequest { cwd: Some("/no/such/dir".into()), ..exec_req(&["true"]) })).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::NotFound, message } if message.contains("/no/such/dir")));
    let r = call(&mux, OpenRequest::Exec(exec_req(&[]))).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }));
}

#[tokio::test]
async fn signal_from_host_reaches_the_process() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, OpenRequest::Exec(exec_req(&["sleep", "30"]))).await;
    started_pid(&mut s).await;
    s.send_ctrl(&Ctrl::Signal { signal: 15 }).await.unwrap();
    let r = collect(&mut s).await;
    assert_eq!(r.last(), &Ctrl::Exit { code: None, signal: Some(15), timed_out: false });
}

#[tokio::test]
async fn reset_by_host_kills_the_group() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, OpenRequest::Exec(exec_req(&["/bin/sh", "-c", "sleep 30 & echo $!; wait"]))).await;
    let pid = started_pid(&mut s).await;
    let out = read_until(&mut s, "\n").await;
    let child: u32 = out.trim().parse().unwrap();
    drop(s); // RESET
    wait_gone(pid).await;
    wait_gone(child).await;
}

#[tokio::test]
async fn background_process_does_not_hold_the_stream() {
    let g = Guest::start();
    let mux = g.connect().await;
    let t0 = Instant::now();
    // The background job outlives the exec by far more than a loaded machine can delay it.
    let r = call(&mux, OpenRequest::Exec(exec_req(&["/bin/sh", "-c", "sleep 60 & echo started"]))).await;
    assert_eq!(r.stdout(), "started\n");
    assert_eq!(r.last(), &Ctrl::Exit { code: Some(0), signal: None, timed_out: false });
    assert!(t0.elapsed() < Duration::from_secs(45), "waited for the background job ({:?})", t0.elapsed());
}

#[tokio::test]
async fn many_streams_at_once_and_one_failure_is_isolated() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mux = mux.clone();
        tasks.push(tokio::spawn(async move {
            let cmd = if i % 5 == 0 { vec!["/missing".to_string()] } else { vec!["echo".into(), i.to_string()] };
            call(&mux, OpenRequest::Exec(ExecRequest { cmd, ..Default::default() })).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        if i % 5 == 0 {
            assert!(matches!(r.last(), Ctrl::Error { .. }));
        } else {
            assert_eq!(r.stdout(), format!("{i}\n"));
        }
    }
    // The connection is still fine.
    let mut s = open(&mux, OpenRequest::Exec(exec_req(&["true"]))).await;
    s.send_eof().await.unwrap();
    assert!(matches!(next(&mut s).await, Event::Ctrl(Ctrl::Started { .. })));
}

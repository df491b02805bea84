//! PTYs and persistent terminals against the real daemon binary.

mod common;
use common::*;
use mayfly_proto::msg::{Ctrl, ErrorKind, OpenRequest, PtyRequest};
use mayfly_proto::mux::Event;
use std::time::Duration;

#[tokio::test]
async fn shell_echo_resize_and_exit() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, pty_req(None, None)).await; // default shell: bash -l
    started_pid(&mut s).await;
    type_keys(&s, "echo hi$((40+2))\r").await;
    read_until(&mut s, "hi42").await;
    s.send_ctrl(&Ctrl::Resize { cols: 100, rows: 30 }).await.unwrap();
    type_keys(&s, "stty size\r").await;
    read_until(&mut s, "30 100").await;
    type_keys(&s, "exit 3\r").await;
    loop {
        match next(&mut s).await {
            Event::Data { .. } => {}
            Event::Ctrl(c) => {
                assert_eq!(c, Ctrl::Exit { code: Some(3), signal: None, timed_out: false });
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(next(&mut s).await, Event::Eof);
}

#[tokio::test]
async fn initial_size_env_and_term() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut req = PtyRequest { cols: 132, rows: 43, ..Default::default() };
    req.cmd = Some(vec!["/bin/sh".into(), "-c".into(), "stty size; echo \"$TERM $EXTRA\"".into()]);
    req.env.insert("EXTRA".into(), "extra-ok".into());
    let mut s = open(&mux, OpenRequest::Pty(req)).await;
    let r = collect(&mut s).await;
    assert!(r.stdout().contains("43 132"), "{:?}", r.stdout());
    assert!(r.stdout().contains("xterm-256color extra-ok"), "{:?}", r.stdout());
    assert_eq!(r.last(), &Ctrl::Exit { code: Some(0), signal: None, timed_out: false });
}

#[tokio::test]
async fn missing_shell_is_not_found() {
    let g = Guest::start();
    let mux = g.connect().await;
    let r = call(&mux, pty_req(Some("x"), Some(&["/no/shell"]))).await;
    assert!(matches!(r.last(), Ctrl::Error { kind: ErrorKind::NotFound, message } if message.contains("/no/shell")));
}

#[tokio::test]
async fn reattach_replays_scrollback_and_fans_out() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut a = open(&mux, pty_req(Some("t1"), Some(&["/bin/sh"]))).await;
    let pid = started_pid(&mut a).await;
    type_keys(&a, "echo mark$((2+3))\r").await;
    read_until(&mut a, "mark5").await;
    drop(a); // detach (page reload)
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut b = open(&mux, pty_req(Some("t1"), Some(&["/bin/sh"]))).await;
    assert_eq!(started_pid(&mut b).await, pid, "same shell");
    read_until(&mut b, "mark5").await; // replayed without typing anything
    let mut c = open(&mux, pty_req(Some("t1"), None)).await;
    assert_eq!(started_pid(&mut c).await, pid);
    read_until(&mut c, "mark5").await;
    type_keys(&c, "echo both$((1+1))\r").await;
    read_until(&mut b, "both2").await;
    read_until(&mut c, "both2").await;

    // A different id is a different shell.
    let mut d = open(&mux, pty_req(Some("t2"), Some(&["/bin/sh"]))).await;
    assert_ne!(started_pid(&mut d).await, pid);

    // Exit reaches every attachment, and the id is free again.
    type_keys(&b, "exit 4\r").await;
    for s in [&mut b, &mut c] {
        let r = collect(s).await;
        assert_eq!(r.last(), &Ctrl::Exit { code: Some(4), signal: None, timed_out: false });
    }
    let mut e = open(&mux, pty_req(Some("t1"), Some(&["/bin/sh"]))).await;
    assert_ne!(started_pid(&mut e).await, pid, "a new shell after exit");
}

#[tokio::test]
async fn terminal_without_id_dies_with_its_stream() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, pty_req(None, Some(&["/bin/sh"]))).await;
    let pid = started_pid(&mut s).await;
    type_keys(&s, "echo up\r").await;
    read_until(&mut s, "up").await;
    drop(s);
    wait_gone(pid).await;
}

#[tokio::test]
async fn detached_terminal_is_hung_up_after_idle_timeout() {
    let g = Guest::start_with(&["--terminal-idle-secs", "1"]);
    let mux = g.connect().await;
    let mut s = open(&mux, pty_req(Some("idle"), Some(&["/bin/sh"]))).await;
    let pid = started_pid(&mut s).await;
    drop(s);
    wait_gone(pid).await;
    let mut s = open(&mux, pty_req(Some("idle"), Some(&["/bin/sh"]))).await;
    assert_ne!(started_pid(&mut s).await, pid);
}

#[tokio::test]
async fn signal_reaches_the_foreground_job() {
    let g = Guest::start();
    let mux = g.connect().await;
    let mut s = open(&mux, pty_req(None, Some(&["/bin/sh"]))).await;
    let shell = started_pid(&mut s).await;
    type_keys(&s, "sleep 30\r").await;
    // The signal must find `sleep` in the foreground, not the shell still reading the line.
    let deadline = std::time::Instant::now() + T;
    while !children_of(shell).iter().any(|(_, comm)| comm == "sleep") {
        assert!(std::time::Instant::now() < deadline, "the shell never started sleep");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = std::time::Instant::now();
    s.send_ctrl(&Ctrl::Signal { signal: 2 }).await.unwrap(); // SIGINT: stops sleep, not the shell
    type_keys(&s, "echo after$((3+4))\r").await;
    read_until(&mut s, "after7").await;
    // Without the signal the prompt would come back only after the 30 s sleep.
    assert!(t0.elapsed() < Duration::from_secs(25), "SIGINT did not stop the sleep ({:?})", t0.elapsed());
}

#[tokio::test]
async fn a_spare_shell_is_adopted_by_the_next_default_terminal_only() {
    let g = Guest::start();
    let mux = g.connect().await;
    assert!(g.children().is_empty(), "{:?}", g.children());
    let r = call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: false }).await;
    assert_eq!(r.last(), &Ctrl::Ok);
    let spare = g.children();
    assert_eq!(spare.len(), 1, "one spare shell: {spare:?}");
    assert_eq!(spare[0].1, "bash");
    let spare = spare[0].0;

    // Not adopted by a terminal that asks for another command or environment.
    let mut other = open(&mux, pty_req(Some("sh"), Some(&["/bin/sh"]))).await;
    assert_ne!(started_pid(&mut other).await, spare);
    let mut req = PtyRequest { terminal: Some("env".into()), cols: 80, rows: 24, ..Default::default() };
    req.env.insert("FOO".into(), "bar".into());
    let mut with_env = open(&mux, OpenRequest::Pty(req)).await;
    assert_ne!(started_pid(&mut with_env).await, spare);

    // Adopted by the next default terminal: its prompt is already there, no key needed.
    let mut a = open(&mux, pty_req(Some("main"), None)).await;
    assert_eq!(started_pid(&mut a).await, spare, "the spare was adopted");
    match next(&mut a).await {
        Event::Data { data, .. } => assert!(!data.is_empty()),
        other => panic!("expected the replayed prompt, got {other:?}"),
    }
    type_keys(&a, "echo adopted$((1+1))\r").await;
    read_until(&mut a, "adopted2").await;
    // It is a persistent terminal under its new id: re-attaching finds it.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = open(&mux, pty_req(Some("main"), None)).await;
    assert_eq!(started_pid(&mut again).await, spare);
    read_until(&mut again, "adopted2").await;
    // The spare is used once: the next default terminal is a new shell.
    let mut b = open(&mux, pty_req(Some("second"), None)).await;
    assert_ne!(started_pid(&mut b).await, spare);
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().to_string_lossy().into_owned()
}

/// A template's parked shell: start-up done, no prompt until a terminal adopts it, then the
/// prompt and `$HOSTNAME` carry the host name of the moment of adoption, and the hook is gone.
#[tokio::test]
async fn a_parked_shell_prints_its_prompt_only_when_adopted() {
    let g = Guest::start();
    let mux = g.connect().await;
    let r = call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: true }).await;
    assert_eq!(r.last(), &Ctrl::Ok, "parked");
    let spare = g.children();
    assert_eq!(spare.len(), 1, "one parked shell: {spare:?}");
    let spare = spare[0].0;

    let mut a = open(&mux, pty_req(Some("main"), None)).await;
    // Keys sent at once (as a client does) are the shell's first command, not its host name.
    type_keys(&a, "echo \"[$PROMPT_COMMAND|$HOSTNAME|${#__mayfly_host}]\"\r").await;
    assert_eq!(started_pid(&mut a).await, spare, "the parked shell was adopted");
    // Nothing was printed while it was parked: the first output is the prompt, after adoption.
    let out = read_until(&mut a, &format!("[|{}|0]", hostname())).await;
    assert!(!out.contains("read -rs"), "the hook is not echoed: {out:?}");
    assert!(out.find(&hostname()) < out.find("echo"), "the prompt came first: {out:?}");
    // An ordinary shell from here on: a command, its exit status.
    type_keys(&a, "(exit 4); echo status=$?\r").await;
    read_until(&mut a, "status=4").await;
}

/// A parked shell went through readline's set-up before it parked, so a clone does not repeat
/// it: a key binding from `~/.inputrc` works after adoption although the file is gone by then.
#[tokio::test]
async fn a_parked_shell_has_read_its_inputrc_before_adoption() {
    let dir = tempfile::tempdir().unwrap();
    let inputrc = dir.path().join(".inputrc");
    std::fs::write(&inputrc, "\"\\ew\": \"echo inputrc-$((6*7))\\n\"\n").unwrap();
    let g = Guest::start_with_env(&[("HOME", dir.path().to_str().unwrap())]);
    let mux = g.connect().await;
    assert_eq!(call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: true }).await.last(), &Ctrl::Ok);
    std::fs::remove_file(&inputrc).unwrap();
    let mut a = open(&mux, pty_req(Some("main"), None)).await;
    let out = read_until(&mut a, &hostname()).await;
    assert!(!out.contains("mayfly-warm") && !out.contains("mayfly-parked"), "no mark replayed: {out:?}");
    type_keys(&a, "\x1bw").await;
    read_until(&mut a, "inputrc-42").await;
}

/// Naming a pool clone releases its parked shell rather than starting another.
#[tokio::test]
async fn a_plain_spare_request_releases_the_parked_shell() {
    let g = Guest::start();
    let mux = g.connect().await;
    assert_eq!(call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: true }).await.last(), &Ctrl::Ok);
    let parked = g.children()[0].0;
    assert_eq!(call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: false }).await.last(), &Ctrl::Ok);
    assert_eq!(g.children().iter().map(|c| c.0).collect::<Vec<_>>(), vec![parked], "the same shell, released");
    let mut a = open(&mux, pty_req(None, None)).await;
    assert_eq!(started_pid(&mut a).await, parked);
    // Its prompt was printed on release: the adopting terminal gets it as replay.
    read_until(&mut a, &hostname()).await;
    type_keys(&a, "echo released$((2+3))\r").await;
    read_until(&mut a, "released5").await;
}

/// A shell whose start-up prints (or that is not bash) cannot be parked: a clear error, and
/// nothing is left running.
#[tokio::test]
async fn a_shell_that_prints_at_start_up_is_not_parked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".bash_profile"), "echo welcome\n").unwrap();
    let g = Guest::start_with_env(&[("HOME", dir.path().to_str().unwrap())]);
    let mux = g.connect().await;
    let r = call(&mux, OpenRequest::SpareShell { cols: 80, rows: 24, parked: true }).await;
    assert!(
        matches!(r.last(), Ctrl::Error { kind: ErrorKind::Io, message } if message.contains("cannot be parked")),
        "{:?}",
        r.last()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !g.children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the shell was not ended: {:?}", g.children());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

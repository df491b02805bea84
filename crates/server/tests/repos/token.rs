//! `mayfly-guest with-token` and the `gh` link in a real VM (`minimal`, which has no gh: a
//! stand-in `/usr/bin/gh` prints what it was given). The token reaches that program's
//! environment only: not other processes, not the disk.

use super::*;

const GH_SECRET: &str = "ghp-5e1f0a9d7c3b2846";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_one_programs_environment_and_no_disk() {
    let _ = captured_logs();
    let srv = TestServer::start(|_| {}).await;
    let creds = json!([{ "host": "github.com", "token": GH_SECRET }, { "host": "git.example.com:8443", "token": "other-token" }]);
    let id = srv.ready_session(json!({ "image": "minimal", "network": { "egress": "none" }, "git_credentials": creds })).await;

    let out = sh(&srv, &id, "mayfly-guest with-token github.com -- sh -c 'echo \"[$GH_TOKEN]\"'").await;
    assert_eq!((out["exit_code"].as_i64(), out["stdout"].as_str()), (Some(0), Some(&*format!("[{GH_SECRET}]\n"))), "{out}");
    let out = sh(&srv, &id, "mayfly-guest with-token git.example.com:8443 --env A --env B -- sh -c 'echo \"$A $B [$GH_TOKEN]\"'").await;
    assert_eq!(out["stdout"], "other-token other-token []\n", "{out}");

    // The image's `gh` is a link to the guest binary; it runs /usr/bin/gh with the token.
    let out = sh(
        &srv,
        &id,
        "ln -s /usr/local/sbin/mayfly-guest /usr/local/bin/gh && \
         printf '#!/bin/sh\\necho \"gh[$GH_TOKEN][$GH_ENTERPRISE_TOKEN] $*\"\\n' > /usr/bin/gh && chmod +x /usr/bin/gh && \
         gh pr create --fill && GH_HOST=git.example.com:8443 gh auth status && GH_TOKEN=mine gh api user",
    )
    .await;
    assert_eq!(
        out["stdout"],
        format!("gh[{GH_SECRET}][{GH_SECRET}] pr create --fill\ngh[other-token][other-token] auth status\ngh[mine][] api user\n"),
        "{out}"
    );

    // No token for the host: a clear error, the program does not run.
    let out = sh(&srv, &id, "mayfly-guest with-token gitlab.com -- echo ran; echo \"exit=$?\"").await;
    assert_eq!(out["stdout"], "exit=1\n", "{out}");
    assert!(out["stderr"].as_str().unwrap().contains("this session has no token for gitlab.com"), "{out}");
    let out = sh(&srv, &id, "GH_HOST=gitlab.com gh pr list; echo \"exit=$?\"").await;
    assert_eq!(out["stdout"], "exit=1\n", "{out}");

    // Nowhere else: not in other processes' environment, not on the disk.
    let out = sh(&srv, &id, "echo \"[$GH_TOKEN]\"; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c GH_TOKEN; true").await;
    assert_eq!(out["stdout"], "[]\n0\n", "{out}");
    let out = sh(&srv, &id, &format!("sync; grep -rl '{GH_SECRET}' /root /etc /tmp /var /usr/local /run 2>/dev/null; echo done")).await;
    assert_eq!(out["stdout"], "done\n", "{out}");
    let hits = found_in_files(&srv.run_dir(&id), GH_SECRET.as_bytes());
    assert!(hits.is_empty(), "token in the VM's disk overlay or run dir: {hits:?}");
    assert_eq!(srv.delete(&id).await, 204);
    srv.stop().await;
}

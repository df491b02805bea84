//! The server's integration suites, one module each, in one test binary: built as separate
//! binaries, each suite compiled and linked the server, its dependencies' generic code and
//! `common` again (20 binaries took most of CI's build time). `scripts/run-tests` still runs
//! each suite in a process of its own (`suites <module>::`), as a binary of its own ran before,
//! so process-wide fixtures stay per suite. `cargo test -p mayfly-server --test suites pause::`
//! runs one suite by hand. `load` and `guest_faults` count the process's open sockets and
//! `repos` installs the process's log subscriber: they refuse to run beside another suite
//! (`common::alone_in_this_process`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../repos/gitserver.rs"]
mod gitserver;
#[path = "../adopt.rs"]
mod adopt;
#[path = "../agent/main.rs"]
mod agent;
#[path = "../cluster.rs"]
mod cluster;
#[path = "../egress/main.rs"]
mod egress;
#[path = "../faults.rs"]
mod faults;
#[path = "../file_watch.rs"]
mod file_watch;
#[path = "../guest_faults.rs"]
mod guest_faults;
#[path = "../isolation.rs"]
mod isolation;
#[path = "../load.rs"]
mod load;
#[path = "../oidc.rs"]
mod oidc;
#[path = "../pause.rs"]
mod pause;
#[path = "../pool.rs"]
mod pool;
#[path = "../previews/main.rs"]
mod previews;
#[path = "../repos/main.rs"]
mod repos;
#[path = "../restart.rs"]
mod restart;
#[path = "../service_unit.rs"]
mod service_unit;
#[path = "../sessions.rs"]
mod sessions;
#[path = "../signin.rs"]
mod signin;
#[path = "../sizes.rs"]
mod sizes;
#[path = "../store_backends.rs"]
mod store_backends;
#[path = "../users.rs"]
mod users;

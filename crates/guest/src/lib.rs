//! `mayfly-guest`: the daemon inside every Mayfly VM.
//!
//! Two modes share this crate:
//!
//! * [`init`] — PID 1 after the initramfs `switch_root`: mounts the pseudo file systems, brings up
//!   loopback, grows the root file system, supervises the daemon and reaps every zombie.
//! * [`serve`] — the daemon: serves the host↔guest channel ([`mayfly_proto::mux`]) over the
//!   virtio-serial port (or a Unix socket in tests) and runs one task per stream.
//!
//! Each stream op lives in its own module: [`exec`], [`pty`] (with [`terminal`] and
//! [`scrollback`]), [`files`] and [`transfer`], [`ports`], [`watch`] (with [`watch_batch`]),
//! [`tunnel`], [`info`], [`identity`].
//! Helpers run by programs in the VM: [`credential`] (git's credential helper) and [`with_token`]
//! (a token in one program's environment, e.g. `gh`).
//! The byte transport and its reconnect rules live in [`transport`]; [`activity`] tells the
//! port watcher when to look closely.

pub mod activity;
pub mod agent;
pub mod boot;
pub mod cpu_busy;
pub mod credential;
pub mod egress;
pub mod exec;
pub mod files;
pub mod identity;
pub mod info;
pub mod init;
pub mod ports;
pub mod park;
pub mod pty;
pub mod scrollback;
pub mod serve;
pub mod sigreset;
pub mod terminal;
pub mod transfer;
pub mod transport;
pub mod tunnel;
pub mod watch;
pub mod watch_batch;
pub mod with_token;

/// Directory commands start in when the host names none: root's home, or `/` if it is missing.
pub(crate) fn default_cwd() -> std::path::PathBuf {
    let home = std::path::PathBuf::from("/root");
    if home.is_dir() {
        home
    } else {
        std::path::PathBuf::from("/")
    }
}

pub(crate) use mayfly_proto::error_chain;

//! Wire contracts shared by the control plane and the guest daemon.
//!
//! * [`frame`] — the binary frame codec of the host↔guest channel (pure, table-tested).
//! * [`msg`] — typed JSON messages carried inside frames (stream open requests, control messages).
//! * [`mux`] — the stream multiplexer both ends run over one virtio-serial byte stream.
//!
//! This crate owns no I/O policy: it does not know about QEMU, sockets or device nodes.

pub mod accounts;
pub mod api;
pub mod frame;
pub mod msg;
pub mod mux;
pub mod nodes;

/// Version of the host↔guest protocol. Bumped on any incompatible change to frames or messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// `error: cause: cause…`, an error and its sources on one line (for logs and messages).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

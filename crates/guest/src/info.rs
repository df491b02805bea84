//! `info` streams: who and what this guest is. Everything is read fresh on each request, so an
//! `identity` change (hostname) shows up at once.

use crate::serve::finish;
use mayfly_proto::msg::{Ctrl, GuestInfo};
use mayfly_proto::mux::Stream;
use nix::time::{clock_gettime, ClockId};

pub fn guest_info() -> GuestInfo {
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    // CLOCK_BOOTTIME counts from boot including suspend, like /proc/uptime.
    let uptime_ms = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or_default();
    GuestInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: mayfly_proto::PROTOCOL_VERSION,
        hostname,
        kernel,
        uptime_ms,
    }
}

pub async fn serve(stream: Stream) {
    finish(&stream.tx, &Ctrl::Info(guest_info())).await;
}

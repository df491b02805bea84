//! "Something in the VM may have just changed": a signal from the parts of the daemon that start
//! programs (exec, terminal input) to the watchers that poll for the effects (the port watcher).
//!
//! Why: polling `/proc/net/tcp` every 100 ms kept every idle VM waking ten times a second, which
//! under TCG cost ≈ 3 % of a host CPU per idle VM. The port watcher now backs off while nothing
//! happens and is woken here when a user or the host does something — which is when programs
//! start listening. A poke is a timestamp store and a wake-up, cheap enough for every keystroke.

use std::sync::OnceLock;
use tokio::sync::watch;
use tokio::time::Instant;

fn channel() -> &'static watch::Sender<Instant> {
    static TX: OnceLock<watch::Sender<Instant>> = OnceLock::new();
    TX.get_or_init(|| watch::channel(Instant::now()).0)
}

/// Records activity now (an exec started or ended, terminal input arrived).
pub fn poke() {
    channel().send_replace(Instant::now());
}

/// A receiver that is marked changed on every [`poke`]; its value is the last poke's time.
pub fn subscribe() -> watch::Receiver<Instant> {
    channel().subscribe()
}

//! Gives a child process a clean signal state before `exec`.
//!
//! PID 1 blocks SIGCHLD/SIGTERM/SIGINT/SIGPWR to `sigtimedwait` for them, and the Rust runtime
//! ignores SIGPIPE; both a blocked mask and ignored dispositions survive `exec`. Without this,
//! Ctrl-C and `kill PID` do nothing to user programs and `yes | head` never ends by SIGPIPE.

/// Unblocks every signal and restores the default action of those the runtime changes.
/// Only async-signal-safe calls: safe to run in a `pre_exec` hook.
pub fn reset_in_child() -> std::io::Result<()> {
    // SAFETY: sigemptyset/sigprocmask/signal are async-signal-safe; `set` lives on this stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for sig in [libc::SIGPIPE, libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGPWR, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    Ok(())
}

//! Parking a template's login shell: start-up files run and readline set up, nothing visible
//! printed, waiting for the host name that a clone's first terminal hands it.
//!
//! Everything a parked shell does before it waits is work its clones never repeat. Under TCG a
//! clone is a new QEMU process that translates every code path it runs again, so one-time
//! set-up left for the clone is paid on every pool miss. Readline's set-up (`inputrc`, terminfo,
//! keymaps) runs at the first prompt, after the first `PROMPT_COMMAND`: a shell parked there
//! still had it ahead. So the shell goes through one empty command line first:
//!
//! 1. `PROMPT_COMMAND` ([`HOOK`]) saves `PS1`, empties it, arms the park step and prints
//!    [`WARM_MARK`];
//! 2. seeing exactly that mark (nothing printed before it), the daemon types an empty line:
//!    readline starts, shows the empty prompt, reads the line; bash runs nothing and records no
//!    history;
//! 3. the next `PROMPT_COMMAND` restores `PS1`, prints [`PARK_MARK`] and waits in `read -s`.
//!
//! The shell is parked when its output is the warm mark, then only terminal controls (readline's
//! bracketed-paste switches, the empty line's CR/LF), then the park mark, and echo is off. Output
//! keeps its order through the PTY, so text a start-up file prints fails the check however late
//! the reader sees it. The marks are OSC sequences no terminal shows, and the daemon forgets the
//! whole output once the shell is parked.

use crate::terminal::Terminal;

/// Printed by the first `PROMPT_COMMAND`, after every start-up file.
const WARM_MARK: &[u8] = b"\x1b]6973;mayfly-warm\x07";
/// Printed just before the shell waits for its host name.
const PARK_MARK: &[u8] = b"\x1b]6973;mayfly-parked\x07";

/// bash's `PROMPT_COMMAND` for a parked shell, all builtins. The second step (armed by the first)
/// reads one line with echo off (the host name, written by [`release`]), writes that
/// name where bash cached the template's (`\h`, `\H` in `PS1`, `$HOSTNAME`), and reseeds
/// `$RANDOM`, which every clone would otherwise share. A shell whose start-up files set their own
/// `PROMPT_COMMAND`, or that is not bash, prints a prompt instead and is not kept.
pub(crate) const HOOK: &str = concat!(
    "__mayfly_ps1=$PS1; PS1=; PROMPT_COMMAND='",
    "PS1=$__mayfly_ps1; unset __mayfly_ps1 PROMPT_COMMAND; ",
    "printf \"\\033]6973;mayfly-parked\\007\"; IFS= read -rs __mayfly_host; ",
    "if [ -n \"$__mayfly_host\" ]; then HOSTNAME=$__mayfly_host; ",
    "PS1=${PS1//\\\\h/${__mayfly_host%%.*}}; PS1=${PS1//\\\\H/$__mayfly_host}; fi; ",
    "unset __mayfly_host; RANDOM=${SRANDOM:-$$}'; ",
    "printf \"\\033]6973;mayfly-warm\\007\"",
);

/// What the daemon does next for a shell being parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing decisive yet: look again later.
    Wait,
    /// The start-up files are done and printed nothing: type the empty line (once).
    TypeEmptyLine,
    /// The shell waits for its host name.
    Parked,
    /// It printed something else: it cannot be parked.
    Refused,
}

/// The parking state machine, fed the shell's whole output each time it looks.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    line_typed: bool,
}

impl Parking {
    pub(crate) fn step(&mut self, output: &[u8], echo_off: bool) -> Step {
        let Some(rest) = output.strip_prefix(WARM_MARK) else {
            return if WARM_MARK.starts_with(output) { Step::Wait } else { Step::Refused };
        };
        if !only_controls(rest) {
            Step::Refused
        } else if !self.line_typed {
            // Readline may already have started (its bracketed-paste switch follows the mark).
            self.line_typed = true;
            Step::TypeEmptyLine
        } else if rest.ends_with(PARK_MARK) && echo_off {
            Step::Parked
        } else {
            Step::Wait
        }
    }
}

/// Whether `bytes` holds nothing a terminal would show: CR, LF, BEL and escape sequences (CSI,
/// OSC, two-byte). A sequence cut off at the end counts (the rest may still come).
fn only_controls(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' | b'\n' | 0x07 => i += 1,
            0x1b => match escape_len(&bytes[i..]) {
                Some(n) => i += n,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Length of the escape sequence at the start of `s` (`s[0]` is ESC); the rest of `s` if it is
/// cut off; `None` if it is malformed.
fn escape_len(s: &[u8]) -> Option<usize> {
    match s.get(1) {
        None => Some(1),
        Some(b'[') => {
            // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, one final byte.
            for (j, &b) in s.iter().enumerate().skip(2) {
                match b {
                    0x20..=0x3f => continue,
                    0x40..=0x7e => return Some(j + 1),
                    _ => return None,
                }
            }
            Some(s.len())
        }
        Some(b']') => {
            // OSC: ends with BEL or ST (ESC \).
            for j in 2..s.len() {
                match s[j] {
                    0x07 => return Some(j + 1),
                    0x1b if s.get(j + 1) == Some(&b'\\') => return Some(j + 2),
                    0x1b if j + 1 == s.len() => return Some(s.len()),
                    0x1b => return None,
                    _ => continue,
                }
            }
            Some(s.len())
        }
        Some(0x20..=0x7e) => Some(2),
        Some(_) => None,
    }
}

/// Hands a parked shell its host name: it goes on to print its prompt. Written at once, before
/// the adopting client can send a key (which would otherwise be read as the name); the line
/// fits in the PTY's empty input queue, so the write never waits.
pub(crate) fn release(t: &Terminal, hostname: &str) {
    t.hold_keys_until_printed();
    if let Err(e) = t.write_now(format!("{hostname}\n").as_bytes()) {
        tracing::warn!(pid = t.pid(), "cannot release the parked shell: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_quiet_shell_is_warmed_then_parked() {
        let mut p = Parking::default();
        assert_eq!(p.step(b"", false), Step::Wait);
        assert_eq!(p.step(&WARM_MARK[..5], false), Step::Wait);
        assert_eq!(p.step(WARM_MARK, false), Step::TypeEmptyLine);
        // What bash 5.2's readline shows for an empty prompt and an empty line.
        let noise: &[u8] = b"\x1b[?2004h\x1b[?2004l\r\r\n";
        assert_eq!(p.step(&cat(&[WARM_MARK, noise]), false), Step::Wait);
        // Readline may be seen started already when the daemon first looks; the line is typed once.
        let mut q = Parking::default();
        assert_eq!(q.step(&cat(&[WARM_MARK, b"\x1b[?2004h"]), false), Step::TypeEmptyLine);
        assert_eq!(q.step(&cat(&[WARM_MARK, b"\x1b[?2004h"]), false), Step::Wait);
        assert_eq!(p.step(&cat(&[WARM_MARK, noise, &PARK_MARK[..9]]), false), Step::Wait);
        assert_eq!(p.step(&cat(&[WARM_MARK, noise, PARK_MARK]), false), Step::Wait, "echo still on");
        assert_eq!(p.step(&cat(&[WARM_MARK, noise, PARK_MARK]), true), Step::Parked);
    }

    #[test]
    fn anything_printed_is_refused() {
        // Before the warm mark: a start-up file's greeting.
        assert_eq!(Parking::default().step(b"welcome\r\n", false), Step::Refused);
        assert_eq!(Parking::default().step(&cat(&[b"hi", WARM_MARK]), false), Step::Refused);
        // After it: a prompt (start-up files set their own PROMPT_COMMAND or PS1 came back).
        let mut p = Parking::default();
        assert_eq!(p.step(WARM_MARK, false), Step::TypeEmptyLine);
        assert_eq!(p.step(&cat(&[WARM_MARK, b"\x1b[?2004hroot@t:~# "]), false), Step::Refused);
        let mut p = Parking::default();
        p.step(WARM_MARK, false);
        assert_eq!(p.step(&cat(&[WARM_MARK, b"\r\n", PARK_MARK, b"late"]), true), Step::Refused);
    }

    #[test]
    fn controls_are_told_from_text() {
        assert!(only_controls(b""));
        assert!(only_controls(b"\r\n\x07"));
        assert!(only_controls(b"\x1b[?2004h\x1b[0m\x1b[K"));
        assert!(only_controls(b"\x1b]0;title\x07\x1b]2;t\x1b\\"));
        assert!(only_controls(b"\x1b="), "two-byte escape");
        assert!(only_controls(b"\x1b[?20"), "cut off: may still complete");
        assert!(only_controls(b"\x1b]6973;may"));
        assert!(only_controls(b"\x1b"));
        assert!(!only_controls(b"$ "));
        assert!(!only_controls(b"\x1b[?2004h>"));
        assert!(!only_controls(b"\x1b[\x01"), "malformed CSI");
        assert!(!only_controls(b"\t"));
    }
}

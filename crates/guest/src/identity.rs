//! `identity` streams: give a VM restored from a shared snapshot its own identity.
//!
//! Applied in this order: wall clock (`clock_settime`; a restored guest's clock is behind), RNG
//! seed (mixed into `/dev/urandom` and credited with `RNDADDENTROPY`, because clones share the
//! template's pool and this kernel has no vmgenid), hostname (`sethostname` + `/etc/hostname`),
//! machine id (`/etc/machine-id`). Every field is validated before anything is applied.
//!
//! The daemon caches nothing derived from identity (`info` reads the hostname on each request),
//! so there is no cached state to drop here.

use crate::serve::finish;
use mayfly_proto::msg::{Ctrl, ErrorKind, Identity};
use mayfly_proto::mux::Stream;
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// `_IOW('R', 0x03, int[2])` from `<linux/random.h>`; not in the libc crate.
const RNDADDENTROPY: u64 = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG now. Without it, a clone keeps producing the template's
/// CRNG output until the kernel's next scheduled reseed (up to a minute), whatever was mixed in.
const RNDRESEEDCRNG: u64 = 0x5207;
const MAX_SEED_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    #[error("invalid machine id {0:?}, want 32 lowercase hex digits")]
    MachineId(String),
    #[error("rng seed is not hex")]
    SeedHex(#[source] hex::FromHexError),
    #[error("rng seed of {0} bytes is outside 1..={MAX_SEED_BYTES}")]
    SeedSize(usize),
    #[error("unix time {0} ns is out of range")]
    Time(u64),
    #[error("cannot set the clock")]
    Clock(#[source] nix::Error),
    #[error("cannot seed the kernel rng")]
    Seed(#[source] io::Error),
    #[error("cannot set the hostname")]
    SetHostname(#[source] nix::Error),
    #[error("cannot write {path}")]
    Write {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

impl IdentityError {
    pub fn to_ctrl(&self) -> Ctrl {
        use IdentityError::*;
        let kind = match self {
            Hostname(_) | MachineId(_) | SeedHex(_) | SeedSize(_) | Time(_) => ErrorKind::InvalidInput,
            Clock(_) | Seed(_) | SetHostname(_) | Write { .. } => ErrorKind::Io,
        };
        Ctrl::error(kind, crate::error_chain(self))
    }
}

/// A validated identity, ready to apply.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub time: Option<TimeSpec>,
    pub seed: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub machine_id: Option<String>,
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, ≤ 64 bytes.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

pub fn valid_machine_id(m: &str) -> bool {
    m.len() == 32 && m.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn validate(id: &Identity) -> Result<Plan, IdentityError> {
    let time = match id.unix_time_ns {
        None => None,
        Some(ns) => {
            let secs = i64::try_from(ns / 1_000_000_000).map_err(|_| IdentityError::Time(ns))?;
            Some(TimeSpec::new(secs, (ns % 1_000_000_000) as _))
        }
    };
    let seed = match &id.rng_seed_hex {
        None => None,
        Some(h) => {
            let bytes = hex::decode(h.trim()).map_err(IdentityError::SeedHex)?;
            if bytes.is_empty() || bytes.len() > MAX_SEED_BYTES {
                return Err(IdentityError::SeedSize(bytes.len()));
            }
            Some(bytes)
        }
    };
    if let Some(h) = id.hostname.as_ref().filter(|h| !valid_hostname(h)) {
        return Err(IdentityError::Hostname(h.clone()));
    }
    if let Some(m) = id.machine_id.as_ref().filter(|m| !valid_machine_id(m)) {
        return Err(IdentityError::MachineId(m.clone()));
    }
    Ok(Plan { time, seed, hostname: id.hostname.clone(), machine_id: id.machine_id.clone() })
}

fn credit_entropy(seed: &[u8]) -> io::Result<()> {
    let mut urandom = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    urandom.write_all(seed)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut pool = vec![0u32; 2 + seed.len().div_ceil(4)];
    pool[0] = (seed.len() * 8) as u32;
    pool[1] = seed.len() as u32;
    for (i, chunk) in seed.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        pool[2 + i] = u32::from_ne_bytes(w);
    }
    // SAFETY: RNDADDENTROPY reads a rand_pool_info (two ints, then buf_size bytes) through the
    // pointer; `pool` holds exactly that and outlives the call.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, pool.as_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Replaces `path` with `contents`: in place when it is a tmpfs bind mount (a VM's
/// [`crate::boot::MACHINE_FILES`]; a mount point cannot be renamed over), else atomically (temp
/// file + rename in the same directory).
fn replace_file(path: &'static str, contents: &str) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write { path, source };
    if crate::boot::is_mountpoint(Path::new(path)) {
        return std::fs::write(path, contents).map_err(err);
    }
    let tmp = Path::new(path).with_extension("mayfly-tmp");
    std::fs::write(&tmp, contents).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

pub fn apply(plan: &Plan) -> Result<(), IdentityError> {
    if let Some(t) = plan.time {
        clock_settime(ClockId::CLOCK_REALTIME, t).map_err(IdentityError::Clock)?;
    }
    if let Some(seed) = &plan.seed {
        credit_entropy(seed).map_err(IdentityError::Seed)?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).map_err(IdentityError::SetHostname)?;
        replace_file("/etc/hostname", &format!("{h}\n"))?;
    }
    if let Some(m) = &plan.machine_id {
        replace_file("/etc/machine-id", &format!("{m}\n"))?;
    }
    Ok(())
}

pub async fn serve(id: Identity, stream: Stream) {
    let res = match validate(&id) {
        // Inline, not spawn_blocking: a handful of fast syscalls, and right after a clone restore
        // every new code path (a fresh thread included) costs translation time under TCG.
        Ok(plan) => apply(&plan),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => finish(&stream.tx, &Ctrl::Ok).await,
        Err(e) => {
            tracing::warn!("identity: {}", crate::error_chain(&e));
            finish(&stream.tx, &e.to_ctrl()).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for (h, ok) in [
            ("mayfly", true),
            ("s-1a2b.mayfly", true),
            ("A1", true),
            ("", false),
            ("-x", false),
            ("x-", false),
            ("a..b", false),
            ("has space", false),
            ("under_score", false),
            (&"a".repeat(65), false),
        ] {
            assert_eq!(valid_hostname(h), ok, "{h:?}");
        }
    }

    #[test]
    fn machine_ids() {
        assert!(valid_machine_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_machine_id("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!valid_machine_id("0123456789abcdef"));
        assert!(!valid_machine_id("0123456789abcdef0123456789abcdeg"));
    }

    #[test]
    fn validation_builds_a_plan_or_rejects() {
        let id = Identity {
            hostname: Some("vm-1".into()),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            unix_time_ns: Some(1_700_000_000_123_456_789),
            rng_seed_hex: Some("00ff10".into()),
        };
        let plan = validate(&id).unwrap();
        assert_eq!(plan.time, Some(TimeSpec::new(1_700_000_000, 123_456_789)));
        assert_eq!(plan.seed, Some(vec![0, 0xff, 0x10]));
        assert_eq!(validate(&Identity::default()).unwrap(), Plan::default());

        let bad = [
            Identity { rng_seed_hex: Some("xyz".into()), ..Default::default() },
            Identity { rng_seed_hex: Some(String::new()), ..Default::default() },
            Identity { hostname: Some("bad host".into()), ..Default::default() },
            Identity { machine_id: Some("nope".into()), ..Default::default() },
            
        ];
        for id in bad {
            let e = validate(&id).unwrap_err();
            assert!(matches!(e.to_ctrl(), Ctrl::Error { kind: ErrorKind::InvalidInput, .. }), "{id:?}");
        }
    }
}

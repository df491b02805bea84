//! One uid per VM, from an operator-configured range (`vm_uid_range`, e.g. `200000-265535`).
//!
//! No passwd entries: a VM's QEMU runs as `uid:uid` (gid = uid) with no supplementary groups.
//! Two VMs therefore never share an account, so one QEMU cannot signal, trace or read the memory
//! of another (the kernel's same-uid rule for `kill` and `ptrace`).
//!
//! The allocation is kept on disk, not in memory: the run directory of a VM is owned by its uid
//! for the VM's whole life. A uid is free when no run directory under the state dir is owned by
//! it and no process on the host runs as it. A restarted control plane therefore never hands a
//! live (adopted) VM's uid to a new VM, and a uid whose QEMU somehow outlived its run directory is
//! not reused either. Allocation and the `chown` of the new run directory happen under one lock.

use super::user::Account;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An inclusive uid range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    /// Parses `first-last` (inclusive). The range must not include system uids (< 1000) nor the
    /// overflow ids 65534/65535 for a range of one, and holds at least one uid.
    pub fn parse(s: &str) -> Result<UidRange, String> {
        let (a, b) = s.trim().split_once('-').ok_or_else(|| format!("vm_uid_range {s:?}: expected FIRST-LAST, e.g. 200000-265535"))?;
        let first: u32 = a.trim().parse().map_err(|_| format!("vm_uid_range {s:?}: {a:?} is not a uid"))?;
        let last: u32 = b.trim().parse().map_err(|_| format!("vm_uid_range {s:?}: {b:?} is not a uid"))?;
        if first > last {
            return Err(format!("vm_uid_range {s:?}: the first uid is above the last"));
        }
        if first < 1000 {
            return Err(format!("vm_uid_range {s:?}: starts inside the system uids (below 1000)"));
        }
        if last >= u32::MAX - 1 {
            return Err(format!("vm_uid_range {s:?}: {last} is not a usable uid"));
        }
        Ok(UidRange { first, last })
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Hands out the uids of `range` to VMs whose run directories live in `state_dir`.
#[derive(Debug)]
pub struct UidAllocator {
    range: UidRange,
    state_dir: PathBuf,
    /// Where the next search starts (so a uid just freed is not reused at once).
    next: Mutex<u32>,
}

impl UidAllocator {
    /// The first search starts at a random uid of the range: another control plane on this host
    /// (or a test server in another process) allocating from the same range at the same moment
    /// sees a claimed uid only once its QEMU runs, so two allocators starting at the range's first
    /// uid would hand it out twice.
    pub fn new(range: UidRange, state_dir: &Path) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let size = u64::from(range.last - range.first) + 1;
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let start = range.first + u32::try_from(random % size).unwrap_or(0);
        Self { range, state_dir: state_dir.to_path_buf(), next: Mutex::new(start) }
    }

    pub fn range(&self) -> UidRange {
        self.range
    }

    /// Picks a free uid and gives `run_dir` (just created, still root's) to it, under one lock.
    pub fn claim(&self, run_dir: &Path) -> Result<Account, String> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let used = self.in_use();
        let size = u64::from(self.range.last - self.range.first) + 1;
        let start = if self.range.contains(*next) { *next } else { self.range.first };
        for i in 0..size {
            let uid = self.range.first + ((u64::from(start - self.range.first) + i) % size) as u32;
            if used.contains(&uid) {
                continue;
            }
            let a = Account { uid, gid: uid };
            super::user::give(run_dir, a).map_err(|e| format!("cannot give {} to uid {uid}: {e}", run_dir.display()))?;
            *next = if uid == self.range.last { self.range.first } else { uid + 1 };
            return Ok(a);
        }
        Err(format!("every uid of vm_uid_range {} is in use ({} VMs): widen the range", self.range, used.len()))
    }

    /// The uid owning VM `id`'s run directory, if it is one of the range's.
    pub fn owner_of(&self, id: &str) -> Option<Account> {
        let uid = std::fs::metadata(self.state_dir.join(id)).ok()?.uid();
        self.range.contains(uid).then_some(Account { uid, gid: uid })
    }

    /// Uids of the range taken by a run directory or by a running process.
    fn in_use(&self) -> HashSet<u32> {
        let mut used: HashSet<u32> = std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.uid())
            .filter(|u| self.range.contains(*u))
            .collect();
        used.extend(process_uids().into_iter().filter(|u| self.range.contains(*u)));
        used
    }
}

/// Real, effective and saved uids of every process on the host.
fn process_uids() -> Vec<u32> {
    let mut uids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Some(of) = uids_of(&e.path()) {
            uids.extend(of);
        }
    }
    uids
}

/// The `Uid:` line of `/proc/<pid>/status` (`proc_dir`): real, effective, saved and filesystem
/// uid; `None` when the process is gone.
pub fn uids_of(proc_dir: &Path) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    Some(line.split_whitespace().skip(1).filter_map(|u| u.parse::<u32>().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!(UidRange::parse("200000-265535"), Ok(UidRange { first: 200000, last: 265535 }));
        assert_eq!(UidRange::parse(" 5000 - 5000 "), Ok(UidRange { first: 5000, last: 5000 }));
        for bad in ["", "200000", "5-10", "300-200", "a-b", "200000-4294967295"] {
            assert!(UidRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claimed_uids_differ_and_survive_a_new_allocator() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root
        }
        let tmp = tempfile::tempdir().unwrap();
        let range = UidRange { first: 271000, last: 271002 };
        let alloc = UidAllocator::new(range, tmp.path());
        let mut got = Vec::new();
        for id in ["a", "b", "c"] {
            let d = tmp.path().join(id);
            std::fs::create_dir(&d).unwrap();
            got.push(alloc.claim(&d).unwrap().uid);
        }
        got.sort();
        assert_eq!(got, vec![271000, 271001, 271002]);
        // A restarted control plane (new allocator) sees every uid taken by the run dirs.
        let again = UidAllocator::new(range, tmp.path());
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let e = again.claim(&tmp.path().join("d")).unwrap_err();
        assert!(e.contains("in use"), "{e}");
        assert!(again.owner_of("b").is_some_and(|a| range.contains(a.uid)));
        assert_eq!(again.owner_of("b"), alloc.owner_of("b"));
        // A run directory that goes frees its uid.
        std::fs::remove_dir(tmp.path().join("b")).unwrap();
        let freed = again.claim(&tmp.path().join("d")).unwrap();
        assert!(range.contains(freed.uid));
        assert_eq!(again.owner_of("d"), Some(freed));
    }
}

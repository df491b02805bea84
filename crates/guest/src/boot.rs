//! One-time system setup done by PID 1 before it starts the daemon: pseudo file systems, a
//! writable root, hostname, loopback, the process environment, and growing the root file system
//! to the size of its disk. Every step logs its failure and the boot goes on: PID 1 must not die.
//!
//! There is no udev, systemd or `ip` binary to lean on; everything here is a syscall.

use nix::mount::{mount, MsFlags};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const HOSTNAME: &str = "mayfly";
const ROOT_DISK: &str = "/dev/vda";
const ROOT_DISK_SECTORS: &str = "/sys/class/block/vda/size";
/// The disk may exceed the file system by this much (alignment) without a resize.
const RESIZE_SLACK: u64 = 4 << 20;

/// The process environment of everything in the VM. The proxy variables point programs at the
/// daemon's egress proxy (`egress::DEFAULT_LISTEN`), the VM's only way out; the git variables
/// install the credential helper ([`crate::credential`]).
pub const ENV: [(&str, &str); 14] = [
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("TERM", "xterm-256color"),
    ("LANG", "C.UTF-8"),
    ("http_proxy", "http://127.0.0.1:3128"),
    ("https_proxy", "http://127.0.0.1:3128"),
    ("HTTP_PROXY", "http://127.0.0.1:3128"),
    ("HTTPS_PROXY", "http://127.0.0.1:3128"),
    ("no_proxy", "localhost,127.0.0.1,::1"),
    ("NO_PROXY", "localhost,127.0.0.1,::1"),
    // git: never prompt (a missing token fails at once), and ask Mayfly for tokens
    // (`credential`): configured in the environment, so no file in the VM holds any of it.
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_CONFIG_COUNT", "1"),
    ("GIT_CONFIG_KEY_0", "credential.helper"),
    ("GIT_CONFIG_VALUE_0", "/usr/local/sbin/mayfly-guest credential"),
];

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const fn m(
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
) -> MountSpec {
    MountSpec { source, target, fstype, flags, data }
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// In mount order (parents before children).
const MOUNTS: [MountSpec; 7] = [
    m("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None),
    m("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None),
    m("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        Some("ptmxmode=0666,gid=5,mode=620"),
    ),
    m("tmpfs", "/dev/shm", "tmpfs", NOSUID_NODEV, Some("mode=1777")),
    m("tmpfs", "/run", "tmpfs", NOSUID_NODEV, Some("mode=0755")),
    m("cgroup2", "/sys/fs/cgroup", "cgroup2", NOSUID_NODEV_NOEXEC, None),
];

/// Runs every setup step. The environment is set here, while PID 1 is still single-threaded.
/// `grow_root`: false only in tests, which run PID 1 in namespaces on a host whose own root may
/// well be `/dev/vda`.
pub fn prepare(grow_root: bool) {
    remount_root_rw();
    mount_pseudo_filesystems();
    link_dev_fd();
    if let Err(e) = nix::unistd::sethostname(HOSTNAME) {
        tracing::warn!("cannot set hostname: {e}");
    }
    if let Err(e) = loopback_up() {
        tracing::warn!("cannot bring up lo: {e}");
    }
    for (k, v) in ENV {
        std::env::set_var(k, v);
    }
    if grow_root {
        machine_files_on_tmpfs();
        grow_root_fs();
    }
}

/// The files a clone's identity rewrites ([`crate::identity`]).
pub const MACHINE_FILES: [&str; 2] = ["/etc/hostname", "/etc/machine-id"];

/// Puts [`MACHINE_FILES`] on tmpfs, bind-mounted over the image's copies (as container runtimes
/// do with `/etc/hostname`). Rewriting them on the root ext4 made ext4 flush the new file at the
/// rename (`auto_da_alloc`): a disk write into the qcow2 overlay in the middle of every restore,
/// 25–50 ms under TCG. They describe this machine only, so nothing is lost by keeping them off
/// the disk.
fn machine_files_on_tmpfs() {
    let dir = Path::new("/run/mayfly/etc");
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!("cannot create {}: {e}", dir.display());
        return;
    }
    for path in MACHINE_FILES {
        let target = Path::new(path);
        if is_mountpoint(target) {
            continue;
        }
        let copy = dir.join(target.file_name().expect("a file name"));
        let (contents, mode) = match std::fs::metadata(target) {
            Ok(m) => (std::fs::read(target).unwrap_or_default(), m.permissions().mode() & 0o7777),
            Err(_) => (Vec::new(), 0o644),
        };
        let made = std::fs::write(&copy, contents)
            .and_then(|()| std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode)))
            // A bind mount needs a file to cover.
            .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(target).map(drop));
        if let Err(e) = made {
            tracing::warn!("cannot prepare {path} on tmpfs: {e}");
            continue;
        }
        if let Err(e) = mount(Some(&copy), target, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
            tracing::warn!("cannot bind {} over {path}: {e}", copy.display());
        }
    }
}

fn remount_root_rw() {
    let ro = nix::sys::statvfs::statvfs("/").is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    if ro {
        if let Err(e) = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT, None::<&str>) {
            tracing::warn!("cannot remount / read-write: {e}");
        }
    }
}

/// True when `path` is the root of a mount: its device differs from its parent's.
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

fn mount_pseudo_filesystems() {
    for spec in &MOUNTS {
        let target = Path::new(spec.target);
        // The initramfs moves /dev, /proc and /sys into the new root when it can.
        if is_mountpoint(target) {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(Some(spec.source), target, Some(spec.fstype), spec.flags, spec.data) {
            tracing::warn!("cannot mount {} on {}: {e}", spec.fstype, spec.target);
        }
    }
}

/// The /dev links udev would make; bash process substitution needs /dev/fd.
fn link_dev_fd() {
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
}

/// `ip link set lo up` as one ioctl; the kernel then assigns 127.0.0.1/8 and ::1 itself.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, a valid ifreq
    // that lives for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags; both reads and writes use that field.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq that lives for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Size in bytes of the ext2/3/4 file system whose superblock is `sb` (the 1024 bytes at offset
/// 1024 of the device). Fields, little endian: `s_blocks_count_lo` u32 @0x04,
/// `s_log_block_size` u32 @0x18, `s_magic` u16 @0x38 = 0xEF53, `s_feature_incompat` u32 @0x60
/// (bit 0x80 = 64bit), `s_blocks_count_hi` u32 @0x150.
pub fn ext4_size(sb: &[u8]) -> Option<u64> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(sb.get(o..o + 4)?.try_into().ok()?));
    if sb.get(0x38..0x3a)? != [0x53, 0xEF] {
        return None;
    }
    let log = u32_at(0x18)?;
    if log > 6 {
        return None;
    }
    let mut blocks = u64::from(u32_at(0x04)?);
    if u32_at(0x60)? & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)?) << 32;
    }
    Some(blocks * (1024u64 << log))
}

fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// Starts `resize2fs /dev/vda` in the background when the disk outgrew its file system.
/// PID 1 reaps it like any other child.
fn grow_root_fs() {
    let Some(resize2fs) = find_program("resize2fs") else { return };
    let disk = std::fs::read_to_string(ROOT_DISK_SECTORS).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let mut sb = vec![0u8; 2048];
    let fs = File::open(ROOT_DISK).and_then(|mut f| f.read_exact(&mut sb)).ok().and_then(|()| ext4_size(&sb[1024..]));
    let (Some(sectors), Some(fs)) = (disk, fs) else { return };
    if sectors * 512 <= fs + RESIZE_SLACK {
        return;
    }
    tracing::info!(disk_bytes = sectors * 512, fs_bytes = fs, "growing the root file system");
    let out = crate::init::console();
    if let Err(e) = Command::new(resize2fs).arg(ROOT_DISK).stdin(Stdio::null()).stdout(out.0).stderr(out.1).spawn() {
        tracing::warn!("cannot start resize2fs: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(blocks_lo: u32, log: u32, incompat: u32, blocks_hi: u32) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&blocks_lo.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&log.to_le_bytes());
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&blocks_hi.to_le_bytes());
        sb
    }

    #[test]
    fn ext4_sizes() {
        let cases = [
            (superblock(262_144, 2, 0, 0), Some(1u64 << 30)), // 1 GiB of 4 KiB blocks
            (superblock(262_144, 2, 0, 7), Some(1u64 << 30)), // hi word ignored without 64bit
            (superblock(0, 2, 0x80, 1), Some((1u64 << 32) * 4096)), // 64bit feature uses the hi word
            (superblock(1024, 0, 0, 0), Some(1 << 20)),       // 1 KiB blocks
            (superblock(1024, 9, 0, 0), None),                // absurd block size
            (vec![0u8; 1024], None),                          // no magic
            (vec![0u8; 16], None),                            // too short
        ];
        for (sb, want) in cases {
            assert_eq!(ext4_size(&sb), want);
        }
    }

    #[test]
    fn mountpoints_by_device() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
        assert!(!is_mountpoint(Path::new("/nonexistent")));
    }
}

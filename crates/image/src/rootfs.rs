//! The root filesystem tree: `mmdebstrap` runs the recipe (suite, variant, packages, setup
//! commands) into a directory, then the builder writes Mayfly's base configuration. The tree is
//! cached by [`Recipe::rootfs_hash`], so a new guest binary or disk size never re-runs mmdebstrap.
//! The guest daemon is not part of the tree; `assemble` adds it.
//!
//! Base configuration: hostname `mayfly`, `/etc/hosts`, a placeholder `/etc/resolv.conf` (QEMU
//! user-mode DNS), root without a password, `/root` and `/workspace`. Documentation, man pages and
//! translations are never installed (dpkg `path-exclude`, kept in the image so later `apt-get
//! install`s skip them too); apt lists and caches are removed by mmdebstrap.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::Cache;
use crate::error::{ImageError, IoContext};
use crate::host::{self, HostTools};
use crate::progress::{Progress, Step};
use crate::recipe::{hash_parts, Recipe};

/// Bump when the mmdebstrap options or the base configuration change.
const ROOTFS_VERSION: &str = "mayfly-rootfs-v1";

/// dpkg filters: no docs except licences, no man/info pages, no translations.
const DPKG_FILTERS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
];

/// Merge `/usr` the debootstrap way (symlinks + the `usr-is-merged` package). Without it apt
/// installs `usrmerge` to satisfy init-system-helpers, which pulls in perl (~50 MB).
pub(crate) const MERGED_USR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

const HOSTNAME: &str = "mayfly\n";
const HOSTS: &str = "127.0.0.1\tlocalhost mayfly\n::1\tlocalhost ip6-localhost ip6-loopback\n";
const RESOLV_CONF: &str =
    "# Placeholder written by mayfly-image; the guest daemon rewrites it when it sets up \
                           networking.\nnameserver 10.0.2.3\n";

/// The rootfs cache key for `recipe`: the recipe's rootfs fields, the exact mmdebstrap arguments
/// and the base configuration, so any change to how the tree is made invalidates the cache.
pub(crate) fn cache_key(recipe: &Recipe) -> String {
    let args = mmdebstrap(&HostTools::named(), recipe, Path::new("TARGET"));
    let args: Vec<&[u8]> = args.get_args().map(|a| a.as_encoded_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![
        ROOTFS_VERSION.as_bytes(),
        HOSTNAME.as_bytes(),
        HOSTS.as_bytes(),
    ];
    parts.extend([RESOLV_CONF.as_bytes(), b"args"]);
    parts.extend(args);
    hash_parts(&parts)[..32].to_string()
}

/// Build (or reuse) the tree for `recipe`. Returns the tree's path and whether it was cached.
pub(crate) fn prepare(
    cache: &Cache,
    tools: &HostTools,
    recipe: &Recipe,
    force: bool,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(PathBuf, bool), ImageError> {
    let (dir, cached) = cache.get_or_fill("rootfs", &cache_key(recipe), force, |out| {
        let tree = out.join("root");
        let mut cmd = mmdebstrap(tools, recipe, &tree);
        host::run(Step::Rootfs, &mut cmd, log, progress)?;
        detach_mounts_under(&tree)?;
        configure(&tree)
    })?;
    let tree = dir.join("root");
    // Also for cached trees: one made before this check existed may still hold a mount.
    detach_mounts_under(&tree)?;
    Ok((tree, cached))
}

/// Lazily unmount everything mounted inside `tree`. mmdebstrap mounts /proc, /sys and /dev for
/// its hooks and only warns when an unmount fails ("target is busy" was seen with the dev
/// recipe); a mount left behind would be copied into the image.
fn detach_mounts_under(tree: &Path) -> Result<(), ImageError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "cannot read /proc/self/mountinfo".into())?;
    let tree = std::fs::canonicalize(tree).ctx(|| format!("cannot resolve {}", tree.display()))?;
    let mut points = mounts_under(&info, &tree);
    // Deepest first, so children go before their parents.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        tracing::warn!("unmounting {} left behind by mmdebstrap", point.display());
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
            .map_err(std::io::Error::from)
            .ctx(|| format!("cannot unmount {}", point.display()))?;
    }
    Ok(())
}

/// Mount points (field 5 of mountinfo, octal escapes decoded) strictly inside `tree`.
fn mounts_under(mountinfo: &str, tree: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p != tree && p.starts_with(tree))
        .collect()
}

/// Decode the `\ooo` escapes the kernel uses for spaces and the like in mount paths.
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mmdebstrap(tools: &HostTools, recipe: &Recipe, target: &Path) -> Command {
    let mut cmd = Command::new(&tools.mmdebstrap);
    cmd.arg("--mode=root")
        .arg("--format=directory")
        .arg(format!("--variant={}", recipe.variant))
        .arg(format!("--components={}", recipe.components.join(",")));
    if !recipe.packages.is_empty() {
        cmd.arg(format!("--include={}", recipe.packages.join(",")));
    }
    if !recipe.install_recommends {
        cmd.arg("--aptopt=APT::Install-Recommends \"false\"");
    }
    cmd.arg(format!("--hook-dir={MERGED_USR_HOOKS}"));
    for filter in DPKG_FILTERS {
        cmd.arg(format!("--dpkgopt={filter}"));
    }
    for setup in &recipe.setup {
        cmd.arg(format!("--customize-hook={}", setup_hook(setup)));
    }
    cmd.arg(&recipe.suite)
        .arg(target)
        .arg(&recipe.mirror)
        .args(&recipe.extra_sources);
    cmd
}

/// An mmdebstrap hook that runs `command` inside the tree (`$1`) with a clean environment.
fn setup_hook(command: &str) -> String {
    format!(
        "chroot \"$1\" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         HOME=/root DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 sh -ec {}",
        shell_quote(command)
    )
}

/// Quote `s` as one POSIX shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

/// Write the base configuration into `tree`.
fn configure(tree: &Path) -> Result<(), ImageError> {
    let write = |rel: &str, text: &str| {
        let path = tree.join(rel);
        // resolv.conf may be a dangling symlink into /run; replace, never write through.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).ctx(|| format!("cannot write {}", path.display()))
    };
    write("etc/hostname", HOSTNAME)?;
    write("etc/hosts", HOSTS)?;
    write("etc/resolv.conf", RESOLV_CONF)?;
    // Without the `passwd` package (variant essential) there is no shadow file and the password
    // field lives in /etc/passwd itself.
    let shadow = tree.join("etc/shadow");
    let accounts = if shadow.exists() {
        shadow
    } else {
        tree.join("etc/passwd")
    };
    let text =
        std::fs::read_to_string(&accounts).ctx(|| format!("cannot read {}", accounts.display()))?;
    std::fs::write(&accounts, clear_root_password(&text))
        .ctx(|| format!("cannot write {}", accounts.display()))?;
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in [
        ("root", 0o700),
        ("workspace", 0o755),
        ("usr/local/sbin", 0o755),
    ] {
        let path = tree.join(dir);
        std::fs::create_dir_all(&path).ctx(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("cannot chmod {}", path.display()))?;
    }
    Ok(())
}

/// Empty root's password field in `/etc/shadow` or `/etc/passwd` text (both put it second).
fn clear_root_password(shadow: &str) -> String {
    shadow
        .lines()
        .map(|line| match line.split_once(':') {
            Some(("root", rest)) => {
                let after = rest.split_once(':').map_or("", |(_, a)| a);
                format!("root::{after}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_password_is_cleared_and_others_kept() {
        let shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        assert_eq!(
            clear_root_password(shadow),
            "root::19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
    }

    #[test]
    fn setup_commands_are_quoted_into_one_word() {
        let hook = setup_hook("echo 'hi' > /etc/x");
        assert!(hook.starts_with("chroot \"$1\" /usr/bin/env -i "));
        assert!(
            hook.ends_with(r#"sh -ec 'echo '\''hi'\'' > /etc/x'"#),
            "{hook}"
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("a'b $c")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a'b $c");
    }

    #[test]
    fn finds_mounts_inside_the_tree_only() {
        let info = "22 1 0:5 / /proc rw - proc proc rw\n\
                    90 22 0:5 / /d/my\\040tree/root/proc ro - proc proc ro\n\
                    91 90 0:6 / /d/my\\040tree/root/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw\n\
                    92 1 0:7 / /d/my\\040tree/root rw - ext4 /dev/vda rw\n\
                    93 1 0:8 / /d/my\\040tree/rootfs rw - tmpfs t rw\n";
        let found = mounts_under(info, Path::new("/d/my tree/root"));
        let want = [
            "/d/my tree/root/proc",
            "/d/my tree/root/proc/sys/fs/binfmt_misc",
        ];
        assert_eq!(found, want.map(PathBuf::from));
    }

    #[test]
    fn mmdebstrap_command_line() {
        let recipe = Recipe::builtin("dev").unwrap();
        let tools = HostTools::named();
        let cmd = mmdebstrap(&tools, &recipe, Path::new("/t/root"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--variant=minbase".to_string()));
        assert!(args.contains(&format!("--hook-dir={MERGED_USR_HOOKS}")));
        assert!(args
            .iter()
            .any(|a| a.starts_with("--include=") && a.contains("ripgrep")));
        assert!(args.contains(&"--dpkgopt=path-exclude=/usr/share/doc/*".to_string()));
        let tail = &args[args.len() - 5..];
        assert_eq!(
            tail[..3],
            ["bookworm", "/t/root", "http://deb.debian.org/debian"]
        );
        assert!(tail[4].contains("bookworm-security"));
    }

    #[test]
    fn configure_writes_base_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "root:*:1::::::\n").unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", dir.path().join("etc/resolv.conf"))
            .unwrap();
        configure(dir.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/hostname"), "mayfly\n");
        assert!(read("etc/hosts").starts_with("127.0.0.1\tlocalhost mayfly\n"));
        assert!(read("etc/resolv.conf").contains("nameserver"));
        assert!(read("etc/shadow").starts_with("root::1"));
        assert!(dir.path().join("workspace").is_dir());

        std::fs::remove_file(dir.path().join("etc/shadow")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:*:0:0:root:/root:/bin/bash\n",
        )
        .unwrap();
        configure(dir.path()).unwrap();
        assert_eq!(read("etc/passwd"), "root::0:0:root:/root:/bin/bash\n");
    }
}

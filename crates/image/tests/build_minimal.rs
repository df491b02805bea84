//! Builds the real `minimal` image with the host tools (mmdebstrap, mkfs.ext4, qemu-img, apt) into
//! a temporary data dir, then checks the cache paths. Needs root and the Debian mirror; slow (the
//! cold build runs mmdebstrap). Set MAYFLY_IMAGE_TEST_DATA_DIR to keep the data dir between runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use mayfly_image::{
    build, BuildOptions, ImageStore, Progress, Recipe, Step, StepReport, TerminalProgress,
    GUEST_PATH,
};

/// Plain progress lines, plus a record of which steps came from the cache.
struct Recorder {
    inner: TerminalProgress,
    steps: Mutex<Vec<(Step, bool)>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            inner: TerminalProgress::with_spinners(false),
            steps: Mutex::new(Vec::new()),
        }
    }
    fn take(&self) -> Vec<(Step, bool)> {
        std::mem::take(&mut self.steps.lock().unwrap())
    }
}

impl Progress for Recorder {
    fn started(&self, step: Step) {
        self.inner.started(step)
    }
    fn finished(&self, step: Step, report: &StepReport) {
        self.steps.lock().unwrap().push((step, report.cached));
        self.inner.finished(step, report)
    }
    fn failed(&self, step: Step, error: &mayfly_image::ImageError) {
        self.inner.failed(step, error)
    }
}

fn copy_exe(from: &str, to: &Path) -> PathBuf {
    std::fs::copy(from, to).unwrap();
    to.to_path_buf()
}

/// Read a file out of the ext4 inside a qcow2 with debugfs (converting to raw first).
fn debugfs(qcow2: &Path, scratch: &Path, request: &str) -> String {
    let raw = scratch.join("check.raw");
    if !raw.exists() {
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(qcow2)
            .arg(&raw)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn builds_minimal_then_hits_the_cache() {
    let _tmp;
    let data_dir = match std::env::var_os("MAYFLY_IMAGE_TEST_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            _tmp = tempfile::Builder::new()
                .prefix("mayfly-image-test")
                .tempdir()
                .unwrap();
            _tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let recipe = Recipe::builtin("minimal").unwrap();
    let progress = Recorder::new();
    let opts = BuildOptions {
        data_dir: data_dir.clone(),
        guest_bin: copy_exe("/bin/true", &scratch.path().join("guest-true")),
        force: false,
    };

    // 1. Cold build (unless the data dir is being reused).
    let t = Instant::now();
    let first = build(&recipe, &opts, &progress).expect("minimal image builds");
    let cold = t.elapsed();
    eprintln!(
        "minimal: first build {:.1}s (cache hit: {})",
        cold.as_secs_f64(),
        first.cache_hit
    );
    progress.take();

    let img = &first.image;
    let vmlinux = std::fs::read(&img.kernel).unwrap();
    assert!(vmlinux.starts_with(b"\x7fELF"), "vmlinux is not ELF");
    let initrd = std::fs::read(&img.initrd).unwrap();
    assert!(
        initrd.starts_with(b"070701"),
        "initrd is not an uncompressed newc cpio"
    );
    let qcow2 = std::fs::read(&img.rootfs).map(|b| b[..4].to_vec()).unwrap();
    assert_eq!(qcow2, b"QFI\xfb", "rootfs is not qcow2");
    use std::os::unix::fs::PermissionsExt;
    for f in [&img.kernel, &img.initrd, &img.rootfs] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o444,
            "{}",
            f.display()
        );
    }
    let m = &img.manifest;
    assert_eq!(
        (m.name.as_str(), m.rootfs_format.as_str()),
        ("minimal", "qcow2")
    );
    assert_eq!(m.disk_size_bytes, 2 << 30);
    assert!(
        m.kernel_version.contains("cloud-amd64"),
        "{}",
        m.kernel_version
    );
    assert_eq!(m.files.vmlinux, vmlinux.len() as u64);
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&img.rootfs)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout)
        .contains(&format!("\"virtual-size\": {}", 2u64 << 30)));

    // The root filesystem holds the guest daemon and the base configuration.
    let stat = debugfs(&img.rootfs, scratch.path(), &format!("stat /{GUEST_PATH}"));
    assert!(
        stat.contains("Mode:  0755") && stat.contains("User:     0"),
        "{stat}"
    );
    assert_eq!(
        debugfs(&img.rootfs, scratch.path(), "cat /etc/hostname"),
        "mayfly\n"
    );
    assert!(debugfs(&img.rootfs, scratch.path(), "cat /etc/mayfly-image").contains(&img.key));
    assert!(debugfs(&img.rootfs, scratch.path(), "stat /workspace").contains("Type: directory"));
    let ls = debugfs(&img.rootfs, scratch.path(), "ls -l /usr/share/doc/bash");
    assert!(
        ls.contains("copyright") && !ls.contains("README"),
        "docs were not excluded: {ls}"
    );
    assert!(!debugfs(&img.rootfs, scratch.path(), "stat /lib/systemd/systemd").contains("Inode:"));

    let store = ImageStore::new(&data_dir);
    assert_eq!(store.get("minimal").unwrap(), *img);
    assert!(store
        .list()
        .iter()
        .any(|s| s.name == "minimal" && s.key == img.key));

    // 2. Same inputs: a cache hit.
    let t = Instant::now();
    let second = build(&recipe, &opts, &progress).unwrap();
    eprintln!("minimal: cached build {:.2}s", t.elapsed().as_secs_f64());
    assert!(second.cache_hit);
    assert_eq!(second.image, *img);
    progress.take();

    // 3. A new guest binary: new image key, but kernel, initramfs and rootfs come from the cache.
    // A nonce makes the binary new even when MAYFLY_IMAGE_TEST_DATA_DIR is reused.
    let guest2 = copy_exe("/bin/false", &scratch.path().join("guest-false"));
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut bytes = std::fs::read(&guest2).unwrap();
    bytes.extend_from_slice(&nonce.to_le_bytes());
    std::fs::write(&guest2, bytes).unwrap();
    let opts2 = BuildOptions {
        guest_bin: guest2,
        ..opts
    };
    let t = Instant::now();
    let third = build(&recipe, &opts2, &progress).unwrap();
    eprintln!(
        "minimal: rebuild with a new guest binary {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(!third.cache_hit);
    assert_ne!(third.image.key, img.key);
    let steps = progress.take();
    for step in [Step::Kernel, Step::Initramfs, Step::Rootfs] {
        assert!(
            steps.contains(&(step, true)),
            "{step} was not cached: {steps:?}"
        );
    }
    assert_eq!(store.get("minimal").unwrap().key, third.image.key);
    // The older image stays usable (sessions may still back onto it).
    assert!(img.rootfs.exists());
    eprintln!(
        "minimal: vmlinux {} MiB, initrd {} MiB, rootfs.qcow2 {} MiB",
        m.files.vmlinux >> 20,
        m.files.initrd >> 20,
        m.files.rootfs >> 20
    );
}

#[test]
fn missing_guest_binary_is_named() {
    let data = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        data_dir: data.path().to_path_buf(),
        guest_bin: "/nonexistent/mayfly-guest".into(),
        force: false,
    };
    let recipe = Recipe::builtin("minimal").unwrap();
    let e = build(&recipe, &opts, &mayfly_image::LogProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/mayfly-guest") && e.contains("does not exist"),
        "{e}"
    );
    assert!(ImageStore::new(data.path()).list().is_empty());
}

//! The QEMU command line, built as a pure function of the spec so it can be table-tested.
//!
//! Shape (q35, no default devices, everything virtio-pci):
//! `qemu-system-x86_64 -name mayfly-<id> -M q35 -accel tcg,tb-size=N -cpu max,-erms,-fsrm -nodefaults
//!  -no-user-config -nographic -m M -smp N -kernel vmlinux -initrd initrd.img -append ...
//!  -drive overlay (virtio-blk) -device virtio-serial-pci + virtserialport mayfly.0 -> channel.sock
//!  -device virtio-rng-pci -serial file:console.log -qmp unix:qmp.sock -nic none -sandbox on,...`

use crate::accel::Accel;
use crate::rundir::RunDir;
use std::ffi::OsString;
use std::path::PathBuf;

/// The CPU model under TCG: everything QEMU can emulate except "enhanced `rep movsb`" (ERMS)
/// and "fast short `rep movsb`" (FSRM). With those advertised, the guest kernel copies user
/// memory, pipes and sockets with `rep movsb`, and glibc's `memcpy` does too for large copies;
/// TCG runs that one byte per iteration. Without them the same copies use `rep movsq` or vector
/// loops: measured in a `minimal` guest, a pipe carries 388 instead of 108 MB/s and
/// `/dev/zero` reads 3.2 instead of 0.66 GB/s. KVM keeps `host` (the real CPU's string ops).
pub const TCG_CPU_MODEL: &str = "max,-erms,-fsrm";

/// Name of the virtio-serial port the guest daemon opens.
pub const CHANNEL_PORT_NAME: &str = "mayfly.0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgs {
    pub id: String,
    pub accel: Accel,
    pub machine: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub tcg_tb_size_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub sandbox: bool,
    pub memory: MemoryBacking,
    /// Start paused, waiting for `migrate-incoming` (clones and forks).
    pub incoming: bool,
    /// What QEMU opens for a clone's RAM instead of the template file: the sealed memfd it
    /// inherits (`/proc/self/fd/N`), so the template file is never opened by QEMU.
    pub mem_path: Option<PathBuf>,
    /// QEMU's own disk throttling (0 = none): bytes/s and operations/s, reads and writes together.
    pub disk_bytes_per_second: u64,
    pub disk_iops: u32,
}

/// Where guest RAM lives (recorded in `vm.json`, so an adopted VM can still be forked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBacking {
    /// Anonymous memory (a plain cold boot).
    Anonymous,
    /// RAM in a file mapped shared: the template VM whose RAM *is* the snapshot.
    TemplateFile(PathBuf),
    /// A clone: the template's RAM file mapped private (copy-on-write), state from `-incoming`.
    CloneOf(PathBuf),
}

pub fn build(a: &QemuArgs, run: &RunDir) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut push = |s: String| v.push(OsString::from(s));
    push("-name".into());
    push(format!("mayfly-{},debug-threads=off", a.id));
    push("-M".into());
    match &a.memory {
        MemoryBacking::Anonymous => push(a.machine.clone()),
        MemoryBacking::TemplateFile(path) | MemoryBacking::CloneOf(path) => {
            let share = if matches!(a.memory, MemoryBacking::TemplateFile(_)) { "on" } else { "off" };
            let path = match (&a.memory, &a.mem_path) {
                (MemoryBacking::CloneOf(_), Some(p)) => p,
                _ => path,
            };
            push(format!("{},memory-backend=mem", a.machine));
            push("-object".into());
            push(format!(
                "memory-backend-file,id=mem,size={}M,mem-path={},share={share}",
                a.memory_mib,
                qemu_escape(&path.display().to_string())
            ));
        }
    }
    push("-accel".into());
    match a.accel {
        Accel::Tcg => push(format!("tcg,tb-size={}", a.tcg_tb_size_mib)),
        Accel::Kvm => push("kvm".into()),
    }
    push("-cpu".into());
    push(match a.accel {
        Accel::Tcg => TCG_CPU_MODEL.into(),
        Accel::Kvm => "host".into(),
    });
    for s in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        push(s.into());
    }
    push("-m".into());
    push(format!("{}M", a.memory_mib));
    push("-smp".into());
    push(a.vcpus.to_string());
    push("-kernel".into());
    push(a.kernel.display().to_string());
    push("-initrd".into());
    push(a.initrd.display().to_string());
    push("-append".into());
    push(a.cmdline.clone());
    push("-drive".into());
    let mut throttle = String::new();
    if a.disk_bytes_per_second > 0 {
        throttle.push_str(&format!(",throttling.bps-total={}", a.disk_bytes_per_second));
    }
    if a.disk_iops > 0 {
        throttle.push_str(&format!(",throttling.iops-total={}", a.disk_iops));
    }
    push(format!(
        "file={},if=none,id=root,format=qcow2,discard=unmap,detect-zeroes=unmap{throttle}",
        qemu_escape(&run.overlay().display().to_string())
    ));
    push("-device".into());
    push("virtio-blk-pci,drive=root".into());
    push("-device".into());
    push("virtio-serial-pci,id=vser".into());
    push("-chardev".into());
    push(format!("socket,id=chan,path={},server=on,wait=off", qemu_escape(&run.channel().display().to_string())));
    push("-device".into());
    push(format!("virtserialport,bus=vser.0,chardev=chan,name={CHANNEL_PORT_NAME}"));
    push("-object".into());
    push("rng-random,id=rng,filename=/dev/urandom".into());
    push("-device".into());
    push("virtio-rng-pci,rng=rng".into());
    push("-chardev".into());
    push(format!("file,id=con,path={}", qemu_escape(&run.console().display().to_string())));
    push("-serial".into());
    push("chardev:con".into());
    push("-qmp".into());
    push(format!("unix:{},server=on,wait=off", qemu_escape(&run.qmp().display().to_string())));
    push("-nic".into());
    push("none".into());
    if a.incoming {
        push("-incoming".into());
        push("defer".into());
    }
    if a.sandbox {
        push("-sandbox".into());
        push("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into());
    }
    v
}

/// QEMU option values separate with commas; a literal comma is written twice.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(accel: Accel) -> QemuArgs {
        QemuArgs {
            id: "abc123".into(),
            accel,
            machine: "q35".into(),
            vcpus: 2,
            memory_mib: 512,
            tcg_tb_size_mib: 64,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/initrd.img".into(),
            cmdline: "console=ttyS0 quiet".into(),
            sandbox: true,
            memory: MemoryBacking::Anonymous,
            incoming: false,
            mem_path: None,
            disk_bytes_per_second: 0,
            disk_iops: 0,
        }
    }

    fn joined(a: &QemuArgs, dir: &str) -> String {
        let run = RunDir::new(std::path::Path::new(dir), &a.id);
        build(a, &run).iter().map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn tcg_command_line() {
        let s = joined(&args(Accel::Tcg), "/run/vms");
        for want in [
            "-name mayfly-abc123,debug-threads=off",
            "-M q35",
            "-accel tcg,tb-size=64",
            "-cpu max,-erms,-fsrm ",
            "-nodefaults",
            "-m 512M -smp 2",
            "-kernel /img/vmlinux -initrd /img/initrd.img -append console=ttyS0 quiet",
            "file=/run/vms/abc123/overlay.qcow2,if=none,id=root,format=qcow2",
            "socket,id=chan,path=/run/vms/abc123/channel.sock,server=on,wait=off",
            "virtserialport,bus=vser.0,chardev=chan,name=mayfly.0",
            "-qmp unix:/run/vms/abc123/qmp.sock,server=on,wait=off",
            "-nic none",
            "-sandbox on,",
        ] {
            assert!(s.contains(want), "missing {want:?} in {s}");
        }
        assert!(!s.contains("-netdev user"), "no default user-mode networking");
    }

    #[test]
    fn kvm_command_line() {
        let s = joined(&args(Accel::Kvm), "/v");
        assert!(s.contains("-accel kvm -cpu host"), "{s}");
        assert!(!s.contains("tb-size"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let s = joined(&args(Accel::Tcg), "/data,dir");
        assert!(s.contains("file=/data,,dir/abc123/overlay.qcow2,"), "{s}");
    }

    #[test]
    fn template_and_clone_memory() {
        let mut a = args(Accel::Tcg);
        a.memory = MemoryBacking::TemplateFile("/t/mem".into());
        let s = joined(&a, "/v");
        assert!(s.contains("-M q35,memory-backend=mem -object memory-backend-file,id=mem,size=512M,mem-path=/t/mem,share=on"), "{s}");
        assert!(!s.contains("-incoming"));
        a.memory = MemoryBacking::CloneOf("/t/mem".into());
        a.incoming = true;
        let s = joined(&a, "/v");
        assert!(s.contains("mem-path=/t/mem,share=off"), "{s}");
        assert!(s.contains("-incoming defer"), "{s}");
        assert!(!joined(&args(Accel::Tcg), "/v").contains("memory-backend"));
        // A clone maps the inherited sealed memfd, never the template file.
        a.mem_path = Some("/proc/self/fd/7".into());
        let s = joined(&a, "/v");
        assert!(s.contains("mem-path=/proc/self/fd/7,share=off"), "{s}");
    }

    #[test]
    fn disk_throttling() {
        let mut a = args(Accel::Tcg);
        assert!(!joined(&a, "/v").contains("throttling"));
        a.disk_bytes_per_second = 1000;
        a.disk_iops = 50;
        let s = joined(&a, "/v");
        assert!(s.contains("detect-zeroes=unmap,throttling.bps-total=1000,throttling.iops-total=50 "), "{s}");
    }

    #[test]
    fn sandbox_can_be_disabled() {
        let mut a = args(Accel::Tcg);
        a.sandbox = false;
        assert!(!joined(&a, "/v").contains("-sandbox"));
    }
}

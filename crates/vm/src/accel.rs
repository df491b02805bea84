//! Choosing the accelerator: KVM only where the host has real hardware virtualisation.
//!
//! `/dev/kvm` alone proves nothing: on hosts that are themselves guests it may be PVM
//! (`kvm_pvm`), a paravirtual nested hypervisor under which stock guest kernels crash. `auto`
//! therefore requires vmx/svm in `/proc/cpuinfo`, a usable `/dev/kvm`, and no `kvm_pvm` module.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Operator setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(format!("unknown accelerator {other:?}: expected auto, kvm or tcg")),
        }
    }
}

/// What a VM actually runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Facts about the host that decide `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostVirt {
    pub cpu_has_vmx_or_svm: bool,
    pub dev_kvm_usable: bool,
    pub kvm_pvm_loaded: bool,
}

impl HostVirt {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu_has_vmx_or_svm: cpuinfo_has_hw_virt(&cpuinfo),
            dev_kvm_usable: std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
            kvm_pvm_loaded: std::path::Path::new("/sys/module/kvm_pvm").exists(),
        }
    }
}

/// True when a `flags` line of /proc/cpuinfo lists `vmx` or `svm`.
pub fn cpuinfo_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Resolves a setting against the host. An explicit `kvm` on a host that cannot do it is an error.
pub fn resolve(setting: AccelSetting, host: HostVirt) -> Result<Accel, String> {
    let kvm_ok = host.cpu_has_vmx_or_svm && host.dev_kvm_usable && !host.kvm_pvm_loaded;
    match setting {
        AccelSetting::Tcg => Ok(Accel::Tcg),
        AccelSetting::Auto => Ok(if kvm_ok { Accel::Kvm } else { Accel::Tcg }),
        AccelSetting::Kvm if kvm_ok => Ok(Accel::Kvm),
        AccelSetting::Kvm => Err(format!(
            "accelerator kvm requested but this host cannot use it (hardware virtualisation: {}, /dev/kvm usable: {}, kvm_pvm loaded: {}); use accel = \"tcg\" or \"auto\"",
            host.cpu_has_vmx_or_svm, host.dev_kvm_usable, host.kvm_pvm_loaded
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn host(hw: bool, dev: bool, pvm: bool) -> HostVirt {
        HostVirt { cpu_has_vmx_or_svm: hw, dev_kvm_usable: dev, kvm_pvm_loaded: pvm }
    }

    #[test]
    fn auto_picks_kvm_only_on_real_hardware_virt() {
        let table = [
            (host(true, true, false), Accel::Kvm),
            (host(true, true, true), Accel::Tcg), // PVM nested hypervisor
            (host(false, true, true), Accel::Tcg), // this machine
            (host(false, true, false), Accel::Tcg),
            (host(true, false, false), Accel::Tcg),
        ];
        for (h, want) in table {
            assert_eq!(resolve(AccelSetting::Auto, h).unwrap(), want, "{h:?}");
        }
    }

    #[test]
    fn explicit_settings() {
        assert_eq!(resolve(AccelSetting::Tcg, host(true, true, false)).unwrap(), Accel::Tcg);
        assert_eq!(resolve(AccelSetting::Kvm, host(true, true, false)).unwrap(), Accel::Kvm);
        let err = resolve(AccelSetting::Kvm, host(false, true, true)).unwrap_err();
        assert!(err.contains("kvm_pvm loaded: true"), "{err}");
        assert_eq!("auto".parse::<AccelSetting>().unwrap(), AccelSetting::Auto);
        assert!("hvf".parse::<AccelSetting>().is_err());
    }

    #[test]
    fn cpuinfo_flags() {
        assert!(cpuinfo_has_hw_virt("processor: 0\nflags\t\t: fpu vme vmx sse\n"));
        assert!(cpuinfo_has_hw_virt("flags : svm lm\n"));
        assert!(!cpuinfo_has_hw_virt("flags : fpu hypervisor\nmodel name : vmx-like cpu\n"));
    }
}

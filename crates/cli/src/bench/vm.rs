//! VM-layer benchmarks (no server): cold boot, exec round trip, channel throughput, idle RSS,
//! template save and clone restore.

use super::stats::{rss_pss_mib, summarize, Summary};
use mayfly_proto::msg::ExecRequest;
use mayfly_vm::qemu::QemuBackend;
use mayfly_vm::{Vm, VmBackend, VmSpec};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct VmBench {
    pub accel: String,
    pub image: String,
    pub cold_boot_to_daemon: Summary,
    pub exec_true_round_trip: Summary,
    pub channel_write_mib_s: f64,
    pub channel_read_mib_s: f64,
    pub idle_cold_vm_rss_mib: f64,
    pub idle_cold_vm_pss_mib: f64,
    pub template_boot_ms: u64,
    pub template_save_ms: u64,
    pub template_state_kib: u64,
    pub clone_restore_to_daemon: Summary,
    pub idle_clone_rss_mib: f64,
    pub idle_clone_pss_mib: f64,
    pub teardown: Summary,
}

pub async fn run(backend: &QemuBackend, base: VmSpec, key: &str, boots: usize, clones: usize) -> anyhow::Result<VmBench> {
    let spec = |id: String| VmSpec { id, ..base.clone() };
    let mut boot = Vec::new();
    let mut teardown = Vec::new();
    for i in 0..boots {
        let vm = backend.create(spec(format!("bench-boot-{i}"))).await?;
        boot.push(vm.boot_time());
        eprintln!("  cold boot {}/{}: {} ms", i + 1, boots, vm.boot_time().as_millis());
        let t = Instant::now();
        vm.stop().await?;
        teardown.push(t.elapsed());
    }

    let vm = backend.create(spec("bench-exec".into())).await?;
    let mut rtt = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let out = vm.channel().exec(ExecRequest { cmd: vec!["true".into()], ..Default::default() }, 1024).await?;
        anyhow::ensure!(out.exit_code == Some(0), "true failed");
        rtt.push(t.elapsed());
    }
    let data = vec![0x5au8; 64 << 20];
    let t = Instant::now();
    vm.channel().write_file("/tmp/bench.bin", None, &data[..]).await?;
    let write = 64.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = vm.channel().read_to_vec("/tmp/bench.bin").await?;
    let read = 64.0 / t.elapsed().as_secs_f64();
    anyhow::ensure!(back.len() == data.len(), "read back {} bytes", back.len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, pss) = rss_pss_mib(vm.pid().unwrap_or(0));
    vm.stop().await?;

    let tdir = backend.config().state_dir.join("bench-template");
    let template = backend.create_template(spec("bench-tpl".into()), key, &tdir).await?;
    let mut restore = Vec::new();
    let mut live: Vec<Arc<dyn Vm>> = Vec::new();
    for i in 0..clones {
        let vm = backend.restore(spec(format!("bench-clone-{i}")), &template).await?;
        restore.push(vm.boot_time());
        live.push(vm);
        // Keep at most 4 clones alive: enough to measure sharing, bounded memory.
        if live.len() > 4 {
            let old = live.remove(0);
            let t = Instant::now();
            old.stop().await?;
            teardown.push(t.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut clone_rss = Vec::new();
    for vm in &live {
        clone_rss.push(rss_pss_mib(vm.pid().unwrap_or(0)));
    }
    for vm in live {
        vm.stop().await?;
    }
    let _ = std::fs::remove_dir_all(&tdir);
    let n = clone_rss.len().max(1) as f64;
    Ok(VmBench {
        accel: format!("{:?}", backend.accel()).to_lowercase(),
        image: base.image.clone(),
        cold_boot_to_daemon: summarize(&boot),
        exec_true_round_trip: summarize(&rtt),
        channel_write_mib_s: (write * 10.0).round() / 10.0,
        channel_read_mib_s: (read * 10.0).round() / 10.0,
        idle_cold_vm_rss_mib: rss,
        idle_cold_vm_pss_mib: pss,
        template_boot_ms: template.meta.boot_ms,
        template_save_ms: template.meta.save_ms,
        template_state_kib: template.meta.state_bytes / 1024,
        clone_restore_to_daemon: summarize(&restore),
        idle_clone_rss_mib: ((clone_rss.iter().map(|c| c.0).sum::<f64>() / n) * 10.0).round() / 10.0,
        idle_clone_pss_mib: ((clone_rss.iter().map(|c| c.1).sum::<f64>() / n) * 10.0).round() / 10.0,
        teardown: summarize(&teardown),
    })
}

impl std::fmt::Display for VmBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "VM layer ({} image, {}):", self.image, self.accel)?;
        writeln!(f, "  cold boot → daemon ready     {}", self.cold_boot_to_daemon)?;
        writeln!(f, "  exec `true` round trip       {}", self.exec_true_round_trip)?;
        writeln!(f, "  channel throughput           write {:.1} MiB/s, read {:.1} MiB/s", self.channel_write_mib_s, self.channel_read_mib_s)?;
        writeln!(f, "  idle cold-booted VM          RSS {:.1} MiB, PSS {:.1} MiB", self.idle_cold_vm_rss_mib, self.idle_cold_vm_pss_mib)?;
        writeln!(f, "  template                     boot {} ms, save {} ms, device state {} KiB", self.template_boot_ms, self.template_save_ms, self.template_state_kib)?;
        writeln!(f, "  clone restore → daemon ready {}", self.clone_restore_to_daemon)?;
        writeln!(f, "  idle clone                   RSS {:.1} MiB, PSS {:.1} MiB", self.idle_clone_rss_mib, self.idle_clone_pss_mib)?;
        write!(f, "  teardown                     {}", self.teardown)
    }
}

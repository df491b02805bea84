//! `mayfly bench` — measures what users feel and prints it, and writes JSON.
//! Speed is measured here, never asserted in tests.

mod cluster;
mod density;
mod ports;
mod procstat;
mod session;
pub mod stats;
mod throughput;
mod vm;

use clap::Args;
use mayfly_vm::accel::AccelSetting;
use mayfly_vm::qemu::{QemuBackend, QemuConfig};
use mayfly_vm::VmSpec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct BenchOpts {
    /// Image to measure.
    #[arg(long, default_value = "minimal")]
    image: String,
    /// Cold boots to time.
    #[arg(long, default_value_t = 5)]
    boots: usize,
    /// Clone restores to time.
    #[arg(long, default_value_t = 20)]
    clones: usize,
    /// Creates timed per session mode (pool hit, pool miss).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Creates timed with cold boots.
    #[arg(long, default_value_t = 20)]
    cold_runs: usize,
    /// Memory budget for the "idle sessions that fit" figure, MiB.
    #[arg(long, default_value_t = 16384)]
    budget_mib: u64,
    /// Only the VM layer (no server).
    #[arg(long, conflicts_with = "sessions_only")]
    vm_only: bool,
    /// Only the session benchmarks (through a server).
    #[arg(long)]
    sessions_only: bool,
    /// Only the density benchmark: N idle sessions (default 8), then host and per-QEMU CPU, PSS
    /// per session, exec `true` with N idle sessions vs one. Needs memory for N VMs (≈ PSS each).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "8", conflicts_with_all = ["vm_only", "sessions_only"])]
    density: Option<usize>,
    /// With --density: let idle sessions pause after this many seconds (`pause_idle_seconds`),
    /// wait until all are paused, then measure them paused, and time an exec on paused sessions
    /// (the resume included).
    #[arg(long, value_name = "SECONDS", requires = "density")]
    pause_after: Option<u64>,
    /// Only the throughput benchmark (bulk downloads through the preview proxy and the files API,
    /// and uploads, against the same download inside the guest over loopback) and port
    /// publishing (listen() in the guest → port_opened → the preview's first answer).
    #[arg(long, conflicts_with_all = ["vm_only", "sessions_only", "density"])]
    throughput: bool,
    /// Size of the throughput benchmark's file, MiB.
    #[arg(long, default_value_t = 64)]
    throughput_mib: u64,
    /// Transfers timed per throughput figure.
    #[arg(long, default_value_t = 3)]
    throughput_runs: usize,
    /// Only the cluster benchmark, against the running nodes at these URLs (comma-separated, as
    /// they advertise themselves; the token from MAYFLY_TOKEN): creates, GETs and execs through
    /// the owner node vs through another node. `scripts/bench-cluster` sets up PostgreSQL and two nodes.
    #[arg(long, value_name = "URLS", value_delimiter = ',', conflicts_with_all = ["vm_only", "sessions_only", "density", "throughput"])]
    cluster: Option<Vec<String>>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
    #[arg(long, env = "MAYFLY_ACCEL", default_value = "auto")]
    accel: AccelSetting,
}

pub async fn run(opts: BenchOpts, data_dir: &Path) -> anyhow::Result<ExitCode> {
    if let Some(urls) = &opts.cluster {
        eprintln!("measuring forwarding between {} nodes ({} creates)…", urls.len(), opts.runs);
        let c = cluster::run(urls, &opts.image, opts.runs).await?;
        println!("{c}");
        std::fs::write(&opts.out, serde_json::to_vec_pretty(&serde_json::json!({ "cluster": c }))?)?;
        println!("wrote {}", opts.out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let image = mayfly_image::ImageStore::new(data_dir).get(&opts.image)?;
    let state = data_dir.join("bench-vms");
    let mut cfg = QemuConfig::new(&state);
    cfg.accel = opts.accel;
    cfg.die_with_parent = true;
    let backend = QemuBackend::new(cfg)?;
    let base = VmSpec {
        id: String::new(),
        image: image.name.clone(),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline: image.manifest.kernel_cmdline.clone(),
        base_disk: image.rootfs.clone(),
        disk_size_bytes: None,
        vcpus: image.manifest.vcpus,
        memory_mib: image.manifest.memory_mib,
    };
    let mut json = serde_json::json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "accel": format!("{:?}", backend.accel()).to_lowercase(),
        },
    });
    if let Some(n) = opts.density {
        eprintln!("measuring {n} idle sessions…");
        let d = density::run(data_dir, &opts.image, n, opts.pause_after).await?;
        println!("{d}");
        json["density"] = serde_json::to_value(&d)?;
    }
    let only_throughput = opts.throughput;
    if !opts.sessions_only && opts.density.is_none() && !only_throughput {
        eprintln!("measuring the VM layer ({} cold boots, {} clones)…", opts.boots, opts.clones);
        let vm = vm::run(&backend, base, &image.key, opts.boots, opts.clones).await?;
        println!("{vm}");
        json["vm"] = serde_json::to_value(&vm)?;
    }
    if !opts.vm_only && opts.density.is_none() && !only_throughput {
        eprintln!("measuring sessions ({} runs per mode, {} cold)…", opts.runs, opts.cold_runs);
        let s = session::run(data_dir, &opts.image, opts.runs, opts.cold_runs, opts.budget_mib).await?;
        println!("{s}");
        json["sessions"] = serde_json::to_value(&s)?;
    }
    if !opts.vm_only && opts.density.is_none() {
        eprintln!("measuring throughput ({} MiB, {} runs per figure)…", opts.throughput_mib, opts.throughput_runs);
        let (t, ports) = throughput_bench(data_dir, &opts.image, opts.throughput_mib, opts.throughput_runs).await?;
        println!("{t}");
        println!("{ports}");
        json["throughput"] = serde_json::to_value(&t)?;
        json["port_publish"] = serde_json::to_value(&ports)?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&json)?)?;
    println!("wrote {}", opts.out.display());
    let _ = std::fs::remove_dir_all(&state);
    Ok(ExitCode::SUCCESS)
}

/// The throughput and port-publishing benchmarks on a server and session of their own.
async fn throughput_bench(
    data_dir: &Path,
    image: &str,
    mib: u64,
    runs: usize,
) -> anyhow::Result<(throughput::ThroughputBench, ports::PortPublish)> {
    anyhow::ensure!(mib >= 1 && runs >= 1, "--throughput-mib and --throughput-runs must be at least 1");
    let r = session::start(data_dir, image, 0, true, "throughput").await?;
    let result = async {
        let id = density::create(&r).await?;
        density::wait_ready(&r, &id).await?;
        let t = throughput::run(&r, &id, mib, runs).await?;
        // Each run is one listen(): cheap enough for more samples than the bulk transfers.
        let port_runs = runs.max(ports::MIN_RUNS);
        eprintln!("measuring port publishing ({port_runs} runs)…");
        Ok((t, ports::run(&r, &id, port_runs).await?))
    }
    .await;
    r.stop().await;
    result
}

//! `mayfly vm …` — developer commands that boot a VM directly (no server): run a command in a
//! fresh VM, or open a shell in one. The VM is destroyed when the command ends.

use crate::terminal::{self, TermInput};
use anyhow::Context;
use clap::{Args, Subcommand};
use mayfly_proto::msg::{Ctrl, ExecRequest, OpenRequest, PtyRequest};
use mayfly_proto::mux::Event;
use mayfly_vm::accel::AccelSetting;
use mayfly_vm::qemu::{QemuBackend, QemuConfig};
use mayfly_vm::{Vm, VmBackend, VmSpec};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Subcommand)]
pub enum VmCmd {
    /// Boot a VM, run a command, print its output, exit with its code, destroy the VM.
    Run {
        #[command(flatten)]
        opts: VmOpts,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Boot a VM and open an interactive shell in this terminal.
    Shell {
        #[command(flatten)]
        opts: VmOpts,
    },
}

#[derive(Args)]
pub struct VmOpts {
    /// Image to boot.
    #[arg(long, default_value = "minimal")]
    image: String,
    /// Memory in MiB (default: the image's).
    #[arg(long)]
    memory: Option<u32>,
    /// vCPUs (default: the image's).
    #[arg(long)]
    cpus: Option<u32>,
    /// Disk size in GiB (default: the image's).
    #[arg(long)]
    disk_gib: Option<u64>,
    /// Accelerator: auto, kvm or tcg.
    #[arg(long, env = "MAYFLY_ACCEL", default_value = "auto")]
    accel: AccelSetting,
    /// Print boot timing to stderr.
    #[arg(long, short)]
    verbose: bool,
}

pub async fn run(cmd: VmCmd, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run { opts, cmd } => {
            let vm = boot(&opts, data_dir).await?;
            let result = run_command(vm.as_ref(), cmd).await;
            vm.stop().await?;
            result
        }
        VmCmd::Shell { opts } => {
            let vm = boot(&opts, data_dir).await?;
            let result = shell(vm.as_ref()).await;
            vm.stop().await?;
            result
        }
    }
}

async fn boot(opts: &VmOpts, data_dir: &Path) -> anyhow::Result<Arc<dyn Vm>> {
    let store = mayfly_image::ImageStore::new(data_dir);
    let image = store.get(&opts.image)?;
    let mut cfg = QemuConfig::new(data_dir.join("vms"));
    cfg.accel = opts.accel;
    cfg.die_with_parent = true;
    let backend = QemuBackend::new(cfg)?;
    let m = &image.manifest;
    let spec = VmSpec {
        id: format!("vm-{}", hex::encode(rand::random::<[u8; 4]>())),
        image: image.name.clone(),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline: m.kernel_cmdline.clone(),
        base_disk: image.rootfs.clone(),
        disk_size_bytes: opts.disk_gib.map(|g| g << 30),
        vcpus: opts.cpus.unwrap_or(m.vcpus),
        memory_mib: opts.memory.unwrap_or(m.memory_mib),
    };
    let vm = backend.create(spec).await.context("booting the VM")?;
    if opts.verbose {
        eprintln!("vm {} ready in {} ms ({:?})", vm.id(), vm.boot_time().as_millis(), backend.accel());
    }
    Ok(vm)
}

async fn run_command(vm: &dyn Vm, cmd: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut s = vm.channel().open(&OpenRequest::Exec(ExecRequest { cmd, ..Default::default() })).await?;
    s.send_eof().await?;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut status = None;
    loop {
        match s.recv().await {
            Event::Data { fd: 1, data } => err.write_all(&data)?,
            Event::Data { data, .. } => out.write_all(&data)?,
            Event::Ctrl(Ctrl::Exit { code, signal, timed_out }) => status = Some((code, signal, timed_out)),
            Event::Ctrl(Ctrl::Error { message, .. }) => anyhow::bail!("{message}"),
            Event::Ctrl(_) => {}
            Event::Eof => break,
            Event::Reset(r) => anyhow::bail!("the VM's command stream broke: {r}\n{}", vm.console_tail(2000)),
        }
    }
    out.flush()?;
    Ok(match status {
        Some((Some(code), _, _)) => ExitCode::from(code.clamp(0, 255) as u8),
        Some((None, Some(sig), _)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::from(255),
    })
}

async fn shell(vm: &dyn Vm) -> anyhow::Result<ExitCode> {
    let (cols, rows) = terminal::size();
    let stream = vm.channel().open(&OpenRequest::Pty(PtyRequest { cols, rows, ..Default::default() })).await?;
    let (tx, mut rx) = stream.split();
    let (in_tx, mut in_rx) = mpsc::channel::<TermInput>(64);
    let (out_tx, out_rx) = mpsc::channel(64);
    let pump_in = tokio::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            let r = match i {
                TermInput::Data(d) => tx.send_data(0, &d).await,
                TermInput::Resize { cols, rows } => tx.send_ctrl(&Ctrl::Resize { cols, rows }).await,
            };
            if r.is_err() {
                break;
            }
        }
    });
    let pump_out = tokio::spawn(async move {
        let mut code = 0;
        loop {
            match rx.recv().await {
                Event::Data { data, .. } => {
                    if out_tx.send(data).await.is_err() {
                        break;
                    }
                }
                Event::Ctrl(Ctrl::Exit { code: c, .. }) => code = c.unwrap_or(1),
                Event::Ctrl(_) => {}
                Event::Eof | Event::Reset(_) => break,
            }
        }
        code
    });
    terminal::run(in_tx, out_rx).await?;
    pump_in.abort();
    let code = pump_out.await.unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

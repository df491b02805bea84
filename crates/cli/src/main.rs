//! `mayfly` — one binary for the control plane, images, sessions and developer VMs.

mod paths;
mod vm_cmd;
mod image_cmd;
mod terminal;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mayfly", version, about = "Fresh VMs as browser IDEs, on your own machine")]
struct Cli {
    /// Data directory (images, VM state, database). Default: $XDG_DATA_HOME/mayfly.
    #[arg(long, global = true, env = "MAYFLY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and list guest images.
    #[command(subcommand)]
    Image(image_cmd::ImageCmd),
    /// Developer VMs without a server: boot, run, destroy.
    #[command(subcommand)]
    Vm(vm_cmd::VmCmd),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data_dir = paths::data_dir(cli.data_dir);
    // current_thread: QEMU children are spawned from the main thread, so PDEATHSIG ties their
    // lifetime to this process for short-lived developer commands.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Image(c) => image_cmd::run(c, &data_dir).await,
            Cmd::Vm(c) => vm_cmd::run(c, &data_dir).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

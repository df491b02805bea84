//! `mayfly image …` — build and list guest images.

use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build an image from a built-in recipe name or a recipe file (cached by recipe hash).
    Build {
        /// `minimal`, `dev`, or a path to a recipe .toml.
        #[arg(default_value = "dev")]
        name: String,
        /// Rebuild even if a cached build matches.
        #[arg(long)]
        force: bool,
        /// Guest daemon binary to install (default: mayfly-guest next to this binary).
        #[arg(long)]
        guest_bin: Option<PathBuf>,
    },
    /// List built images.
    Ls,
}

pub async fn run(cmd: ImageCmd, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Build { name, force, guest_bin } => {
            let recipe = if name.ends_with(".toml") || Path::new(&name).is_file() {
                mayfly_image::Recipe::load(Path::new(&name))?
            } else {
                mayfly_image::Recipe::builtin(&name)?
            };
            let opts = mayfly_image::BuildOptions {
                data_dir: data_dir.to_path_buf(),
                guest_bin: guest_bin.unwrap_or_else(crate::paths::guest_bin),
                force,
            };
            let outcome = tokio::task::spawn_blocking(move || mayfly_image::build(&recipe, &opts, &mayfly_image::TerminalProgress::new()))
                .await
                .context("image build task")??;
            println!("{outcome}");
            Ok(ExitCode::SUCCESS)
        }
        ImageCmd::Ls => {
            let store = mayfly_image::ImageStore::new(data_dir);
            let list = store.list();
            if list.is_empty() {
                println!("no images built yet; run: mayfly image build minimal");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<12} {:<18} {:>10}  BUILT", "NAME", "KEY", "SIZE");
            for i in list {
                let built = i.built_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                println!("{:<12} {:<18} {:>10}  {}", i.name, &i.key[..i.key.len().min(16)], human_bytes(i.size_bytes), built);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

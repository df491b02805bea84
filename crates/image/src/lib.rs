//! Guest images for Mayfly: recipes, the builder, and the store other crates find images in.
//!
//! An image is built from a [`Recipe`] (`images/<name>.toml`) into:
//! - `vmlinux`: Debian's cloud kernel, decompressed to the ELF QEMU boots via PVH;
//! - `initrd.img`: an uncompressed busybox initramfs that loads the virtio modules, mounts the root
//!   disk and `switch_root`s to `/usr/local/sbin/mayfly-guest init` (no systemd);
//! - `rootfs.qcow2`: a read-only ext4 base disk made by mmdebstrap + `mkfs.ext4 -d`, holding the
//!   guest daemon;
//! - `manifest.json`: key, kernel command line, default sizing, file sizes, the recipe.
//!
//! On-disk layout under the data dir (details in [`store`]; the caches are described in `src/cache.rs`):
//! ```text
//! images/<name>/<key>/{vmlinux, initrd.img, rootfs.qcow2, manifest.json}
//! images/<name>/current -> <key>
//! cache/{debs, kernel, initramfs, rootfs}/...      per-step caches
//! logs/build-<name>.log                            output of the tools the last build ran
//! tmp/build.<name>.*/                              scratch of a running build
//! ```
//!
//! Not owned here: booting images (the `vm` crate), the memory snapshot of a booted image, and
//! the guest daemon itself (`guest` crate; its binary path is a [`BuildOptions`] input).
//! [`build`] is blocking; async callers run it under `spawn_blocking`.

mod assemble;
mod build;
mod cache;
mod cpio;
mod error;
mod host;
mod initramfs;
mod kernel;
mod manifest;
mod progress;
mod recipe;
mod rootfs;
pub mod store;
pub mod vmlinux;

pub use assemble::GUEST_PATH;
pub use build::{build, BuildOptions, BuildOutcome, BUILDER_VERSION, KERNEL_CMDLINE};
pub use error::ImageError;
pub use initramfs::init_script;
pub use kernel::VIRTIO_MODULES;
pub use manifest::{FileSizes, Manifest, INITRD_FILE, MANIFEST_FILE, ROOTFS_FILE, VMLINUX_FILE};
pub use progress::{LogProgress, Progress, Step, StepReport, TerminalProgress};
pub use recipe::{builtin_recipes, parse_size, Recipe, RecipeError};
pub use store::{BuiltImage, ImageStore, ImageSummary};

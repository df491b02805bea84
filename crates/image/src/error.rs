//! The crate's error type. Messages are short and say what to do next; the `#[source]` chain carries
//! the underlying cause and is printed once by the binary.

use std::io;
use std::path::PathBuf;

use crate::recipe::RecipeError;
use crate::vmlinux::ExtractError;

/// Everything that can go wrong while building, storing or looking up an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image has never been built into this data dir (or its `current` link is missing).
    #[error("image {name:?} is not built ({}); run `mayfly image build {name}`", built_list(.available))]
    NotBuilt {
        name: String,
        available: Vec<String>,
    },

    /// `Recipe::builtin` was asked for a name that is not compiled in.
    #[error("unknown recipe {name:?}; built-in recipes: {}", .known.join(", "))]
    UnknownRecipe { name: String, known: Vec<String> },

    /// A recipe file or built-in recipe does not parse or is inconsistent.
    #[error("invalid recipe {origin}")]
    Recipe {
        origin: String,
        #[source]
        source: RecipeError,
    },

    /// A host tool the build needs is not installed.
    #[error("`{tool}` not found on this host; install it with `apt-get install {package}`")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    /// The host cannot build images for a reason other than a missing tool.
    #[error("{0}")]
    Host(String),

    /// A build step's external command failed. `tail` holds the last lines of its output.
    #[error("{step}: `{program}` failed ({status}); full log: {}\n{tail}", .log.display())]
    Command {
        step: &'static str,
        program: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// Resolving, downloading or unpacking the kernel package failed.
    #[error("kernel: {0}")]
    Kernel(String),

    /// apt could not fetch the kernel package.
    #[error("cannot download {package} {version}; if the host's apt lists are old, run `apt-get update`")]
    KernelDownload {
        package: String,
        version: String,
        #[source]
        source: Box<ImageError>,
    },

    /// The kernel image in the package holds no recognisable compressed vmlinux.
    #[error("cannot extract vmlinux from {}", .path.display())]
    Vmlinux {
        path: PathBuf,
        #[source]
        source: ExtractError,
    },

    /// The rootfs tree does not fit into the recipe's disk size.
    #[error("rootfs needs about {needed_mib} MiB but disk_size is {disk_mib} MiB; raise disk_size in the recipe")]
    DiskTooSmall { needed_mib: u64, disk_mib: u64 },

    /// A manifest on disk cannot be read back.
    #[error("invalid manifest {}", .path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A file-system operation failed; `context` says which one.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn built_list(available: &[String]) -> String {
    if available.is_empty() {
        "no images are built yet".to_string()
    } else {
        format!("built images: {}", available.join(", "))
    }
}

/// Attach a human context to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_built_lists_images_and_next_step() {
        let e = ImageError::NotBuilt {
            name: "dev".into(),
            available: vec!["minimal".into()],
        };
        assert_eq!(
            e.to_string(),
            "image \"dev\" is not built (built images: minimal); run `mayfly image build dev`"
        );
        let e = ImageError::NotBuilt {
            name: "dev".into(),
            available: vec![],
        };
        assert_eq!(
            e.to_string(),
            "image \"dev\" is not built (no images are built yet); run `mayfly image build dev`"
        );
    }

    #[test]
    fn tool_missing_names_the_package() {
        let e = ImageError::ToolMissing {
            tool: "qemu-img",
            package: "qemu-utils",
        };
        assert_eq!(
            e.to_string(),
            "`qemu-img` not found on this host; install it with `apt-get install qemu-utils`"
        );
    }
}

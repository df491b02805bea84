//! Where sessions' images come from: [`ImageCatalog`], backed by the image store of the data dir.

use mayfly_image::{ImageError, ImageStore};
use std::path::{Path, PathBuf};

/// What booting one image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Virtual size of the image's disk.
    pub disk_size_bytes: u64,
    /// Content key of the build: templates made from another key are never restored.
    pub key: String,
    /// The build's directory; templates live in it.
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The name is not built (or not a valid image name); `available` lists the built ones.
    #[error("unknown image {name:?}; built images: {}", built_list(.available))]
    Unknown { name: String, available: Vec<String> },
    #[error("image {name:?} cannot be loaded")]
    Broken {
        name: String,
        #[source]
        source: Box<ImageError>,
    },
}

fn built_list(names: &[String]) -> String {
    if names.is_empty() {
        "none (build one with `mayfly image build minimal`)".into()
    } else {
        names.join(", ")
    }
}

pub trait ImageCatalog: Send + Sync {
    fn get(&self, name: &str) -> Result<BootImage, CatalogError>;
    fn list(&self) -> Vec<mayfly_proto::api::ImageInfo>;
}

/// The built images under `<dir>/images`.
pub struct StoreCatalog {
    store: ImageStore,
}

impl StoreCatalog {
    pub fn new(data_dir: &Path) -> Self {
        Self { store: ImageStore::new(data_dir) }
    }
}

/// Image names are file names in the store: refuse anything that could leave it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ImageCatalog for StoreCatalog {
    fn get(&self, name: &str) -> Result<BootImage, CatalogError> {
        let unknown = || CatalogError::Unknown {
            name: name.to_string(),
            available: self.store.list().into_iter().map(|s| s.name).collect(),
        };
        if !valid_name(name) {
            return Err(unknown());
        }
        match self.store.get(name) {
            Ok(img) => Ok(BootImage {
                key: img.key,
                dir: img.dir,
                name: img.name,
                kernel: img.kernel,
                initrd: img.initrd,
                rootfs: img.rootfs,
                cmdline: img.manifest.kernel_cmdline,
                memory_mib: img.manifest.memory_mib,
                vcpus: img.manifest.vcpus,
                disk_size_bytes: img.manifest.disk_size_bytes,
            }),
            Err(ImageError::NotBuilt { name, available }) => Err(CatalogError::Unknown { name, available }),
            Err(source) => Err(CatalogError::Broken { name: name.to_string(), source: Box::new(source) }),
        }
    }

    fn list(&self) -> Vec<mayfly_proto::api::ImageInfo> {
        self.store
            .list()
            .into_iter()
            .map(|s| mayfly_proto::api::ImageInfo {
                name: s.name,
                description: s.description,
                built_at: crate::manager::rfc3339(s.built_at),
                size_bytes: s.size_bytes,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_names_stay_inside_the_store() {
        for ok in ["minimal", "dev", "my_image-2.1"] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}

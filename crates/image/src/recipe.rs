//! Image recipes: the TOML files under `images/` at the repo root, parsed and validated.
//!
//! A recipe says what goes into the root filesystem (Debian suite, mirror, packages, setup commands)
//! and how the VM is sized by default. The built-in recipes are compiled into the binary; any other
//! recipe can be loaded from a file. Hashes of a recipe key the build caches, so their inputs are
//! normalised (package order does not matter) and versioned.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ImageError;

/// Built-in recipes, `(name, toml)`.
const BUILTIN: &[(&str, &str)] = &[
    ("minimal", include_str!("../../../images/minimal.toml")),
    ("dev", include_str!("../../../images/dev.toml")),
];

/// Bump when the meaning of a recipe field changes, so old caches are not reused.
const RECIPE_HASH_VERSION: &str = "mayfly-recipe-v1";

/// Why a recipe is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("TOML syntax or schema error")]
    Toml(#[from] toml::de::Error),
    #[error("cannot read the file")]
    Read(#[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A parsed, validated image recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Image name: a lowercase DNS label (`minimal`, `dev`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Debian suite, e.g. `bookworm`.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Main Debian mirror URL.
    #[serde(default = "default_mirror")]
    pub mirror: String,
    /// Extra apt source lines (`deb URL SUITE COMPONENTS`), e.g. security updates.
    #[serde(default)]
    pub extra_sources: Vec<String>,
    /// Archive components for `mirror`.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// mmdebstrap variant: `essential` (smallest), `minbase` (adds apt), ...
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Whether apt installs Recommends (off keeps images small and predictable).
    #[serde(default)]
    pub install_recommends: bool,
    /// Extra packages on top of the variant.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Shell commands run in order inside the finished rootfs (chroot, `sh -c`).
    #[serde(default)]
    pub setup: Vec<String>,
    /// Kernel meta-package resolved through the host's apt.
    #[serde(default = "default_kernel_package")]
    pub kernel_package: String,
    /// Size of the root disk, e.g. `2G`, `1536M`.
    pub disk_size: String,
    /// Default guest memory.
    pub memory_mib: u32,
    /// Default guest vCPUs.
    pub vcpus: u32,
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_mirror() -> String {
    "http://deb.debian.org/debian".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_variant() -> String {
    "minbase".into()
}
fn default_kernel_package() -> String {
    "linux-image-cloud-amd64".into()
}

/// The fields that decide the rootfs contents; everything else (name, sizes) is excluded so that
/// resizing a disk does not re-run mmdebstrap.
#[derive(Serialize)]
struct RootfsInputs<'a> {
    suite: &'a str,
    mirror: &'a str,
    extra_sources: &'a [String],
    components: &'a [String],
    variant: &'a str,
    install_recommends: bool,
    packages: Vec<&'a str>,
    setup: &'a [String],
}

impl Recipe {
    /// Parse and validate a recipe from TOML text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Recipe, ImageError> {
        let wrap = |source| ImageError::Recipe {
            origin: origin.to_string(),
            source,
        };
        let recipe: Recipe = toml::from_str(text).map_err(|e| wrap(RecipeError::Toml(e)))?;
        recipe
            .validate()
            .map_err(|m| wrap(RecipeError::Invalid(m)))?;
        Ok(recipe)
    }

    /// Load a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, ImageError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ImageError::Recipe {
            origin: origin.clone(),
            source: RecipeError::Read(e),
        })?;
        Recipe::parse(&text, &origin)
    }

    /// A recipe compiled into the binary.
    pub fn builtin(name: &str) -> Result<Recipe, ImageError> {
        let (_, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ImageError::UnknownRecipe {
                    name: name.to_string(),
                    known: BUILTIN.iter().map(|(n, _)| n.to_string()).collect(),
                })?;
        Recipe::parse(text, &format!("built-in {name}"))
    }

    /// The disk size in bytes.
    pub fn disk_size_bytes(&self) -> u64 {
        // validate() guarantees this parses.
        parse_size(&self.disk_size).unwrap_or(0)
    }

    /// Hash of every field: part of the final image key.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(&self.normalised()).expect("recipe serialises");
        hash_parts(&[RECIPE_HASH_VERSION.as_bytes(), &json])
    }

    /// Hash of the fields that decide the rootfs tree: the rootfs cache key.
    pub fn rootfs_hash(&self) -> String {
        let mut packages: Vec<&str> = self.packages.iter().map(String::as_str).collect();
        packages.sort_unstable();
        packages.dedup();
        let inputs = RootfsInputs {
            suite: &self.suite,
            mirror: &self.mirror,
            extra_sources: &self.extra_sources,
            components: &self.components,
            variant: &self.variant,
            install_recommends: self.install_recommends,
            packages,
            setup: &self.setup,
        };
        let json = serde_json::to_vec(&inputs).expect("rootfs inputs serialise");
        hash_parts(&[RECIPE_HASH_VERSION.as_bytes(), b"rootfs", &json])
    }

    fn normalised(&self) -> Recipe {
        let mut r = self.clone();
        r.packages.sort_unstable();
        r.packages.dedup();
        r
    }

    fn validate(&self) -> Result<(), String> {
        if !is_dns_label(&self.name) {
            return Err(format!(
                "name {:?} must be a lowercase DNS label (a-z, 0-9, -)",
                self.name
            ));
        }
        let size = parse_size(&self.disk_size).ok_or_else(|| {
            format!(
                "disk_size {:?} is not a size like 2G or 1536M",
                self.disk_size
            )
        })?;
        if size < 64 << 20 {
            return Err(format!(
                "disk_size {:?} is below the 64M minimum",
                self.disk_size
            ));
        }
        if self.memory_mib < 64 {
            return Err(format!(
                "memory_mib {} is below the 64 MiB minimum",
                self.memory_mib
            ));
        }
        if self.vcpus == 0 {
            return Err("vcpus must be at least 1".into());
        }
        let bad_word =
            |s: &str| s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == ',');
        for word in self
            .packages
            .iter()
            .chain(&self.components)
            .chain([&self.suite, &self.variant])
        {
            if bad_word(word) {
                return Err(format!(
                    "{word:?} is not a valid package, component, suite or variant"
                ));
            }
        }
        if bad_word(&self.kernel_package) {
            return Err(format!(
                "kernel_package {:?} is not a package name",
                self.kernel_package
            ));
        }
        if self.mirror.is_empty() {
            return Err("mirror must not be empty".into());
        }
        Ok(())
    }
}

/// All built-in recipes, in a stable order.
pub fn builtin_recipes() -> Vec<Recipe> {
    BUILTIN
        .iter()
        .map(|(name, _)| Recipe::builtin(name).expect("built-in recipes are valid"))
        .collect()
}

/// Parse `2G`, `1536M`, `512MiB`, `4096K` or plain bytes. Units are binary (K = 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let num: u64 = num.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    num.checked_mul(1u64 << shift)
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// sha256 over length-prefixed parts, hex encoded (length prefixes keep `["ab","c"]` and
/// `["a","bc"]` apart).
pub(crate) fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        name = "t"
        packages = ["bash", "procps"]
        disk_size = "1G"
        memory_mib = 256
        vcpus = 1
    "#;

    #[test]
    fn builtins_parse_and_match_their_names() {
        let all = builtin_recipes();
        assert_eq!(
            all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["minimal", "dev"]
        );
        let dev = Recipe::builtin("dev").unwrap();
        let minimal = Recipe::builtin("minimal").unwrap();
        for p in &minimal.packages {
            assert!(dev.packages.contains(p), "dev lacks minimal's {p}");
        }
    }

    #[test]
    fn unknown_builtin_lists_known() {
        let e = Recipe::builtin("nope").unwrap_err().to_string();
        assert_eq!(e, "unknown recipe \"nope\"; built-in recipes: minimal, dev");
    }

    #[test]
    fn defaults_fill_in() {
        let r = Recipe::parse(SAMPLE, "sample").unwrap();
        assert_eq!(r.suite, "bookworm");
        assert_eq!(r.mirror, "http://deb.debian.org/debian");
        assert_eq!(r.variant, "minbase");
        assert_eq!(r.disk_size_bytes(), 1 << 30);
    }

    #[test]
    fn hash_is_stable_and_ignores_formatting_and_package_order() {
        let a = Recipe::parse(SAMPLE, "a").unwrap();
        let b = Recipe::parse(
            "vcpus=1\nmemory_mib=256\ndisk_size='1G'\npackages=['procps','bash','bash']\nname='t'\n",
            "b",
        )
        .unwrap();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.rootfs_hash(), b.rootfs_hash());
        // Pinned: if this changes, every cached image is rebuilt. Change it on purpose only.
        assert_eq!(
            a.rootfs_hash(),
            "a8537f4a74bc3523313cad1766ddf741439e658f574d07c788df2c1df9066b7a"
        );
    }

    #[test]
    fn rootfs_hash_ignores_vm_sizing_but_image_hash_does_not() {
        let a = Recipe::parse(SAMPLE, "a").unwrap();
        let mut b = a.clone();
        b.disk_size = "3G".into();
        b.memory_mib = 1024;
        b.name = "other".into();
        assert_eq!(a.rootfs_hash(), b.rootfs_hash());
        assert_ne!(a.hash(), b.hash());
        let mut c = a.clone();
        c.setup.push("true".into());
        assert_ne!(a.rootfs_hash(), c.rootfs_hash());
    }

    #[test]
    fn invalid_recipes_are_rejected() {
        for (text, needle) in [
            (
                "name='Bad'\ndisk_size='1G'\nmemory_mib=256\nvcpus=1",
                "DNS label",
            ),
            (
                "name='a'\ndisk_size='lots'\nmemory_mib=256\nvcpus=1",
                "disk_size",
            ),
            ("name='a'\ndisk_size='1G'\nmemory_mib=256\nvcpus=0", "vcpus"),
            (
                "name='a'\ndisk_size='1G'\nmemory_mib=256\nvcpus=1\npackages=['a b']",
                "valid package",
            ),
            (
                "name='a'\ndisk_size='1G'\nmemory_mib=256\nvcpus=1\ntypo=1",
                "TOML",
            ),
        ] {
            let e = Recipe::parse(text, "t").unwrap_err();
            let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
            assert!(chain.contains(needle), "{chain:?} lacks {needle:?}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1536M"), Some(1536 << 20));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2X"), None);
        assert_eq!(parse_size(""), None);
    }
}

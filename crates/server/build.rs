//! Picks the folder the IDE assets are embedded from (`MAYFLY_WEB_DIST`, read by `src/ide.rs`):
//! `web/dist` when the web build has run (it has an `index.html`), else an empty folder, in
//! which case the server shows a page saying to build the web front end. `web/dist` is created
//! if missing so that Cargo can watch it: a later web build triggers re-embedding.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = manifest.join("../../web/dist");
    let _ = std::fs::create_dir_all(&dist);
    println!("cargo:rerun-if-changed={}", dist.display());
    let folder = if dist.join("index.html").is_file() {
        dist.canonicalize().unwrap_or(dist)
    } else {
        println!("cargo:warning=web/dist is not built: the IDE pages will say to run `npm ci && npm run build` in web/");
        let empty = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("web-dist-missing");
        std::fs::create_dir_all(&empty).expect("create an empty asset folder");
        empty
    };
    println!("cargo:rustc-env=MAYFLY_WEB_DIST={}", folder.display());
}

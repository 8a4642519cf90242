//! Embeds the dashboard: writes `ui_assets.rs` into `OUT_DIR`, a table of every file under
//! `ui/` (path relative to it, bytes, an ETag from the content), so the binary carries the whole
//! dashboard and building it needs no JavaScript toolchain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ui = manifest.join("ui");
    println!("cargo:rerun-if-changed={}", ui.display());
    let mut files = Vec::new();
    if ui.is_dir() {
        collect(&ui, &ui, &mut files);
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (relative, absolute) in &files {
        let bytes = std::fs::read(absolute).expect("read a dashboard asset");
        // FNV-1a: a content hash for the ETag, stable across builds of the same files.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        writeln!(
            out,
            "    ({relative:?}, include_bytes!({:?}), \"\\\"{hash:016x}\\\"\"),",
            absolute.display().to_string()
        )
        .expect("write to a String");
    }
    out.push_str("]\n");
    let target = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(target.join("ui_assets.rs"), out).expect("write ui_assets.rs");
}

/// Every file under `dir`, as (path relative to `root` with `/` separators, absolute path);
/// directories are watched for new files too.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = std::fs::read_dir(dir).expect("read the dashboard directory");
    for entry in entries {
        let path = entry.expect("read a dashboard directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            println!("cargo:rerun-if-changed={}", path.display());
            files.push((relative, path));
        }
    }
}

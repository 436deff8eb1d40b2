// Put the git commit into `--version`, so that a bug report names the exact build.
//
// Used by both binaries: `crates/archestra-proxy/build.rs` includes this file.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let suffix = if dirty { ", modified" } else { "" };
    // The whole `--version` text, so that both binaries print it the same way. The version
    // comes from the manifest of the package being built (paths here are relative to it).
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=ARCHESTRA_VERSION={version} ({commit}{suffix})");
    println!("cargo:rerun-if-changed=Cargo.toml");
    // Absolute paths, because the companion's crate includes this file from its own folder.
    let git_dir = Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    match git_dir {
        Some(dir) => {
            let dir = dir.trim();
            for path in ["HEAD", "index", "refs/heads"] {
                println!("cargo:rerun-if-changed={dir}/{path}");
            }
        }
        // Outside a checkout the commit cannot change; rebuild only when this file does.
        None => println!("cargo:rerun-if-changed=build.rs"),
    }
}

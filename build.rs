//! Records the commit the `shopsim` binary is built from, so an artifact names the code that
//! found it wherever the binary later runs (a container without git, another checkout).
//!
//! `SHOPSIM_BUILD_COMMIT` at build time wins (a build from a source tarball or a Docker
//! context without `.git`); otherwise `git rev-parse HEAD` of this workspace, with `-dirty`
//! when tracked files differ from it; otherwise `unknown`. The binary reads the result as
//! `env!("SHOPSIM_BUILD_COMMIT")`; nothing looks at git when the binary runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Longest commit text accepted from the environment (a 40-hex id plus `-dirty` fits).
const COMMIT_TEXT_MAX: usize = 100;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The commit text, or why there is none.
fn commit(dir: &Path) -> String {
    if let Ok(text) = std::env::var("SHOPSIM_BUILD_COMMIT") {
        let text = text.trim();
        // It goes into JSON, XML and terminal lines: keep it printable and short.
        let clean = !text.is_empty()
            && text.len() <= COMMIT_TEXT_MAX
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
        assert!(
            clean,
            "SHOPSIM_BUILD_COMMIT must be 1..={COMMIT_TEXT_MAX} characters of [A-Za-z0-9._+-], got `{text}`"
        );
        return text.to_string();
    }
    let Some(head) = git(dir, &["rev-parse", "HEAD"]) else {
        return "unknown".to_string();
    };
    assert!(head.len() >= 40, "git rev-parse HEAD gave `{head}`");
    let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
        .is_none_or(|status| !status.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-env-changed=SHOPSIM_BUILD_COMMIT");
    // Rerun when HEAD moves (checkout, commit) or the index changes, and when any source of
    // the workspace changes (the dirty flag). Only existing paths: cargo reruns every build
    // for a path that does not exist.
    let mut watched: Vec<PathBuf> = ["src", "sim", "model", "scenarios", "tests", "Cargo.toml"]
        .iter()
        .map(|p| dir.join(p))
        .collect();
    if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
        let git_dir = PathBuf::from(git_dir);
        watched.push(git_dir.join("HEAD"));
        watched.push(git_dir.join("index"));
        if let Some(common) = git(&dir, &["rev-parse", "--git-common-dir"]) {
            let common = dir.join(common);
            watched.push(common.join("refs").join("heads"));
            watched.push(common.join("packed-refs"));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=SHOPSIM_BUILD_COMMIT={}", commit(&dir));
}

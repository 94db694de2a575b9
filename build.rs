//! Build script: records the git commit the binary is built from, for `rq-retryd --version` and
//! the `rq_retryd_build_info` metric, so a bug report or a dashboard names the exact build.
//!
//! The commit comes from `$RQ_RETRYD_GIT_COMMIT` when set (a build from a source tarball or a
//! container context without `.git` can pass it in), else `git rev-parse --short=12 HEAD`, else
//! "unknown": a build outside git must still work.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RQ_RETRYD_GIT_COMMIT");
    let commit = match std::env::var("RQ_RETRYD_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => {
            watch_git_head();
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=RQ_RETRYD_GIT_COMMIT={commit}");
}

/// Reruns this script when HEAD moves: a commit or checkout rewrites the ref HEAD points at (or
/// `packed-refs`), a branch switch rewrites HEAD itself. The paths come from git, so a worktree
/// (whose `.git` is a file) works too. Only existing files are named: cargo treats a missing
/// one as always changed and would rerun the script on every build.
fn watch_git_head() {
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) else {
        return;
    };
    let common_dir = git(&["rev-parse", "--git-common-dir"])
        .map(PathBuf::from)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_dir.join(&reference));
        watched.push(common_dir.join(&reference));
    }
    for path in watched.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed stdout of a successful `git ARGS` run in the crate's directory, else `None`
/// (git missing, not a checkout, or a detached state without the asked-for ref).
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(Path::new(&dir))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

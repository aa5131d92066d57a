//! Records this crate's source identity for the detail log's `loadgen_*` lines, the way the
//! official `version_generator.py` does for its C++ sources: the git revision, commit date, last
//! two commit subjects and working-tree status of this crate's folder, the build date, and the
//! SHA-1 of every source file. Outside a git checkout (a crate tarball) the git values are "NA".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha1::{Digest, Sha1};

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));

    let mut files = Vec::new();
    for top in ["Cargo.toml", "build.rs", "src"] {
        collect(&dir.join(top), &mut files);
        println!("cargo:rerun-if-changed={top}");
    }
    files.sort();
    let mut sha1 = String::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("source files are readable");
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(file)
            .display()
            .to_string();
        let _ = writeln!(sha1, "    (\"/{name}\", \"{:x}\"),", Sha1::digest(&bytes));
    }

    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_string()
        })
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for watched in ["HEAD", "index", "packed-refs", "refs/heads"] {
            let path = Path::new(&git_dir).join(watched);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let na = || "NA".to_string();
    let revision = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(na);
    let commit_date = git(&["log", "-1", "--format=%cI"]).unwrap_or_else(na);
    let log = git(&["log", "-2", "--format=%H %s"]).unwrap_or_else(na);
    let status = git(&["status", "--porcelain", "--", "."]).unwrap_or_else(na);

    // Reproducible when SOURCE_DATE_EPOCH is set (Debian, Nix), else the time of the build.
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    let local = built.with_timezone(&chrono::Local);

    let code = format!(
        "/// `git rev-parse --short=10 HEAD` of the checkout this crate was built from.\n\
         pub const GIT_REVISION: &str = {revision:?};\n\
         /// Committer date of that revision.\n\
         pub const GIT_COMMIT_DATE: &str = {commit_date:?};\n\
         /// The last two commits, `<hash> <subject>` per line.\n\
         pub const GIT_LOG: &str = {log:?};\n\
         /// `git status --porcelain` of this crate's folder: empty for a clean build.\n\
         pub const GIT_STATUS: &str = {status:?};\n\
         /// When this crate was built, local time.\n\
         pub const BUILD_DATE_LOCAL: &str = {:?};\n\
         /// When this crate was built, UTC.\n\
         pub const BUILD_DATE_UTC: &str = {:?};\n\
         /// SHA-1 of every source file of this crate, by path from the crate folder.\n\
         pub const FILE_SHA1: &[(&str, &str)] = &[\n{sha1}];\n",
        local
            .naive_local()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string(),
        built
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string(),
    );
    std::fs::write(out.join("source_identity.rs"), code).expect("OUT_DIR is writable");
}

/// Every file under `path` (or `path` itself).
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                collect(&entry.path(), files);
            }
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
}

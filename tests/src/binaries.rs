//! Switchboard's own binaries, built on demand so a test can run them as real processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::{HarnessError, Result, repo_root};

/// Builds (if needed) and returns the path of a workspace binary, e.g. `switchboard-operator`.
/// `cargo build` is a no-op when the binary is up to date. Tests use the debug build;
/// benchmarks set `SWITCHBOARD_BIN_PROFILE=release`.
pub fn workspace_binary(package: &str, bin: &str) -> Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .map_err(|_| HarnessError::Build("binary cache poisoned".into()))?;
    let cache = built.get_or_insert_with(HashMap::new);
    if let Some(path) = cache.get(bin) {
        return Ok(path.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let release = std::env::var("SWITCHBOARD_BIN_PROFILE").is_ok_and(|p| p == "release");
    // Build every binary with the workspace's feature set, the same as `tests/run.sh` does
    // before the tests, so this is a no-op there instead of a rebuild with other features.
    let _ = package;
    let mut args = vec!["build", "--quiet", "--workspace", "--bins"];
    if release {
        args.push("--release");
    }
    let output = Command::new(&cargo)
        .args(&args)
        .current_dir(repo_root())
        .output()
        .map_err(HarnessError::io(format!("run {cargo} build")))?;
    if !output.status.success() {
        return Err(HarnessError::Build(format!(
            "cargo build --workspace --bins (for {bin}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(bin);
    cache.insert(bin.to_owned(), path.clone());
    Ok(path)
}

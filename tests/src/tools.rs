//! Where the test binaries come from.
//!
//! etcd, kube-apiserver and kubectl are built from their Go modules by
//! `tests/controlplane/build.sh` and cached under `~/.cache/switchboard/`. The README's test
//! command runs that script once and exports `SWITCHBOARD_CONTROLPLANE_DIR`; a test run without
//! it (say `cargo test` by hand) runs the script itself, which is instant when the cache is warm.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{HarnessError, Result, repo_root};

/// The directory holding `etcd`, `kube-apiserver` and `kubectl`.
pub fn control_plane_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    built_dir(
        &DIR,
        "SWITCHBOARD_CONTROLPLANE_DIR",
        "tests/controlplane/build.sh",
    )
}

/// The directory a caching build script (`tests/*/build.sh`) put its binaries in: the one
/// `tests/run.sh` exported in `env`, or else the script's last line of output (the script
/// is instant when its cache is warm). Computed once per test process.
pub fn built_dir(
    cell: &'static OnceLock<std::result::Result<PathBuf, String>>,
    env: &str,
    script: &str,
) -> Result<PathBuf> {
    cell.get_or_init(|| {
        if let Some(dir) = std::env::var_os(env) {
            return Ok(PathBuf::from(dir));
        }
        let script = repo_root().join(script);
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .map(|line| PathBuf::from(line.trim()))
            .ok_or_else(|| format!("{} printed no directory", script.display()))
    })
    .clone()
    .map_err(HarnessError::Build)
}

/// Path of one control-plane binary.
pub fn control_plane_binary(name: &str) -> Result<PathBuf> {
    Ok(control_plane_dir()?.join(name))
}

//! The operator binary run as a real process against the test control plane.

use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binaries::workspace_binary;
use crate::control_plane::ControlPlane;
use crate::http::get;
use crate::process::ChildProcess;
use crate::{HarnessError, Result, free_port};

/// A running `switchboard-operator`.
pub struct OperatorProcess {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

/// Settings short enough for tests to see failover in seconds.
pub fn fast_args(namespace: &str) -> Vec<String> {
    [
        format!("--namespace={namespace}"),
        "--failover-grace=2s".to_owned(),
        "--health-interval=200ms".to_owned(),
        "--reservation-ttl=5s".to_owned(),
        "--leader-election=false".to_owned(),
    ]
    .into()
}

impl OperatorProcess {
    /// Starts the operator with `args` (see [`fast_args`]) and waits until `/readyz` answers.
    pub fn start(cp: &ControlPlane, args: &[String]) -> Result<Self> {
        let bin = workspace_binary("switchboard-operator", "switchboard-operator")?;
        let dir = tempfile::Builder::new()
            .prefix("switchboard-operator-")
            .tempdir()
            .map_err(HarnessError::io("create an operator directory"))?;
        let port = free_port()?;
        let mut all = args.to_vec();
        all.push(format!("--listen=127.0.0.1:{port}"));
        let kubeconfig = cp.kubeconfig().display().to_string();
        let mut process = ChildProcess::spawn(
            "switchboard-operator",
            &bin,
            &all,
            &[
                ("KUBECONFIG", kubeconfig.as_str()),
                ("RUST_LOG", "info,switchboard_operator=debug"),
            ],
            &dir.path().join("operator.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.check_running()?;
            if get(port, "/readyz").is_ok_and(|(code, _)| code == 200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "switchboard-operator",
                    seconds: 30,
                    log_tail: process.log_tail(15),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(OperatorProcess {
            process,
            port,
            _dir: dir,
        })
    }

    /// Fails if the operator has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Kills it with SIGKILL, as a crashed pod would die.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops it with SIGTERM, as the kubelet stops a pod, and waits up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        self.process.terminate(within)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        get(self.port, "/metrics").map(|(_, body)| body)
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        // A failing test shows what the operator was doing.
        if std::thread::panicking() {
            eprintln!(
                "--- switchboard-operator log ({}) ---\n{}",
                self.process.log_path().display(),
                self.process.log_tail(60)
            );
            // Keep the whole log for a closer look.
            let kept = std::env::temp_dir()
                .join(format!("switchboard-operator-{}.log", self.process.pid()));
            if std::fs::copy(self.process.log_path(), &kept).is_ok() {
                eprintln!("--- full log kept at {} ---", kept.display());
            }
        }
    }
}

//! A webhook receiver for tests: `tests/fixtures/webhooks/receiver.py`, a Python
//! standard-library server that verifies every signature on its own (the recipe of
//! `docs/api.md`) and logs each request as a JSON line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::ChildProcess;
use crate::{HarnessError, Result, repo_root};

/// The secret the test receiver verifies with: `--webhook-key=wh=<this>`.
pub const WEBHOOK_SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// A running receiver on a loopback port; stopped when dropped.
pub struct WebhookReceiver {
    _process: ChildProcess,
}

impl WebhookReceiver {
    /// Starts the receiver on `port`, appending what it gets to `out` (kept across restarts,
    /// so a test can stop and start it on the same port); its own log goes into `dir`.
    pub fn start(port: u16, out: &Path, dir: &Path) -> Result<Self> {
        let script = repo_root().join("tests/fixtures/webhooks/receiver.py");
        let log = dir.join(format!("receiver-{port}-{}.log", std::process::id()));
        let process = ChildProcess::spawn(
            "webhook receiver",
            &PathBuf::from("python3"),
            &[
                script.display().to_string(),
                port.to_string(),
                WEBHOOK_SECRET.to_owned(),
                out.display().to_string(),
            ],
            &[],
            &log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "webhook receiver",
                    seconds: 10,
                    log_tail: process.log_tail(10),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(WebhookReceiver { _process: process })
    }
}

/// Every request the receiver logged in `out`: `{"verified", "why", "event"}`.
pub fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

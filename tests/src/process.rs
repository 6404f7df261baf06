//! Child processes that cannot outlive the test that started them.
//!
//! Each child is killed when its [`ChildProcess`] is dropped (normal end or panic). When
//! `setpriv` is available the child also gets `PDEATHSIG=KILL`, so even a test process that is
//! killed outright takes its servers with it; no stray etcd or apiserver is left behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// A running child whose output goes to a log file.
#[derive(Debug)]
pub struct ChildProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

fn setpriv_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl ChildProcess {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self> {
        let out =
            File::create(log).map_err(HarnessError::io(format!("create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io(format!("reopen {}", log.display())))?;
        let mut command = if setpriv_available() {
            let mut c = Command::new("setpriv");
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command.spawn().map_err(HarnessError::io(format!(
            "start {name} ({})",
            program.display()
        )))?;
        Ok(ChildProcess {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id (the real program's: `setpriv` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log tail if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(HarnessError::Exited {
                what: self.name,
                status,
                log_tail: self.log_tail(15),
            }),
            Ok(None) => Ok(()),
            Err(source) => Err(HarnessError::Io {
                action: format!("poll {}", self.name),
                source,
            }),
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod, and waits up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let signal_error = |source: std::io::Error| HarnessError::Io {
            action: format!("send SIGTERM to {}", self.name),
            source,
        };
        let pid =
            i32::try_from(self.child.id()).map_err(|e| signal_error(std::io::Error::other(e)))?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| signal_error(e.into()))?;
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    return Err(HarnessError::StillRunning {
                        what: self.name,
                        seconds: within.as_secs(),
                        log_tail: self.log_tail(15),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => {
                    return Err(HarnessError::Io {
                        action: format!("poll {}", self.name),
                        source,
                    });
                }
            }
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file, or a note that it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

//! Debian's coturn (`turnserver`) on free loopback ports, checking TURN REST API credentials
//! (`use-auth-secret`) against the secret set in a [`RedisServer`], and its own client,
//! `turnutils_uclient`, to make real allocations with a given credential.
//!
//! The server runs with test-only settings: loopback peers are allowed so the client can relay
//! to itself, and there is no TLS, DTLS or CLI. Never copy this configuration to a cluster;
//! `docs/turn.md` has the production one.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::redis_server::RedisServer;
use crate::{HarnessError, Result, free_port};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// A successful `turnutils_uclient` run takes 2–5 s (it lingers after allocating); a refused
/// one returns at once. Anything slower than this is a hung client, not an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long coturn may take to write a refusal to its log after the client gave up.
const LOG_GRACE: Duration = Duration::from_secs(3);
/// Relay ports per server. Every successful client run holds two allocations until coturn
/// times them out, so a busy test needs a few hundred.
const RELAY_PORTS: u16 = 1000;

/// A running `turnserver`, killed on drop.
#[derive(Debug)]
pub struct Coturn {
    process: ChildProcess,
    port: u16,
    realm: String,
    redis_url: String,
    log: PathBuf,
    _dir: TempDir,
}

/// What became of one allocation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client allocated relays and exited cleanly.
    Allocated,
    /// coturn refused the credential: the client could not complete the allocation and
    /// coturn logged an authentication error naming the username.
    Refused,
    /// Anything else (timeout, crash, a refusal coturn did not log): never a pass for either
    /// expectation, so a broken setup cannot look like a refused credential.
    Failed(String),
}

/// One `turnutils_uclient` run.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub outcome: Outcome,
    /// The client's stdout and stderr, for failure messages.
    pub output: String,
    pub elapsed: Duration,
}

impl Coturn {
    /// Starts `turnserver` for `realm`, reading shared secrets from `redis` database 0, and
    /// waits until it accepts TCP connections.
    pub fn start(redis: &RedisServer, realm: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-coturn-")
            .tempdir()
            .map_err(HarnessError::io("create a coturn directory"))?;
        let port = free_port()?;
        // Spread relay ranges by listening port so servers of parallel tests rarely share one.
        let min_port = 20_000 + (port % 40) * RELAY_PORTS;
        let log = dir.path().join("turnserver.log");
        let config = dir.path().join("turnserver.conf");
        let text = format!(
            "listening-ip=127.0.0.1\n\
             relay-ip=127.0.0.1\n\
             listening-port={port}\n\
             min-port={min_port}\n\
             max-port={max_port}\n\
             use-auth-secret\n\
             realm={realm}\n\
             redis-userdb=\"ip=127.0.0.1 dbname=0 port={redis_port} connect_timeout=30\"\n\
             no-tls\n\
             no-dtls\n\
             no-cli\n\
             no-multicast-peers\n\
             allow-loopback-peers\n\
             log-file={log}\n\
             simple-log\n\
             no-stdout-log\n\
             pidfile={pid}\n",
            max_port = min_port + RELAY_PORTS - 1,
            redis_port = redis.port(),
            log = log.display(),
            pid = dir.path().join("turnserver.pid").display(),
        );
        std::fs::write(&config, text)
            .map_err(HarnessError::io(format!("write {}", config.display())))?;
        let mut process = ChildProcess::spawn(
            "turnserver",
            Path::new("turnserver"),
            &["-c".to_owned(), config.display().to_string()],
            &[],
            &dir.path().join("turnserver.out"),
        )?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            process.check_running()?;
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "turnserver",
                    seconds: STARTUP_TIMEOUT.as_secs(),
                    log_tail: crate::process::tail(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Coturn {
            process,
            port,
            realm: realm.to_owned(),
            redis_url: redis.url(),
            log,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last `lines` lines of coturn's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.log, lines)
    }

    /// The shared secrets coturn accepts right now: its Redis set `turn/realm/<realm>/secret`.
    pub fn secrets_in_redis(&self) -> std::result::Result<BTreeSet<String>, String> {
        let client = redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        redis::cmd("SMEMBERS")
            .arg(format!("turn/realm/{}/secret", self.realm))
            .query::<BTreeSet<String>>(&mut connection)
            .map_err(|e| e.to_string())
    }

    /// Allocates a relay with `turnutils_uclient` using a TURN REST credential.
    ///
    /// The client runs two peers relaying to each other (`-y`) over UDP with one allocation
    /// each (`-c`: no RTCP pair), and sends nothing (`-n 0`): the point is whether coturn
    /// accepts the credential for ALLOCATE and the authenticated requests that follow.
    /// Give each attempt a distinct `<user>` part so a refusal can be matched in coturn's log.
    pub async fn allocate(&self, username: &str, password: &str) -> Allocation {
        let started = Instant::now();
        let run = tokio::process::Command::new("turnutils_uclient")
            .args(["-u", username, "-w", password, "-p"])
            .arg(self.port.to_string())
            .args(["-m", "1", "-y", "-c", "-n", "0", "127.0.0.1"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(CLIENT_TIMEOUT, run).await {
            Err(_) => {
                return Allocation {
                    outcome: Outcome::Failed(format!(
                        "turnutils_uclient did not finish within {}s",
                        CLIENT_TIMEOUT.as_secs()
                    )),
                    output: String::new(),
                    elapsed: started.elapsed(),
                };
            }
            Ok(Err(error)) => {
                return Allocation {
                    outcome: Outcome::Failed(format!("cannot run turnutils_uclient: {error}")),
                    output: String::new(),
                    elapsed: started.elapsed(),
                };
            }
            Ok(Ok(output)) => output,
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut outcome = classify_client(output.status.code(), &text);
        if outcome == Outcome::Refused && !self.logged_auth_error(username).await {
            outcome = Outcome::Failed(
                "the client could not allocate, but coturn logged no authentication error for \
                 this username"
                    .to_owned(),
            );
        }
        Allocation {
            outcome,
            output: text,
            elapsed: started.elapsed(),
        }
    }

    /// Waits briefly for coturn to log an authentication error naming `username`.
    async fn logged_auth_error(&self, username: &str) -> bool {
        let deadline = Instant::now() + LOG_GRACE;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log_has_auth_error(&log, username) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads `turnutils_uclient`'s verdict from its exit code and output.
///
/// Checked against coturn 4.6 by hand: with a good credential it exits 0 after printing
/// `Total connect time` and its statistics; when the server answers 401 to the authenticated
/// ALLOCATE (bad signature, expired, unknown secret) it prints
/// `ERROR: Cannot complete Allocation` and exits 255 within milliseconds. Anything else
/// (connection refused, usage errors, crashes) is neither.
pub fn classify_client(exit_code: Option<i32>, output: &str) -> Outcome {
    let refused = output.contains("Cannot complete Allocation");
    match exit_code {
        Some(0) if !output.contains("ERROR") && output.contains("Total connect time") => {
            Outcome::Allocated
        }
        Some(code) if code != 0 && refused => Outcome::Refused,
        code => Outcome::Failed(format!(
            "turnutils_uclient exited with {code:?} without a clear verdict"
        )),
    }
}

/// Whether coturn's log has an authentication error for `username` (coturn logs
/// `check_stun_auth: Cannot find credentials of user <username>` for both unknown and expired
/// REST credentials).
pub fn log_has_auth_error(log: &str, username: &str) -> bool {
    let needle = format!("<{username}>");
    log.lines()
        .any(|line| line.contains("ERROR") && line.contains("auth") && line.contains(&needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = "0: : Total connect time is 0\n\
        1: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0\n\
        3: : Total transmit time is 3\n";
    const REFUSED: &str =
        "0: : ERROR: Cannot complete Allocation\n0: : ERROR: Cannot complete Allocation\n";

    #[test]
    fn client_verdicts() {
        assert_eq!(classify_client(Some(0), SUCCESS), Outcome::Allocated);
        assert_eq!(classify_client(Some(255), REFUSED), Outcome::Refused);
        // A closed port is not a refused credential.
        assert!(matches!(
            classify_client(Some(255), "recv: Connection refused\n"),
            Outcome::Failed(_)
        ));
        // Exit 0 with an error in the output is not a success either.
        assert!(matches!(
            classify_client(Some(0), REFUSED),
            Outcome::Failed(_)
        ));
        assert!(matches!(classify_client(None, SUCCESS), Outcome::Failed(_)));
    }

    #[test]
    fn auth_errors_are_matched_by_exact_username() {
        let log =
            "8: : ERROR: check_stun_auth: Cannot find credentials of user <1795677028:alice-10>\n";
        assert!(log_has_auth_error(log, "1795677028:alice-10"));
        assert!(!log_has_auth_error(log, "1795677028:alice-1"));
        assert!(!log_has_auth_error(
            "0: : Redis DB sync connection success\n",
            "x:y"
        ));
    }
}

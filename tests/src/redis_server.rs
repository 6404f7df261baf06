//! A throwaway `redis-server` on a free loopback port, with persistence off.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{HarnessError, Result, free_port};

/// A running Redis that is killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) and waits until it answers PING.
    pub fn start() -> Result<Self> {
        Self::start_on(free_port()?)
    }

    /// Starts an empty `redis-server` on `port`: after dropping another one there, this is
    /// what a restarted Redis without persistence looks like to its clients.
    pub fn start_on(port: u16) -> Result<Self> {
        Self::start_bound(port, &[])
    }

    /// Starts an empty `redis-server` on `port`, listening on loopback and on `also` (the
    /// host's end of a test network namespace's link, say).
    pub fn start_bound(port: u16, also: &[std::net::Ipv4Addr]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-")
            .tempdir()
            .map_err(HarnessError::io("create a Redis directory"))?;
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        args.extend(also.iter().map(ToString::to_string));
        if !also.is_empty() {
            // Reachable beyond loopback, but only on a link the test made.
            args.extend(["--protected-mode".to_owned(), "no".to_owned()]);
        }
        args.extend([
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--dir".to_owned(),
            dir.path().display().to_string(),
        ]);
        let mut process = ChildProcess::spawn(
            "redis-server",
            Path::new("redis-server"),
            &args,
            &[],
            &dir.path().join("redis.log"),
        )?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            process.check_running()?;
            if ping(port) {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "redis-server",
                    seconds: STARTUP_TIMEOUT.as_secs(),
                    log_tail: process.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisServer {
            process,
            port,
            _dir: dir,
        })
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// One inline PING over a raw socket; true on `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

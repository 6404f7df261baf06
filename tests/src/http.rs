//! A minimal blocking HTTP/1.1 client and a tiny controllable health endpoint, for probing
//! the processes under test without pulling an HTTP client into the harness.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use crate::{HarnessError, Result};

/// GET `path` on 127.0.0.1:`port`; returns status code and body.
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(HarnessError::io(format!("connect to 127.0.0.1:{port}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(HarnessError::io("set a read timeout"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(HarnessError::io("send a request"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(HarnessError::io("read a response"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HarnessError::Build(format!("not an HTTP response: {response:.80}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// An HTTP endpoint answering every request with a status the test controls: 200 while
/// healthy, 503 when told to fail, and no answer at all once stopped.
pub struct HealthEndpoint {
    port: u16,
    status: Arc<AtomicU16>,
    stopped: Arc<AtomicBool>,
}

impl HealthEndpoint {
    pub fn start() -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("bind a health endpoint"))?;
        let port = listener
            .local_addr()
            .map_err(HarnessError::io("read the health endpoint address"))?
            .port();
        let status = Arc::new(AtomicU16::new(200));
        let stopped = Arc::new(AtomicBool::new(false));
        let (s, stop) = (status.clone(), stopped.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let code = s.load(Ordering::Relaxed);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Ok(HealthEndpoint {
            port,
            status,
            stopped,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    /// Answer with this status from now on.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    /// Stop answering: the next connection ends the accept loop.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

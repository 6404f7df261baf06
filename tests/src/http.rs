//! A minimal blocking HTTP/1.1 client (GET, and JSON POST for SFU APIs) and a tiny controllable health endpoint, for probing
//! the processes under test without pulling an HTTP client into the harness.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use crate::{HarnessError, Result};

/// GET `path` on 127.0.0.1:`port`; returns status code and body.
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    request(IpAddr::from([127, 0, 0, 1]), port, "GET", path, None)
}

/// POST a JSON `body` to `ip`:`port` `path`; returns status code and the parsed JSON answer.
pub fn post_json(
    ip: IpAddr,
    port: u16,
    path: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value)> {
    let (code, text) = request(ip, port, "POST", path, Some(&body.to_string()))?;
    let value = serde_json::from_str(&text).map_err(|e| {
        HarnessError::Build(format!("not JSON from {ip}:{port}{path}: {e}: {text:.200}"))
    })?;
    Ok((code, value))
}

/// One HTTP/1.1 request with `Connection: close`; returns status code and body.
pub fn request(
    ip: IpAddr,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect((ip, port))
        .map_err(HarnessError::io(format!("connect to {ip}:{port}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(HarnessError::io("set a read timeout"))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
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
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    // Janus (libmicrohttpd) answers HTTP/1.1 requests with a chunked body.
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body (stops at the last chunk or at
/// anything malformed).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(len) = usize::from_str_radix(size, 16) else {
            break;
        };
        if len == 0 || after.len() < len {
            break;
        }
        out.push_str(after.get(..len).unwrap_or(""));
        rest = after.get(len..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(dechunk("zz\r\nhello"), "");
    }
}

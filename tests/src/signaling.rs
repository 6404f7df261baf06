//! The signaling binary run as a real process, and a small WebSocket client for tests.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_signaling::auth::{Hs256Signer, MintClaims};
use switchboard_signaling::ids::{Region, RoomId, UserId};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::binaries::workspace_binary;
use crate::http::request;
use crate::netns::NetNamespace;
use crate::process::ChildProcess;
use crate::{HarnessError, Result, free_port};

/// The HS256 key the test servers trust: `test=<secret>`.
pub const TEST_KID: &str = "test";
pub const TEST_SECRET: &str = "switchboard-test-secret-0123456789abcdef";

/// A running `switchboard-signaling serve`.
pub struct SignalingProcess {
    process: ChildProcess,
    ip: IpAddr,
    port: u16,
    _dir: TempDir,
}

impl SignalingProcess {
    /// Starts the server with the test key plus `args`, and waits for `/healthz`.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_with_env(args, &[])
    }

    /// Like [`SignalingProcess::start`], with extra environment (for example `KUBECONFIG`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let port = free_port()?;
        let mut all = vec![
            "serve".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--jwt-hs256={TEST_KID}={TEST_SECRET}"),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::launch(IpAddr::from([127, 0, 0, 1]), port, all, env, None)
    }

    /// Like [`SignalingProcess::start`], inside network namespace `ns`, listening on its end
    /// of the link ([`NetNamespace::inner`]), where the test's clients reach it.
    pub fn start_in(ns: &NetNamespace, args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let ip = IpAddr::from(ns.inner());
        let mut all = vec![
            "serve".to_owned(),
            format!("--listen={ip}:{port}"),
            format!("--jwt-hs256={TEST_KID}={TEST_SECRET}"),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::launch(ip, port, all, &[], Some(ns.name()))
    }

    /// Starts `switchboard-signaling dev` (in-memory state, generated key, demo page) with
    /// `args`.
    pub fn start_dev(args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let mut all = vec!["dev".to_owned(), format!("--listen=127.0.0.1:{port}")];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::launch(IpAddr::from([127, 0, 0, 1]), port, all, &[], None)
    }

    fn launch(
        ip: IpAddr,
        port: u16,
        all: Vec<String>,
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> Result<Self> {
        let bin = workspace_binary("switchboard-signaling", "switchboard-signaling")?;
        // `ip netns exec` enters the namespace and execs the server, which keeps its pid.
        let (program, all) = match netns {
            None => (bin, all),
            Some(name) => {
                let mut wrapped = vec![
                    "netns".to_owned(),
                    "exec".to_owned(),
                    name.to_owned(),
                    bin.display().to_string(),
                ];
                wrapped.extend(all);
                (std::path::PathBuf::from("ip"), wrapped)
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("switchboard-signaling-")
            .tempdir()
            .map_err(HarnessError::io("create a signaling directory"))?;
        let mut process = ChildProcess::spawn(
            "switchboard-signaling",
            &program,
            &all,
            &[&[("RUST_LOG", "info,switchboard_signaling=debug")], env].concat(),
            &dir.path().join("signaling.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            process.check_running()?;
            if request(ip, port, "GET", "/healthz", None).is_ok_and(|(code, _)| code == 200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "switchboard-signaling",
                    seconds: 20,
                    log_tail: process.log_tail(15),
                });
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(SignalingProcess {
            process,
            ip,
            port,
            _dir: dir,
        })
    }

    /// Fails if the server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Sends `signal` (`KILL`, `TERM`) to the server.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .map_err(HarnessError::io("run kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Io {
                action: "send a signal to switchboard-signaling".to_owned(),
                source: std::io::Error::other(format!("kill -{signal} failed: {status}")),
            })
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True once the process has exited, waiting up to `timeout`.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.process.check_running().is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `ws://127.0.0.1:<port>/v1/ws`
    /// `http://127.0.0.1:<port>`
    /// The address it listens on: loopback, or its namespace's end of the link.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}/v1/ws", self.ip, self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for SignalingProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- switchboard-signaling log ---\n{}",
                self.process.log_tail(40)
            );
        }
    }
}

/// A join token from the test key.
pub fn token(user: &str, room: &str, ttl: Duration) -> String {
    token_in_region(user, room, None, ttl)
}

/// A 10-minute join token signed with the first `KID=SECRET` of `keys`, in the form
/// `SWITCHBOARD_JWT_HS256` takes (for servers configured from a chart's Secret).
pub fn token_with_keys(keys: &str, user: &str, room: &str) -> std::result::Result<String, String> {
    let first = keys.split(',').next().unwrap_or_default();
    let (kid, secret) = first
        .split_once('=')
        .ok_or_else(|| format!("{first:?} is not KID=SECRET"))?;
    let signer = Hs256Signer::new(Some(kid), secret.as_bytes()).map_err(|e| e.to_string())?;
    let claims = MintClaims::new(
        UserId::parse(user).map_err(|e| e.to_string())?,
        RoomId::parse(room).map_err(|e| e.to_string())?,
        SystemTime::now(),
        Duration::from_secs(600),
    );
    signer.mint(&claims).map_err(|e| e.to_string())
}

/// A join token with a `region` hint.
pub fn token_in_region(user: &str, room: &str, region: Option<&str>, ttl: Duration) -> String {
    let signer =
        Hs256Signer::new(Some(TEST_KID), TEST_SECRET.as_bytes()).unwrap_or_else(unreachable_key);
    let mut claims = MintClaims::new(
        UserId::parse(user).unwrap_or_else(unreachable_key),
        RoomId::parse(room).unwrap_or_else(unreachable_key),
        SystemTime::now(),
        ttl,
    );
    claims.region = region.map(|r| Region::parse(r).unwrap_or_else(unreachable_key));
    signer.mint(&claims).unwrap_or_else(unreachable_key)
}

#[allow(clippy::panic)]
fn unreachable_key<T>(error: impl std::fmt::Display) -> T {
    panic!("test token: {error}")
}

/// A test client on one WebSocket.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a client's connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(Option<u16>),
    Error(String),
}

impl Client {
    /// Connects with `?access_token=`.
    pub async fn connect(url: &str, token: &str) -> std::result::Result<Client, String> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?access_token={token}"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Client { ws })
    }

    /// Connects and resumes a session with its resume token and the highest `seq` processed;
    /// returns the client and the server's answer (`joined`, or the `error`).
    pub async fn resume(
        url: &str,
        token: &str,
        resume_token: &str,
        last_seq: u64,
    ) -> std::result::Result<(Client, Value), String> {
        let mut client = Client::connect(url, token).await?;
        client
            .send_json(&serde_json::json!({
                "type": "join", "v": 1,
                "resume": {"token": resume_token, "lastSeq": last_seq}
            }))
            .await?;
        loop {
            let answer = client.recv().await?;
            if answer["type"] == "joined" || answer["type"] == "error" {
                return Ok((client, answer));
            }
        }
    }

    /// Connects and joins; returns the client and its `joined` message.
    pub async fn join(url: &str, token: &str) -> std::result::Result<(Client, Value), String> {
        let mut client = Client::connect(url, token).await?;
        client
            .send_json(&serde_json::json!({"type": "join", "v": 1}))
            .await?;
        let joined = client.recv_type("joined").await?;
        Ok((client, joined))
    }

    pub async fn send_text(&mut self, text: String) -> std::result::Result<(), String> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn send_json(&mut self, value: &Value) -> std::result::Result<(), String> {
        self.send_text(value.to_string()).await
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) -> std::result::Result<(), String> {
        self.ws
            .send(Message::Binary(data.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next JSON message, within 5 s.
    pub async fn recv(&mut self) -> std::result::Result<Value, String> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .map_err(|_| "no message within 5s".to_owned())?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str()).map_err(|e| e.to_string());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!(
                        "closed: {:?}",
                        frame.map(|f: CloseFrame| u16::from(f.code))
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("stream ended".into()),
            }
        }
    }

    /// The next JSON message if one arrives within `wait`; `Ok(None)` if none does.
    pub async fn recv_within(
        &mut self,
        wait: Duration,
    ) -> std::result::Result<Option<Value>, String> {
        loop {
            let Ok(frame) = tokio::time::timeout(wait, self.ws.next()).await else {
                return Ok(None);
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| e.to_string());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!(
                        "closed: {:?}",
                        frame.map(|f: CloseFrame| u16::from(f.code))
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("stream ended".into()),
            }
        }
    }

    /// Skips messages until one of type `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> std::result::Result<Value, String> {
        for _ in 0..100 {
            let message = self.recv().await?;
            if message["type"] == kind {
                return Ok(message);
            }
        }
        Err(format!("no {kind} in 100 messages"))
    }

    /// Reads until the connection ends; returns the close code.
    pub async fn until_closed(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await {
                Err(_) => return Ended::Error("still open after 10s".into()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Ended::Error(e.to_string()),
                Ok(None) => return Ended::Closed(None),
            }
        }
    }

    /// Whether a message arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.ws.next()).await.is_err()
    }
}

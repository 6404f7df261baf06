//! Debian's Janus (`janus` 1.1.2) as a real SFU for tests: its own generated `.jcfg` files,
//! the VideoRoom plugin with string room ids and an `admin_key`, the HTTP transport (Janus API
//! and, on its own port, the admin API with an `admin_secret`), the WebSocket transport
//! browsers use, signed-token auth (`token_auth_secret`) and an RTP port range of its own.
//!
//! Janus must run inside a test network namespace that has
//! [`crate::browser::SFU_ADDRESS`] on a veth (see
//! [`crate::browser::NetworkNamespace::add_sfu_address`]): it binds every transport to that
//! address and gathers ICE candidates only there, because it skips loopback interfaces. Start
//! it from the namespace's thread ([`crate::browser::NetworkNamespace::run`]).
//!
//! Each instance is killed on drop (and with the test process, through `setpriv`'s
//! PDEATHSIG); [`Janus::kill`] SIGKILLs it on purpose for failover tests. Several instances
//! run side by side with distinct ports and RTP ranges.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_sfu::janus_config::LocalJanus;
use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{HarnessError, Result, free_port};

/// The plugin every room lives in.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Janus's own library folders in the Debian package.
const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// How one Janus instance is configured.
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// The instance's name (`server_name`, log prefix).
    pub name: String,
    /// The address every transport binds to and ICE gathers on.
    pub ip: Ipv4Addr,
    /// RTP/ICE ports; give each instance its own so a test can tell which one carries media.
    pub rtp_ports: RangeInclusive<u16>,
    /// `token_auth_secret`: the HMAC-SHA1 key Janus checks signed tokens with.
    pub token_secret: String,
    /// `admin_secret` of the admin API.
    pub admin_secret: String,
    /// The VideoRoom plugin's `admin_key`, needed to create rooms.
    pub room_admin_key: String,
    /// Seconds a session lives without a request (Janus's `session_timeout`).
    pub session_timeout_secs: u32,
}

impl JanusOptions {
    /// Options for an instance named `name` on `ip` with its own RTP range and secrets that
    /// differ from every other instance's (so a token for one is refused by the other).
    pub fn new(name: &str, ip: Ipv4Addr, rtp_ports: RangeInclusive<u16>) -> Self {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        JanusOptions {
            name: name.to_owned(),
            ip,
            rtp_ports,
            token_secret: format!("{name}-token-secret-{nonce:x}"),
            admin_secret: format!("{name}-admin-secret-{nonce:x}"),
            room_admin_key: format!("{name}-room-admin-key-{nonce:x}"),
            session_timeout_secs: 30,
        }
    }
}

/// A running Janus, killed on drop.
#[derive(Debug)]
pub struct Janus {
    process: ChildProcess,
    options: JanusOptions,
    http_port: u16,
    admin_port: u16,
    ws_port: u16,
    log: std::path::PathBuf,
    _dir: TempDir,
}

/// A Janus API answer that was not what the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusRefusal {
    /// Janus's error code (403 bad token, 405 plugin not allowed, 433 wrong pin, ...).
    pub code: i64,
    pub reason: String,
}

impl Janus {
    /// Writes the configuration, starts `janus` and waits until `/janus/info` answers and the
    /// WebSocket and admin ports accept connections.
    pub fn start(options: JanusOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchboard-janus-{}-", options.name))
            .tempdir()
            .map_err(HarnessError::io("create a Janus directory"))?;
        let http_port = free_port()?;
        let admin_port = free_port()?;
        let ws_port = free_port()?;
        let log = dir.path().join("janus.log");
        for (file, text) in config_files(&options, dir.path(), http_port, admin_port, ws_port) {
            let path = dir.path().join(file);
            std::fs::write(&path, text)
                .map_err(HarnessError::io(format!("write {}", path.display())))?;
        }
        let args = [
            "--configs-folder".to_owned(),
            dir.path().display().to_string(),
            "--config".to_owned(),
            dir.path().join("janus.jcfg").display().to_string(),
            "--log-file".to_owned(),
            log.display().to_string(),
            "--disable-stdout".to_owned(),
            "--disable-colors".to_owned(),
            "--debug-timestamps".to_owned(),
        ];
        let mut process = ChildProcess::spawn(
            "janus",
            Path::new("janus"),
            &args,
            &[],
            &dir.path().join("janus.out"),
        )?;
        let ip = IpAddr::V4(options.ip);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            process.check_running()?;
            let info = crate::http::request(ip, http_port, "GET", "/janus/info", None);
            if matches!(info, Ok((200, _)))
                && TcpStream::connect((ip, ws_port)).is_ok()
                && TcpStream::connect((ip, admin_port)).is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "janus",
                    seconds: STARTUP_TIMEOUT.as_secs(),
                    log_tail: crate::process::tail(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Janus {
            process,
            options,
            http_port,
            admin_port,
            ws_port,
            log,
            _dir: dir,
        })
    }

    pub fn options(&self) -> &JanusOptions {
        &self.options
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.options.ip)
    }

    /// The WebSocket transport, for browsers (subprotocol `janus-protocol`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}", self.options.ip, self.ws_port)
    }

    /// The admin API endpoint (what an `SfuNode`'s `spec.admin.url` names).
    pub fn admin_url(&self) -> String {
        format!("http://{}:{}/admin", self.options.ip, self.admin_port)
    }

    /// The public info endpoint (health; answers without a token).
    pub fn info_url(&self) -> String {
        format!("http://{}:{}/janus/info", self.options.ip, self.http_port)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether an RTP/ICE port belongs to this instance.
    pub fn owns_port(&self, port: u16) -> bool {
        self.options.rtp_ports.contains(&port)
    }

    /// The last `lines` lines of Janus's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.log, lines)
    }

    /// SIGKILLs Janus (a crash, not a shutdown: no session or room is cleaned up).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Registers this instance with the apiserver as an operator of Janus would: the
    /// credentials Secret `<name>-credentials` and a `JanusVideoRoom` SfuNode named after the
    /// instance, in region `eu`, with room for `participants`.
    pub async fn register(
        &self,
        client: &kube::Client,
        namespace: &str,
        participants: u32,
    ) -> Result<()> {
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, PostParams};
        let secret_name = format!("{}-credentials", self.name());
        let options = &self.options;
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
            "stringData": {"tokenSecret": options.token_secret, "adminSecret": options.admin_secret,
                           "roomAdminKey": options.room_admin_key}
        }))
        .map_err(|e| {
            HarnessError::Build(format!("janus {}: credentials Secret: {e}", self.name()))
        })?;
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &secret)
            .await?;
        let spec = json!({"kind": "JanusVideoRoom", "url": self.ws_url(),
                          "admin": {"url": self.admin_url(), "credentialsSecret": secret_name}});
        Api::<switchboard_crds::SfuNode>::namespaced(client.clone(), namespace)
            .create(
                &PostParams::default(),
                &crate::objects::sfu_node(self.name(), "eu", participants, spec),
            )
            .await?;
        Ok(())
    }

    /// `GET /janus/info`.
    pub fn info(&self) -> Result<Value> {
        let (code, body) =
            crate::http::request(self.ip(), self.http_port, "GET", "/janus/info", None)?;
        if code != 200 {
            return Err(HarnessError::Build(format!(
                "janus {}: /janus/info answered {code}: {body:.200}",
                self.name()
            )));
        }
        serde_json::from_str(&body)
            .map_err(|e| HarnessError::Build(format!("janus {}: /janus/info: {e}", self.name())))
    }

    /// Sends one admin API request (the admin secret and a transaction are added) and returns
    /// the answer when it is `success`.
    pub fn admin(&self, mut request: Value) -> Result<Value> {
        request["admin_secret"] = json!(self.options.admin_secret);
        request["transaction"] = json!(transaction());
        let (_, answer) = crate::http::post_json(self.ip(), self.admin_port, "/admin", &request)?;
        match answer["janus"].as_str() {
            Some("success") => Ok(answer),
            _ => Err(HarnessError::Build(format!(
                "janus {} admin API refused {request}: {answer}",
                self.name()
            ))),
        }
    }

    /// A VideoRoom request through the admin API's `message_plugin` (no Janus session), with
    /// the room admin key added; returns the plugin's `response`, or the plugin's refusal.
    pub fn videoroom(&self, mut request: Value) -> Result<Value> {
        request["admin_key"] = json!(self.options.room_admin_key);
        let answer = self.admin(json!({
            "janus": "message_plugin",
            "plugin": VIDEOROOM,
            "request": request,
        }))?;
        let response = answer["response"].clone();
        if response.get("error_code").is_some() {
            return Err(HarnessError::Build(format!(
                "janus {} VideoRoom refused {request}: {response}",
                self.name()
            )));
        }
        Ok(response)
    }

    /// Creates a VideoRoom with a pin, as the operator provisions one.
    pub fn create_room(&self, room: &str, pin: &str, publishers: u32) -> Result<()> {
        self.videoroom(json!({
            "request": "create",
            "room": room,
            "pin": pin,
            "publishers": publishers,
            "permanent": false,
        }))
        .map(|_| ())
    }

    /// The ids of the rooms this instance has.
    pub fn list_rooms(&self) -> Result<Vec<String>> {
        let response = self.videoroom(json!({"request": "list"}))?;
        Ok(response["list"]
            .as_array()
            .map(|rooms| {
                rooms
                    .iter()
                    .filter_map(|r| r["room"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The `display` names of the publishers in `room`.
    pub fn list_participants(&self, room: &str) -> Result<Vec<String>> {
        let response = self.videoroom(json!({"request": "listparticipants", "room": room}))?;
        Ok(response["participants"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["display"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// One Janus API request over HTTP, as a client makes it (`token` if given); returns the
    /// answer whatever it is, so callers can assert on refusals.
    pub fn api(&self, path: &str, mut request: Value, token: Option<&str>) -> Result<Value> {
        request["transaction"] = json!(transaction());
        if let Some(token) = token {
            request["token"] = json!(token);
        }
        let (_, answer) = crate::http::post_json(
            self.ip(),
            self.http_port,
            &format!("/janus{path}"),
            &request,
        )?;
        Ok(answer)
    }

    /// Creates a Janus session with `token`: its id, or Janus's refusal.
    pub fn create_session(&self, token: Option<&str>) -> Result<Result<u64, JanusRefusal>> {
        let answer = self.api("", json!({"janus": "create"}), token)?;
        Ok(success_id(&answer))
    }

    /// Attaches the VideoRoom plugin in `session`: the handle id, or Janus's refusal.
    pub fn attach(&self, session: u64, token: &str) -> Result<Result<u64, JanusRefusal>> {
        let answer = self.api(
            &format!("/{session}"),
            json!({"janus": "attach", "plugin": VIDEOROOM}),
            Some(token),
        )?;
        Ok(success_id(&answer))
    }

    /// Joins `room` as a publisher with `pin` on `handle` and waits for the plugin's answer
    /// (it comes as an asynchronous event, read by long poll): `Ok(event data)` when joined,
    /// `Err(refusal)` with the plugin's error code otherwise.
    pub fn join_as_publisher(
        &self,
        session: u64,
        handle: u64,
        token: &str,
        room: &str,
        pin: &str,
        display: &str,
    ) -> Result<Result<Value, JanusRefusal>> {
        let answer = self.api(
            &format!("/{session}/{handle}"),
            json!({"janus": "message", "body": {
                "request": "join", "ptype": "publisher", "room": room, "pin": pin,
                "display": display,
            }}),
            Some(token),
        )?;
        if answer["janus"] != "ack" {
            return Ok(Err(refusal(&answer)));
        }
        let transaction = answer["transaction"].clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let path = format!("/janus/{session}?maxev=1&token={}", percent_encode(token));
            let (_, body) = crate::http::request(self.ip(), self.http_port, "GET", &path, None)?;
            let Ok(event) = serde_json::from_str::<Value>(&body) else {
                continue;
            };
            if event["transaction"] != transaction {
                continue;
            }
            let data = &event["plugindata"]["data"];
            return Ok(match data["error_code"].as_i64() {
                Some(code) => Err(JanusRefusal {
                    code,
                    reason: data["error"].as_str().unwrap_or_default().to_owned(),
                }),
                None => Ok(data.clone()),
            });
        }
        Err(HarnessError::Build(format!(
            "janus {}: no answer to join within 10s; log:\n{}",
            self.name(),
            self.log_tail(20)
        )))
    }
}

/// The instance's `.jcfg` files, as Switchboard's own local Janus writes them
/// ([`switchboard_sfu::janus_config`]), bound to `options.ip` for transports and ICE alike.
fn config_files(
    options: &JanusOptions,
    dir: &Path,
    http_port: u16,
    admin_port: u16,
    ws_port: u16,
) -> Vec<(&'static str, String)> {
    LocalJanus {
        name: options.name.clone(),
        configs_folder: dir.display().to_string(),
        lib_folder: Some(LIB_DIR.to_owned()),
        listen_ip: options.ip,
        ice_ip: Some(options.ip),
        http_port,
        admin_port,
        ws_port,
        rtp_ports: options.rtp_ports.clone(),
        session_timeout_secs: options.session_timeout_secs,
        token_secret: options.token_secret.clone(),
        admin_secret: options.admin_secret.clone(),
        room_admin_key: options.room_admin_key.clone(),
    }
    .files()
}

fn transaction() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn refusal(answer: &Value) -> JanusRefusal {
    JanusRefusal {
        code: answer["error"]["code"].as_i64().unwrap_or(-1),
        reason: answer["error"]["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("unexpected answer: {answer}")),
    }
}

fn success_id(answer: &Value) -> Result<u64, JanusRefusal> {
    match (answer["janus"].as_str(), answer["data"]["id"].as_u64()) {
        (Some("success"), Some(id)) => Ok(id),
        _ => Err(refusal(answer)),
    }
}

/// Query-string encoding for a token (base64 has `+`, `/` and `=`).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_percent_encoded_for_the_query_string() {
        assert_eq!(
            percent_encode("1,janus,janus.plugin.videoroom:a+b/c="),
            "1%2Cjanus%2Cjanus.plugin.videoroom%3Aa%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn every_instance_gets_its_own_secrets_and_ports() {
        let a = JanusOptions::new("a", Ipv4Addr::new(127, 0, 0, 2), 20000..=20099);
        let b = JanusOptions::new("b", Ipv4Addr::new(127, 0, 0, 2), 20100..=20199);
        assert_ne!(a.token_secret, b.token_secret);
        let files = config_files(&a, Path::new("/tmp/x"), 1, 2, 3);
        let main = &files[0].1;
        assert!(main.contains("rtp_port_range = \"20000-20099\""), "{main}");
        assert!(main.contains(&format!("token_auth_secret = \"{}\"", a.token_secret)));
        assert!(files[3].1.contains("string_ids = true"));
    }
}

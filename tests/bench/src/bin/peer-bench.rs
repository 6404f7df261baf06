//! The load generator of every signaling benchmark (a benchmark, not a test): run by
//! `tests/bench/peers.sh` (Switchboard against its peers), `tests/bench/signaling.sh`
//! (Switchboard alone: memory per connection, join rate, same-process relay),
//! `tests/bench/scale-out.sh` (cross-pod relay on Redis and Redis Cluster), and in a tiny form
//! by the `peer_bench_smoke` test.
//!
//! It drives three systems (`--system`) through the same scenarios, each over its own wire
//! protocol on WebSocket:
//! - Switchboard: its JSON protocol (`join`, then `offer` with `to`);
//! - socket.io with `@socket.io/redis-adapter` (`tests/bench/peers/socketio/server.js`):
//!   Engine.IO v4 / socket.io text packets (`40{auth}`, `42["join"]` with an ack,
//!   `42["offer",{to,sdp}]`);
//! - Centrifugo with its Redis engine: its JSON protocol (`connect` with a JWT, `subscribe` to
//!   the client's personal channel as its "join", `publish` to the peer's personal channel as
//!   its relay).
//!
//! Where the room state lives is `--backend`: in the server process (`memory`, one process
//! only), one `redis-server` (`redis`, the default), or a 3-master Redis Cluster (`cluster`,
//! Switchboard only).
//!
//! Scenarios: `idle` (server RSS per joined idle connection, with `--no-join` per bare
//! connection), `joins` (join rate), `relay` (relay from senders on the first server to
//! receivers on the last, through Redis when there are several, at a constant offered rate
//! timed from each message's intended send time, so coordinated-omission safe; or the maximum
//! rate with a bounded window per pair). Each run starts its own servers and Redis on loopback,
//! optionally pinned with `--server-cpu`, and prints one JSON object on stdout. Client sockets
//! are bound to 127.0.0.2 to 127.0.0.200 so that tens of thousands of connections do not run
//! out of the ephemeral ports of one source address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use switchboard_bench::measure::{
    CpuWindow, Ws, histogram, kib_field, nofile_limit, quantiles_ms, runtime, since, source_ip,
    status_kib, ws_config,
};
use switchboard_tests::binaries::workspace_binary;
use switchboard_tests::http::get;
use switchboard_tests::process::ChildProcess;
use switchboard_tests::signaling::{TEST_KID, TEST_SECRET, token};
use switchboard_tests::{RedisCluster, RedisServer, free_port};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "peer-bench")]
struct Cli {
    /// The system under test.
    #[arg(long, value_enum, global = true, default_value_t = System::Switchboard)]
    system: System,
    /// Where room state lives: in the server process (one process only), one Redis, or a
    /// Redis Cluster (Switchboard only).
    #[arg(long, value_enum, global = true, default_value_t = Backend::Redis)]
    backend: Backend,
    /// Pin every server process to this CPU (`taskset -c`); its runtime then sizes itself to
    /// one core.
    #[arg(long, global = true)]
    server_cpu: Option<usize>,
    /// Extra argument for every server process (repeatable), after the scenario's own, for
    /// experiments such as `--server-arg=--send-queue=16`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Directory printed by `tests/bench/peers/build.sh` (holds `centrifugo` and
    /// `socketio/`); needed for the peers.
    #[arg(long, global = true, env = "SWITCHBOARD_PEERS_DIR")]
    peers_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Server RSS per idle, joined connection (one server process).
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Connects (with their joins) in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Idle time between the last join and the RSS reading.
        #[arg(long, default_value_t = 5.0)]
        settle_seconds: f64,
        /// Connect without joining, to tell connection memory from room membership memory.
        #[arg(long)]
        no_join: bool,
    },
    /// Joins per second on one server process, `concurrency` in flight.
    Joins {
        #[arg(long, default_value_t = 5_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
    /// Relay latency at `--rate`, or the maximum rate with `--max`; across processes through
    /// Redis when `--pods` is above 1.
    Relay {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, required_unless_present = "max")]
        rate: Option<f64>,
        #[arg(long, conflicts_with = "rate")]
        max: bool,
        /// Messages in flight per pair with `--max`.
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        #[arg(long, default_value_t = 256)]
        sdp_bytes: usize,
        /// Server processes sharing the Redis backend; senders use the first, receivers the
        /// last. Above 1 needs `--backend redis` or `cluster`.
        #[arg(long, default_value_t = 2)]
        pods: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    Switchboard,
    Socketio,
    Centrifugo,
    /// Centrifugo doing what Switchboard does per join and per message: each client also
    /// subscribes to its room's channel, with presence and join/leave pushes to the room, and
    /// the personal channels keep a history of Switchboard's mailbox length for recovery.
    CentrifugoSameWork,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Switchboard => "switchboard",
            System::Socketio => "socketio",
            System::Centrifugo => "centrifugo",
            System::CentrifugoSameWork => "centrifugo-same-work",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The server's in-process state (one process only).
    Memory,
    /// One `redis-server`.
    Redis,
    /// A 3-master Redis Cluster with sharded pub/sub (Switchboard only).
    Cluster,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Cluster => "redis-cluster",
        }
    }
}

/// The running backend the servers share.
enum Store {
    Memory,
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    fn start(backend: Backend) -> Store {
        match backend {
            Backend::Memory => Store::Memory,
            Backend::Redis => Store::Redis(RedisServer::start().unwrap()),
            Backend::Cluster => Store::Cluster(RedisCluster::start().unwrap()),
        }
    }

    /// Redis processes, whose CPU use is reported beside the servers'.
    fn pids(&self) -> Vec<u32> {
        match self {
            Store::Memory => Vec::new(),
            Store::Redis(redis) => vec![redis.pid()],
            Store::Cluster(cluster) => cluster.pids(),
        }
    }

    /// The single Redis URL the peers take (they are not run on a cluster).
    fn url(&self) -> Option<String> {
        match self {
            Store::Redis(redis) => Some(redis.url()),
            Store::Memory | Store::Cluster(_) => None,
        }
    }

    /// `switchboard-signaling serve` flags for this backend.
    fn switchboard_args(&self) -> Vec<String> {
        match self {
            Store::Memory => Vec::new(),
            Store::Redis(redis) => vec![format!("--redis-url={}", redis.url())],
            Store::Cluster(cluster) => vec![
                format!("--redis-url={}", cluster.urls()),
                "--redis-cluster".to_owned(),
            ],
        }
    }
}

/// Exits with a usage error, the way clap refuses a bad option.
fn refuse(message: String) -> ! {
    Cli::command()
        .error(ErrorKind::ArgumentConflict, message)
        .exit()
}

/// Refuses option combinations the scenarios cannot run.
fn validate(cli: &Cli) {
    if cli.backend == Backend::Cluster && cli.system != System::Switchboard {
        refuse(format!(
            "--backend cluster is only for --system switchboard (not {})",
            cli.system.name()
        ));
    }
    if let Command::Relay { pods, .. } = &cli.command {
        if *pods == 0 {
            refuse("--pods must be at least 1".to_owned());
        }
        if *pods > 1 && cli.backend == Backend::Memory {
            refuse(format!(
                "--pods {pods} needs --backend redis or cluster: processes share rooms only through Redis"
            ));
        }
    }
    if cli.system != System::Switchboard && cli.peers_dir.is_none() {
        refuse(format!(
            "--system {} needs --peers-dir (or SWITCHBOARD_PEERS_DIR): the directory tests/bench/peers/build.sh prints",
            cli.system.name()
        ));
    }
}

/// One server process of the system under test, whose pid we know (RSS and CPU readings).
struct Server {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

fn peers_dir(dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf).unwrap_or_else(|| {
        panic!("--peers-dir (or SWITCHBOARD_PEERS_DIR) is needed: run tests/bench/peers/build.sh")
    })
}

impl Server {
    fn start(
        system: System,
        cpu: Option<usize>,
        peers: Option<&Path>,
        store: &Store,
        index: usize,
        extra: &[String],
    ) -> Server {
        let redis_url = store.url();
        let redis_url = redis_url.as_deref();
        let dir = tempfile::Builder::new()
            .prefix("switchboard-peer-bench-")
            .tempdir()
            .unwrap();
        let port = free_port().unwrap();
        let (name, bin, args, envs, ready_path): (
            &'static str,
            PathBuf,
            Vec<String>,
            Vec<_>,
            &str,
        ) = match system {
            System::Switchboard => {
                let bin =
                    workspace_binary("switchboard-signaling", "switchboard-signaling").unwrap();
                let mut args = vec![
                    "serve".to_owned(),
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--jwt-hs256={TEST_KID}={TEST_SECRET}"),
                    "--default-max-participants=100000".to_owned(),
                    "--join-timeout=60s".to_owned(),
                    "--rate-per-second=1000000".to_owned(),
                    "--rate-burst=1000000".to_owned(),
                    format!("--pod-name=bench-{index}"),
                ];
                args.extend(store.switchboard_args());
                (
                    "switchboard-signaling",
                    bin,
                    args,
                    vec![("RUST_LOG".to_owned(), "warn".to_owned())],
                    "/healthz",
                )
            }
            System::Socketio => {
                let js = peers_dir(peers).join("socketio/server.js");
                let mut envs = vec![
                    ("PORT".to_owned(), port.to_string()),
                    ("JWT_SECRET".to_owned(), TEST_SECRET.to_owned()),
                    ("NODE_ENV".to_owned(), "production".to_owned()),
                ];
                if let Some(url) = redis_url {
                    envs.push(("REDIS_URL".to_owned(), url.to_owned()));
                }
                (
                    "socket.io",
                    PathBuf::from("node"),
                    vec![js.display().to_string()],
                    envs,
                    "/socket.io/?EIO=4&transport=polling",
                )
            }
            System::Centrifugo | System::CentrifugoSameWork => {
                let bin = peers_dir(peers).join("centrifugo");
                let config = dir.path().join("config.json");
                let same_work = system == System::CentrifugoSameWork;
                let config_json = centrifugo_config(port, redis_url, same_work);
                std::fs::write(&config, config_json.to_string()).unwrap();
                (
                    "centrifugo",
                    bin,
                    vec!["--config".to_owned(), config.display().to_string()],
                    vec![("CENTRIFUGO_LOG_LEVEL".to_owned(), "warn".to_owned())],
                    "/health",
                )
            }
        };
        let mut args = args;
        args.extend(extra.iter().cloned());
        // `taskset` execs the server, so the child's pid stays the server's.
        let (program, all) = match cpu {
            Some(cpu) => {
                let mut all = vec!["-c".to_owned(), cpu.to_string(), bin.display().to_string()];
                all.extend(args);
                (PathBuf::from("taskset"), all)
            }
            None => (bin, args),
        };
        let env_refs: Vec<(&str, &str)> =
            envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut process = ChildProcess::spawn(
            name,
            &program,
            &all,
            &env_refs,
            &dir.path().join("server.log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            process.check_running().unwrap();
            if get(port, ready_path).is_ok_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready: {}",
                process.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        Server {
            process,
            port,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `VmRSS` in bytes.
    fn rss(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Switchboard's `switchboard_signaling_connections` gauge (the peers have none).
    fn joined_connections(&self, system: System) -> Option<u64> {
        if system != System::Switchboard {
            return None;
        }
        let (_, body) = get(self.port, "/metrics").ok()?;
        body.lines()
            .find(|l| l.starts_with("switchboard_signaling_connections "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }
}

/// The `smaps_rollup` lines that say where a process's RSS is (KiB).
fn smaps(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    json!({
        "rss_kib": kib_field(&text, "Rss:"),
        "anonymous_kib": kib_field(&text, "Anonymous:"),
        "private_dirty_kib": kib_field(&text, "Private_Dirty:"),
        "shared_clean_kib": kib_field(&text, "Shared_Clean:"),
    })
}

/// Centrifugo v6 configuration: JWT with the test HMAC key, the Redis engine when given, and
/// channels clients may subscribe and publish to themselves. By default no history and no
/// presence: the least work per message. With `same_work`, the personal channels keep the
/// last 256 messages (Switchboard's default mailbox) for recovery, and `room:` channels keep
/// presence and push joins and leaves to the room, as Switchboard's join does.
fn centrifugo_config(port: u16, redis_url: Option<&str>, same_work: bool) -> Value {
    let mut config = json!({
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "warn"},
        "health": {"enabled": true},
        "usage_stats": {"disabled": true},
        "client": {
            "token": {"hmac_secret_key": TEST_SECRET},
            "allowed_origins": ["*"],
        },
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "allow_publish_for_client": true,
            }
        },
    });
    if same_work {
        let personal = &mut config["channel"]["without_namespace"];
        personal["history_size"] = json!(256);
        personal["history_ttl"] = json!("10s");
        personal["force_recovery"] = json!(true);
        config["channel"]["namespaces"] = json!([{
            "name": "room",
            "allow_subscribe_for_client": true,
            "presence": true,
            "join_leave": true,
            "force_push_join_leave": true,
        }]);
    }
    if let Some(url) = redis_url {
        let address = url.trim_end_matches('/').to_owned();
        config["engine"] = json!({"type": "redis", "redis": {"address": [address]}});
    }
    config
}

/// A connected, authenticated client, before its join.
struct Conn {
    ws: Ws,
    user: String,
    /// The room its token names.
    room: String,
    /// The id others address it by, once known (socket.io: its socket id).
    id: Option<String>,
}

/// Text of the next text frame, within 30 s; panics on the end of the connection.
async fn next_text(ws: &mut Ws, waiting_for: &str) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {waiting_for} within 30 s"));
        match frame {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended while waiting for {waiting_for}: {other:?}"),
        }
    }
}

/// The reply to Centrifugo command `id` among the newline-separated replies of a frame.
fn centrifugo_reply(text: &str, id: u64) -> Option<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["id"].as_u64() == Some(id))
}

/// The application-level ping each peer protocol expects an answer to, and the answer.
fn pong_for(system: System, text: &str) -> Option<&'static str> {
    match system {
        System::Switchboard => None,
        // Engine.IO v4: the server pings ("2"), the client pongs ("3").
        System::Socketio => (text == "2").then_some("3"),
        // Centrifugo: an empty command is a ping, answered with an empty one.
        System::Centrifugo | System::CentrifugoSameWork => (text == "{}").then_some("{}"),
    }
}

async fn connect(system: System, port: u16, i: usize, user: &str, room: &str) -> Conn {
    connect_with(system, port, i, user, room, 0).await
}

async fn connect_with(
    system: System,
    port: u16,
    i: usize,
    user: &str,
    room: &str,
    write_buffer: usize,
) -> Conn {
    let jwt = token(user, room, Duration::from_secs(600));
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source_ip(i).into(), 0))
        .unwrap_or_else(|e| panic!("bind {}: {e}", source_ip(i)));
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap_or_else(|e| panic!("connect from {}: {e}", source_ip(i)));
    stream.set_nodelay(true).unwrap();
    let url = match system {
        System::Switchboard => format!("ws://127.0.0.1:{port}/v1/ws?access_token={jwt}"),
        System::Socketio => format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        System::Centrifugo | System::CentrifugoSameWork => {
            format!("ws://127.0.0.1:{port}/connection/websocket")
        }
    };
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config(write_buffer)))
            .await
            .unwrap_or_else(|e| panic!("upgrade: {e}"));
    let mut id = None;
    match system {
        System::Switchboard => {}
        System::Socketio => {
            // Engine.IO OPEN ("0{...}"), then the socket.io CONNECT with the token as auth.
            let open = next_text(&mut ws, "the Engine.IO open packet").await;
            assert!(
                open.starts_with('0'),
                "not an Engine.IO open packet: {open}"
            );
            ws.send(Message::Text(format!(r#"40{{"token":"{jwt}"}}"#).into()))
                .await
                .unwrap();
            loop {
                let text = next_text(&mut ws, "the socket.io CONNECT answer").await;
                if let Some(body) = text.strip_prefix("40") {
                    let value: Value = serde_json::from_str(body).unwrap();
                    id = Some(value["sid"].as_str().unwrap().to_owned());
                    break;
                }
                assert!(!text.starts_with("44"), "socket.io refused: {text}");
            }
        }
        System::Centrifugo | System::CentrifugoSameWork => {
            ws.send(Message::Text(
                format!(r#"{{"id":1,"connect":{{"token":"{jwt}","name":"bench"}}}}"#).into(),
            ))
            .await
            .unwrap();
            loop {
                let text = next_text(&mut ws, "the Centrifugo connect reply").await;
                if let Some(reply) = centrifugo_reply(&text, 1) {
                    assert!(reply.get("error").is_none(), "connect refused: {text}");
                    break;
                }
            }
        }
    }
    Conn {
        ws,
        user: user.to_owned(),
        room: room.to_owned(),
        id,
    }
}

/// Joins the room the token names (Centrifugo: subscribes to the personal channel); returns
/// the address others relay to.
async fn join(system: System, conn: &mut Conn) -> String {
    let ws = &mut conn.ws;
    match system {
        System::Switchboard => {
            ws.send(Message::Text(r#"{"type":"join","v":1}"#.into()))
                .await
                .unwrap();
            loop {
                let text = next_text(ws, "joined").await;
                let value: Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("joined") => return value["participantId"].as_str().unwrap().to_owned(),
                    Some("error") => panic!("join refused: {text}"),
                    _ => continue,
                }
            }
        }
        System::Socketio => {
            ws.send(Message::Text(r#"420["join"]"#.into()))
                .await
                .unwrap();
            loop {
                let text = next_text(ws, "the join ack").await;
                if let Some(body) = text.strip_prefix("430") {
                    let value: Value = serde_json::from_str(body).unwrap();
                    let id = value[0]["id"].as_str().unwrap().to_owned();
                    assert_eq!(Some(&id), conn.id.as_ref(), "ack names another socket");
                    return id;
                }
                if let Some(pong) = pong_for(system, &text) {
                    ws.send(Message::Text(pong.into())).await.unwrap();
                }
            }
        }
        System::Centrifugo | System::CentrifugoSameWork => {
            let channel = format!("u_{}", conn.user);
            let mut commands = format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#);
            // Same work: the room's channel too, in the same frame; its reply is the last.
            let last = if system == System::CentrifugoSameWork {
                let room = &conn.room;
                commands.push_str(&format!(
                    "\n{{\"id\":3,\"subscribe\":{{\"channel\":\"room:{room}\"}}}}"
                ));
                3
            } else {
                2
            };
            ws.send(Message::Text(commands.into())).await.unwrap();
            let mut answered = 0;
            loop {
                let text = next_text(ws, "the subscribe reply").await;
                for id in 2..=last {
                    if let Some(reply) = centrifugo_reply(&text, id) {
                        assert!(reply.get("error").is_none(), "subscribe refused: {text}");
                        // Same work keeps a history on the personal channel: it is recoverable.
                        let recoverable = reply["subscribe"]["recoverable"] == true;
                        assert!(
                            id != 2 || recoverable == (last == 3),
                            "the personal channel's history is not as configured: {text}"
                        );
                        answered += 1;
                    }
                }
                if answered == last - 1 {
                    return channel;
                }
                if let Some(pong) = pong_for(system, &text) {
                    ws.send(Message::Text(pong.into())).await.unwrap();
                }
            }
        }
    }
}

/// An offer to `to` carrying its intended and actual send times in the `sdp`.
fn offer(system: System, to: &str, id: u64, intended: u64, sent: u64, pad: &str) -> Message {
    let sdp = format!("i={intended};s={sent};{pad}");
    let text = match system {
        System::Switchboard => format!(r#"{{"type":"offer","to":"{to}","sdp":"{sdp}"}}"#),
        System::Socketio => format!(r#"42["offer",{{"to":"{to}","sdp":"{sdp}"}}]"#),
        System::Centrifugo | System::CentrifugoSameWork => format!(
            r#"{{"id":{id},"publish":{{"channel":"{to}","data":{{"type":"offer","sdp":"{sdp}"}}}}}}"#
        ),
    };
    Message::Text(text.into())
}

/// `(intended, sent)` of every relayed offer in a frame (Centrifugo batches several pushes into
/// one frame, one per line), without a full JSON parse.
fn stamps(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    text.match_indices("\"sdp\":\"i=")
        .filter_map(move |(at, _)| {
            let rest = &text[at + 9..];
            let (intended, rest) = rest.split_once(";s=")?;
            let (sent, _) = rest.split_once(';')?;
            Some((intended.parse().ok()?, sent.parse().ok()?))
        })
}

/// Whether a frame the sender gets back reports an error.
fn is_error(system: System, text: &str) -> bool {
    match system {
        System::Switchboard => text.contains(r#""type":"error""#),
        System::Socketio => text.starts_with("44") || text.starts_with('1'),
        System::Centrifugo | System::CentrifugoSameWork => text.contains(r#""error":"#),
    }
}

/// Keeps an idle connection alive: reads everything and answers application pings.
fn keep_idle(system: System, mut ws: Ws) {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(text) = frame
                && let Some(pong) = pong_for(system, text.as_str())
                && ws.send(Message::Text(pong.into())).await.is_err()
            {
                break;
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn idle(
    system: System,
    backend: Backend,
    server: &Server,
    connections: usize,
    room_size: usize,
    concurrency: usize,
    settle: f64,
    no_join: bool,
) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = server.rss();
    let bench_rss_before = status_kib(std::process::id(), "VmRSS:") * 1024;
    let port = server.port;
    let started = Instant::now();
    let mut joined = stream::iter(0..connections)
        .map(|i| async move {
            let mut conn = connect(
                system,
                port,
                i,
                &format!("u{i}"),
                &format!("r{}", i / room_size),
            )
            .await;
            if !no_join {
                join(system, &mut conn).await;
            }
            conn.ws
        })
        .buffer_unordered(concurrency);
    let mut count = 0usize;
    while let Some(ws) = joined.next().await {
        keep_idle(system, ws);
        count += 1;
    }
    let connect_join_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let rss_after = server.rss();
    let bench_rss_after = status_kib(std::process::id(), "VmRSS:") * 1024;
    let per = (rss_after as f64 - rss_before as f64) / connections as f64;
    println!(
        "{}",
        json!({
            "scenario": "idle", "system": system.name(), "backend": backend.name(),
            "connections": connections, "joined": !no_join, "connected": count,
            "connected_and_joined": if no_join { 0 } else { count }, "room_size": room_size,
            "server_joined_connections": server.joined_connections(system),
            "rss_before_bytes": rss_before, "rss_after_bytes": rss_after,
            "bytes_per_connection": per.round(), "kib_per_connection": (per / 1024.0 * 100.0).round() / 100.0,
            "server_smaps_rollup": smaps(server.pid()),
            "connect_join_s": (connect_join_s * 100.0).round() / 100.0,
            "connect_joins_per_second": (connections as f64 / connect_join_s).round(),
            "bench_bytes_per_connection": ((bench_rss_after as f64 - bench_rss_before as f64) / connections as f64).round(),
        })
    );
}

async fn joins(
    system: System,
    backend: Backend,
    server: &Server,
    redis_pids: &[u32],
    connections: usize,
    room_size: usize,
    concurrency: usize,
) {
    let port = server.port;
    // Phase 1: connections (upgrade, token check and the protocol's handshake), all kept open.
    let started = Instant::now();
    let conns: Vec<Conn> = stream::iter(0..connections)
        .map(|i| async move {
            connect(
                system,
                port,
                i,
                &format!("u{i}"),
                &format!("r{}", i / room_size),
            )
            .await
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let connect_s = started.elapsed().as_secs_f64();
    // Phase 2: joins, `concurrency` in flight.
    let cpu = CpuWindow::start(&[server.pid()], redis_pids);
    let started = Instant::now();
    let done: Vec<(Conn, u64)> = stream::iter(conns)
        .map(|mut conn| async move {
            let at = Instant::now();
            join(system, &mut conn).await;
            (conn, at.elapsed().as_nanos() as u64)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let join_s = started.elapsed().as_secs_f64();
    let cpu = cpu.percent();
    let mut latency = histogram();
    for (_, ns) in &done {
        latency.record((*ns).max(1)).unwrap();
    }
    println!(
        "{}",
        json!({
            "scenario": "joins", "system": system.name(), "backend": backend.name(),
            "connections": connections, "joined": done.len(), "room_size": room_size,
            "concurrency": concurrency,
            "connects_per_second": (connections as f64 / connect_s).round(),
            "joins_per_second": (connections as f64 / join_s).round(),
            "connect_and_join_per_second": (connections as f64 / (connect_s + join_s)).round(),
            "join_latency": quantiles_ms(&latency),
            "cpu_during_joins": cpu,
        })
    );
}

/// Reads a sender's own socket (publish replies, errors) and counts errors.
fn drain(system: System, mut stream: SplitStream<Ws>, errors: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            if let Message::Text(text) = frame
                && is_error(system, text.as_str())
            {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

struct Sender {
    sink: SplitSink<Ws, Message>,
    to: String,
    /// Next Centrifugo command id (1 and 2 went to connect and subscribe).
    next_id: u64,
}

impl Sender {
    fn offer(&mut self, system: System, intended: u64, sent: u64, pad: &str) -> Message {
        self.next_id += 1;
        offer(system, &self.to, self.next_id, intended, sent, pad)
    }
}

#[allow(clippy::too_many_arguments)]
async fn relay(
    system: System,
    backend: Backend,
    servers: &[Server],
    redis_pids: &[u32],
    pairs: usize,
    rate: Option<f64>,
    window: usize,
    seconds: f64,
    warmup: f64,
    sdp_bytes: usize,
) {
    let sender_port = servers[0].port;
    let receiver_port = servers[servers.len() - 1].port;
    let write_buffer = if rate.is_none() { 16 * 1024 } else { 0 };
    let errors = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut receivers_ws = Vec::new();
    for p in 0..pairs {
        let room = format!("pair{p}");
        let mut receiver = connect(system, receiver_port, 2 * p, &format!("b{p}"), &room).await;
        let to = join(system, &mut receiver).await;
        let mut sender = connect_with(
            system,
            sender_port,
            2 * p + 1,
            &format!("a{p}"),
            &room,
            write_buffer,
        )
        .await;
        join(system, &mut sender).await;
        let (sink, stream) = sender.ws.split();
        drain(system, stream, errors.clone());
        senders.push(Sender {
            sink,
            to,
            next_id: 2,
        });
        receivers_ws.push(receiver.ws);
    }
    let pad = "x".repeat(sdp_bytes.saturating_sub(40));
    let base = Instant::now();
    let begin = base + Duration::from_millis(200);
    let measure_from = begin + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let measure_from_ns = (measure_from - base).as_nanos() as u64;
    let end_ns = (end - base).as_nanos() as u64;
    let max = rate.is_none();
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut blasters = Vec::new();
    let mut scheduled = Vec::new();
    for (mut sender, mut receiver) in senders.into_iter().zip(receivers_ws) {
        let window_sem = Arc::new(Semaphore::new(window));
        let sem = window_sem.clone();
        // Receiver: latency from the intended and from the actual send time, for messages
        // meant to be sent inside the measured window (with `--max`: arriving inside it).
        receivers.push(tokio::spawn(async move {
            let mut from_intended = histogram();
            let mut from_sent = histogram();
            let mut in_window = 0u64;
            let deadline = tokio::time::Instant::from_std(end + Duration::from_secs(2));
            loop {
                let frame = tokio::select! {
                    frame = receiver.next() => frame,
                    _ = tokio::time::sleep_until(deadline) => break,
                };
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                if let Some(pong) = pong_for(system, text.as_str()) {
                    let _ = receiver.send(Message::Text(pong.into())).await;
                    continue;
                }
                let now = since(base);
                for (intended, sent) in stamps(text.as_str()) {
                    if max {
                        sem.add_permits(1);
                        if now >= measure_from_ns && now < end_ns {
                            in_window += 1;
                            from_sent.record(now.saturating_sub(sent).max(1)).unwrap();
                        }
                    } else if intended >= measure_from_ns && intended < end_ns {
                        in_window += 1;
                        from_intended
                            .record(now.saturating_sub(intended).max(1))
                            .unwrap();
                        from_sent.record(now.saturating_sub(sent).max(1)).unwrap();
                    }
                }
            }
            (in_window, from_intended, from_sent)
        }));
        if max {
            let pad = pad.clone();
            let stop = stop.clone();
            blasters.push(tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(begin)).await;
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let permit = match window_sem.try_acquire() {
                        Ok(permit) => permit,
                        Err(_) => {
                            // Window full: push out what is buffered, then wait for arrivals.
                            if sender.sink.flush().await.is_err() {
                                break;
                            }
                            tokio::select! {
                                permit = window_sem.acquire() => permit.unwrap(),
                                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                            }
                        }
                    };
                    permit.forget();
                    let now = since(base);
                    let message = sender.offer(system, now, now, &pad);
                    if sender.sink.feed(message).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                let _ = sender.sink.flush().await;
                (sent, sender)
            }));
        } else {
            scheduled.push(sender);
        }
    }
    // CPU use of the servers and Redis over the measured window only.
    let server_pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let redis_pids = redis_pids.to_vec();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(measure_from)).await;
        let window = CpuWindow::start(&server_pids, &redis_pids);
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        window.percent()
    });
    let mut sent_total = 0u64;
    let mut max_lag_ns = 0u64;
    let mut _kept = Vec::new();
    if let Some(rate) = rate {
        // A ticker thread sleeps to each due time (message k is due at begin + k / rate, for
        // sender k % pairs) and hands k to the sending task; a late tick or a busy runtime
        // counts as latency, since it is measured from the due time.
        let begin_ns = (begin - base).as_nanos() as u64;
        let total = ((warmup + seconds) * rate).round() as u64;
        let due_ns = move |k: u64| begin_ns + (k as f64 * 1e9 / rate) as u64;
        let (ticks, mut tick) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let ticker = std::thread::spawn(move || {
            for k in 0..total {
                let due = base + Duration::from_nanos(due_ns(k));
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if ticks.send(k).is_err() {
                    break;
                }
            }
        });
        while let Some(k) = tick.recv().await {
            let intended = due_ns(k);
            let now = since(base);
            max_lag_ns = max_lag_ns.max(now.saturating_sub(intended));
            let sender = &mut scheduled[k as usize % pairs];
            let message = sender.offer(system, intended, now, &pad);
            sender.sink.send(message).await.unwrap();
            if intended >= measure_from_ns {
                sent_total += 1;
            }
        }
        ticker.join().unwrap();
        _kept = scheduled;
    } else {
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        stop.store(true, Ordering::Relaxed);
        for blaster in blasters {
            let (sent, sender) = blaster.await.unwrap();
            sent_total += sent;
            _kept.push(sender);
        }
    }
    let cpu = cpu.await.unwrap();
    let mut received = 0u64;
    let mut from_intended = histogram();
    let mut from_sent = histogram();
    for receiver in receivers {
        let (n, a, b) = receiver.await.unwrap();
        received += n;
        from_intended.add(a).unwrap();
        from_sent.add(b).unwrap();
    }
    let errors = errors.load(Ordering::Relaxed);
    let result = match rate {
        Some(rate) => json!({
            "scenario": "relay", "system": system.name(), "backend": backend.name(),
            "mode": "rate", "pairs": pairs,
            "offered_per_second": rate, "pods": servers.len(), "seconds": seconds, "sdp_bytes": sdp_bytes,
            "sent": sent_total, "received": received, "errors": errors,
            "achieved_per_second": (received as f64 / seconds).round(),
            "latency": quantiles_ms(&from_intended),
            "latency_from_actual_send": quantiles_ms(&from_sent),
            "max_sender_lag_ms": max_lag_ns as f64 / 1e6,
            "cpu": cpu,
        }),
        None => json!({
            "scenario": "relay", "system": system.name(), "backend": backend.name(),
            "mode": "max", "pairs": pairs,
            "window_per_pair": window, "pods": servers.len(), "seconds": seconds, "sdp_bytes": sdp_bytes,
            "sent_including_warmup": sent_total, "received_in_window": received, "errors": errors,
            "relayed_per_second": (received as f64 / seconds).round(),
            "latency_under_saturation": quantiles_ms(&from_sent),
            "cpu": cpu,
        }),
    };
    println!("{result}");
}

/// Prints a skip record and returns false when the descriptor limit cannot hold `connections`.
fn check_fds(system: System, scenario: &str, connections: usize) -> bool {
    let needed = connections as u64 + 256;
    let limit = nofile_limit();
    if limit < needed {
        println!(
            "{}",
            json!({"scenario": scenario, "system": system.name(), "connections": connections,
                   "skipped": format!("RLIMIT_NOFILE is {limit}; {connections} connections need about {needed} descriptors in the server and in the load generator each (raise it with ulimit -n; the hard limit cannot be raised without CAP_SYS_RESOURCE)")})
        );
        return false;
    }
    true
}

fn main() {
    let cli = Cli::parse();
    validate(&cli);
    let system = cli.system;
    let backend = cli.backend;
    let cpu = cli.server_cpu;
    let peers = cli.peers_dir.as_deref();
    let extra = &cli.server_args;
    match cli.command {
        Command::Idle {
            connections,
            room_size,
            concurrency,
            settle_seconds,
            no_join,
        } => {
            if !check_fds(system, "idle", connections) {
                return;
            }
            let store = Store::start(backend);
            let server = Server::start(system, cpu, peers, &store, 0, extra);
            runtime().block_on(idle(
                system,
                backend,
                &server,
                connections,
                room_size,
                concurrency,
                settle_seconds,
                no_join,
            ));
        }
        Command::Joins {
            connections,
            room_size,
            concurrency,
        } => {
            if !check_fds(system, "joins", connections) {
                return;
            }
            let store = Store::start(backend);
            let server = Server::start(system, cpu, peers, &store, 0, extra);
            runtime().block_on(joins(
                system,
                backend,
                &server,
                &store.pids(),
                connections,
                room_size,
                concurrency,
            ));
        }
        Command::Relay {
            pairs,
            rate,
            max,
            window,
            seconds,
            warmup_seconds,
            sdp_bytes,
            pods,
        } => {
            let rate = if max { None } else { rate };
            let store = Store::start(backend);
            let servers: Vec<Server> = (0..pods)
                .map(|i| Server::start(system, cpu, peers, &store, i, extra))
                .collect();
            runtime().block_on(relay(
                system,
                backend,
                &servers,
                &store.pids(),
                pairs,
                rate,
                window,
                seconds,
                warmup_seconds,
                sdp_bytes,
            ));
        }
    }
}

//! Signaling benchmarks (a benchmark, not a test: run by `tests/bench/signaling.sh`).
//!
//! - `idle`: N authenticated, joined, idle connections; the server's RSS before and after,
//!   and the bytes per connection.
//! - `joins`: join rate with the Redis room store, bounded in flight.
//! - `relay`: same-pod relay latency of `offer`s at a constant offered rate (measured from each
//!   message's intended send time, so a stalled sender cannot hide latency: coordinated-omission
//!   safe), or with `--max` the highest relayed rate with a bounded window per pair.
//!
//! Each run starts its own release server (and Redis) on loopback, optionally pinned with
//! `--server-cpu`, and prints one JSON object per result on stdout. Client sockets are bound to
//! 127.0.0.2 to 127.0.0.200 so that tens of thousands of connections do not run out of the
//! ephemeral ports of one source address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use switchboard_tests::binaries::workspace_binary;
use switchboard_tests::http::get;
use switchboard_tests::measure::{
    CpuWindow, Ws, cpu_seconds, histogram, kib_field, nofile_limit, quantiles_ms, round1, runtime,
    since, source_ip, status_kib, ws_config,
};
use switchboard_tests::process::ChildProcess;
use switchboard_tests::signaling::{TEST_KID, TEST_SECRET, token};
use switchboard_tests::{RedisCluster, RedisServer, free_port};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    /// Pin the server to this CPU (`taskset -c`); its runtime then sizes itself to one core.
    #[arg(long, global = true)]
    server_cpu: Option<usize>,
    /// Extra `serve` flag for the server (repeatable), for experiments such as
    /// `--server-arg=--send-queue=16`.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Server RSS per idle, joined connection.
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
    /// Joins per second, with the Redis store when `--redis`.
    Joins {
        #[arg(long, default_value_t = 5_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        room_size: usize,
        /// Joins in flight.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long)]
        redis: bool,
    },
    /// Relay latency at a constant offered rate, or the maximum rate with `--max`.
    Relay {
        /// Sender/receiver pairs, each in a room of two.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Offered messages per second, over all senders.
        #[arg(long, required_unless_present = "max")]
        rate: Option<f64>,
        /// Blast with a bounded window per pair instead of a fixed rate.
        #[arg(long, conflicts_with = "rate")]
        max: bool,
        /// Messages in flight per pair with `--max` (below the server's `--send-queue`).
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// Size of each offer's `sdp`.
        #[arg(long, default_value_t = 256)]
        sdp_bytes: usize,
        /// Room state: in-process, one Redis, or a Redis Cluster.
        #[arg(long, value_enum, default_value_t = Backend::Memory)]
        backend: Backend,
        /// Signaling processes (more than one needs Redis); senders use the first, receivers
        /// the last.
        #[arg(long, default_value_t = 1)]
        pods: usize,
    },
}

/// A release `switchboard-signaling serve` whose pid we know (for RSS and CPU readings).
struct Server {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl Server {
    fn start(cpu: Option<usize>, args: &[String]) -> Server {
        let bin = workspace_binary("switchboard-signaling", "switchboard-signaling").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench-")
            .tempdir()
            .unwrap();
        let port = free_port().unwrap();
        let mut all = Vec::new();
        // `taskset` execs the server, so the child's pid stays the server's.
        let program = match cpu {
            Some(cpu) => {
                all.extend(["-c".to_owned(), cpu.to_string(), bin.display().to_string()]);
                PathBuf::from("taskset")
            }
            None => bin,
        };
        all.extend([
            "serve".to_owned(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--jwt-hs256={TEST_KID}={TEST_SECRET}"),
        ]);
        all.extend(args.iter().cloned());
        let mut process = ChildProcess::spawn(
            "switchboard-signaling",
            &program,
            &all,
            &[("RUST_LOG", "warn")],
            &dir.path().join("signaling.log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            process.check_running().unwrap();
            if get(port, "/healthz").is_ok_and(|(code, _)| code == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready: {}",
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

    /// The `switchboard_signaling_connections` gauge.
    fn joined_connections(&self) -> Option<u64> {
        let (_, body) = get(self.port, "/metrics").ok()?;
        body.lines()
            .find(|l| l.starts_with("switchboard_signaling_connections "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }
}

/// The `smaps_rollup` lines that say where the RSS is (KiB).
fn smaps(pid: u32) -> Value {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    json!({
        "rss_kib": kib_field(&text, "Rss:"),
        "anonymous_kib": kib_field(&text, "Anonymous:"),
        "private_dirty_kib": kib_field(&text, "Private_Dirty:"),
        "shared_clean_kib": kib_field(&text, "Shared_Clean:"),
    })
}

async fn connect(port: u16, i: usize, user: &str, room: &str, write_buffer: usize) -> Ws {
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
    let url = format!("ws://127.0.0.1:{port}/v1/ws?access_token={jwt}");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config(write_buffer)))
            .await
            .unwrap_or_else(|e| panic!("upgrade: {e}"));
    ws
}

/// Sends `join` and waits for `joined`; returns the participant id.
async fn join(ws: &mut Ws) -> String {
    ws.send(Message::Text(r#"{"type":"join","v":1}"#.into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no joined within 30 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                match value["type"].as_str() {
                    Some("joined") => return value["participantId"].as_str().unwrap().to_owned(),
                    Some("error") => panic!("join refused: {text}"),
                    _ => continue,
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended before joined: {other:?}"),
        }
    }
}

fn check_fds(scenario: &str, connections: usize) -> bool {
    let needed = connections as u64 + 256;
    let limit = nofile_limit();
    if limit < needed {
        println!(
            "{}",
            json!({"scenario": scenario, "connections": connections,
                   "skipped": format!("RLIMIT_NOFILE is {limit}; {connections} connections need about {needed} descriptors in the server and in the load generator each (raise it with ulimit -n; the hard limit caps it)")})
        );
        return false;
    }
    true
}

async fn idle(
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
            let mut ws =
                connect(port, i, &format!("u{i}"), &format!("r{}", i / room_size), 0).await;
            if !no_join {
                join(&mut ws).await;
            }
            ws
        })
        .buffer_unordered(concurrency);
    // Each idle connection keeps one small task that reads (and so answers pings).
    while let Some(mut ws) = joined.next().await {
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    }
    let connect_join_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let rss_after = server.rss();
    let bench_rss_after = status_kib(std::process::id(), "VmRSS:") * 1024;
    let per = (rss_after as f64 - rss_before as f64) / connections as f64;
    println!(
        "{}",
        json!({
            "scenario": "idle", "connections": connections, "room_size": room_size, "joined": !no_join,
            "server_joined_connections": server.joined_connections(),
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
    server: &Server,
    connections: usize,
    room_size: usize,
    concurrency: usize,
    redis_pid: Option<u32>,
) {
    let port = server.port;
    // Phase 1: connections (upgrade and token check), all kept open.
    let started = Instant::now();
    let sockets: Vec<Ws> = stream::iter(0..connections)
        .map(|i| async move {
            connect(port, i, &format!("u{i}"), &format!("r{}", i / room_size), 0).await
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let connect_s = started.elapsed().as_secs_f64();
    // Phase 2: joins, `concurrency` in flight.
    let cpu = CpuWindow::start(&[server.pid()], &[]);
    let redis_cpu = redis_pid.map(|pid| cpu_seconds(&pid.to_string()));
    let started = Instant::now();
    let done: Vec<(Ws, u64)> = stream::iter(sockets)
        .map(|mut ws| async move {
            let at = Instant::now();
            join(&mut ws).await;
            (ws, at.elapsed().as_nanos() as u64)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let join_s = started.elapsed().as_secs_f64();
    let mut cpu = cpu.percent();
    if let (Some(pid), Some(before)) = (redis_pid, redis_cpu) {
        let used = cpu_seconds(&pid.to_string()) - before;
        cpu["redis_cpu_percent"] = json!(round1(used / join_s * 100.0));
    }
    let mut latency = histogram();
    for (_, ns) in &done {
        latency.record(*ns).unwrap();
    }
    println!(
        "{}",
        json!({
            "scenario": "joins", "store": if redis_pid.is_some() { "redis" } else { "memory" },
            "connections": connections, "room_size": room_size, "concurrency": concurrency,
            "connects_per_second": (connections as f64 / connect_s).round(),
            "joins_per_second": (connections as f64 / join_s).round(),
            "connect_and_join_per_second": (connections as f64 / (connect_s + join_s)).round(),
            "join_latency": quantiles_ms(&latency),
            "cpu_during_joins": cpu,
        })
    );
}

/// `i=<intended ns>;s=<sent ns>;` from a relayed offer, without a full JSON parse.
fn stamps(text: &str) -> Option<(u64, u64)> {
    let start = text.find("\"sdp\":\"i=")? + 9;
    let rest = &text[start..];
    let (intended, rest) = rest.split_once(";s=")?;
    let (sent, _) = rest.split_once(';')?;
    Some((intended.parse().ok()?, sent.parse().ok()?))
}

fn offer(to: &str, intended: u64, sent: u64, pad: &str) -> Message {
    Message::Text(
        format!(r#"{{"type":"offer","to":"{to}","sdp":"i={intended};s={sent};{pad}"}}"#).into(),
    )
}

struct Pair {
    sender: SplitSink<Ws, Message>,
    to: String,
    receiver: Ws,
}

/// Reads a sender's own socket (pings, errors) and counts `error`s.
fn drain(mut stream: futures::stream::SplitStream<Ws>, errors: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            if let Message::Text(text) = frame
                && text.as_str().contains(r#""type":"error""#)
            {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Where the relay scenario's room state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// The in-process store (one pod only).
    Memory,
    /// One `redis-server`.
    Redis,
    /// A 3-master Redis Cluster with sharded pub/sub.
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

#[allow(clippy::too_many_arguments)]
async fn relay(
    servers: &[Server],
    backend: Backend,
    redis_pids: &[u32],
    pairs: usize,
    rate: Option<f64>,
    window: usize,
    seconds: f64,
    warmup: f64,
    sdp_bytes: usize,
) {
    // Senders on the first pod, receivers on the last: with several pods every message
    // crosses from one process to another through Redis.
    let sender_port = servers[0].port;
    let receiver_port = servers[servers.len() - 1].port;
    let write_buffer = if rate.is_none() { 16 * 1024 } else { 0 };
    let mut set = Vec::new();
    for p in 0..pairs {
        let room = format!("pair{p}");
        let mut receiver = connect(receiver_port, 2 * p, &format!("b{p}"), &room, 0).await;
        let to = join(&mut receiver).await;
        let mut sender = connect(
            sender_port,
            2 * p + 1,
            &format!("a{p}"),
            &room,
            write_buffer,
        )
        .await;
        join(&mut sender).await;
        set.push((sender, to, receiver));
    }
    let errors = Arc::new(AtomicU64::new(0));
    let pairs_v: Vec<Pair> = set
        .into_iter()
        .map(|(sender, to, receiver)| {
            let (sink, stream) = sender.split();
            drain(stream, errors.clone());
            Pair {
                sender: sink,
                to,
                receiver,
            }
        })
        .collect();
    let pad = "x".repeat(sdp_bytes.saturating_sub(40));
    let base = Instant::now();
    let begin = base + Duration::from_millis(200);
    let measure_from = begin + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let measure_from_ns = (measure_from - base).as_nanos() as u64;
    let end_ns = (end - base).as_nanos() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut schedule_sinks = Vec::new();
    for pair in pairs_v {
        let window_sem = Arc::new(Semaphore::new(window));
        let sem = window_sem.clone();
        let mut receiver = pair.receiver;
        let max = rate.is_none();
        // Receiver: latency from the intended and from the actual send time, for messages
        // meant to be sent inside the measured window.
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
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, Some(Ok(_))) {
                        continue;
                    }
                    break;
                };
                let Some((intended, sent)) = stamps(text.as_str()) else {
                    continue;
                };
                let now = since(base);
                if max {
                    sem.add_permits(1);
                    // Throughput counts arrivals inside the window.
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
            (in_window, from_intended, from_sent)
        }));
        if max {
            let mut sink = pair.sender;
            let to = pair.to;
            let pad = pad.clone();
            let stop = stop.clone();
            senders.push(tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(begin)).await;
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let permit = match window_sem.try_acquire() {
                        Ok(permit) => permit,
                        Err(_) => {
                            // Window full: push out what is buffered, then wait for arrivals.
                            if sink.flush().await.is_err() {
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
                    if sink.feed(offer(&to, now, now, &pad)).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                let _ = sink.flush().await;
                (sent, sink)
            }));
        } else {
            schedule_sinks.push((pair.sender, pair.to));
        }
    }
    // CPU use of both processes over the measured window only.
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
    let mut _sinks_kept = Vec::new();
    if let Some(rate) = rate {
        // A ticker thread sleeps to each due time (message k is due at begin + k / rate, for
        // sender k % pairs) and hands k to the sending task. Tokio's timer has 1 ms granularity,
        // a thread sleep about 0.1 ms; a late tick or a busy runtime counts as latency, since it
        // is measured from the due time.
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
            let (sink, to) = &mut schedule_sinks[k as usize % pairs];
            sink.send(offer(to, intended, now, &pad)).await.unwrap();
            if intended >= measure_from_ns {
                sent_total += 1;
            }
        }
        ticker.join().unwrap();
    } else {
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            let (sent, sink) = sender.await.unwrap();
            sent_total += sent;
            _sinks_kept.push(sink);
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
            "scenario": "relay", "mode": "rate", "pairs": pairs, "offered_per_second": rate,
            "backend": backend.name(), "pods": servers.len(),
            "seconds": seconds, "sdp_bytes": sdp_bytes,
            "sent": sent_total, "received": received, "errors": errors,
            "achieved_per_second": (received as f64 / seconds).round(),
            "latency": quantiles_ms(&from_intended),
            "latency_from_actual_send": quantiles_ms(&from_sent),
            "max_sender_lag_ms": max_lag_ns as f64 / 1e6,
            "cpu": cpu,
        }),
        None => json!({
            "scenario": "relay", "mode": "max", "pairs": pairs, "window_per_pair": window,
            "backend": backend.name(), "pods": servers.len(),
            "seconds": seconds, "sdp_bytes": sdp_bytes,
            "sent_including_warmup": sent_total, "received_in_window": received, "errors": errors,
            "relayed_per_second": (received as f64 / seconds).round(),
            "latency_under_saturation": quantiles_ms(&from_sent),
            "cpu": cpu,
        }),
    };
    println!("{result}");
}

/// The scenario's own server flags, then the command line's `--server-arg`s (which win).
fn server_args(scenario: &[&str], cli: &[String]) -> Vec<String> {
    scenario
        .iter()
        .map(|s| (*s).to_owned())
        .chain(cli.iter().cloned())
        .collect()
}

fn main() {
    let cli = Cli::parse();
    let cpu = cli.server_cpu;
    let extra = cli.server_args;
    match cli.command {
        Command::Idle {
            connections,
            room_size,
            concurrency,
            settle_seconds,
            no_join,
        } => {
            if !check_fds("idle", connections) {
                return;
            }
            let server = Server::start(
                cpu,
                &server_args(
                    &["--default-max-participants=100000", "--join-timeout=60s"],
                    &extra,
                ),
            );
            runtime().block_on(idle(
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
            redis,
        } => {
            if !check_fds("joins", connections) {
                return;
            }
            let redis_server = redis.then(|| RedisServer::start().unwrap());
            let mut args = server_args(
                &["--default-max-participants=100000", "--join-timeout=60s"],
                &extra,
            );
            if let Some(r) = &redis_server {
                args.push(format!("--redis-url={}", r.url()));
            }
            let server = Server::start(cpu, &args);
            runtime().block_on(joins(
                &server,
                connections,
                room_size,
                concurrency,
                redis_server.as_ref().map(RedisServer::pid),
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
            backend,
            pods,
        } => {
            let rate = if max { None } else { rate };
            assert!(
                pods == 1 || backend != Backend::Memory,
                "--pods above 1 needs --backend redis or cluster"
            );
            let redis_server = (backend == Backend::Redis).then(|| RedisServer::start().unwrap());
            let cluster = (backend == Backend::Cluster).then(|| RedisCluster::start().unwrap());
            let mut args = server_args(
                &["--rate-per-second=1000000", "--rate-burst=1000000"],
                &extra,
            );
            let mut redis_pids = Vec::new();
            if let Some(r) = &redis_server {
                args.push(format!("--redis-url={}", r.url()));
                redis_pids.push(r.pid());
            }
            if let Some(c) = &cluster {
                args.push(format!("--redis-url={}", c.urls()));
                args.push("--redis-cluster".to_owned());
                redis_pids.extend(c.pids());
            }
            let servers: Vec<Server> = (0..pods.max(1))
                .map(|i| {
                    let mut own = args.clone();
                    own.push(format!("--pod-name=bench-{i}"));
                    Server::start(cpu, &own)
                })
                .collect();
            runtime().block_on(relay(
                &servers,
                backend,
                &redis_pids,
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

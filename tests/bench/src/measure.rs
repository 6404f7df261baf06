//! What `peer-bench` measures with: process memory and CPU from `/proc`, HDR latency
//! histograms, loopback source addresses for many connections, and the load generator's
//! runtime.

use std::net::Ipv4Addr;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A load-generator WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// A `kB` field of `/proc/<pid>/status` (for example `VmRSS:`), 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&text, field)
}

/// The number after `field` in a `/proc` text, 0 when absent.
pub fn kib_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process (`self` or a pid), in seconds; 0 when unreadable.
pub fn cpu_seconds(pid: &str) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let Some(at) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[at + 2..].split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(11) + field(12)) / ticks
}

fn total_cpu(pids: &[String]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(pid)).sum()
}

/// The per-CPU lines of `/proc/stat` (`cpu0`, `cpu1`, ...): name and the time counters, in
/// ticks, in the kernel's order (user, nice, system, idle, iowait, irq, softirq, steal, ...).
fn cpu_ticks() -> Vec<(String, Vec<u64>)> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_string();
            Some((name, fields.filter_map(|f| f.parse().ok()).collect()))
        })
        .collect()
}

/// What each CPU spent its time on between two `/proc/stat` readings, in percent: idle,
/// softirq (network work not charged to any process), and steal (time the hypervisor gave
/// to someone else: a run with high steal measured a slower machine, not slower software).
fn cpu_breakdown(before: &[(String, Vec<u64>)], after: &[(String, Vec<u64>)]) -> Value {
    let mut out = serde_json::Map::new();
    for ((name, a), (_, b)) in before.iter().zip(after) {
        let delta: Vec<u64> = a.iter().zip(b).map(|(x, y)| y.saturating_sub(*x)).collect();
        let total: u64 = delta.iter().take(8).sum();
        if total == 0 {
            continue;
        }
        let share =
            |i: usize| round1(delta.get(i).copied().unwrap_or(0) as f64 * 100.0 / total as f64);
        out.insert(
            name.clone(),
            json!({ "idle": share(3), "softirq": share(6), "steal": share(7) }),
        );
    }
    Value::Object(out)
}

/// CPU use of the servers, of Redis and of this process over a window.
pub struct CpuWindow {
    server_pids: Vec<String>,
    redis_pids: Vec<String>,
    server: f64,
    redis: f64,
    bench: f64,
    cpus: Vec<(String, Vec<u64>)>,
    at: Instant,
}

impl CpuWindow {
    pub fn start(server_pids: &[u32], redis_pids: &[u32]) -> CpuWindow {
        let server_pids: Vec<String> = server_pids.iter().map(u32::to_string).collect();
        let redis_pids: Vec<String> = redis_pids.iter().map(u32::to_string).collect();
        CpuWindow {
            server: total_cpu(&server_pids),
            redis: total_cpu(&redis_pids),
            bench: cpu_seconds("self"),
            cpus: cpu_ticks(),
            server_pids,
            redis_pids,
            at: Instant::now(),
        }
    }

    /// Percent of one core since `start`: servers (summed), this process, and Redis when
    /// there is one; and each CPU's idle, softirq and steal shares (`cpus`).
    pub fn percent(&self) -> Value {
        let wall = self.at.elapsed().as_secs_f64();
        let mut out = json!({
            "server_cpu_percent": round1((total_cpu(&self.server_pids) - self.server) / wall * 100.0),
            "bench_cpu_percent": round1((cpu_seconds("self") - self.bench) / wall * 100.0),
            "cpus": cpu_breakdown(&self.cpus, &cpu_ticks()),
        });
        if !self.redis_pids.is_empty() {
            out["redis_cpu_percent"] = json!(round1(
                (total_cpu(&self.redis_pids) - self.redis) / wall * 100.0
            ));
        }
        out
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// This process's soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// The loopback source address of connection `i`: spreading connections over 199 addresses
/// gets past the ephemeral-port limit of one.
pub fn source_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 199) as u8)
}

/// Small WebSocket buffers, so the load generator fits many connections.
pub fn ws_config(write_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(write_buffer)
}

/// A latency histogram in nanoseconds, from 1 ns to 120 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("constant, valid bounds")
}

/// The usual quantiles of a nanosecond histogram, in milliseconds.
pub fn quantiles_ms(h: &Histogram<u64>) -> Value {
    let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
    json!({"count": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)), "p90_ms": ms(h.value_at_quantile(0.9)),
           "p99_ms": ms(h.value_at_quantile(0.99)), "p999_ms": ms(h.value_at_quantile(0.999)), "max_ms": ms(h.max())})
}

/// Nanoseconds since `base`, as written into and read back from each message.
pub fn since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// The load generator's runtime: one worker per CPU this process may use (the scripts pin it
/// to the load core).
pub fn runtime() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

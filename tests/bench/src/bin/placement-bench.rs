//! Placement benchmarks (a benchmark, not a test: run by `tests/bench/placement.sh`).
//!
//! - `decide`: in-memory placement decisions per second with 1,000 nodes.
//! - `apiserver`: against a real etcd + kube-apiserver and the release operator: a burst of
//!   rooms, create-to-placed latency at a steady create rate, the raw status-PATCH rate of the
//!   same client for comparison, and failover of many rooms off a failed node.
//!
//! Prints one JSON object per scenario on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, SfuNode, conditions};
use switchboard_placement::{
    Health, NodeView, PlacementIndex, RegionPolicy, RoomRequest, Strategy, place,
};
use switchboard_tests::objects::{room, sfu_node};
use switchboard_tests::{ControlPlane, OperatorProcess, fast_args};
use tokio::sync::Mutex;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-memory decisions per second.
    Decide {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Burst, steady-rate latency, raw PATCH rate and failover against a real apiserver.
    Apiserver {
        #[arg(long, default_value_t = 2000)]
        burst: usize,
        #[arg(long, default_value_t = 20.0)]
        steady_rate: f64,
        #[arg(long, default_value_t = 30.0)]
        steady_seconds: f64,
        #[arg(long, default_value_t = 1000)]
        failover_rooms: usize,
    },
}

fn synthetic_nodes(n: usize) -> Vec<NodeView> {
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    (0..n)
        .map(|i| {
            let capacity = 200 + (next() % 800) as u32;
            NodeView {
                name: format!("sfu-{i:04}"),
                region: ["eu-west-1", "us-east-1", "ap-south-1"][i % 3].to_owned(),
                labels: BTreeMap::from([(
                    "tier".to_owned(),
                    if i % 2 == 0 { "gold" } else { "silver" }.to_owned(),
                )]),
                health: if i % 50 == 0 {
                    Health::Suspect
                } else {
                    Health::Ready
                },
                cordoned: i % 97 == 0,
                deleting: false,
                capacity,
                max_rooms: None,
                allocated: (next() % u64::from(capacity)) as u32,
                rooms: (next() % 100) as u32,
            }
        })
        .collect()
}

fn decide(nodes: usize, seconds: f64) {
    let views = synthetic_nodes(nodes);
    let rooms: Vec<RoomRequest> = (0..1024)
        .map(|i| RoomRequest {
            key: format!("calls/room-{i}"),
            participants: 2 + (i % 8) as u32,
            region: (i % 4 != 0)
                .then(|| ["eu-west-1", "us-east-1", "ap-south-1"][i % 3].to_owned()),
            region_policy: if i % 5 == 0 {
                RegionPolicy::Required
            } else {
                RegionPolicy::Preferred
            },
            selector: None,
        })
        .collect();
    let index = PlacementIndex::new(views.clone());
    for strategy in [Strategy::LeastLoaded, Strategy::Packed] {
        for method in ["index", "full-scan"] {
            let start = Instant::now();
            let mut decisions = 0u64;
            let mut placed = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                for room in &rooms {
                    let result = if method == "index" {
                        index.place(room, strategy)
                    } else {
                        place(&views, room, strategy)
                    };
                    if result.is_ok() {
                        placed += 1;
                    }
                    decisions += 1;
                }
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({"scenario": "decide", "method": method, "strategy": strategy.to_string(), "nodes": nodes, "decisions": decisions,
                       "placed": placed, "seconds": elapsed, "decisions_per_second": decisions as f64 / elapsed})
            );
        }
    }
}

fn placed_node(room: &Room) -> Option<String> {
    let status = room.status.as_ref()?;
    (status.phase == Some(RoomPhase::Placed))
        .then(|| status.sfu_node.clone())
        .flatten()
}

/// Watches rooms and records when each was first seen Placed, and on which node.
fn spawn_placed_watcher(api: Api<Room>) -> Arc<Mutex<HashMap<String, (Instant, String)>>> {
    let seen: Arc<Mutex<HashMap<String, (Instant, String)>>> = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok(stream) = api.watch(&WatchParams::default().timeout(290), "0").await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(r) | WatchEvent::Modified(r) = event
                    && let (Some(name), Some(node)) = (r.metadata.name.clone(), placed_node(&r))
                {
                    let mut seen = out.lock().await;
                    match seen.get(&name) {
                        Some((_, old)) if *old == node => {}
                        _ => {
                            seen.insert(name, (Instant::now(), node));
                        }
                    }
                }
            }
        }
    });
    seen
}

async fn wait_count(
    seen: &Arc<Mutex<HashMap<String, (Instant, String)>>>,
    pred: impl Fn(&HashMap<String, (Instant, String)>) -> bool,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred(&*seen.lock().await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({"count": h.len(), "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0, "p90_ms": h.value_at_quantile(0.9) as f64 / 1000.0,
           "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0, "max_ms": h.max() as f64 / 1000.0})
}

async fn apiserver(burst: usize, steady_rate: f64, steady_seconds: f64, failover_rooms: usize) {
    // Burst: rooms are created first, then the operator starts, so the figure is the placer's
    // own rate (from its watches being synced to the last room placed).
    {
        let cp = ControlPlane::start().await.unwrap();
        cp.create_namespace("bench").await.unwrap();
        let client = cp.client().await.unwrap();
        let rooms: Api<Room> = Api::namespaced(client.clone(), "bench");
        let nodes: Api<SfuNode> = Api::namespaced(client.clone(), "bench");
        for i in 0..20 {
            nodes
                .create(
                    &PostParams::default(),
                    &sfu_node(&format!("sfu-{i:02}"), "eu", 10_000, json!({})),
                )
                .await
                .unwrap();
        }
        stream::iter(0..burst)
            .for_each_concurrent(64, |i| {
                let rooms = rooms.clone();
                async move {
                    rooms
                        .create(
                            &PostParams::default(),
                            &room(&format!("burst-{i:05}"), 4, json!({})),
                        )
                        .await
                        .unwrap();
                }
            })
            .await;
        let seen = spawn_placed_watcher(rooms.clone());
        let start = Instant::now();
        let _operator = OperatorProcess::start(&cp, &fast_args("bench")).unwrap();
        let ready_after = start.elapsed();
        let done = wait_count(&seen, |s| s.len() >= burst, Duration::from_secs(600)).await;
        let seen = seen.lock().await;
        let last = seen.values().map(|(t, _)| *t).max().unwrap_or(start);
        let first = seen.values().map(|(t, _)| *t).min().unwrap_or(start);
        let placing = last.duration_since(start + ready_after).as_secs_f64();
        println!(
            "{}",
            json!({"scenario": "burst", "rooms": burst, "all_placed": done, "operator_ready_s": ready_after.as_secs_f64(),
                   "first_placed_after_ready_s": first.saturating_duration_since(start + ready_after).as_secs_f64(),
                   "placing_s": placing, "placements_per_second": burst as f64 / placing})
        );
    }

    // Steady create rate and the raw PATCH rate of the same client, on one apiserver.
    {
        let cp = ControlPlane::start().await.unwrap();
        cp.create_namespace("bench").await.unwrap();
        let client = cp.client().await.unwrap();
        let rooms: Api<Room> = Api::namespaced(client.clone(), "bench");
        let nodes: Api<SfuNode> = Api::namespaced(client.clone(), "bench");
        for i in 0..10 {
            nodes
                .create(
                    &PostParams::default(),
                    &sfu_node(&format!("sfu-{i:02}"), "eu", 10_000, json!({})),
                )
                .await
                .unwrap();
        }
        let _operator = OperatorProcess::start(&cp, &fast_args("bench")).unwrap();
        let seen = spawn_placed_watcher(rooms.clone());
        let total = (steady_rate * steady_seconds) as usize;
        let interval = Duration::from_secs_f64(1.0 / steady_rate);
        let mut created: HashMap<String, Instant> = HashMap::new();
        let start = Instant::now();
        for i in 0..total {
            // Coordinated-omission safe: latency counts from the intended send time.
            let intended = start + interval * i as u32;
            tokio::time::sleep_until(intended.into()).await;
            let name = format!("steady-{i:05}");
            let r = rooms.clone();
            let n = name.clone();
            tokio::spawn(async move {
                r.create(&PostParams::default(), &room(&n, 4, json!({})))
                    .await
                    .unwrap()
            });
            created.insert(name, intended);
        }
        wait_count(&seen, |s| s.len() >= total, Duration::from_secs(120)).await;
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let seen = seen.lock().await;
        for (name, at) in &created {
            if let Some((placed, _)) = seen.get(name) {
                h.record(placed.saturating_duration_since(*at).as_micros().max(1) as u64)
                    .unwrap();
            }
        }
        println!(
            "{}",
            json!({"scenario": "steady", "rate_per_s": steady_rate, "rooms": total, "placed": h.len(), "create_to_placed": percentiles(&h)})
        );

        // Raw status PATCH rate of the same client against the same apiserver.
        let names: Vec<String> = created.keys().cloned().collect();
        let patch_seconds = 5.0;
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let begin = Instant::now();
        stream::iter(0..64)
            .for_each_concurrent(64, |w| {
                let rooms = rooms.clone();
                let names = names.clone();
                let count = count.clone();
                async move {
                    let mut i = w;
                    while begin.elapsed().as_secs_f64() < patch_seconds {
                        let name = &names[i % names.len()];
                        let p = json!({"status": {"participants": (i % 7) as u32}});
                        if rooms
                            .patch_status(name, &PatchParams::default(), &Patch::Merge(&p))
                            .await
                            .is_ok()
                        {
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        i += 64;
                    }
                }
            })
            .await;
        let patches = count.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "{}",
            json!({"scenario": "raw_status_patch", "concurrency": 64, "patches": patches, "patches_per_second": patches as f64 / begin.elapsed().as_secs_f64()})
        );
    }

    // Failover: many rooms on a node whose heartbeat stops.
    {
        let cp = ControlPlane::start().await.unwrap();
        cp.create_namespace("bench").await.unwrap();
        let client = cp.client().await.unwrap();
        let rooms: Api<Room> = Api::namespaced(client.clone(), "bench");
        let nodes: Api<SfuNode> = Api::namespaced(client.clone(), "bench");
        nodes
            .create(
                &PostParams::default(),
                &sfu_node(
                    "failing",
                    "eu",
                    100_000,
                    json!({"heartbeatTimeoutSeconds": 2}),
                ),
            )
            .await
            .unwrap();
        nodes
            .create(
                &PostParams::default(),
                &sfu_node("standby", "eu", 100_000, json!({"unschedulable": true})),
            )
            .await
            .unwrap();
        let beat = |nodes: Api<SfuNode>| async move {
            let p = json!({"status": {"lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}});
            let _ = nodes
                .patch_status("failing", &PatchParams::default(), &Patch::Merge(&p))
                .await;
        };
        beat(nodes.clone()).await;
        let heart = {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                loop {
                    beat(nodes.clone()).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let mut args = fast_args("bench");
        args.retain(|a| !a.starts_with("--failover-grace"));
        args.push("--failover-grace=1s".into());
        let _operator = OperatorProcess::start(&cp, &args).unwrap();
        let seen = spawn_placed_watcher(rooms.clone());
        stream::iter(0..failover_rooms)
            .for_each_concurrent(64, |i| {
                let rooms = rooms.clone();
                async move {
                    rooms
                        .create(
                            &PostParams::default(),
                            &room(&format!("fo-{i:05}"), 2, json!({})),
                        )
                        .await
                        .unwrap();
                }
            })
            .await;
        wait_count(
            &seen,
            |s| s.len() >= failover_rooms,
            Duration::from_secs(300),
        )
        .await;
        nodes
            .patch(
                "standby",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": false}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        heart.abort();
        let stopped = Instant::now();
        // Detected: the operator marks the node NotReady.
        let mut detected = None;
        while stopped.elapsed() < Duration::from_secs(30) {
            let n = nodes.get("failing").await.unwrap();
            if n.status.is_some_and(|s| {
                conditions::find(&s.conditions, conditions::READY)
                    .is_some_and(|c| c.status == "False")
            }) {
                detected = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let detected = detected.unwrap_or(stopped);
        let ok = wait_count(
            &seen,
            |s| s.values().filter(|(_, n)| n == "standby").count() >= failover_rooms,
            Duration::from_secs(120),
        )
        .await;
        let seen = seen.lock().await;
        let last = seen
            .values()
            .filter(|(_, n)| n == "standby")
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(detected);
        let all = last.duration_since(detected).as_secs_f64();
        println!(
            "{}",
            json!({"scenario": "failover", "rooms": failover_rooms, "all_moved": ok, "failover_grace_s": 1.0,
                   "detected_after_heartbeat_stop_s": detected.duration_since(stopped).as_secs_f64(),
                   "all_moved_after_detection_s": all, "all_moved_after_grace_s": all - 1.0})
        );
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Decide { nodes, seconds } => decide(nodes, seconds),
        Command::Apiserver {
            burst,
            steady_rate,
            steady_seconds,
            failover_rooms,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(apiserver(
                burst,
                steady_rate,
                steady_seconds,
                failover_rooms,
            ));
        }
    }
}

//! Smoke test of the signaling benchmarks (`tests/bench/peers.sh`, `signaling.sh`,
//! `scale-out.sh`): a tiny version of every scenario against each system, and of Switchboard's
//! own modes (in-process store, Redis Cluster, bare connections), proves that the load
//! generator still speaks each wire protocol, that its servers start and that every field the
//! scripts' tables read is there. It checks that the harness works, not how fast anything is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use switchboard_tests::tools::built_dir;

/// The cached peers (Centrifugo binary, socket.io server with its node_modules): from
/// `tests/run.sh` through `SWITCHBOARD_PEERS_DIR`, or built (once, then cached) here.
fn peers_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_dir(&DIR, "SWITCHBOARD_PEERS_DIR", "tests/bench/peers/build.sh").unwrap()
}

/// Runs one `peer-bench` scenario and returns its JSON result.
fn bench(system: &str, args: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peer-bench"));
    command.arg("--system").arg(system).args(args);
    if system != "switchboard" {
        command.arg("--peers-dir").arg(peers_dir());
    }
    let output = command.output().expect("run peer-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "peer-bench {system} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("peer-bench printed a result");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn smoke(system: &str) {
    let idle = bench(
        system,
        &["idle", "--connections", "30", "--settle-seconds", "0.3"],
    );
    assert_eq!(idle["connected_and_joined"], 30, "{idle}");
    assert!(idle["rss_after_bytes"].as_u64().unwrap() > 0, "{idle}");
    assert!(
        idle["server_smaps_rollup"]["rss_kib"].as_u64().unwrap() > 0,
        "{idle}"
    );

    let joins = bench(
        system,
        &["joins", "--connections", "30", "--concurrency", "8"],
    );
    assert_eq!(joins["joined"], 30, "{joins}");
    assert!(joins["joins_per_second"].as_f64().unwrap() > 0.0, "{joins}");

    // Cross-process: senders on one server, receivers on the other, through Redis.
    let relay = bench(
        system,
        &[
            "relay",
            "--rate",
            "200",
            "--seconds",
            "1",
            "--warmup-seconds",
            "0.3",
            "--pairs",
            "4",
        ],
    );
    assert_eq!(relay["pods"], 2, "{relay}");
    assert_eq!(relay["sent"], 200, "{relay}");
    assert_eq!(
        relay["received"], relay["sent"],
        "every offer arrives: {relay}"
    );
    assert_eq!(relay["errors"], 0, "{relay}");
    assert_eq!(relay["latency"]["count"], 200, "{relay}");

    let max = bench(
        system,
        &[
            "relay",
            "--max",
            "--seconds",
            "1",
            "--warmup-seconds",
            "0.3",
            "--pairs",
            "4",
        ],
    );
    assert!(max["relayed_per_second"].as_f64().unwrap() > 0.0, "{max}");
    assert_eq!(max["errors"], 0, "{max}");
}

/// The load generator drives Switchboard through every peer scenario.
#[test]
fn switchboard_scenarios_run() {
    switchboard_tests::require!(Redis);
    smoke("switchboard");
}

/// The load generator speaks socket.io (Engine.IO v4) to the Node server with the Redis adapter.
#[test]
fn socketio_scenarios_run() {
    switchboard_tests::require!(Redis, BenchPeers);
    smoke("socketio");
}

/// The load generator speaks Centrifugo's JSON protocol to Centrifugo with its Redis engine.
#[test]
fn centrifugo_scenarios_run() {
    switchboard_tests::require!(Redis, BenchPeers);
    smoke("centrifugo");
}

/// The same with Centrifugo doing Switchboard's work: room channels with presence and
/// join/leave pushes, and a history on the personal channels (the load generator checks that
/// each subscription is accepted and the personal channel is recoverable).
#[test]
fn centrifugo_same_work_scenarios_run() {
    switchboard_tests::require!(Redis, BenchPeers);
    smoke("centrifugo-same-work");
}

/// Switchboard alone on its in-process store (`tests/bench/signaling.sh`): idle memory with and
/// without joins (the server's own count of joined connections agrees), joins, and
/// same-process relay at a rate and at the maximum.
#[test]
fn switchboard_memory_store_scenarios_run() {
    let memory = ["--backend", "memory"];
    let idle = bench(
        "switchboard",
        &[
            &memory[..],
            &["idle", "--connections", "30", "--settle-seconds", "0.3"],
        ]
        .concat(),
    );
    assert_eq!(idle["backend"], "memory", "{idle}");
    assert_eq!(idle["connected_and_joined"], 30, "{idle}");
    assert_eq!(idle["server_joined_connections"], 30, "{idle}");
    assert!(idle["kib_per_connection"].as_f64().is_some(), "{idle}");

    let bare = bench(
        "switchboard",
        &[
            &memory[..],
            &[
                "idle",
                "--connections",
                "20",
                "--settle-seconds",
                "0.3",
                "--no-join",
            ],
        ]
        .concat(),
    );
    assert_eq!(bare["joined"], false, "{bare}");
    assert_eq!(bare["connected"], 20, "{bare}");
    assert_eq!(bare["server_joined_connections"], 0, "{bare}");

    let joins = bench(
        "switchboard",
        &[
            &memory[..],
            &["joins", "--connections", "30", "--concurrency", "8"],
        ]
        .concat(),
    );
    assert_eq!(joins["joined"], 30, "{joins}");
    assert!(
        joins["connect_and_join_per_second"].as_f64().unwrap() > 0.0,
        "{joins}"
    );
    assert!(
        joins["cpu_during_joins"].get("redis_cpu_percent").is_none(),
        "{joins}"
    );

    let relay = bench(
        "switchboard",
        &[
            &memory[..],
            &[
                "relay",
                "--pods",
                "1",
                "--rate",
                "200",
                "--seconds",
                "1",
                "--warmup-seconds",
                "0.3",
                "--pairs",
                "4",
            ],
        ]
        .concat(),
    );
    assert_eq!(relay["pods"], 1, "{relay}");
    assert_eq!(relay["sent"], 200, "{relay}");
    assert_eq!(
        relay["received"], relay["sent"],
        "every offer arrives: {relay}"
    );
    assert_eq!(relay["errors"], 0, "{relay}");
    assert_eq!(relay["latency_from_actual_send"]["count"], 200, "{relay}");

    let max = bench(
        "switchboard",
        &[
            &memory[..],
            &[
                "relay",
                "--pods",
                "1",
                "--max",
                "--seconds",
                "1",
                "--warmup-seconds",
                "0.3",
                "--pairs",
                "4",
            ],
        ]
        .concat(),
    );
    assert!(max["relayed_per_second"].as_f64().unwrap() > 0.0, "{max}");
    assert!(
        max["latency_under_saturation"]["count"].as_u64().unwrap() > 0,
        "{max}"
    );
}

/// Cross-pod relay on a Redis Cluster (`tests/bench/scale-out.sh`): every offer crosses from
/// one process to the other, and the cluster's CPU is reported.
#[test]
fn switchboard_redis_cluster_relay_runs() {
    switchboard_tests::require!(Redis);
    let relay = bench(
        "switchboard",
        &[
            "--backend",
            "cluster",
            "relay",
            "--pods",
            "2",
            "--rate",
            "200",
            "--seconds",
            "1",
            "--warmup-seconds",
            "0.3",
            "--pairs",
            "4",
        ],
    );
    assert_eq!(relay["backend"], "redis-cluster", "{relay}");
    assert_eq!(relay["pods"], 2, "{relay}");
    assert_eq!(
        relay["received"], relay["sent"],
        "every offer arrives: {relay}"
    );
    assert_eq!(relay["sent"], 200, "{relay}");
    assert!(
        relay["cpu"]["redis_cpu_percent"].as_f64().is_some(),
        "{relay}"
    );
}

/// Option combinations the scenarios cannot run are refused with a usage error naming them,
/// before any server starts.
#[test]
fn impossible_combinations_are_refused() {
    for (args, says) in [
        (
            &[
                "--backend",
                "memory",
                "relay",
                "--pods",
                "2",
                "--rate",
                "10",
            ][..],
            "--pods 2 needs --backend redis or cluster",
        ),
        (
            &["--system", "centrifugo", "--backend", "cluster", "joins"][..],
            "--backend cluster is only for --system switchboard",
        ),
        (
            &["relay", "--pods", "0", "--rate", "10"][..],
            "--pods must be at least 1",
        ),
        (
            &["--system", "socketio", "joins"][..],
            "--system socketio needs --peers-dir",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_peer-bench"))
            .env_remove("SWITCHBOARD_PEERS_DIR")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

//! Smoke test of the peer comparison harness (`tests/bench/peers.sh`): a tiny version of every
//! scenario against each system proves that the load generator still speaks each wire
//! protocol and that its servers start. It checks that the harness works, not how fast
//! anything is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use switchboard_tests::repo_root;

/// The cached peers (Centrifugo binary, socket.io server with its node_modules): from
/// `tests/run.sh` through `SWITCHBOARD_PEERS_DIR`, or built (once, then cached) here.
fn peers_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SWITCHBOARD_PEERS_DIR") {
            return PathBuf::from(dir);
        }
        let output = Command::new("bash")
            .arg(repo_root().join("tests/bench/peers/build.sh"))
            .output()
            .expect("run tests/bench/peers/build.sh");
        assert!(
            output.status.success(),
            "tests/bench/peers/build.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh printed its directory"),
        )
    })
    .clone()
}

/// Runs one `peer-bench` scenario and returns its JSON result.
fn bench(system: &str, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_peer-bench"))
        .arg("--system")
        .arg(system)
        .arg("--peers-dir")
        .arg(peers_dir())
        .args(args)
        .output()
        .expect("run peer-bench");
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
    smoke("switchboard");
}

/// The load generator speaks socket.io (Engine.IO v4) to the Node server with the Redis adapter.
#[test]
fn socketio_scenarios_run() {
    smoke("socketio");
}

/// The load generator speaks Centrifugo's JSON protocol to Centrifugo with its Redis engine.
#[test]
fn centrifugo_scenarios_run() {
    smoke("centrifugo");
}

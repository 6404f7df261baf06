//! The test harness itself: servers start, answer, and leave no process behind, even when the
//! test that owns them panics.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_tests::{ControlPlane, RedisServer};

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

fn wait_dead(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        assert!(Instant::now() < deadline, "processes still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves a panicking test still tears down etcd and kube-apiserver and removes their data.
#[test]
fn control_plane_is_torn_down_when_its_test_panics() {
    switchboard_tests::require!(ControlPlane);
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let cp = ControlPlane::start().await.unwrap();
            let version = cp.kubectl(["version", "-o", "json"]).unwrap();
            assert!(version.status.success());
            let text = String::from_utf8_lossy(&version.stdout).into_owned();
            let dir = cp.kubeconfig().parent().unwrap().to_path_buf();
            tx.send((cp.pids(), dir, text)).unwrap();
            panic!("deliberate panic with a running control plane");
        })
    })
    .join();
    assert!(joined.is_err(), "the thread was meant to panic");
    let (pids, dir, version) = rx.recv().unwrap();
    assert!(
        version.contains("\"gitVersion\": \"v1.37."),
        "server version: {version}"
    );
    wait_dead(&pids);
    assert!(
        !Path::new(&dir).exists(),
        "{} was left behind",
        dir.display()
    );
}

/// Proves the Redis harness serves on loopback and is killed on drop.
#[test]
fn redis_server_answers_and_is_killed_on_drop() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    let pid = redis.pid();
    assert!(alive(pid));
    drop(redis);
    wait_dead(&[pid]);
}

//! The protocol conformance suite: a Python client written from `docs/protocol.md` alone
//! (`tests/conformance/`, `websockets` and PyJWT) produces every row of the documented error,
//! close-code, limit and token-refusal tables on the wire, against real signaling processes
//! on a real Redis and a real apiserver. The suite reads the tables from the docs itself, so
//! a row added without a test, or a code on the wire the docs do not list, fails it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::json;
use switchboard_tests::signaling::{SignalingProcess, TEST_KID, TEST_SECRET};
use switchboard_tests::{ControlPlane, RedisServer};

/// The issuer the `flood` server requires, so the suite can also produce `invalid_issuer`.
const FLOOD_ISSUER: &str = "https://app.example";

/// Installs the suite's Python packages when they are missing, as `tests/run.sh` does.
fn python_ready() {
    let import = |module: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(import("websockets") && import("jwt") && import("cryptography")) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "websockets",
                "pyjwt",
                "cryptography",
            ])
            .status()
            .expect("python3 -m pip");
        assert!(
            status.success(),
            "pip install websockets pyjwt cryptography"
        );
    }
}

/// Proves every documented error code, close code, limit and token refusal is produced on
/// the wire with the documented code, and no undocumented code appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_protocol_is_what_the_server_speaks() {
    switchboard_tests::require!(Redis, ControlPlane);
    python_ready();
    let redis = RedisServer::start().unwrap();
    let frozen_redis = RedisServer::start().unwrap();
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace("calls").await.unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let kube_env = [("KUBECONFIG", kubeconfig.as_str())];
    let redis_url = format!("--redis-url={}", redis.url());
    // Two keys, so a token without `kid` is `missing_kid`; short timeouts so 4004 and 4005
    // come within the test's time; a room limit of 2 for `room_full`.
    // The server API (docs/api.md) for the rows only the application's backend causes:
    // 4002 `kicked` and 4003 `room_deleted`.
    let admin_port = switchboard_tests::free_port().unwrap();
    let admin_addr = format!("--admin-addr=127.0.0.1:{admin_port}");
    let main = SignalingProcess::start(&[
        &redis_url,
        &admin_addr,
        "--jwt-hs256=second=another-secret-of-at-least-32-bytes",
        "--join-timeout=2s",
        "--idle-timeout=1500ms",
        "--ping-interval=300ms",
        "--default-max-participants=2",
    ])
    .unwrap();
    let flood = SignalingProcess::start(&[
        &redis_url,
        "--rate-per-second=2",
        "--rate-burst=3",
        "--flood-strikes=5",
        &format!("--jwt-issuer={FLOOD_ISSUER}"),
    ])
    .unwrap();
    let slow = SignalingProcess::start(&[
        &redis_url,
        "--send-queue=4",
        "--rate-per-second=100000",
        "--rate-burst=100000",
    ])
    .unwrap();
    let outage =
        SignalingProcess::start(&[&format!("--redis-url={}", frozen_redis.url())]).unwrap();
    let drain = SignalingProcess::start(&[&redis_url, "--shutdown-grace=2s"]).unwrap();
    let strict = SignalingProcess::start_with_env(&["--namespace=calls"], &kube_env).unwrap();
    let eager = SignalingProcess::start_with_env(
        &["--namespace=calls", "--auto-create", "--placement-wait=1s"],
        &kube_env,
    )
    .unwrap();

    let config = json!({
        "secret": TEST_SECRET,
        "kid": TEST_KID,
        "main": main.ws_url(),
        "main_http": main.http_url(),
        "admin_http": format!("http://127.0.0.1:{admin_port}"),
        "flood": flood.ws_url(),
        "flood_issuer": FLOOD_ISSUER,
        "slow": slow.ws_url(),
        "outage": outage.ws_url(),
        "outage_http": outage.http_url(),
        "outage_redis_pid": frozen_redis.pid(),
        "outage_redis_port": frozen_redis.port(),
        "drain": drain.ws_url(),
        "drain_pid": drain.pid(),
        "strict": strict.ws_url(),
        "eager": eager.ws_url(),
    });
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/suite.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&suite)
            .env("SWITCHBOARD_CONFORMANCE", config.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "conformance suite failed; main server log:\n{}",
        main.log_tail(40)
    );
    assert!(stdout.contains("every documented row produced on the wire"));
}

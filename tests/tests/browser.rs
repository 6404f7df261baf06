//! Real browsers making real WebRTC calls through Switchboard: two demo pages in headless
//! Chromium, each with an RTCPeerConnection to the other, signaled through the server, with a
//! data-channel round trip as the proof that media paths work. Everything (servers, coturn,
//! browsers) runs inside a network namespace the test creates, with only `lo` up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::browser::{Browser, NetworkNamespace, run_call};
use switchboard_tests::signaling::{SignalingProcess, token};
use switchboard_tests::{Coturn, RedisServer};

const HOUR: Duration = Duration::from_secs(3600);

fn page(base: &str, user: &str, extra: &str) -> String {
    format!("{base}/?room=call&user={user}&name={user}&media=canvas{extra}")
}

/// Runs the call scenario in a fresh namespace; `start` brings up the servers (inside the
/// namespace) and returns them with the two page URLs.
fn call_in_namespace<S: 'static>(
    options: Value,
    start: impl FnOnce() -> (S, [String; 2]) + Send + 'static,
) -> Value {
    let browser = Browser::prepare().unwrap();
    let namespace = NetworkNamespace::create().unwrap();
    namespace
        .run(move || {
            let (servers, pages) = start();
            let mut config = options;
            config["pages"] = json!(pages);
            let report = run_call(&browser, &config).unwrap();
            drop(servers);
            report
        })
        .unwrap()
}

fn assert_connected(report: &Value) {
    assert_eq!(report["ok"], true, "browser scenario failed: {report:#}");
    for states in report["states"].as_array().unwrap() {
        let values: Vec<&Value> = states.as_object().unwrap().values().collect();
        assert_eq!(values, [&json!("connected")], "{report:#}");
    }
    for trips in report["roundTrips"].as_array().unwrap() {
        assert!(
            trips.as_u64().unwrap() >= 1,
            "no data-channel round trip: {report:#}"
        );
    }
}

fn screenshot_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("demo.png")
}

/// Proves two demo pages against dev mode connect peer to peer, with a data-channel round
/// trip, and see the SFU dev mode placed the room on. Takes the README's screenshot.
#[test]
fn two_pages_call_each_other_through_dev_mode() {
    switchboard_tests::require!(Chromium, NetworkNamespace);
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    let report = call_in_namespace(json!({"screenshot": shot}), || {
        let dev = SignalingProcess::start_dev(&["--sfu=local-1=https://sfu-1.local.test"]).unwrap();
        let base = dev.http_url();
        let pages = [page(&base, "alice", ""), page(&base, "bob", "")];
        (dev, pages)
    });
    assert_connected(&report);
    assert_eq!(report["sfu"]["node"], "local-1");
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
}

/// Proves the same call works with each page on a different signaling process, sharing
/// Redis: the offer, answer and candidates cross pods.
#[test]
fn pages_on_two_signaling_pods_call_each_other_through_redis() {
    switchboard_tests::require!(Chromium, NetworkNamespace, Redis);
    let report = call_in_namespace(json!({}), || {
        let redis = RedisServer::start().unwrap();
        let url = format!("--redis-url={}", redis.url());
        let one = SignalingProcess::start(&[&url, "--demo", "--pod-name=one"]).unwrap();
        let two = SignalingProcess::start(&[&url, "--demo", "--pod-name=two"]).unwrap();
        let pages = [
            page(
                &one.http_url(),
                "alice",
                &format!("&token={}", token("alice", "call", HOUR)),
            ),
            page(
                &two.http_url(),
                "bob",
                &format!("&token={}", token("bob", "call", HOUR)),
            ),
        ];
        ((redis, one, two), pages)
    });
    assert_connected(&report);
}

/// Proves a call forced through TURN (`iceTransportPolicy: "relay"`) connects through the
/// real coturn with the credentials signaling hands out.
#[test]
fn a_call_forced_through_turn_uses_the_relay() {
    switchboard_tests::require!(Chromium, NetworkNamespace, Redis, Coturn);
    let report = call_in_namespace(json!({}), || {
        let redis = RedisServer::start().unwrap();
        let realm = "switchboard.test";
        let coturn = Coturn::start(&redis, realm).unwrap();
        let secret = "browser-test-shared-secret-0123456789";
        let mut connection = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("SADD")
            .arg(format!("turn/realm/{realm}/secret"))
            .arg(secret)
            .exec(&mut connection)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, secret).unwrap();
        let dev = SignalingProcess::start_dev(&[
            &format!("--ice-urls=turn:127.0.0.1:{}?transport=udp", coturn.port()),
            &format!("--turn-secret-file={}", secret_file.display()),
        ])
        .unwrap();
        let base = dev.http_url();
        let pages = [
            page(&base, "alice", "&relay=1"),
            page(&base, "bob", "&relay=1"),
        ];
        ((redis, coturn, dir, dev), pages)
    });
    assert_connected(&report);
    assert_eq!(
        report["candidateTypes"],
        json!([["relay"], ["relay"]]),
        "both ends must use the TURN relay: {report:#}"
    );
}

/// Proves a signaling socket dropped in the middle of a call resumes: same participant id,
/// the peer connection stays up and carries another round trip, and the other page never
/// sees a leave.
#[test]
fn a_dropped_socket_resumes_and_the_call_stays_up() {
    switchboard_tests::require!(Chromium, NetworkNamespace);
    let report = call_in_namespace(json!({"drop": true}), || {
        let dev = SignalingProcess::start_dev(&[]).unwrap();
        let base = dev.http_url();
        let pages = [page(&base, "alice", ""), page(&base, "bob", "")];
        (dev, pages)
    });
    assert_connected(&report);
    let after = &report["afterDrop"];
    assert!(after["resumes"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(after["participantIdA"], report["participantIdBefore"]);
    assert!(after["roundTripsA"].as_u64().unwrap() >= 2, "{report:#}");
    for states in after["states"].as_array().unwrap() {
        let values: Vec<&Value> = states.as_object().unwrap().values().collect();
        assert_eq!(values, [&json!("connected")], "{report:#}");
    }
    assert_eq!(
        after["leftSeenByB"],
        json!([]),
        "nobody may see a resumed client leave"
    );
}

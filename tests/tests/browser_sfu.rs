//! The JavaScript client's SFU mode against real Janus, in headless Chromium: each page gets
//! the `joined` (and later `sfuReassigned`) messages signaling would send, with a Janus token
//! minted for it, and the client does the rest by itself (Janus session over WebSocket,
//! publish, subscribe). Everything runs in a test network namespace with the SFU veth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_tests::browser::{Browser, NetworkNamespace, run_sfu};
use switchboard_tests::janus::VIDEOROOM;
use switchboard_tests::{Janus, JanusOptions};

const ROOM: &str = "default.sfu-test.1a2b3c4d";
const PARTICIPANTS: [&str; 2] = ["p-alice", "p-bob"];

/// A Janus token valid for ten minutes, minted as signaling mints them.
fn mint_token(secret: &str) -> String {
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    switchboard_sfu::janus::mint_token(secret.as_bytes(), expires, &[VIDEOROOM])
}

/// The `sfu` object signaling hands out for a room on `janus` (docs/protocol.md).
fn sfu_object(janus: &Janus, pin: &str, generation: u64) -> Value {
    json!({
        "node": janus.name(),
        "url": janus.ws_url(),
        "kind": "JanusVideoRoom",
        "generation": generation,
        "room": ROOM,
        "pin": pin,
        "token": mint_token(&janus.options().token_secret),
    })
}

/// Checks that both pages decoded each other's video through `janus` (see `support`).
fn assert_media_through(report: &Value, key: &str, janus: &Janus) {
    let ids: Vec<String> = PARTICIPANTS.iter().map(|p| (*p).to_owned()).collect();
    support::assert_media_through(&report[key], &ids, janus, report);
}

/// Proves the client's SFU mode carries a call through real Janus: both pages publish a fake
/// camera once and subscribe to each other; each page's `framesDecoded` rises and the
/// selected candidate pair's SFU port is in A's RTP range. Then A is SIGKILLed: a stale
/// `sfuReassigned` (lower generation) is ignored, the real one moves both pages to B, where
/// media flows again under the same participant ids (each page publishes under its
/// Switchboard id), through B's range.
#[test]
fn the_client_carries_media_through_janus_and_moves_to_the_new_sfu() {
    switchboard_tests::require!(Janus, Chromium, NetworkNamespace);
    let browser = Browser::prepare().unwrap();
    let namespace = NetworkNamespace::create().unwrap();
    let ip = namespace.add_sfu_address().unwrap();
    let (report, a_rooms) = namespace
        .run(move || {
            let a = Janus::start(JanusOptions::new("sfu-a", ip, 20000..=20099)).unwrap();
            let b = Janus::start(JanusOptions::new("sfu-b", ip, 20100..=20199)).unwrap();
            let (pin_a, pin_b) = ("pin-on-a-0123", "pin-on-b-4567");
            a.create_room(ROOM, pin_a, 6).unwrap();
            let a_rooms = a.list_rooms().unwrap();
            // B gets the room as the operator provisions it after a failover.
            b.create_room(ROOM, pin_b, 6).unwrap();
            let mut stale = sfu_object(&a, pin_a, 1);
            stale["node"] = json!("sfu-stale");
            let config = json!({
                "participants": PARTICIPANTS,
                "sfu": sfu_object(&a, pin_a, 2),
                "failover": {
                    "killPid": a.pid(),
                    "stale": stale,
                    "sfu": sfu_object(&b, pin_b, 3),
                },
            });
            let report = run_sfu(&browser, &config).unwrap();
            assert_eq!(
                report["ok"],
                true,
                "browser scenario failed: {report:#}\nA: {}\nB: {}",
                a.log_tail(20),
                b.log_tail(20)
            );
            assert_media_through(&report, "throughA", &a);
            assert_media_through(&report, "throughB", &b);
            (report, a_rooms)
        })
        .unwrap();
    assert_eq!(a_rooms, [ROOM], "A's admin API lists the room");
    assert_eq!(report["modes"], json!(["sfu", "sfu"]), "{report:#}");
    assert_eq!(
        report["afterStale"],
        json!([{"node": "sfu-a", "reassigned": 0}, {"node": "sfu-a", "reassigned": 0}]),
        "a lower generation must be ignored: {report:#}"
    );
    assert_eq!(report["reassigned"], json!([1, 1]), "{report:#}");
    assert_eq!(
        report["errorsBeforeKill"],
        json!([[], []]),
        "no SFU error while A was up: {report:#}"
    );
    let rejoin = report["killToFirstFrameMs"].as_u64().unwrap();
    eprintln!("SIGKILL of A to frames from everyone through B: {rejoin} ms (no detection step)");
}

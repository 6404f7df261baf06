//! Webhooks with real processes: two `switchboard-signaling` pods on one real Redis post to a
//! real HTTP receiver (a Python standard-library server, `tests/fixtures/webhooks/receiver.py`,
//! the verification recipe of `docs/api.md`) that checks every signature on its own. Over
//! joins, leaves, a pod killed with -9, an ended room and a receiver down for 10 s, every
//! event arrives exactly once and verified; a receiver that is never there costs events
//! (counted), never a hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use switchboard_signaling::admin_client::AdminClient;
use switchboard_signaling::auth::{AdminMintClaims, DEFAULT_ADMIN_AUDIENCE, Hs256Signer};
use switchboard_tests::http::get;
use switchboard_tests::signaling::{Client, SignalingProcess, TEST_KID, TEST_SECRET, token};
use switchboard_tests::webhook_receiver::{WEBHOOK_SECRET, WebhookReceiver, received};
use switchboard_tests::{RedisServer, free_port};

const HOUR: Duration = Duration::from_secs(3600);

fn receiver(port: u16, out: &Path, dir: &Path) -> WebhookReceiver {
    WebhookReceiver::start(port, out, dir).unwrap()
}

/// A pod posting webhooks to `url`, with a short TTL so a dead pod's participants go fast.
fn pod(redis: &RedisServer, name: &str, url: &str, extra: &[&str]) -> (SignalingProcess, String) {
    let admin_port = free_port().unwrap();
    let mut args = vec![
        format!("--redis-url={}", redis.url()),
        format!("--pod-name={name}"),
        format!("--admin-addr=127.0.0.1:{admin_port}"),
        format!("--webhook-url={url}"),
        format!("--webhook-key=wh={WEBHOOK_SECRET}"),
        "--participant-ttl=3s".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = SignalingProcess::start(&args).unwrap();
    (process, format!("http://127.0.0.1:{admin_port}"))
}

/// An event as `room event user reason`, for comparing what arrived with what should.
fn describe(event: &Value) -> String {
    format!(
        "{} {} {} {}",
        event["room"].as_str().unwrap_or("?"),
        event["event"].as_str().unwrap_or("?"),
        event["participant"]["user"].as_str().unwrap_or("-"),
        event["reason"].as_str().unwrap_or("-"),
    )
    .trim_end_matches(" -")
    .trim_end_matches(" -")
    .to_owned()
}

/// Waits until every expected event of `rooms` arrived (or `timeout`); returns the events
/// received for those rooms.
async fn wait_for_events(out: &Path, rooms: &[&str], want: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let events: Vec<Value> = received(out)
            .into_iter()
            .filter(|r| rooms.contains(&r["event"]["room"].as_str().unwrap_or("")))
            .collect();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

/// Proves every event of a run of joins, leaves, a pod kill, an ended room and a receiver
/// down for 10 s arrives exactly once, signed so that the receiver verifies it, with the
/// participant and reason it is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_and_verified() {
    switchboard_tests::require!(Redis);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/switchboard");
    let first_receiver = receiver(port, &out, dir.path());
    let redis = RedisServer::start().unwrap();
    let (a, api_a) = pod(&redis, "pod-a", &url, &[]);
    let (b, _) = pod(&redis, "pod-b", &url, &[]);

    // Joins on both pods, a leave, then pod B dies with two participants.
    let (mut alice, _) = Client::join(&a.ws_url(), &token("alice", "w1", HOUR))
        .await
        .unwrap();
    let (_bob, _) = Client::join(&b.ws_url(), &token("bob", "w1", HOUR))
        .await
        .unwrap();
    let (_carol, _) = Client::join(&b.ws_url(), &token("carol", "w1", HOUR))
        .await
        .unwrap();
    alice.send_json(&json!({"type": "leave"})).await.unwrap();
    alice.until_closed().await;
    b.signal("KILL").unwrap();
    let w1 = wait_for_events(&out, &["w1"], 8, Duration::from_secs(20)).await;

    // A room ended through the server API.
    let (_dave, _) = Client::join(&a.ws_url(), &token("dave", "w2", HOUR))
        .await
        .unwrap();
    let (_erin, _) = Client::join(&a.ws_url(), &token("erin", "w2", HOUR))
        .await
        .unwrap();
    let admin_token = Hs256Signer::new(Some(TEST_KID), TEST_SECRET.as_bytes())
        .unwrap()
        .mint_admin(&AdminMintClaims::new(
            "backend",
            DEFAULT_ADMIN_AUDIENCE,
            SystemTime::now(),
            HOUR,
        ))
        .unwrap();
    AdminClient::new(&api_a, &admin_token)
        .unwrap()
        .end("w2")
        .await
        .unwrap();
    let w2 = wait_for_events(&out, &["w2"], 6, Duration::from_secs(10)).await;

    // The receiver is down for 10 s while a call starts and ends.
    drop(first_receiver);
    let (mut frank, _) = Client::join(&a.ws_url(), &token("frank", "w3", HOUR))
        .await
        .unwrap();
    frank.send_json(&json!({"type": "leave"})).await.unwrap();
    frank.until_closed().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        wait_for_events(&out, &["w3"], 1, Duration::ZERO)
            .await
            .is_empty(),
        "nothing can arrive while the receiver is down"
    );
    let back = Instant::now();
    let _receiver_back = receiver(port, &out, dir.path());
    let w3 = wait_for_events(&out, &["w3"], 4, Duration::from_secs(15)).await;
    let catch_up = back.elapsed();
    // Settle: nothing more may come (no duplicates from retries).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let all = received(&out);
    let unverified: Vec<&Value> = all.iter().filter(|r| r["verified"] != true).collect();
    assert!(
        unverified.is_empty(),
        "signatures that did not verify: {unverified:?}"
    );
    let mut ids: HashMap<String, usize> = HashMap::new();
    for record in &all {
        *ids.entry(record["event"]["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "events delivered more than once: {repeated:?}"
    );

    let got = |events: &[Value]| sorted(events.iter().map(|r| describe(&r["event"])).collect());
    let want = |list: &[&str]| sorted(list.iter().map(|s| (*s).to_owned()).collect());
    assert_eq!(
        got(&w1),
        want(&[
            "w1 room_started",
            "w1 participant_joined alice",
            "w1 participant_joined bob",
            "w1 participant_joined carol",
            "w1 participant_left alice left",
            "w1 participant_connection_lost bob",
            "w1 participant_connection_lost carol",
            "w1 room_finished",
        ])
    );
    assert_eq!(
        got(&w2),
        want(&[
            "w2 room_started",
            "w2 participant_joined dave",
            "w2 participant_joined erin",
            "w2 participant_left dave room_deleted",
            "w2 participant_left erin room_deleted",
            "w2 room_finished",
        ])
    );
    assert_eq!(
        got(&w3),
        want(&[
            "w3 room_started",
            "w3 participant_joined frank",
            "w3 participant_left frank left",
            "w3 room_finished",
        ])
    );
    // The backoff is capped at 5 s, so the queue drains within one cap of the comeback.
    assert!(
        catch_up < Duration::from_secs(7),
        "caught up after {catch_up:?}"
    );
    for record in &all {
        let event = &record["event"];
        assert!(event["id"].as_str().unwrap().starts_with("ev-"), "{event}");
        assert!(
            event["createdAt"].as_u64().unwrap() > 1_700_000_000_000,
            "{event}"
        );
        if event["participant"].is_object() {
            assert!(
                event["participant"]["pod"]
                    .as_str()
                    .unwrap()
                    .starts_with("pod-")
            );
            assert!(event["participant"].get("resume").is_none(), "{event}");
        }
    }
    let (_, metrics) = get(a.port(), "/metrics").unwrap();
    assert!(
        !metrics.contains("webhook_events_dropped_total{"),
        "nothing was dropped: {metrics}"
    );
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_signaling_webhook_failed_attempts_total "))
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(failed > 0, "the downtime caused retries");
}

/// The metric value of `name` with `labels`, or 0.
fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
        .map_or(0, |v| v.parse().unwrap())
}

/// Proves a receiver that is never there neither blocks nor slows joins: with a one-event
/// queue, the events that do not fit are dropped and counted (`queue_full`), and the one
/// queued is given up after the retry bound (`retries_exhausted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_costs_events_not_joins() {
    switchboard_tests::require!(Redis);
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}/", free_port().unwrap());
    let redis = RedisServer::start().unwrap();
    let (a, _) = pod(
        &redis,
        "pod-a",
        &dead,
        &["--webhook-queue=1", "--webhook-retry-for=2s"],
    );
    let started = Instant::now();
    for i in 0..10 {
        let (mut client, _) = Client::join(&a.ws_url(), &token(&format!("u{i}"), "dead-end", HOUR))
            .await
            .unwrap();
        client.send_json(&json!({"type": "leave"})).await.unwrap();
        client.until_closed().await;
    }
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_secs(5),
        "10 joins and leaves took {spent:?}"
    );
    let (_, text) = get(a.port(), "/metrics").unwrap();
    let full = metric(
        &text,
        "switchboard_signaling_webhook_events_dropped_total{reason=\"queue_full\"}",
    );
    assert!(
        full >= 20,
        "40 events into a queue of 1 with a dead receiver: {full} dropped\n{text}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, text) = get(a.port(), "/metrics").unwrap();
    let exhausted = metric(
        &text,
        "switchboard_signaling_webhook_events_dropped_total{reason=\"retries_exhausted\"}",
    );
    assert!(exhausted >= 1, "the queued event is given up: {text}");
}

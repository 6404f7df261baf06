//! The signaling server as a real process with real WebSocket clients: tokens are checked
//! before the upgrade, offers/answers/candidates reach only participants of the same room with
//! a server-stamped sender, duplicate identities replace older sessions, and bad or greedy
//! clients get their documented answers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::signaling::{Client, Ended, SignalingProcess, TEST_KID, token};

const HOUR: Duration = Duration::from_secs(3600);

fn base64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Status and body of a refused upgrade.
async fn refused(url: &str) -> (u16, serde_json::Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("upgrade accepted for {url}"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(json!(null)),
            )
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Proves bad tokens get 401 with a JSON error before any WebSocket exists, and a good one
/// is upgraded.
#[tokio::test]
async fn join_tokens_are_checked_before_the_upgrade() {
    let server = SignalingProcess::start(&[]).unwrap();
    let url = server.ws_url();
    let good = token("alice", "standup", HOUR);
    assert!(Client::join(&url, &good).await.is_ok());

    let expired = {
        use switchboard_signaling::auth::{Hs256Signer, MintClaims};
        use switchboard_signaling::ids::{RoomId, UserId};
        let signer = Hs256Signer::new(
            Some(TEST_KID),
            switchboard_tests::signaling::TEST_SECRET.as_bytes(),
        )
        .unwrap();
        let past = std::time::SystemTime::now() - 2 * HOUR;
        signer
            .mint(&MintClaims::new(
                UserId::parse("alice").unwrap(),
                RoomId::parse("standup").unwrap(),
                past,
                HOUR,
            ))
            .unwrap()
    };
    let wrong_key = {
        use switchboard_signaling::auth::{Hs256Signer, MintClaims};
        use switchboard_signaling::ids::{RoomId, UserId};
        let signer =
            Hs256Signer::new(Some(TEST_KID), b"another-secret-that-is-long-enough-000").unwrap();
        signer
            .mint(&MintClaims::new(
                UserId::parse("alice").unwrap(),
                RoomId::parse("standup").unwrap(),
                std::time::SystemTime::now(),
                HOUR,
            ))
            .unwrap()
    };
    let alg_none = {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        format!(
            "{}.{}.",
            base64url(
                json!({"alg": "none", "typ": "JWT", "kid": TEST_KID})
                    .to_string()
                    .as_bytes()
            ),
            base64url(
                json!({"sub": "mallory", "room": "standup", "exp": exp})
                    .to_string()
                    .as_bytes()
            )
        )
    };
    let cases = [
        (url.to_string(), "no token"),
        (format!("{url}?access_token={expired}"), "expired"),
        (format!("{url}?access_token={wrong_key}"), "wrong key"),
        (format!("{url}?access_token={alg_none}"), "alg none"),
        (
            format!("{url}?access_token={good}&room=other-room"),
            "token for another room",
        ),
        (format!("{url}?access_token=not.a.jwt"), "garbage"),
    ];
    for (case_url, what) in cases {
        let (status, body) = refused(&case_url).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no error code in {body}"
        );
        assert!(body["message"].is_string(), "{what}: {body}");
    }
}

/// Proves three clients in a room complete offer/answer/candidate exchanges, each message
/// stamped with its real sender and a per-recipient sequence.
#[tokio::test]
async fn three_clients_exchange_offers_answers_and_candidates() {
    let server = SignalingProcess::start(&[]).unwrap();
    let url = server.ws_url();
    let (mut a, ja) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (mut b, jb) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    let (c, jc) = Client::join(&url, &token("carol", "standup", HOUR))
        .await
        .unwrap();
    assert_eq!(jc["participants"].as_array().unwrap().len(), 3, "{jc}");
    let ids = [
        ja["participantId"].clone(),
        jb["participantId"].clone(),
        jc["participantId"].clone(),
    ];
    assert_eq!(
        a.recv_type("participantJoined").await.unwrap()["participant"]["id"],
        ids[1]
    );
    assert_eq!(
        a.recv_type("participantJoined").await.unwrap()["participant"]["id"],
        ids[2]
    );
    assert_eq!(
        b.recv_type("participantJoined").await.unwrap()["participant"]["user"],
        "carol"
    );

    let mut clients = [a, b, c];
    for from in 0..3 {
        for to in 0..3 {
            if from == to {
                continue;
            }
            let sdp = format!("v=0 offer {from}->{to}");
            clients[from]
                .send_json(&json!({"type": "offer", "to": ids[to], "sdp": sdp}))
                .await
                .unwrap();
            let offer = clients[to].recv_type("offer").await.unwrap();
            assert_eq!(
                (offer["from"].clone(), offer["sdp"].as_str().unwrap()),
                (ids[from].clone(), sdp.as_str())
            );
            let answer_sdp = format!("v=0 answer {to}->{from}");
            clients[to]
                .send_json(&json!({"type": "answer", "to": ids[from], "sdp": answer_sdp}))
                .await
                .unwrap();
            let answer = clients[from].recv_type("answer").await.unwrap();
            assert_eq!(answer["from"], ids[to]);
            assert_eq!(answer["sdp"], answer_sdp);
            clients[from]
                .send_json(&json!({"type": "candidate", "to": ids[to], "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}))
                .await
                .unwrap();
            let candidate = clients[to].recv_type("candidate").await.unwrap();
            assert_eq!(candidate["from"], ids[from]);
            assert_eq!(candidate["sdpMid"], "0");
            assert!(
                candidate["seq"].as_u64().unwrap() > offer["seq"].as_u64().unwrap(),
                "seq grows per recipient"
            );
        }
    }
    // Leaving is announced with its reason.
    let [mut a, mut b, mut c] = clients;
    c.send_json(&json!({"type": "leave"})).await.unwrap();
    assert_eq!(c.until_closed().await, Ended::Closed(Some(1000)));
    let left = a.recv_type("participantLeft").await.unwrap();
    assert_eq!(
        (left["id"].clone(), left["reason"].clone()),
        (ids[2].clone(), json!("left"))
    );
    drop(b.recv_type("participantLeft").await.unwrap());
}

/// Proves a participant of another room is as unknown as a made-up id, and nothing reaches it.
#[tokio::test]
async fn messages_never_cross_rooms() {
    let server = SignalingProcess::start(&[]).unwrap();
    let url = server.ws_url();
    let (mut victim, jv) = Client::join(&url, &token("victim", "private", HOUR))
        .await
        .unwrap();
    let (mut intruder, _) = Client::join(&url, &token("intruder", "lobby", HOUR))
        .await
        .unwrap();
    intruder
        .send_json(&json!({"type": "offer", "to": jv["participantId"], "sdp": "v=0", "ref": "r1"}))
        .await
        .unwrap();
    let error = intruder.recv_type("error").await.unwrap();
    assert_eq!(
        (error["code"].clone(), error["ref"].clone()),
        (json!("unknown_participant"), json!("r1"))
    );
    intruder
        .send_json(&json!({"type": "offer", "to": "p-doesnotexist", "sdp": "v=0", "ref": "r2"}))
        .await
        .unwrap();
    let made_up = intruder.recv_type("error").await.unwrap();
    assert_eq!(
        made_up["code"], error["code"],
        "same answer for another room's id and a made-up one"
    );
    assert!(
        victim.quiet_for(Duration::from_millis(500)).await,
        "the victim received something"
    );
}

/// Proves the same user joining twice replaces the older session (close 4001) and the room
/// sees `participantLeft` with reason `duplicate_identity`.
#[tokio::test]
async fn duplicate_identity_replaces_the_older_session() {
    let server = SignalingProcess::start(&[]).unwrap();
    let url = server.ws_url();
    let (mut first, j1) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (mut bob, _) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    let (_second, j2) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    assert_ne!(j1["participantId"], j2["participantId"]);
    assert_eq!(j2["participants"].as_array().unwrap().len(), 2, "{j2}");
    assert_eq!(first.until_closed().await, Ended::Closed(Some(4001)));
    let left = bob.recv_type("participantLeft").await.unwrap();
    assert_eq!(
        (left["id"].clone(), left["reason"].clone()),
        (j1["participantId"].clone(), json!("duplicate_identity"))
    );
}

/// Proves malformed and unknown messages get an error and the connection stays; an oversized
/// frame closes with 1009; a binary frame with 1003.
#[tokio::test]
async fn bad_frames_get_their_documented_answers() {
    let server = SignalingProcess::start(&["--max-message-bytes=4096"]).unwrap();
    let url = server.ws_url();
    let (mut client, _) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    client.send_text("{not json".into()).await.unwrap();
    assert_eq!(
        client.recv_type("error").await.unwrap()["code"],
        "malformed_json"
    );
    client
        .send_json(&json!({"type": "teleport", "ref": "x"}))
        .await
        .unwrap();
    let unknown = client.recv_type("error").await.unwrap();
    assert_eq!(unknown["code"], "unknown_type");
    client
        .send_json(&json!({"type": "offer", "sdp": "v=0"}))
        .await
        .unwrap();
    assert_eq!(
        client.recv_type("error").await.unwrap()["code"],
        "bad_request"
    );
    client
        .send_json(&json!({"type": "ping", "ref": "still-here"}))
        .await
        .unwrap();
    assert_eq!(client.recv_type("pong").await.unwrap()["ref"], "still-here");

    client.send_text("x".repeat(10_000)).await.unwrap();
    assert_eq!(client.until_closed().await, Ended::Closed(Some(1009)));

    let (mut binary, _) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    binary.send_binary(vec![1, 2, 3]).await.unwrap();
    assert_eq!(binary.until_closed().await, Ended::Closed(Some(1003)));
}

/// Proves a burst gets `rate_limited` errors and a sustained flood is closed with 1008.
#[tokio::test]
async fn floods_are_limited_then_closed() {
    let server = SignalingProcess::start(&[
        "--rate-per-second=20",
        "--rate-burst=10",
        "--flood-strikes=30",
    ])
    .unwrap();
    let url = server.ws_url();
    let (mut client, _) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    for i in 0..15 {
        client
            .send_json(&json!({"type": "ping", "ref": format!("b{i}")}))
            .await
            .unwrap();
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..15 {
        match client.recv().await.unwrap()["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The burst of 10 covers the join and 9 pings; the rest of the 15 are refused.
    assert!(
        pongs >= 9 && limited >= 1,
        "{pongs} pongs, {limited} refusals"
    );
    for i in 0..200 {
        if client
            .send_json(&json!({"type": "ping", "ref": format!("f{i}")}))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(client.until_closed().await, Ended::Closed(Some(1008)));
}

/// Proves a client that stops reading is cut off without delaying delivery to others. The
/// cut connection may still resume, so the others see it leave (`connection_lost`) only when
/// its resume window (the participant TTL, 2 s here) has passed.
#[tokio::test]
async fn slow_consumers_do_not_delay_others() {
    let server = SignalingProcess::start(&[
        "--rate-per-second=100000",
        "--rate-burst=100000",
        "--send-queue=8",
        "--participant-ttl=2s",
    ])
    .unwrap();
    let url = server.ws_url();
    let (mut sender, _) = Client::join(&url, &token("sender", "standup", HOUR))
        .await
        .unwrap();
    let (_sleeper, js) = Client::join(&url, &token("sleeper", "standup", HOUR))
        .await
        .unwrap();
    let (mut reader, jr) = Client::join(&url, &token("reader", "standup", HOUR))
        .await
        .unwrap();
    let big = "a".repeat(30_000);
    let started = Instant::now();
    let mut received = 0;
    for i in 0..200 {
        sender
            .send_json(&json!({"type": "offer", "to": js["participantId"], "sdp": big}))
            .await
            .unwrap();
        sender
            .send_json(
                &json!({"type": "offer", "to": jr["participantId"], "sdp": format!("v=0 {i}")}),
            )
            .await
            .unwrap();
        if i % 20 == 19 {
            while received <= i {
                let offer = reader.recv_type("offer").await.unwrap();
                assert_eq!(offer["sdp"], format!("v=0 {received}"));
                received += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "delivery to the reader took {elapsed:?}"
    );
    let left = sender.recv_type("participantLeft").await.unwrap();
    assert_eq!(left["id"], js["participantId"], "the sleeper was dropped");
    assert_eq!(left["reason"], "connection_lost");
}

/// Proves two signaling processes on one Redis share room state: both list every
/// participant, the room limit holds across them, and `/readyz` (not `/healthz`) follows Redis.
#[tokio::test]
async fn pods_share_room_state_through_redis() {
    switchboard_tests::require!(Redis);
    let redis = switchboard_tests::RedisServer::start().unwrap();
    let redis_url = format!("--redis-url={}", redis.url());
    let one =
        SignalingProcess::start(&[&redis_url, "--default-max-participants=2", "--pod-name=one"])
            .unwrap();
    let two =
        SignalingProcess::start(&[&redis_url, "--default-max-participants=2", "--pod-name=two"])
            .unwrap();
    let (_alice, _) = Client::join(&one.ws_url(), &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (_bob, joined) = Client::join(&two.ws_url(), &token("bob", "standup", HOUR))
        .await
        .unwrap();
    let users: Vec<&str> = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"alice") && users.contains(&"bob"),
        "{joined}"
    );

    let mut carol = Client::connect(&one.ws_url(), &token("carol", "standup", HOUR))
        .await
        .unwrap();
    carol
        .send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    assert_eq!(
        carol.recv_type("error").await.unwrap()["code"],
        "room_full",
        "the limit counts both pods"
    );

    let get = |port| switchboard_tests::http::get(port, "/readyz").unwrap().0;
    assert_eq!(get(one.port()), 200);
    drop(redis);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(one.port()) == 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready without Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        switchboard_tests::http::get(one.port(), "/healthz")
            .unwrap()
            .0,
        200,
        "liveness must not depend on Redis"
    );
}

/// Proves SIGTERM tells every client to reconnect with its resume token, closes with 1001 and
/// exits within the grace period.
#[tokio::test]
async fn sigterm_hands_clients_their_resume_token_and_exits() {
    let mut server = SignalingProcess::start(&["--shutdown-grace=4s"]).unwrap();
    let url = server.ws_url();
    let (mut alice, joined_a) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (mut bob, joined_b) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for (client, joined) in [(&mut alice, &joined_a), (&mut bob, &joined_b)] {
        let reconnect = client.recv_type("reconnect").await.unwrap();
        assert_eq!(reconnect["resumeToken"], joined["resumeToken"]);
        assert!(reconnect["retryAfterMs"].as_u64().unwrap() <= 2000);
        assert_eq!(client.until_closed().await, Ended::Closed(Some(1001)));
    }
    assert!(
        server.exited_within(Duration::from_secs(6)),
        "the server did not exit within its grace period"
    );
}

/// Proves a client that never finishes its request headers (slowloris) is cut off.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = SignalingProcess::start(&["--header-read-timeout=1s"]).unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    stream
        .write_all(b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "the connection was still open after 5 s of unfinished headers"
    );
    assert!(
        elapsed >= Duration::from_millis(800),
        "cut off before the timeout: {elapsed:?}"
    );
}

/// Proves fresh TURN credentials arrive as `iceServersRefresh` before the old ones expire.
#[tokio::test]
async fn ice_servers_are_refreshed_before_credentials_expire() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret_arg = format!("--turn-secret-file={}", secret.display());
    let server = SignalingProcess::start(&[
        "--ice-urls=turn:127.0.0.1:3478",
        &secret_arg,
        "--turn-credential-ttl=3s",
    ])
    .unwrap();
    let (mut client, joined) = Client::join(&server.ws_url(), &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let first = joined["iceServers"][0]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let expiry: u64 = first.split(':').next().unwrap().parse().unwrap();
    let refresh = client.recv_type("iceServersRefresh").await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now <= expiry,
        "refreshed only after the old credential expired"
    );
    let next = refresh["iceServers"][0]["username"].as_str().unwrap();
    let next_expiry: u64 = next.split(':').next().unwrap().parse().unwrap();
    assert!(
        next_expiry > expiry || next != first,
        "the refresh carries a new credential: {next} vs {first}"
    );
    assert!(refresh["iceServers"][0]["credential"].is_string());
}

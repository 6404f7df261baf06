//! Signaling scale-out with real processes: several `switchboard-signaling` pods on one real
//! Redis, clients spread over them. Relays cross pods exactly once and in order, a pod killed
//! with -9 is a non-event for clients that resume, a Redis restart is survived without
//! restarting pods, and a SIGTERM drain moves every client without losing a message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::http::get;
use switchboard_tests::signaling::{Client, Ended, SignalingProcess, token};
use switchboard_tests::{RedisCluster, RedisServer};

const HOUR: Duration = Duration::from_secs(3600);

fn pod(redis: &RedisServer, name: &str, extra: &[&str]) -> SignalingProcess {
    pod_on(&[format!("--redis-url={}", redis.url())], name, extra)
}

fn pod_on(redis_args: &[String], name: &str, extra: &[&str]) -> SignalingProcess {
    let mut args = redis_args.to_vec();
    args.extend([
        format!("--pod-name={name}"),
        "--rate-per-second=10000".to_owned(),
        "--rate-burst=10000".to_owned(),
    ]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    SignalingProcess::start(&args).unwrap()
}

/// A relayed message from `from` with per-pair number `n`, in the message's own text so the
/// receiver can check order.
fn relayed(kind: &str, to: &Value, from: &str, n: u32) -> Value {
    match kind {
        "candidate" => json!({
            "type": "candidate", "to": to,
            "candidate": format!("candidate:{n} 1 udp 2122260223 127.0.0.1 5{n:04} typ host"),
            "sdpMid": from,
        }),
        _ => json!({"type": kind, "to": to, "sdp": format!("v=0 from={from} n={n}")}),
    }
}

/// The per-pair number a relayed message carries (see [`relayed`]).
fn number(message: &Value) -> u32 {
    if message["type"] == "candidate" {
        let text = message["candidate"].as_str().unwrap();
        text["candidate:".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    } else {
        let sdp = message["sdp"].as_str().unwrap();
        sdp.rsplit("n=").next().unwrap().parse().unwrap()
    }
}

/// Reads until `count` relayed messages (offer, answer, candidate) arrived; returns them, and
/// fails on any gap in `seq`. Presence and other messages are skipped.
async fn relayed_messages(client: &mut Client, count: usize, after_seq: u64) -> Vec<Value> {
    let mut got = Vec::new();
    let mut seq = after_seq;
    while got.len() < count {
        let message = client
            .recv()
            .await
            .unwrap_or_else(|e| panic!("after {} of {count} relayed messages: {e}", got.len()));
        if !matches!(
            message["type"].as_str(),
            Some("offer" | "answer" | "candidate")
        ) {
            continue;
        }
        let this = message["seq"].as_u64().unwrap();
        assert_eq!(this, seq + 1, "seq must have no gaps or repeats: {message}");
        seq = this;
        got.push(message);
    }
    got
}

/// Proves 30 clients on 3 pods in 5 rooms, each sending an offer, an answer and two
/// candidates to every other participant of its room, receive every message exactly once,
/// in order per sender, with consecutive `seq`s.
#[tokio::test]
async fn full_mesh_across_three_pods_is_exactly_once_and_in_order() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let args = [format!("--redis-url={}", redis.url())];
    full_mesh(&args).await;
}

/// The same full mesh on a real 3-master Redis Cluster, with sharded pub/sub.
#[tokio::test]
async fn full_mesh_on_a_redis_cluster() {
    switchboard_tests::require!(Redis);
    let cluster = RedisCluster::start().unwrap();
    let args = [
        format!("--redis-url={}", cluster.urls()),
        "--redis-cluster".to_owned(),
    ];
    full_mesh(&args).await;
}

async fn full_mesh(redis_args: &[String]) {
    let pods: Vec<SignalingProcess> = ["one", "two", "three"]
        .iter()
        .map(|name| pod_on(redis_args, name, &[]))
        .collect();
    const ROOMS: usize = 5;
    const PER_ROOM: usize = 6;
    let mut clients = Vec::new();
    for r in 0..ROOMS {
        for i in 0..PER_ROOM {
            let user = format!("u{r}-{i}");
            let room = format!("mesh-{r}");
            let url = pods[(r * PER_ROOM + i) % pods.len()].ws_url();
            let (client, joined) = Client::join(&url, &token(&user, &room, HOUR))
                .await
                .unwrap();
            clients.push((r, joined["participantId"].clone(), client));
        }
    }
    let ids: Vec<(usize, Value)> = clients.iter().map(|(r, id, _)| (*r, id.clone())).collect();
    let kinds = ["offer", "answer", "candidate", "candidate"];
    let mut tasks = Vec::new();
    for (room, me, mut client) in clients {
        let peers: Vec<Value> = ids
            .iter()
            .filter(|(r, id)| *r == room && *id != me)
            .map(|(_, id)| id.clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let me_str = me.as_str().unwrap().to_owned();
            for (n, kind) in kinds.iter().enumerate() {
                for peer in &peers {
                    client
                        .send_json(&relayed(kind, peer, &me_str, n as u32))
                        .await
                        .unwrap();
                }
            }
            let got = relayed_messages(&mut client, peers.len() * kinds.len(), 0).await;
            assert!(
                client.quiet_for(Duration::from_millis(300)).await,
                "{me_str} got more than {} messages",
                got.len()
            );
            (me_str, got)
        }));
    }
    let mut total = 0;
    for task in tasks {
        let (me, got) = task.await.unwrap();
        let mut by_sender: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for message in &got {
            let kind = message["type"].as_str().unwrap().to_owned();
            by_sender
                .entry(message["from"].as_str().unwrap().to_owned())
                .or_default()
                .push((kind, number(message)));
        }
        assert_eq!(by_sender.len(), PER_ROOM - 1, "{me} heard from every peer");
        for (sender, messages) in by_sender {
            let want: Vec<(String, u32)> = kinds
                .iter()
                .enumerate()
                .map(|(n, k)| ((*k).to_owned(), n as u32))
                .collect();
            assert_eq!(messages, want, "{sender} -> {me}: exactly once, in order");
        }
        total += got.len();
    }
    assert_eq!(total, ROOMS * PER_ROOM * (PER_ROOM - 1) * kinds.len());
}

/// Proves a pod killed with -9 in the middle of an exchange is a non-event: its client
/// resumes on another pod with the same participant id and gets, in order, the messages sent
/// to it during the gap; nobody sees it leave; and a client of the dead pod that never comes
/// back is reported `connection_lost` to the others within the 15 s bound.
#[tokio::test]
async fn a_killed_pod_is_a_non_event_for_clients_that_resume() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let dead = pod(&redis, "dead", &[]);
    let two = pod(&redis, "two", &[]);
    let three = pod(&redis, "three", &[]);
    let room = "killed";
    let (mut alice, ja) = Client::join(&dead.ws_url(), &token("alice", room, HOUR))
        .await
        .unwrap();
    let (_carol, jc) = Client::join(&dead.ws_url(), &token("carol", room, HOUR))
        .await
        .unwrap();
    let (mut bob, _) = Client::join(&two.ws_url(), &token("bob", room, HOUR))
        .await
        .unwrap();
    let (mut dave, _) = Client::join(&three.ws_url(), &token("dave", room, HOUR))
        .await
        .unwrap();
    let alice_id = ja["participantId"].clone();

    // Before the kill: one offer reaches alice, who processes it (lastSeq 1).
    bob.send_json(&relayed("offer", &alice_id, "bob", 0))
        .await
        .unwrap();
    let first = relayed_messages(&mut alice, 1, 0).await;
    assert_eq!(number(&first[0]), 0);

    dead.signal("KILL").unwrap();
    let killed_at = Instant::now();
    // During the gap: more for alice, from two pods.
    for n in 1..=3 {
        bob.send_json(&relayed("candidate", &alice_id, "bob", n))
            .await
            .unwrap();
    }
    dave.send_json(&relayed("offer", &alice_id, "dave", 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut alice, resumed) = Client::resume(
        &three.ws_url(),
        &token("alice", room, HOUR),
        ja["resumeToken"].as_str().unwrap(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(resumed["type"], "joined", "{resumed}");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["participantId"], alice_id, "same participant id");
    assert_eq!(resumed["seq"], 5);
    let missed = relayed_messages(&mut alice, 4, 1).await;
    let bob_pid = participant_id(&resumed, "bob");
    let from_bob: Vec<u32> = missed
        .iter()
        .filter(|m| m["from"] == bob_pid)
        .map(number)
        .collect();
    assert_eq!(
        from_bob,
        [1, 2, 3],
        "bob's messages after lastSeq, in order"
    );
    assert_eq!(missed.iter().filter(|m| m["type"] == "offer").count(), 1);

    // Alice talks again, across pods.
    alice
        .send_json(&relayed("answer", &bob_pid, "alice", 0))
        .await
        .unwrap();

    // Bob sees alice's answer, never a leave for alice, and carol's leave within the bound.
    let mut carol_left = None;
    let mut answered = false;
    while carol_left.is_none() || !answered {
        assert!(
            killed_at.elapsed() < Duration::from_secs(16),
            "carol's leave or alice's answer missing after {:?}",
            killed_at.elapsed()
        );
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(1), bob.recv()).await else {
            continue;
        };
        match message["type"].as_str() {
            Some("participantLeft") => {
                assert_ne!(
                    message["id"], alice_id,
                    "alice resumed; nobody may see her leave"
                );
                assert_eq!(message["id"], jc["participantId"]);
                assert_eq!(message["reason"], "connection_lost");
                carol_left = Some(killed_at.elapsed());
            }
            Some("participantJoined") => {
                assert_ne!(
                    message["participant"]["id"], alice_id,
                    "a resume is not a join"
                );
            }
            Some("answer") => answered = true,
            _ => {}
        }
    }
    let carol_left = carol_left.unwrap();
    assert!(
        carol_left <= Duration::from_secs(15),
        "connection_lost after {carol_left:?}"
    );
    // Dave saw the same: carol left, alice never did.
    let left = dave.recv_type("participantLeft").await.unwrap();
    assert_eq!(left["id"], jc["participantId"]);

    // Nothing of the dead pod is left in Redis: its liveness key and carol's entry and
    // mailbox are gone; the live pods' keys are there.
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let carol = jc["participantId"].as_str().unwrap();
    assert!(
        !keys.contains(&"sb:pod:{dead}:alive".to_owned()),
        "{keys:?}"
    );
    assert!(keys.contains(&"sb:pod:{two}:alive".to_owned()), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with(carol)), "{keys:?}");
    let entries: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("sb:room:{{{room}}}:participants"))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(!entries.contains_key(carol), "{entries:?}");
    assert!(
        entries.values().all(|e| !e.contains(r#""pod":"dead""#)),
        "{entries:?}"
    );
    eprintln!("carol reported left {carol_left:?} after the kill");
}

/// The participant id of `user` in a `joined` message.
fn participant_id(joined: &Value, user: &str) -> Value {
    joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"] == user)
        .map(|p| p["id"].clone())
        .unwrap_or(Value::Null)
}

fn status(port: u16, path: &str) -> u16 {
    get(port, path).map(|(code, _)| code).unwrap_or(0)
}

/// Waits up to `within` for `check`.
async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proves a Redis restart (empty) is survived without restarting pods: readiness drops and
/// comes back while liveness stays, clients get `resync`, the room state is rebuilt from the
/// connected clients, relays work again across pods, and new joins work.
#[tokio::test]
async fn pods_survive_a_redis_restart() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let mut one = pod(&redis, "one", &[]);
    let mut two = pod(&redis, "two", &[]);
    let room = "restart";
    let (mut alice, ja) = Client::join(&one.ws_url(), &token("alice", room, HOUR))
        .await
        .unwrap();
    let (mut bob, jb) = Client::join(&two.ws_url(), &token("bob", room, HOUR))
        .await
        .unwrap();
    bob.send_json(&relayed("offer", &ja["participantId"], "bob", 0))
        .await
        .unwrap();
    relayed_messages(&mut alice, 1, 0).await;
    assert_eq!(status(one.port(), "/readyz"), 200);

    drop(redis);
    for server in [&one, &two] {
        let port = server.port();
        eventually(Duration::from_secs(5), "/readyz 503", || {
            status(port, "/readyz") == 503
        })
        .await;
        assert_eq!(
            status(port, "/healthz"),
            200,
            "liveness must not follow Redis"
        );
    }

    let _redis = RedisServer::start_on(port).unwrap();
    for server in [&one, &two] {
        let port = server.port();
        eventually(Duration::from_secs(10), "/readyz 200 again", || {
            status(port, "/readyz") == 200
        })
        .await;
    }
    let resync = alice.recv_type("resync").await.unwrap();
    assert_eq!(resync["seq"], 1, "alice's numbering continues: {resync}");
    bob.recv_type("resync").await.unwrap();

    // The rebuilt state relays across pods again, numbering continuing for alice.
    bob.send_json(&relayed("offer", &ja["participantId"], "bob", 1))
        .await
        .unwrap();
    let after = relayed_messages(&mut alice, 1, 1).await;
    assert_eq!(number(&after[0]), 1);
    alice
        .send_json(&relayed("answer", &jb["participantId"], "alice", 0))
        .await
        .unwrap();
    relayed_messages(&mut bob, 1, 0).await;
    let (_carol, jc) = Client::join(&two.ws_url(), &token("carol", room, HOUR))
        .await
        .unwrap();
    let users: Vec<&str> = jc["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 3, "the state holds everyone again: {users:?}");
    one.check_running().unwrap();
    two.check_running().unwrap();
}

/// Proves a SIGTERM drain moves every client of the pod to another pod through resume while
/// messages keep flowing to them, with zero lost or repeated.
#[tokio::test]
async fn sigterm_drain_moves_every_client_without_loss() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let mut draining = pod(&redis, "draining", &["--shutdown-grace=4s"]);
    let staying = pod(&redis, "staying", &[]);
    let room = "drain";
    let mut moving = Vec::new();
    for user in ["alice", "bob", "erin"] {
        let (client, joined) = Client::join(&draining.ws_url(), &token(user, room, HOUR))
            .await
            .unwrap();
        moving.push((user, client, joined));
    }
    let (mut carol, _) = Client::join(&staying.ws_url(), &token("carol", room, HOUR))
        .await
        .unwrap();
    const BEFORE: u32 = 5;
    const DURING: u32 = 5;
    for n in 0..BEFORE {
        for (_, _, joined) in &moving {
            carol
                .send_json(&relayed("candidate", &joined["participantId"], "carol", n))
                .await
                .unwrap();
        }
    }
    // Each moving client reads what came before, then is told to move.
    let mut reconnects = Vec::new();
    for (user, client, _) in &mut moving {
        let got = relayed_messages(client, BEFORE as usize, 0).await;
        assert_eq!(got.len(), BEFORE as usize, "{user}");
    }
    draining.signal("TERM").unwrap();
    for (user, client, _) in &mut moving {
        let reconnect = client.recv_type("reconnect").await.unwrap();
        assert_eq!(
            client.until_closed().await,
            Ended::Closed(Some(1001)),
            "{user}"
        );
        reconnects.push(reconnect["resumeToken"].as_str().unwrap().to_owned());
    }
    // While they move, carol keeps sending.
    for n in BEFORE..BEFORE + DURING {
        for (_, _, joined) in &moving {
            carol
                .send_json(&relayed("candidate", &joined["participantId"], "carol", n))
                .await
                .unwrap();
        }
    }
    for ((user, _, joined), resume_token) in moving.iter().zip(&reconnects) {
        let (mut client, resumed) = Client::resume(
            &staying.ws_url(),
            &token(user, room, HOUR),
            resume_token,
            u64::from(BEFORE),
        )
        .await
        .unwrap();
        assert_eq!(resumed["resumed"], true, "{user}: {resumed}");
        assert_eq!(resumed["participantId"], joined["participantId"]);
        let rest = relayed_messages(&mut client, DURING as usize, u64::from(BEFORE)).await;
        let numbers: Vec<u32> = rest.iter().map(number).collect();
        assert_eq!(
            numbers,
            (BEFORE..BEFORE + DURING).collect::<Vec<_>>(),
            "{user}: nothing lost, nothing repeated"
        );
        assert!(client.quiet_for(Duration::from_millis(200)).await);
    }
    assert!(
        carol.quiet_for(Duration::from_millis(500)).await
            || carol
                .recv()
                .await
                .map(|m| m["type"] != "participantLeft")
                .unwrap_or(true),
        "nobody left"
    );
    assert!(draining.exited_within(Duration::from_secs(6)));
}

//! The Redis room store against a real `redis-server`: the shared behaviour suite, the
//! every-key-has-a-TTL rule, and what happens when Redis goes away and comes back.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use switchboard_signaling::ids::{ParticipantId, RoomId};
use switchboard_signaling::store::{RedisStore, RoomStore, StoreError, behaviour};
use switchboard_tests::RedisServer;
use switchboard_tests::process::ChildProcess;

async fn store(redis: &RedisServer, ttl: Duration) -> RedisStore {
    RedisStore::connect(&redis.url(), ttl).await.unwrap()
}

/// Proves the Redis store passes the same behaviour suite as the memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behaviour_suite_passes_against_redis() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    behaviour::run_all(|ttl| {
        let url = url.clone();
        async move { RedisStore::connect(&url, ttl).await.unwrap() }
    })
    .await;
}

/// The shared behaviour suite passes against a real 3-master Redis Cluster, with sharded
/// pub/sub: every script touches one room's slot only.
#[tokio::test]
async fn behaviour_suite_passes_against_a_redis_cluster() {
    switchboard_tests::require!(Redis);
    let cluster = switchboard_tests::RedisCluster::start().unwrap();
    let nodes: Vec<String> = cluster.urls().split(',').map(str::to_owned).collect();
    behaviour::run_all(|ttl| {
        let nodes = nodes.clone();
        async move {
            RedisStore::connect_cluster(&nodes, ttl, switchboard_signaling::store::DEFAULT_TIMEOUT)
                .await
                .unwrap()
        }
    })
    .await;
}

/// Proves every key the store writes has a TTL no longer than the participant TTL, follows
/// the documented hash-tagged layout, and that an abandoned room leaves no key behind.
#[tokio::test]
async fn every_key_has_a_ttl_and_abandoned_rooms_vanish() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let store = store(&redis, behaviour::SHORT_TTL).await;
    let (one, two) = (behaviour::room("ttl-one"), behaviour::room("ttl-two"));
    // p3 replaces p1 (same user u1), then leaves: room one ends with p2 only.
    for (room, id, user) in [(&one, "p1", "u1"), (&one, "p2", "u2"), (&one, "p3", "u1")] {
        let entry = behaviour::entry(id, user);
        store.join(room, entry, 10).await.unwrap();
    }
    store
        .join(&two, behaviour::entry("p1", "u1"), 10)
        .await
        .unwrap();
    store
        .refresh(&one, &ParticipantId::parse("p2").unwrap())
        .await
        .unwrap();
    store
        .leave(&one, &ParticipantId::parse("p3").unwrap())
        .await
        .unwrap();
    store.participants(&two).await.unwrap();
    store.count(&two).await.unwrap();
    // A relayed message creates the target's mailbox and the room's seq counters.
    let offer = r#"{"type":"offer","from":"p2","sdp":"v=0","seq":0}"#;
    let p1 = ParticipantId::parse("p1").unwrap();
    assert_eq!(store.relay(&two, &p1, offer).await.unwrap(), Some(1));

    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = redis_conn.keys("*").await.unwrap();
    keys.sort();
    let expected = |room: &str, kinds: &[&str]| -> Vec<String> {
        kinds
            .iter()
            .map(|k| format!("sb:room:{{{room}}}:{k}"))
            .collect()
    };
    let mut want = expected(one.as_str(), &["expiry", "participants", "users"]);
    want.extend(expected(
        two.as_str(),
        &["expiry", "mailbox:p1", "participants", "seq", "users"],
    ));
    // The room index the server API lists rooms from.
    want.push("sb:rooms".to_owned());
    want.sort();
    assert_eq!(keys, want, "the keys must follow the documented layout");
    let ttl_ms = i64::try_from(behaviour::SHORT_TTL.as_millis()).unwrap();
    for key in &keys {
        let pttl: i64 = redis_conn.pttl(key).await.unwrap();
        // The room index outlives its rooms' deadlines by one TTL, for the sweep.
        let max = if key == "sb:rooms" {
            2 * ttl_ms
        } else {
            ttl_ms
        };
        assert!(
            pttl > 0 && pttl <= max,
            "{key} has PTTL {pttl}, want 1..={max}"
        );
    }

    let users: std::collections::HashMap<String, String> = redis_conn
        .hgetall(format!("sb:room:{{{one}}}:users"))
        .await
        .unwrap();
    let want_users = [("u2".to_owned(), "p2".to_owned())].into();
    assert_eq!(
        users, want_users,
        "replaced and departed sessions leave no user pointer"
    );

    tokio::time::sleep(behaviour::SHORT_TTL + Duration::from_millis(200)).await;
    let left: Vec<String> = redis_conn.keys("*").await.unwrap();
    assert_eq!(
        left,
        ["sb:rooms"],
        "room keys outlived every participant (only the index may stay, for the sweep)"
    );
    tokio::time::sleep(behaviour::SHORT_TTL).await;
    let left: Vec<String> = redis_conn.keys("*").await.unwrap();
    assert!(left.is_empty(), "keys outlived every participant: {left:?}");
}

/// Awaits `call`, which must fail as unavailable within 3 s.
async fn unavailable_within_3s(name: &str, call: impl Future<Output = Result<(), StoreError>>) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap_or_else(|_| panic!("{name} hung with Redis down"));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{name} took {elapsed:?}");
    match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{name} with Redis down must be Unavailable, got {other:?}"),
    }
}

/// Proves that with Redis gone every operation fails as unavailable within 3 s (the default
/// timeout is 2 s) instead of hanging.
#[tokio::test]
async fn redis_outage_is_unavailable_not_a_hang() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let store = store(&redis, behaviour::LONG_TTL).await;
    let room = behaviour::room("outage");
    store
        .join(&room, behaviour::entry("p1", "u1"), 10)
        .await
        .unwrap();
    drop(redis);

    let id = ParticipantId::parse("p1").unwrap();
    // Concurrently, so the test takes one timeout rather than five.
    futures::join!(
        unavailable_within_3s("join", async {
            store
                .join(&room, behaviour::entry("p2", "u2"), 10)
                .await
                .map(drop)
        }),
        unavailable_within_3s("leave", async { store.leave(&room, &id).await.map(drop) }),
        unavailable_within_3s("participants", async {
            store.participants(&room).await.map(drop)
        }),
        unavailable_within_3s("refresh", async {
            store.refresh(&room, &id).await.map(drop)
        }),
        unavailable_within_3s("count", async { store.count(&room).await.map(drop) }),
    );
}

/// Proves the store reconnects by itself when Redis comes back (empty, as after a restart),
/// reloading its scripts, without being rebuilt.
#[tokio::test]
async fn store_recovers_when_redis_comes_back() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let store = store(&redis, behaviour::LONG_TTL).await;
    let room = behaviour::room("recover");
    store
        .join(&room, behaviour::entry("p1", "u1"), 10)
        .await
        .unwrap();
    drop(redis);
    assert!(matches!(
        store.count(&room).await,
        Err(StoreError::Unavailable(_))
    ));

    // A new, empty Redis on the same port, as a restarted server would be.
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _restarted = ChildProcess::spawn(
        "redis-server",
        Path::new("redis-server"),
        &args,
        &[],
        &dir.path().join("redis.log"),
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match store.join(&room, behaviour::entry("p2", "u2"), 10).await {
            Ok(outcome) => break outcome,
            Err(StoreError::Unavailable(error)) => {
                assert!(
                    Instant::now() < deadline,
                    "still unavailable after 10 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("unexpected error while Redis restarts: {other}"),
        }
    };
    let ids: Vec<&str> = outcome.participants.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["p2"],
        "the restarted Redis is empty, so only the new join is there"
    );
}

/// Calls of `script` (`EVALSHA`/`EVAL`) Redis has run so far, from `INFO commandstats`.
async fn script_calls(connection: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .map(|line| {
            let calls = line
                .split("calls=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            calls.parse::<u64>().unwrap()
        })
        .sum()
}

/// `count` new rooms, each with sender `p-a` and target `p-t`.
async fn rooms_of_two(store: &RedisStore, case: &str, count: usize) -> Vec<RoomId> {
    let mut rooms = Vec::new();
    for _ in 0..count {
        let room = behaviour::room(case);
        for (id, user) in [("p-a", "alice"), ("p-t", "bob")] {
            store
                .join(&room, behaviour::entry(id, user), 10)
                .await
                .unwrap();
        }
        rooms.push(room);
    }
    rooms
}

/// Relays asked for while a relay call is out share the next call (docs/architecture.md, "A
/// join, from the socket to the reply", step 3): 400 relays in flight together, in 40 rooms,
/// reach Redis in far fewer calls, and each still gets its own seq, with its mailbox and seq
/// keys expiring. A target that is in one room only gets its message there and `None` in every
/// other room of the same calls.
#[tokio::test(flavor = "current_thread")]
async fn relays_in_flight_together_share_script_calls() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let store = store(&redis, behaviour::LONG_TTL).await;
    const ROOMS: usize = 40;
    const EACH: u64 = 10;
    let rooms = rooms_of_two(&store, "shared-calls", ROOMS).await;
    let target = ParticipantId::parse("p-t").unwrap();
    // In the first room only.
    let only_first = ParticipantId::parse("p-first").unwrap();
    store
        .join(&rooms[0], behaviour::entry("p-first", "carol"), 10)
        .await
        .unwrap();
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before = script_calls(&mut redis_conn).await;
    let offer = r#"{"type":"offer","from":"p-a","sdp":"v=0","seq":0}"#;
    // All at once, as many connections of one busy pod relay: every future is polled before
    // any answer comes back.
    let relays = rooms
        .iter()
        .flat_map(|room| (0..EACH).map(move |_| room))
        .map(|room| store.relay(room, &target, offer));
    // And one to p-first in every room, in the same calls.
    let to_first = rooms
        .iter()
        .map(|room| store.relay(room, &only_first, offer));
    let (seqs, to_first) = futures::future::join(
        futures::future::join_all(relays),
        futures::future::join_all(to_first),
    )
    .await;
    let calls = script_calls(&mut redis_conn).await - before;
    for (i, seq) in to_first.iter().enumerate() {
        let want = (i == 0).then_some(1);
        assert_eq!(
            *seq.as_ref().unwrap(),
            want,
            "room {i}: p-first is in the first room only"
        );
    }
    for (i, room_seqs) in seqs.chunks(EACH as usize).enumerate() {
        let got: Vec<u64> = room_seqs
            .iter()
            .map(|s| s.as_ref().unwrap().unwrap())
            .collect();
        assert_eq!(
            got,
            (1..=EACH).collect::<Vec<_>>(),
            "room {i}: seqs in the order asked"
        );
    }
    let relayed = ROOMS as u64 * (EACH + 1);
    assert!(
        calls * 10 <= relayed,
        "{relayed} relays took {calls} script calls; relays in flight together must share calls"
    );
    for room in &rooms {
        for kind in ["seq", "mailbox:p-t"] {
            let key = format!("sb:room:{{{room}}}:{kind}");
            let pttl: i64 = redis_conn.pttl(&key).await.unwrap();
            assert!(pttl > 0, "{key} has PTTL {pttl}: every key expires");
        }
    }
}

/// A room whose seq key is broken (written as a string by something else) fails its own relays
/// with Redis's error, while the relays of other rooms in the same calls go through.
#[tokio::test(flavor = "current_thread")]
async fn a_broken_room_fails_only_its_own_relays_in_a_shared_call() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let store = store(&redis, behaviour::LONG_TTL).await;
    let rooms = rooms_of_two(&store, "broken", 6).await;
    let target = ParticipantId::parse("p-t").unwrap();
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let broken = 3;
    let _: () = redis_conn
        .set(format!("sb:room:{{{}}}:seq", rooms[broken]), "not a hash")
        .await
        .unwrap();
    let offer = r#"{"type":"offer","from":"p-a","sdp":"v=0","seq":0}"#;
    let outcomes = futures::future::join_all(
        rooms
            .iter()
            .flat_map(|room| [room, room])
            .map(|room| store.relay(room, &target, offer)),
    )
    .await;
    for (n, outcome) in outcomes.iter().enumerate() {
        let (i, nth) = (n / 2, n % 2);
        if i == broken {
            let error = outcome.as_ref().unwrap_err();
            assert!(matches!(error, StoreError::Backend(_)), "room {i}: {error}");
            assert!(error.to_string().contains("WRONGTYPE"), "room {i}: {error}");
        } else {
            let want = Some(nth as u64 + 1);
            assert_eq!(*outcome.as_ref().unwrap(), want, "room {i}, message {nth}");
        }
    }
}

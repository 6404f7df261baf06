//! The behaviour every [`RoomStore`] must show, as one suite that runs against each backend
//! (in-memory in this crate's unit tests, Redis in `tests/tests/room_store.rs`).
//!
//! This is test support, compiled into the library only so the integration-test crate can
//! reach it; nothing in the server calls it. Each case panics with a message naming what went
//! wrong, which is how a test fails, hence the allowance below.
//!
//! Cases use rooms with random suffixes, so they can share one backend and run concurrently.
//! The expiry cases sleep on tokio's clock for about 1.5 short TTLs: real time against Redis,
//! no time at all against the memory store under a paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::{
    DEFAULT_MAILBOX_LEN, FactSink, ParticipantEntry, ResumeRefusal, ResumeRequest, RoomFact,
    RoomStore, StoreError, StoreEvent,
};
use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};
use crate::protocol::{LeaveReason, ResumeToken, Sdp, ServerMessage};

/// The TTL for cases that must not see anything expire.
pub const LONG_TTL: Duration = Duration::from_secs(30);
/// The TTL for the expiry cases: short enough to keep the suite fast (about 2 s against
/// Redis), long enough that a loaded machine still hits the timing windows.
pub const SHORT_TTL: Duration = Duration::from_millis(1500);

/// Runs every case concurrently, each on a fresh store from `make(ttl)`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: RoomStore + 'static,
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = S>,
{
    futures::join!(
        join_list_leave(make(LONG_TTL).await),
        capacity(make(LONG_TTL).await),
        duplicate_user_replaced(make(LONG_TTL).await),
        rooms_are_isolated(make(LONG_TTL).await),
        concurrent_joins(make(LONG_TTL).await),
        expiry(make(SHORT_TTL).await),
        refresh_keeps_alive(make(SHORT_TTL).await),
        relay_reaches_the_target_in_order(make(LONG_TTL).await),
        concurrent_relays_across_rooms(make(LONG_TTL).await),
        concurrent_listens_all_hear(make(LONG_TTL).await),
        presence_is_announced(make(LONG_TTL).await),
        expiry_is_announced(make(SHORT_TTL).await),
        resume_replays_what_was_missed(make(LONG_TTL).await),
        restore_puts_a_lost_participant_back(make(LONG_TTL).await),
        missed_reads_the_mailbox_after_a_seq(make(LONG_TTL).await),
        rebuilding_follows_restores(make(LONG_TTL).await),
        kick_removes_for_good(make(LONG_TTL).await),
        end_room_removes_everything(make(LONG_TTL).await),
        rooms_are_listed_with_counts(make(LONG_TTL).await),
        facts_are_reported_once(make(LONG_TTL).await),
        expiry_is_reported_by_a_sweep(make(SHORT_TTL).await),
    );
}

/// A room id unique to this run, so cases never see each other's state.
pub fn room(case: &str) -> RoomId {
    let nonce = getrandom::u64().expect("random room suffix");
    RoomId::parse(&format!("{case}-{nonce:016x}")).expect("valid room id")
}

/// An entry for participant `id` of user `user`, on a test pod.
pub fn entry(id: &str, user: &str) -> ParticipantEntry {
    ParticipantEntry {
        id: pid(id),
        user: UserId::parse(user).expect("valid user id"),
        name: None,
        pod: "pod-test".to_owned(),
        resume: None,
        joined_at: None,
    }
}

fn pid(id: &str) -> ParticipantId {
    ParticipantId::parse(id).expect("valid participant id")
}

fn ids(entries: &[ParticipantEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

async fn listed(store: &impl RoomStore, room: &RoomId) -> Vec<String> {
    let entries = store.participants(room).await.expect("participants");
    ids(&entries).into_iter().map(str::to_owned).collect()
}

/// Joins are listed (ordered by id, fields intact), counted and left; leaving twice is false.
pub async fn join_list_leave(store: impl RoomStore) {
    let room = room("join-list-leave");
    let mut b = entry("p-b", "bob");
    b.name = Some(DisplayName::parse("Bøb 🚀 O'Brien").unwrap());
    b.pod = "signaling-7f9c".to_owned();

    let first = store.join(&room, b.clone(), 10).await.expect("join b");
    assert_eq!(ids(&first.participants), ["p-b"], "join returns the joiner");
    assert_eq!(first.replaced, None, "a first join replaces nothing");
    let second = store
        .join(&room, entry("p-a", "alice"), 10)
        .await
        .expect("join a");
    assert_eq!(
        ids(&second.participants),
        ["p-a", "p-b"],
        "join returns everyone, by id"
    );

    let all = store.participants(&room).await.unwrap();
    assert_eq!(all[1], b, "an entry must come back exactly as stored");
    assert_eq!(store.count(&room).await.unwrap(), 2);

    assert!(
        store.leave(&room, &pid("p-a")).await.unwrap(),
        "leave of a member is true"
    );
    assert!(
        !store.leave(&room, &pid("p-a")).await.unwrap(),
        "second leave must be false"
    );
    assert!(
        !store.leave(&room, &pid("nobody")).await.unwrap(),
        "unknown id must be false"
    );
    assert_eq!(listed(&store, &room).await, ["p-b"]);
    assert!(store.leave(&room, &pid("p-b")).await.unwrap());
    assert_eq!(store.count(&room).await.unwrap(), 0, "empty room counts 0");
    assert!(listed(&store, &room).await.is_empty());
}

/// A room at its maximum refuses with `RoomFull { max }`, changes nothing, and admits again
/// once a seat is free; a user already inside may rejoin a full room.
pub async fn capacity(store: impl RoomStore) {
    let room = room("capacity");
    store.join(&room, entry("p1", "u1"), 2).await.unwrap();
    store.join(&room, entry("p2", "u2"), 2).await.unwrap();
    match store.join(&room, entry("p3", "u3"), 2).await {
        Err(StoreError::RoomFull { max: 2 }) => {}
        other => panic!("third join into a room of 2 must be RoomFull {{ max: 2 }}, got {other:?}"),
    }
    assert_eq!(
        listed(&store, &room).await,
        ["p1", "p2"],
        "a refused join changes nothing"
    );

    let rejoin = store.join(&room, entry("p1b", "u1"), 2).await;
    let rejoin = rejoin.expect("the same user replacing its session needs no extra seat");
    assert_eq!(
        rejoin.replaced.map(|e| e.id),
        Some(pid("p1")),
        "the rejoin reports the session it replaced"
    );
    assert!(
        store.join(&room, entry("p2", "u2"), 2).await.is_ok(),
        "rejoining with an id already present needs no extra seat"
    );

    store.leave(&room, &pid("p2")).await.unwrap();
    store
        .join(&room, entry("p3", "u3"), 2)
        .await
        .expect("a freed seat must be usable");
    assert_eq!(listed(&store, &room).await, ["p1b", "p3"]);

    let empty = self::room("capacity-zero");
    assert!(
        matches!(
            store.join(&empty, entry("p1", "u1"), 0).await,
            Err(StoreError::RoomFull { max: 0 })
        ),
        "max 0 admits nobody"
    );
    assert_eq!(store.count(&empty).await.unwrap(), 0);
}

/// The same user joining again replaces the older session (reported as `replaced`, with its
/// pod), and the old id is gone for every operation.
pub async fn duplicate_user_replaced(store: impl RoomStore) {
    let room = room("duplicate");
    let mut old = entry("p-old", "alice");
    old.pod = "pod-a".to_owned();
    store.join(&room, old.clone(), 10).await.unwrap();
    store.join(&room, entry("p-bob", "bob"), 10).await.unwrap();

    let mut new = entry("p-new", "alice");
    new.pod = "pod-b".to_owned();
    let outcome = store.join(&room, new, 10).await.unwrap();
    assert_eq!(
        outcome.replaced,
        Some(old),
        "the replaced entry, pod included"
    );
    assert_eq!(ids(&outcome.participants), ["p-bob", "p-new"]);
    assert_eq!(store.count(&room).await.unwrap(), 2);
    assert!(
        !store.refresh(&room, &pid("p-old")).await.unwrap(),
        "replaced id can't refresh"
    );
    assert!(
        !store.leave(&room, &pid("p-old")).await.unwrap(),
        "replaced id can't leave"
    );

    let again = store
        .join(&room, entry("p-new", "alice"), 10)
        .await
        .unwrap();
    assert_eq!(
        again.replaced, None,
        "rejoining with the same id replaces nobody"
    );
    assert_eq!(ids(&again.participants), ["p-bob", "p-new"]);

    // Leaving the new session must not leave a stale pointer that makes a later join of the
    // same user "replace" something.
    assert!(store.leave(&room, &pid("p-new")).await.unwrap());
    let later = store
        .join(&room, entry("p-later", "alice"), 10)
        .await
        .unwrap();
    assert_eq!(
        later.replaced, None,
        "nothing to replace after the user left"
    );
}

/// Two rooms share nothing: ids, users, capacity and leaves are per room.
pub async fn rooms_are_isolated(store: impl RoomStore) {
    let (one, two) = (room("isolated-one"), room("isolated-two"));
    store.join(&one, entry("p1", "alice"), 1).await.unwrap();
    let other = store
        .join(&two, entry("p1", "alice"), 1)
        .await
        .expect("a full room must not block another room");
    assert_eq!(
        other.replaced, None,
        "the same user in another room is not a duplicate"
    );
    assert_eq!(ids(&other.participants), ["p1"]);
    assert!(store.leave(&one, &pid("p1")).await.unwrap());
    assert_eq!(
        listed(&store, &two).await,
        ["p1"],
        "a leave in one room leaves the other alone"
    );
    assert!(listed(&store, &one).await.is_empty());
}

/// 50 simultaneous joins into a room of 10 admit exactly 10, and 20 simultaneous joins of one
/// user leave exactly one session.
pub async fn concurrent_joins(store: impl RoomStore + 'static) {
    let store = Arc::new(store);
    let room = room("concurrent");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move {
                store
                    .join(&room, entry(&format!("p{i}"), &format!("u{i}")), 10)
                    .await
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("join task") {
            Ok(outcome) => {
                admitted += 1;
                assert!(
                    outcome.participants.len() <= 10,
                    "a join saw an overfull room"
                );
            }
            Err(StoreError::RoomFull { max: 10 }) => {}
            Err(other) => panic!("concurrent join failed: {other}"),
        }
    }
    assert_eq!(admitted, 10, "exactly max joins must be admitted");
    assert_eq!(store.count(&room).await.unwrap(), 10);
    assert_eq!(store.participants(&room).await.unwrap().len(), 10);

    let solo = self::room("concurrent-user");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, room) = (store.clone(), solo.clone());
            tokio::spawn(async move { store.join(&room, entry(&format!("s{i}"), "same"), 5).await })
        })
        .collect();
    for task in tasks {
        task.await
            .expect("join task")
            .expect("a user can always replace itself");
    }
    assert_eq!(
        store.count(&solo).await.unwrap(),
        1,
        "concurrent joins of one user must leave one session"
    );
}

/// Entries not refreshed for longer than the TTL vanish: not counted toward max, not listed,
/// not refreshable or leavable, and not reported as replaced. Needs a store with
/// [`SHORT_TTL`].
///
/// Each room keeps a fresh entry next to the stale one, so its keys stay alive (Redis would
/// otherwise expire the whole room and hide a missing prune), and each operation gets a room
/// of its own, so none relies on another having pruned first.
pub async fn expiry(store: impl RoomStore) {
    assert_eq!(
        store.participant_ttl(),
        SHORT_TTL,
        "expiry needs a SHORT_TTL store"
    );
    let rooms = ["full", "count", "list", "refresh", "leave", "replace"]
        .map(|op| room(&format!("expiry-{op}")));
    let [full, counted, listed_room, refreshed, left, replaced] = &rooms;
    let start = Instant::now();
    for room in &rooms {
        store.join(room, entry("stale", "u1"), 2).await.unwrap();
    }
    // Stale expires at 1.0 TTL, fresh at 1.7 TTL; checking at 1.3 TTL leaves 0.3 TTL of slack
    // on either side.
    sleep_until(start + SHORT_TTL * 7 / 10).await;
    for room in &rooms {
        store.join(room, entry("fresh", "u2"), 2).await.unwrap();
    }
    assert!(
        store.join(full, entry("new", "u3"), 2).await.is_err(),
        "full before expiry"
    );
    sleep_until(start + SHORT_TTL * 13 / 10).await;

    let outcome = store
        .join(full, entry("new", "u3"), 2)
        .await
        .expect("an expired entry must not hold a seat");
    assert_eq!(
        ids(&outcome.participants),
        ["fresh", "new"],
        "join lists only live entries"
    );
    assert_eq!(
        store.count(counted).await.unwrap(),
        1,
        "an expired entry must not count"
    );
    assert_eq!(
        listed(&store, listed_room).await,
        ["fresh"],
        "expired must not be listed"
    );
    assert!(
        !store.refresh(refreshed, &pid("stale")).await.unwrap(),
        "expired can't refresh"
    );
    assert!(
        !store.leave(left, &pid("stale")).await.unwrap(),
        "expired can't leave"
    );
    let back = store
        .join(replaced, entry("stale-b", "u1"), 2)
        .await
        .unwrap();
    assert_eq!(
        back.replaced, None,
        "an expired session is not replaced, it is gone"
    );
    assert_eq!(ids(&back.participants), ["fresh", "stale-b"]);
    for room in [refreshed, left] {
        assert_eq!(
            listed(&store, room).await,
            ["fresh"],
            "failed calls revive nothing"
        );
    }
}

/// Refreshing more often than the TTL keeps an entry alive well past its first TTL, while an
/// entry of the same room that is not refreshed expires. Needs a store with [`SHORT_TTL`].
pub async fn refresh_keeps_alive(store: impl RoomStore) {
    assert_eq!(
        store.participant_ttl(),
        SHORT_TTL,
        "refresh needs a SHORT_TTL store"
    );
    let room = room("refresh");
    store.join(&room, entry("kept", "u1"), 10).await.unwrap();
    store.join(&room, entry("dropped", "u2"), 10).await.unwrap();
    let step = SHORT_TTL / 4;
    for round in 0..6 {
        sleep(step).await;
        assert!(
            store.refresh(&room, &pid("kept")).await.unwrap(),
            "refresh {round} found the entry gone"
        );
    }
    assert_eq!(
        listed(&store, &room).await,
        ["kept"],
        "after 1.5 TTL only the refreshed entry remains"
    );
}

/// An offer from `from` as the server relays it, with the `seq` placeholder.
fn offer(from: &str, sdp: &str) -> String {
    ServerMessage::Offer {
        from: pid(from),
        sdp: Sdp::parse(sdp).unwrap(),
        seq: 0,
    }
    .to_json()
}

fn token(s: &str) -> ResumeToken {
    ResumeToken::parse(s).unwrap()
}

/// The next event, waiting at most 2 s.
async fn next_event(events: &mut tokio::sync::mpsc::UnboundedReceiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("an event within 2 s")
        .expect("the event stream is open")
}

/// The next event must be a message to `to` with `seq`; returns it parsed.
async fn expect_message(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<StoreEvent>,
    to: &str,
    seq: u64,
) -> ServerMessage {
    match next_event(events).await {
        StoreEvent::Message {
            to: target,
            seq: got,
            text,
            ..
        } => {
            assert_eq!((target.as_str(), got), (to, seq), "message {text}");
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{text} is not a server message: {e}"))
        }
        other => panic!("expected a message to {to}, got {other:?}"),
    }
}

/// Nothing more arrives (within a short wait).
async fn expect_quiet(events: &mut tokio::sync::mpsc::UnboundedReceiver<StoreEvent>) {
    sleep(Duration::from_millis(150)).await;
    if let Ok(event) = events.try_recv() {
        panic!("unexpected event {event:?}");
    }
}

/// Relayed messages get consecutive `seq`s, reach the pod listening to the target in order,
/// carry the real `seq` in their JSON, and never reach another room.
pub async fn relay_reaches_the_target_in_order(store: impl RoomStore) {
    let mut events = store.events().expect("first events() call");
    assert!(store.events().is_none(), "events() hands out one stream");
    let room = room("relay");
    let other = self::room("relay-other");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    store.join(&other, entry("p-x", "xena"), 10).await.unwrap();
    store.listen(&room, &pid("p-b")).await.unwrap();
    store.listen(&other, &pid("p-x")).await.unwrap();
    for n in 1..=3u64 {
        let seq = store
            .relay(&room, &pid("p-b"), &offer("p-a", &format!("v=0 {n}")))
            .await
            .unwrap();
        assert_eq!(seq, Some(n));
    }
    for n in 1..=3u64 {
        match expect_message(&mut events, "p-b", n).await {
            ServerMessage::Offer { from, sdp, seq } => {
                assert_eq!((from.as_str(), seq), ("p-a", n));
                assert_eq!(sdp.as_str(), format!("v=0 {n}"));
            }
            other => panic!("expected an offer, got {other:?}"),
        }
    }
    assert_eq!(
        store
            .relay(&room, &pid("p-x"), &offer("p-a", "v=0"))
            .await
            .unwrap(),
        None,
        "a participant of another room is unknown"
    );
    assert_eq!(
        store
            .relay(&room, &pid("nobody"), &offer("p-a", "v=0"))
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.relay(&room, &pid("p-b"), r#"{"type":"offer"}"#).await,
        Err(StoreError::NotRelayable)
    ));
    expect_quiet(&mut events).await;
    store.unlisten(&room, &pid("p-b")).await;
    store
        .relay(&room, &pid("p-b"), &offer("p-a", "v=0"))
        .await
        .unwrap();
    expect_quiet(&mut events).await;
}

/// Many rooms relaying at once (as a busy pod does, which the Redis store sends in batches):
/// each target gets its own messages once, numbered from 1 without gaps and in its sender's
/// order, in the mailbox too, while relays to participants who are not in the room get `None`
/// in between.
pub async fn concurrent_relays_across_rooms(store: impl RoomStore) {
    const ROOMS: usize = 8;
    const MESSAGES: u64 = 20;
    let mut events = store.events().expect("first events() call");
    let rooms: Vec<RoomId> = (0..ROOMS).map(|_| room("batch")).collect();
    for (i, room) in rooms.iter().enumerate() {
        store.join(room, entry("p-a", "alice"), 10).await.unwrap();
        let target = format!("p-t{i}");
        store.join(room, entry(&target, "bob"), 10).await.unwrap();
        store.listen(room, &pid(&target)).await.unwrap();
    }
    // Each room's sender relays one message at a time, as a connection does; the rooms run
    // concurrently, so their relays are in flight together.
    let senders = rooms.iter().enumerate().map(|(i, room)| {
        let store = &store;
        async move {
            let target = pid(&format!("p-t{i}"));
            // A target of the next room: a participant id, but not of this room.
            let stranger = pid(&format!("p-t{}", (i + 1) % ROOMS));
            for n in 1..=MESSAGES {
                let sdp = format!("v=0 r{i} n={n}");
                let seq = store
                    .relay(room, &target, &offer("p-a", &sdp))
                    .await
                    .unwrap();
                assert_eq!(seq, Some(n), "room {i}, message {n}");
                if n % 5 == 0 {
                    let refused = store.relay(room, &stranger, &offer("p-a", "v=0")).await;
                    assert_eq!(
                        refused.unwrap(),
                        None,
                        "room {i}: another room's participant"
                    );
                }
            }
        }
    });
    futures::future::join_all(senders).await;
    let mut next = [1u64; ROOMS];
    for _ in 0..ROOMS as u64 * MESSAGES {
        match next_event(&mut events).await {
            StoreEvent::Message {
                room,
                to,
                seq,
                text,
            } => {
                let i: usize = to.as_str()["p-t".len()..].parse().unwrap();
                assert_eq!(room, rooms[i], "{text} reached the target's own room");
                assert_eq!(seq, next[i], "{text}: seq without gaps, in order");
                assert!(
                    text.contains(&format!("v=0 r{i} n={seq}")),
                    "{text} carries seq {seq}"
                );
                next[i] += 1;
            }
            other => panic!("expected a relayed message, got {other:?}"),
        }
    }
    expect_quiet(&mut events).await;
    for (i, room) in rooms.iter().enumerate() {
        let kept = store
            .missed(room, &pid(&format!("p-t{i}")), 0)
            .await
            .unwrap();
        let seqs: Vec<u64> = kept.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=MESSAGES).collect::<Vec<_>>(),
            "room {i}'s mailbox"
        );
    }
}

/// Many joins subscribing at once (which the Redis store sends as a few `SUBSCRIBE`s of many
/// channels), with unlistens among them: every listen is confirmed, each listening target
/// gets what is relayed to it exactly once, and a target whose listen was taken back gets
/// nothing.
pub async fn concurrent_listens_all_hear(store: impl RoomStore) {
    const ROOMS: usize = 48;
    let mut events = store.events().expect("first events() call");
    let rooms: Vec<RoomId> = (0..ROOMS).map(|_| room("listens")).collect();
    for room in &rooms {
        store.join(room, entry("p-a", "alice"), 10).await.unwrap();
        store.join(room, entry("p-t", "bob"), 10).await.unwrap();
    }
    // Every third room's target listens and then stops listening; the rest keep listening.
    let keeps = |i: usize| !i.is_multiple_of(3);
    let listens = rooms.iter().enumerate().map(|(i, room)| {
        let store = &store;
        async move {
            store.listen(room, &pid("p-t")).await.unwrap();
            if !keeps(i) {
                store.unlisten(room, &pid("p-t")).await;
            }
        }
    });
    futures::future::join_all(listens).await;
    for (i, room) in rooms.iter().enumerate() {
        let seq = store
            .relay(room, &pid("p-t"), &offer("p-a", &format!("v=0 r{i}")))
            .await
            .unwrap();
        assert_eq!(seq, Some(1), "room {i}");
    }
    let mut heard = Vec::new();
    for _ in (0..ROOMS).filter(|&i| keeps(i)) {
        match next_event(&mut events).await {
            StoreEvent::Message {
                room, seq, text, ..
            } => {
                let i = rooms.iter().position(|r| *r == room).unwrap();
                assert_eq!(seq, 1, "{text}");
                assert!(
                    text.contains(&format!("v=0 r{i}\"")),
                    "{text} is room {i}'s"
                );
                heard.push(i);
            }
            other => panic!("expected a relayed message, got {other:?}"),
        }
    }
    heard.sort_unstable();
    let expected: Vec<usize> = (0..ROOMS).filter(|&i| keeps(i)).collect();
    assert_eq!(heard, expected, "the listening targets, once each");
    expect_quiet(&mut events).await;
}

/// Joins, leaves and replacements are announced to the others (not to the subject), with the
/// same JSON the server uses; the replaced session is told which session took over.
pub async fn presence_is_announced(store: impl RoomStore) {
    let mut events = store.events().unwrap();
    let room = room("presence");
    let mut a = entry("p-a", "alice");
    a.resume = Some(token("rt1.a"));
    store.listen(&room, &pid("p-a")).await.unwrap();
    store.join(&room, a, 10).await.unwrap();
    store.listen(&room, &pid("p-b")).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    match expect_message(&mut events, "p-a", 0).await {
        ServerMessage::ParticipantJoined { participant } => {
            assert_eq!(participant.id.as_str(), "p-b")
        }
        other => panic!("expected participantJoined, got {other:?}"),
    }
    expect_quiet(&mut events).await;

    let mut a2 = entry("p-a2", "alice");
    a2.resume = Some(token("rt1.a2"));
    store.join(&room, a2, 10).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut events).await);
    }
    assert!(
        seen.iter().any(|e| matches!(e, StoreEvent::Replaced { to, by, .. } if to.as_str() == "p-a" && by.as_str() == "rt1.a2")),
        "the old session is told: {seen:?}"
    );
    let to_b: Vec<ServerMessage> = seen
        .iter()
        .filter_map(|e| match e {
            StoreEvent::Message { to, text, .. } if to.as_str() == "p-b" => {
                serde_json::from_str(text).ok()
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        to_b,
        [
            ServerMessage::ParticipantLeft {
                id: pid("p-a"),
                reason: LeaveReason::DuplicateIdentity
            },
            ServerMessage::ParticipantJoined {
                participant: crate::protocol::Participant {
                    id: pid("p-a2"),
                    user: UserId::parse("alice").unwrap(),
                    name: None
                }
            },
        ],
        "bob sees the replacement, in order"
    );
    assert!(store.leave(&room, &pid("p-a2")).await.unwrap());
    assert_eq!(
        expect_message(&mut events, "p-b", 0).await,
        ServerMessage::ParticipantLeft {
            id: pid("p-a2"),
            reason: LeaveReason::Left
        }
    );
    expect_quiet(&mut events).await;
}

/// An entry that expires is announced to the rest of the room as `connection_lost` by the
/// next operation on the room (here, the survivor's refresh).
pub async fn expiry_is_announced(store: impl RoomStore) {
    let mut events = store.events().unwrap();
    let room = room("expiry-announced");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    store.listen(&room, &pid("p-a")).await.unwrap();
    let start = Instant::now();
    // Alice refreshes; bob (a dead pod's participant) does not.
    while start.elapsed() < SHORT_TTL + SHORT_TTL / 2 {
        sleep(SHORT_TTL / 5).await;
        assert!(store.refresh(&room, &pid("p-a")).await.unwrap());
    }
    assert_eq!(
        expect_message(&mut events, "p-a", 0).await,
        ServerMessage::ParticipantLeft {
            id: pid("p-b"),
            reason: LeaveReason::ConnectionLost
        }
    );
    expect_quiet(&mut events).await;
}

/// A resume with the current token gets the messages after the client's last `seq` and moves
/// the participant to the new pod and token; a stale token, another user, a `lastSeq` from
/// the future and a mailbox that no longer reaches back far enough are refused, changing
/// nothing.
pub async fn resume_replays_what_was_missed(store: impl RoomStore) {
    let room = room("resume");
    let mut a = entry("p-a", "alice");
    a.resume = Some(token("rt1.one"));
    store.join(&room, a, 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    for n in 1..=3 {
        store
            .relay(&room, &pid("p-a"), &offer("p-b", &format!("v=0 {n}")))
            .await
            .unwrap();
    }
    let alice = UserId::parse("alice").unwrap();
    let request = |presented: &'static str, last_seq: u64| ResumeRequest {
        user: Box::leak(Box::new(alice.clone())),
        token: Box::leak(Box::new(token(presented))),
        last_seq,
        new_token: Box::leak(Box::new(token("rt1.two"))),
        pod: "pod-2",
    };
    let refused = |result: Result<super::Resumed, StoreError>| match result {
        Err(StoreError::ResumeRefused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(store.resume(&room, request("rt1.one", 4)).await),
        ResumeRefusal::AheadOfServer {
            last_seq: 4,
            seq: 3
        }
    );
    assert_eq!(
        refused(store.resume(&room, request("rt1.other", 1)).await),
        ResumeRefusal::TokenMismatch
    );
    let resumed = store.resume(&room, request("rt1.one", 1)).await.unwrap();
    assert_eq!(resumed.entry.id.as_str(), "p-a");
    assert_eq!(resumed.entry.pod, "pod-2");
    assert_eq!(resumed.entry.resume, Some(token("rt1.two")));
    assert_eq!(resumed.seq, 3);
    assert_eq!(ids(&resumed.participants), ["p-a", "p-b"]);
    let missed: Vec<u64> = resumed.missed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(missed, [2, 3]);
    assert!(resumed.missed[1].1.ends_with(r#","seq":3}"#));
    assert_eq!(
        refused(store.resume(&room, request("rt1.one", 3)).await),
        ResumeRefusal::TokenMismatch,
        "the old token stops working"
    );
    let bob = ResumeRequest {
        user: &UserId::parse("carol").unwrap(),
        token: &token("rt1.two"),
        last_seq: 0,
        new_token: &token("rt1.three"),
        pod: "pod-3",
    };
    assert_eq!(
        refused(store.resume(&room, bob).await),
        ResumeRefusal::NoSession
    );

    // More messages than the mailbox keeps: an old lastSeq cannot be honoured.
    let extra = u64::from(DEFAULT_MAILBOX_LEN) + 10;
    for n in 0..extra {
        store
            .relay(&room, &pid("p-a"), &offer("p-b", &format!("v=0 x{n}")))
            .await
            .unwrap();
    }
    let last = 3 + extra;
    let oldest = last - u64::from(DEFAULT_MAILBOX_LEN) + 1;
    let two = |last_seq| ResumeRequest {
        user: Box::leak(Box::new(alice.clone())),
        token: Box::leak(Box::new(token("rt1.two"))),
        last_seq,
        new_token: Box::leak(Box::new(token("rt1.two"))),
        pod: "pod-2",
    };
    assert_eq!(
        refused(store.resume(&room, two(3)).await),
        ResumeRefusal::Overflowed {
            last_seq: 3,
            oldest
        }
    );
    let resumed = store.resume(&room, two(oldest - 1)).await.unwrap();
    assert_eq!(resumed.missed.len(), DEFAULT_MAILBOX_LEN as usize);
    assert_eq!(resumed.missed.last().map(|(seq, _)| *seq), Some(last));
}

/// After the state was lost, a connected participant is put back (announced to the others)
/// with its numbering continuing; one still present only has its counter raised.
pub async fn restore_puts_a_lost_participant_back(store: impl RoomStore) {
    let mut events = store.events().unwrap();
    let room = room("restore");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    store.listen(&room, &pid("p-a")).await.unwrap();
    assert!(
        !store
            .restore(&room, entry("p-a", "alice"), 10)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .relay(&room, &pid("p-a"), &offer("p-b", "v=0"))
            .await
            .unwrap(),
        Some(11),
        "numbering continues after the restored seq"
    );
    expect_message(&mut events, "p-a", 11).await;
    assert!(store.restore(&room, entry("p-b", "bob"), 5).await.unwrap());
    match expect_message(&mut events, "p-a", 0).await {
        ServerMessage::ParticipantJoined { participant } => {
            assert_eq!(participant.id.as_str(), "p-b")
        }
        other => panic!("expected participantJoined, got {other:?}"),
    }
    assert_eq!(listed(&store, &room).await, ["p-a", "p-b"]);
    assert_eq!(
        store
            .relay(&room, &pid("p-b"), &offer("p-a", "v=0"))
            .await
            .unwrap(),
        Some(6)
    );
    // A newer session of the same user wins over a restore of the old one.
    assert!(
        !store
            .restore(&room, entry("p-b-old", "bob"), 1)
            .await
            .unwrap()
    );
    assert_eq!(listed(&store, &room).await, ["p-a", "p-b"]);
}

/// `missed` gives the mailbox after a `seq`, in order, and nothing for a stranger.
pub async fn missed_reads_the_mailbox_after_a_seq(store: impl RoomStore) {
    let room = room("missed");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    for n in 0..4 {
        store
            .relay(&room, &pid("p-a"), &offer("p-b", &format!("v=0 n={n}")))
            .await
            .unwrap();
    }
    let missed = store.missed(&room, &pid("p-a"), 2).await.unwrap();
    let seqs: Vec<u64> = missed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [3, 4]);
    assert!(missed[0].1.contains("n=2") && missed[0].1.ends_with(",\"seq\":3}"));
    assert!(
        store
            .missed(&room, &pid("p-a"), 4)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .missed(&room, &pid("p-x"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A room is being rebuilt while its sender is missing, and for [`super::REBUILD_WINDOW`]
/// after a participant was put back; a room that never lost anything is not.
pub async fn rebuilding_follows_restores(store: impl RoomStore) {
    let room = room("rebuilding");
    assert!(
        store.rebuilding(&room, &pid("p-a")).await.unwrap(),
        "a sender missing from its room means the room lost its state"
    );
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    assert!(!store.rebuilding(&room, &pid("p-a")).await.unwrap());
    assert!(
        !store
            .restore(&room, entry("p-a", "alice"), 0)
            .await
            .unwrap(),
        "p-a is present: nothing to put back"
    );
    assert!(!store.rebuilding(&room, &pid("p-a")).await.unwrap());
    assert!(store.restore(&room, entry("p-b", "bob"), 0).await.unwrap());
    assert!(store.rebuilding(&room, &pid("p-a")).await.unwrap());
    sleep(super::REBUILD_WINDOW + Duration::from_millis(200)).await;
    assert!(!store.rebuilding(&room, &pid("p-a")).await.unwrap());
}

/// A kick removes the participant from the room (the others hear `kicked`), tells its own
/// connection to close, and leaves nothing to resume; kicking again finds nobody.
pub async fn kick_removes_for_good(store: impl RoomStore) {
    let mut events = store.events().unwrap();
    let room = room("kick");
    let mut a = entry("p-a", "alice");
    a.resume = Some(token("rt1.a"));
    store.listen(&room, &pid("p-a")).await.unwrap();
    store.listen(&room, &pid("p-b")).await.unwrap();
    store.join(&room, a, 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    expect_message(&mut events, "p-a", 0).await;
    assert!(store.kick(&room, &pid("p-a")).await.unwrap());
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next_event(&mut events).await);
    }
    assert!(
        seen.iter().any(|e| matches!(e, StoreEvent::Removed { to, reason: LeaveReason::Kicked, .. } if to.as_str() == "p-a")),
        "the kicked connection is told: {seen:?}"
    );
    let left = ServerMessage::ParticipantLeft {
        id: pid("p-a"),
        reason: LeaveReason::Kicked,
    };
    assert!(
        seen.iter().any(|e| matches!(e, StoreEvent::Message { to, text, .. } if to.as_str() == "p-b" && serde_json::from_str::<ServerMessage>(text).ok() == Some(left.clone()))),
        "bob hears the kick: {seen:?}"
    );
    expect_quiet(&mut events).await;
    assert_eq!(ids(&store.participants(&room).await.unwrap()), ["p-b"]);
    let alice = UserId::parse("alice").unwrap();
    let refused = store
        .resume(
            &room,
            ResumeRequest {
                user: &alice,
                token: &token("rt1.a"),
                last_seq: 0,
                new_token: &token("rt1.a2"),
                pod: "pod-other",
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::ResumeRefused(ResumeRefusal::NoSession)),
        "a kicked participant cannot resume: {refused:?}"
    );
    assert!(!store.kick(&room, &pid("p-a")).await.unwrap());
    assert!(!store.kick(&room, &pid("p-nobody")).await.unwrap());
}

/// Ending a room tells every participant about the others (`room_deleted`) and closes each,
/// removes every entry and message (nothing to resume), and leaves other rooms alone.
pub async fn end_room_removes_everything(store: impl RoomStore) {
    let mut events = store.events().unwrap();
    let room = room("end");
    let other = self::room("end-other");
    let mut a = entry("p-a", "alice");
    a.resume = Some(token("rt1.a"));
    store.listen(&room, &pid("p-a")).await.unwrap();
    store.listen(&room, &pid("p-b")).await.unwrap();
    store.join(&room, a, 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    store.join(&other, entry("p-c", "carol"), 10).await.unwrap();
    expect_message(&mut events, "p-a", 0).await;
    let offer = ServerMessage::Offer {
        from: pid("p-b"),
        sdp: Sdp::parse("v=0").unwrap(),
        seq: 0,
    };
    assert_eq!(
        store
            .relay(&room, &pid("p-a"), &offer.to_json())
            .await
            .unwrap(),
        Some(1)
    );
    next_event(&mut events).await;
    assert_eq!(store.end_room(&room).await.unwrap(), 2);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut events).await);
    }
    expect_quiet(&mut events).await;
    for (me, them) in [("p-a", "p-b"), ("p-b", "p-a")] {
        let left = ServerMessage::ParticipantLeft {
            id: pid(them),
            reason: LeaveReason::RoomDeleted,
        };
        let heard = seen.iter().position(|e| matches!(e, StoreEvent::Message { to, text, .. } if to.as_str() == me && serde_json::from_str::<ServerMessage>(text).ok() == Some(left.clone())));
        let closed = seen.iter().position(|e| matches!(e, StoreEvent::Removed { to, reason: LeaveReason::RoomDeleted, .. } if to.as_str() == me));
        assert!(
            matches!((heard, closed), (Some(h), Some(c)) if h < c),
            "{me} hears {them} leave, then is closed: {seen:?}"
        );
    }
    assert!(store.participants(&room).await.unwrap().is_empty());
    assert_eq!(store.count(&room).await.unwrap(), 0);
    let alice = UserId::parse("alice").unwrap();
    let refused = store
        .resume(
            &room,
            ResumeRequest {
                user: &alice,
                token: &token("rt1.a"),
                last_seq: 0,
                new_token: &token("rt1.a2"),
                pod: "pod-other",
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::ResumeRefused(ResumeRefusal::NoSession)),
        "nothing of an ended room can be resumed: {refused:?}"
    );
    assert_eq!(store.count(&other).await.unwrap(), 1, "other rooms stay");
    assert_eq!(
        store.end_room(&room).await.unwrap(),
        0,
        "ending twice is harmless"
    );
    // A new call can start in the room afterwards.
    store.join(&room, entry("p-d", "dave"), 10).await.unwrap();
    assert_eq!(store.count(&room).await.unwrap(), 1);
}

/// The room listing has every room with live participants and its count, and drops a room
/// once it is ended.
pub async fn rooms_are_listed_with_counts(store: impl RoomStore) {
    let first = room("listed");
    let second = room("listed");
    store.join(&first, entry("p-a", "alice"), 10).await.unwrap();
    store.join(&first, entry("p-b", "bob"), 10).await.unwrap();
    store
        .join(&second, entry("p-c", "carol"), 10)
        .await
        .unwrap();
    let listed = store.rooms().await.unwrap();
    let count_of = |listed: &[(RoomId, u32)], room: &RoomId| {
        listed.iter().find(|(r, _)| r == room).map(|(_, n)| *n)
    };
    assert_eq!(count_of(&listed, &first), Some(2), "{listed:?}");
    assert_eq!(count_of(&listed, &second), Some(1), "{listed:?}");
    assert!(
        listed.windows(2).all(|w| w[0].0 < w[1].0),
        "ordered by room id: {listed:?}"
    );
    assert!(
        listed.iter().all(|(_, n)| *n > 0),
        "no empty rooms: {listed:?}"
    );
    store.end_room(&first).await.unwrap();
    let listed = store.rooms().await.unwrap();
    assert_eq!(count_of(&listed, &first), None, "{listed:?}");
    assert_eq!(count_of(&listed, &second), Some(1), "{listed:?}");
}

/// Collects the facts a store reports, per room.
fn collect_facts(store: &impl RoomStore) -> Arc<std::sync::Mutex<Vec<(RoomId, RoomFact)>>> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.report_facts(FactSink::new(move |room, fact| {
        sink.lock().unwrap().push((room.clone(), fact));
    }));
    seen
}

/// The facts reported for `room`, as `kind participant-id reason` strings.
fn facts_of(seen: &std::sync::Mutex<Vec<(RoomId, RoomFact)>>, room: &RoomId) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| r == room)
        .map(|(_, fact)| match fact {
            RoomFact::Started => "started".to_owned(),
            RoomFact::Finished => "finished".to_owned(),
            RoomFact::Joined(e) => format!("joined {}", e.id.as_str()),
            RoomFact::Left(e, reason) => format!("left {} {}", e.id.as_str(), reason.as_str()),
            RoomFact::ConnectionLost(e) => format!("lost {}", e.id.as_str()),
        })
        .collect()
}

/// Every change to a room is reported once, in order, by the operation that made it: the
/// first join starts the room, replacements, leaves, kicks and an ended room say why each
/// participant went, and the last one out finishes it. Reads and refreshes report nothing.
pub async fn facts_are_reported_once(store: impl RoomStore) {
    let seen = collect_facts(&store);
    let room = room("facts");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    store.join(&room, entry("p-a2", "alice"), 10).await.unwrap();
    store.participants(&room).await.unwrap();
    store.count(&room).await.unwrap();
    assert!(store.refresh(&room, &pid("p-b")).await.unwrap());
    assert!(store.leave(&room, &pid("p-b")).await.unwrap());
    assert!(!store.leave(&room, &pid("p-b")).await.unwrap());
    assert!(store.kick(&room, &pid("p-a2")).await.unwrap());
    assert_eq!(
        facts_of(&seen, &room),
        [
            "started",
            "joined p-a",
            "joined p-b",
            "left p-a duplicate_identity",
            "joined p-a2",
            "left p-b left",
            "left p-a2 kicked",
            "finished",
        ]
    );
    let ended = self::room("facts-ended");
    store.join(&ended, entry("p-c", "carol"), 10).await.unwrap();
    store.join(&ended, entry("p-d", "dave"), 10).await.unwrap();
    store.end_room(&ended).await.unwrap();
    store.end_room(&ended).await.unwrap();
    assert_eq!(
        facts_of(&seen, &ended),
        [
            "started",
            "joined p-c",
            "joined p-d",
            "left p-c room_deleted",
            "left p-d room_deleted",
            "finished",
        ]
    );
}

/// A room whose participants are all about to expire with no one left to notice (their pods
/// died) is reported lost and finished by a sweep within the lead, once, even when swept
/// again; a sweep before the lead leaves it alone.
pub async fn expiry_is_reported_by_a_sweep(store: impl RoomStore) {
    let seen = collect_facts(&store);
    let room = room("facts-swept");
    store.join(&room, entry("p-a", "alice"), 10).await.unwrap();
    store.join(&room, entry("p-b", "bob"), 10).await.unwrap();
    // Not yet within the lead: nothing is swept.
    sleep(SHORT_TTL / 2).await;
    store.sweep().await.unwrap();
    assert_eq!(facts_of(&seen, &room).len(), 3, "swept too early");
    // Within the lead, before the entries (and Redis keys) expire.
    let lead = super::sweep_lead(SHORT_TTL);
    sleep(SHORT_TTL / 2 - lead / 2).await;
    store.sweep().await.unwrap();
    store.sweep().await.unwrap();
    assert_eq!(
        facts_of(&seen, &room),
        [
            "started",
            "joined p-a",
            "joined p-b",
            "lost p-a",
            "lost p-b",
            "finished"
        ]
    );
}

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

use super::{ParticipantEntry, RoomStore, StoreError};
use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};

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

//! [`MemoryStore`]: room state inside this process, for a single signaling pod (the embedded
//! default) and for tests. It must keep exactly the semantics of the Redis store; the shared
//! [`behaviour`](super::behaviour) suite is what holds the two together.
//!
//! Time is tokio's clock, so tests can pause and advance it instead of sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::{JoinOutcome, ParticipantEntry, Result, RoomStore, StoreError, check_ttl};
use crate::ids::{ParticipantId, RoomId};

/// Room state in a mutex. Every operation is short and never awaits while holding the lock,
/// which is what makes each one atomic.
#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<RoomId, Room>,
    /// Every live entry by deadline, so expired ones are found without scanning all rooms.
    /// Pruning from here on every call is what makes abandoned rooms disappear from memory
    /// without a background task, as Redis key expiry does for the Redis store.
    deadlines: BTreeSet<(Instant, RoomId, ParticipantId)>,
}

/// A room's participants. A `BTreeMap` gives the documented id order for free.
#[derive(Debug, Default)]
struct Room {
    participants: BTreeMap<ParticipantId, Slot>,
}

#[derive(Debug)]
struct Slot {
    entry: ParticipantEntry,
    deadline: Instant,
}

impl MemoryStore {
    /// An empty store whose entries live `ttl` without a refresh.
    pub fn new(ttl: Duration) -> Result<Self> {
        Ok(MemoryStore {
            ttl: check_ttl(ttl)?,
            state: Mutex::new(State::default()),
        })
    }

    /// Locks the state, pruning what has expired. A poisoned lock is still used: no code
    /// path panics while holding it, and refusing all rooms forever would be worse.
    fn state(&self) -> (MutexGuard<'_, State>, Instant) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.prune(now);
        (state, now)
    }

    fn join_now(&self, room: &RoomId, entry: ParticipantEntry, max: u32) -> Result<JoinOutcome> {
        let (mut state, now) = self.state();
        let deadline = now + self.ttl;
        let (seats_taken, previous) = match state.rooms.get(room) {
            None => (0, None),
            Some(existing) => {
                let previous = existing
                    .participants
                    .values()
                    .find(|slot| slot.entry.user == entry.user && slot.entry.id != entry.id)
                    .map(|slot| slot.entry.id.clone());
                // Neither the entry being rewritten nor the session being replaced needs a
                // seat of its own: both seats go to the new entry.
                let freed = usize::from(existing.participants.contains_key(&entry.id))
                    + usize::from(previous.is_some());
                (existing.participants.len().saturating_sub(freed), previous)
            }
        };
        if seats_taken >= usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(StoreError::RoomFull { max });
        }
        let replaced = previous.and_then(|id| state.remove(room, &id));
        state.remove(room, &entry.id);
        state
            .deadlines
            .insert((deadline, room.clone(), entry.id.clone()));
        let slots = &mut state.rooms.entry(room.clone()).or_default().participants;
        slots.insert(entry.id.clone(), Slot { entry, deadline });
        let participants = slots.values().map(|slot| slot.entry.clone()).collect();
        Ok(JoinOutcome {
            participants,
            replaced,
        })
    }

    fn refresh_now(&self, room: &RoomId, id: &ParticipantId) -> bool {
        let (mut state, now) = self.state();
        let deadline = now + self.ttl;
        let State { rooms, deadlines } = &mut *state;
        let Some(slot) = rooms.get_mut(room).and_then(|r| r.participants.get_mut(id)) else {
            return false;
        };
        deadlines.remove(&(slot.deadline, room.clone(), id.clone()));
        deadlines.insert((deadline, room.clone(), id.clone()));
        slot.deadline = deadline;
        true
    }
}

impl State {
    /// Drops every entry whose deadline has passed, and rooms left empty.
    fn prune(&mut self, now: Instant) {
        while let Some(first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, room, id)) = self.deadlines.pop_first() {
                self.remove(&room, &id);
            }
        }
    }

    /// Removes one entry from its room and the deadline index, dropping the room if it
    /// becomes empty.
    fn remove(&mut self, room: &RoomId, id: &ParticipantId) -> Option<ParticipantEntry> {
        let slots = &mut self.rooms.get_mut(room)?.participants;
        let slot = slots.remove(id)?;
        if slots.is_empty() {
            self.rooms.remove(room);
        }
        self.deadlines
            .remove(&(slot.deadline, room.clone(), id.clone()));
        Some(slot.entry)
    }
}

impl RoomStore for MemoryStore {
    fn participant_ttl(&self) -> Duration {
        self.ttl
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        max: u32,
    ) -> BoxFuture<'a, Result<JoinOutcome>> {
        Box::pin(async move { self.join_now(room, entry, max) })
    }

    fn leave<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.state().0.remove(room, id).is_some()) })
    }

    fn participants<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Vec<ParticipantEntry>>> {
        Box::pin(async move {
            let (state, _) = self.state();
            Ok(state
                .rooms
                .get(room)
                .map(|r| r.participants.values().map(|s| s.entry.clone()).collect())
                .unwrap_or_default())
        })
    }

    fn refresh<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.refresh_now(room, id)) })
    }

    fn count<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move {
            let (state, _) = self.state();
            let len = state.rooms.get(room).map_or(0, |r| r.participants.len());
            Ok(u32::try_from(len).unwrap_or(u32::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DEFAULT_PARTICIPANT_TTL, behaviour};

    /// The shared behaviour suite passes against the in-memory store (on tokio's paused clock,
    /// so the expiry cases take no real time).
    #[tokio::test(start_paused = true)]
    async fn behaviour_suite() {
        behaviour::run_all(|ttl| async move { MemoryStore::new(ttl).unwrap() }).await;
    }

    /// Rooms whose participants all expired are dropped from memory by the next call on any
    /// room, so abandoned rooms cannot pile up.
    #[tokio::test(start_paused = true)]
    async fn abandoned_rooms_are_dropped() {
        let store = MemoryStore::new(DEFAULT_PARTICIPANT_TTL).unwrap();
        for i in 0..5 {
            let room = RoomId::parse(&format!("r{i}")).unwrap();
            store
                .join(&room, behaviour::entry("p", "u"), 10)
                .await
                .unwrap();
        }
        assert_eq!(store.state().0.rooms.len(), 5);
        tokio::time::advance(DEFAULT_PARTICIPANT_TTL).await;
        let other = RoomId::parse("other").unwrap();
        assert_eq!(store.count(&other).await.unwrap(), 0);
        let (state, _) = store.state();
        assert!(
            state.rooms.is_empty(),
            "rooms left: {:?}",
            state.rooms.keys()
        );
        assert!(state.deadlines.is_empty());
    }

    /// An entry is live until its deadline and gone exactly at it, as in Redis.
    #[tokio::test(start_paused = true)]
    async fn deadline_is_exclusive() {
        let ttl = Duration::from_secs(3);
        let store = MemoryStore::new(ttl).unwrap();
        let room = RoomId::parse("r").unwrap();
        store
            .join(&room, behaviour::entry("p", "u"), 1)
            .await
            .unwrap();
        tokio::time::advance(ttl - Duration::from_millis(1)).await;
        assert_eq!(store.count(&room).await.unwrap(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.count(&room).await.unwrap(), 0);
    }

    /// A TTL of zero would make every entry dead on arrival, so it is refused.
    #[test]
    fn zero_ttl_is_refused() {
        assert!(matches!(
            MemoryStore::new(Duration::ZERO),
            Err(StoreError::Config(_))
        ));
    }
}

//! [`MemoryStore`]: room state inside this process, for a single signaling pod (the embedded
//! default) and for tests. It must keep exactly the semantics of the Redis store; the shared
//! [`behaviour`](super::behaviour) suite is what holds the two together.
//!
//! Time is tokio's clock, so tests can pause and advance it instead of sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    DEFAULT_MAILBOX_LEN, FactSink, JoinOutcome, ParticipantEntry, Result, ResumeRefusal,
    ResumeRequest, Resumed, RoomFact, RoomStore, StoreError, StoreEvent, check_ttl, relay_prefix,
    sweep_lead,
};
use crate::ids::{ParticipantId, RoomId};
use crate::protocol::{LeaveReason, ResumeToken, ServerMessage};

/// Room state in a mutex. Every operation is short and never awaits while holding the lock,
/// which is what makes each one atomic.
#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    mailbox_len: usize,
    state: Mutex<State>,
    events: Mutex<Option<mpsc::UnboundedReceiver<StoreEvent>>>,
}

#[derive(Debug)]
struct State {
    rooms: HashMap<RoomId, Room>,
    /// Every live entry by deadline, so expired ones are found without scanning all rooms.
    /// Pruning from here on every call is what makes abandoned rooms disappear from memory
    /// without a background task, as Redis key expiry does for the Redis store.
    deadlines: BTreeSet<(Instant, RoomId, ParticipantId)>,
    /// The participants whose messages go to `events` (this process holds their connection).
    listening: HashSet<(RoomId, ParticipantId)>,
    events: mpsc::UnboundedSender<StoreEvent>,
    /// Where room facts go (webhooks), once someone asked for them.
    facts: Option<FactSink>,
}

/// A room's participants. A `BTreeMap` gives the documented id order for free.
#[derive(Debug, Default)]
struct Room {
    participants: BTreeMap<ParticipantId, Slot>,
    /// Until when the room counts as being rebuilt (see [`super::REBUILD_WINDOW`]).
    rebuilding_until: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    entry: ParticipantEntry,
    deadline: Instant,
    /// The last `seq` given to this participant.
    seq: u64,
    /// The last relayed messages, oldest first.
    mailbox: VecDeque<(u64, Arc<str>)>,
}

impl Slot {
    fn new(entry: ParticipantEntry, deadline: Instant) -> Self {
        Slot {
            entry,
            deadline,
            seq: 0,
            mailbox: VecDeque::new(),
        }
    }
}

impl MemoryStore {
    /// An empty store whose entries live `ttl` without a refresh.
    pub fn new(ttl: Duration) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(MemoryStore {
            ttl: check_ttl(ttl)?,
            mailbox_len: DEFAULT_MAILBOX_LEN as usize,
            state: Mutex::new(State {
                rooms: HashMap::new(),
                deadlines: BTreeSet::new(),
                listening: HashSet::new(),
                events: tx,
                facts: None,
            }),
            events: Mutex::new(Some(rx)),
        })
    }

    /// Keeps `len` relayed messages per participant for resumes instead of the default.
    pub fn with_mailbox_len(mut self, len: u32) -> Result<Self> {
        if len == 0 {
            return Err(StoreError::Config(
                "mailbox length must be at least 1".into(),
            ));
        }
        self.mailbox_len = len as usize;
        Ok(self)
    }

    /// Locks the state, pruning (and announcing) what has expired. A poisoned lock is still
    /// used: no code path panics while holding it, and refusing all rooms forever would be
    /// worse.
    fn state(&self) -> (MutexGuard<'_, State>, Instant) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.prune(now);
        (state, now)
    }

    fn join_now(&self, room: &RoomId, entry: ParticipantEntry, max: u32) -> Result<JoinOutcome> {
        let (mut state, now) = self.state();
        let deadline = now + self.ttl;
        let was_empty = !state.rooms.contains_key(room);
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
        if was_empty {
            state.fact(room, RoomFact::Started);
        }
        let replaced = previous.and_then(|id| state.remove(room, &id).map(|slot| slot.entry));
        if let Some(old) = &replaced {
            state.fact(
                room,
                RoomFact::Left(old.clone(), LeaveReason::DuplicateIdentity),
            );
            if let Some(by) = &entry.resume {
                state.replaced(room, &old.id, by);
            }
            state.announce(room, None, &left(&old.id, LeaveReason::DuplicateIdentity));
        }
        let rewritten = state.remove(room, &entry.id).is_some();
        if !rewritten {
            state.announce(room, None, &entry.joined_message());
            state.fact(room, RoomFact::Joined(entry.clone()));
        }
        state.insert(room, Slot::new(entry, deadline));
        let participants = state.entries(room);
        Ok(JoinOutcome {
            participants,
            replaced,
        })
    }

    fn refresh_now(&self, room: &RoomId, id: &ParticipantId) -> bool {
        let (mut state, now) = self.state();
        let deadline = now + self.ttl;
        let State {
            rooms, deadlines, ..
        } = &mut *state;
        let Some(slot) = rooms.get_mut(room).and_then(|r| r.participants.get_mut(id)) else {
            return false;
        };
        deadlines.remove(&(slot.deadline, room.clone(), id.clone()));
        deadlines.insert((deadline, room.clone(), id.clone()));
        slot.deadline = deadline;
        true
    }

    fn relay_now(&self, room: &RoomId, to: &ParticipantId, prefix: &str) -> Option<u64> {
        let (mut state, _) = self.state();
        let listening = state.listening.contains(&(room.clone(), to.clone()));
        let slot = state
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(to))?;
        slot.seq += 1;
        let seq = slot.seq;
        let text: Arc<str> = format!("{prefix},\"seq\":{seq}}}").into();
        slot.mailbox.push_back((seq, text.clone()));
        while slot.mailbox.len() > self.mailbox_len {
            slot.mailbox.pop_front();
        }
        if listening {
            let _ = state.events.send(StoreEvent::Message {
                room: room.clone(),
                to: to.clone(),
                seq,
                text,
            });
        }
        Some(seq)
    }

    fn resume_now(&self, room: &RoomId, request: ResumeRequest<'_>) -> Result<Resumed> {
        let (mut state, now) = self.state();
        let refuse = |why| Err(StoreError::ResumeRefused(why));
        let Some(slot) = state.rooms.get_mut(room).and_then(|r| {
            r.participants
                .values_mut()
                .find(|slot| &slot.entry.user == request.user)
        }) else {
            return refuse(ResumeRefusal::NoSession);
        };
        if slot.entry.resume.as_ref() != Some(request.token) {
            return refuse(ResumeRefusal::TokenMismatch);
        }
        if request.last_seq > slot.seq {
            return refuse(ResumeRefusal::AheadOfServer {
                last_seq: request.last_seq,
                seq: slot.seq,
            });
        }
        let oldest = slot.mailbox.front().map_or(slot.seq + 1, |(seq, _)| *seq);
        if request.last_seq + 1 < oldest {
            return refuse(ResumeRefusal::Overflowed {
                last_seq: request.last_seq,
                oldest,
            });
        }
        let missed = slot
            .mailbox
            .iter()
            .filter(|(seq, _)| *seq > request.last_seq)
            .cloned()
            .collect();
        slot.entry.pod = request.pod.to_owned();
        slot.entry.resume = Some(request.new_token.clone());
        let entry = slot.entry.clone();
        let seq = slot.seq;
        let old_deadline = slot.deadline;
        slot.deadline = now + self.ttl;
        let new_deadline = slot.deadline;
        state
            .deadlines
            .remove(&(old_deadline, room.clone(), entry.id.clone()));
        state
            .deadlines
            .insert((new_deadline, room.clone(), entry.id.clone()));
        state.replaced(room, &entry.id, request.new_token);
        Ok(Resumed {
            participants: state.entries(room),
            entry,
            seq,
            missed,
        })
    }

    fn restore_now(&self, room: &RoomId, entry: ParticipantEntry, seq: u64) -> bool {
        let (mut state, now) = self.state();
        let deadline = now + self.ttl;
        if let Some(slot) = state
            .rooms
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(&entry.id))
        {
            slot.seq = slot.seq.max(seq);
            return false;
        }
        // A newer session of the same user wins over the one being restored.
        let taken = state.rooms.get(room).is_some_and(|r| {
            r.participants
                .values()
                .any(|slot| slot.entry.user == entry.user)
        });
        if taken {
            return false;
        }
        state.announce(room, None, &entry.joined_message());
        let mut slot = Slot::new(entry, deadline);
        slot.seq = seq;
        state.insert(room, slot);
        if let Some(r) = state.rooms.get_mut(room) {
            r.rebuilding_until = Some(now + super::REBUILD_WINDOW);
        }
        true
    }

    fn missed_now(&self, room: &RoomId, id: &ParticipantId, after: u64) -> Vec<(u64, Arc<str>)> {
        let (state, _) = self.state();
        state
            .rooms
            .get(room)
            .and_then(|r| r.participants.get(id))
            .map(|slot| {
                slot.mailbox
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn rebuilding_now(&self, room: &RoomId, sender: &ParticipantId) -> bool {
        let (state, now) = self.state();
        match state.rooms.get(room) {
            None => true,
            Some(r) => {
                !r.participants.contains_key(sender)
                    || r.rebuilding_until.is_some_and(|until| until > now)
            }
        }
    }
}

/// `participantLeft` for a participant, as clients see it.
fn left(id: &ParticipantId, reason: LeaveReason) -> String {
    ServerMessage::ParticipantLeft {
        id: id.clone(),
        reason,
    }
    .to_json()
}

impl State {
    /// Drops every entry whose deadline has passed, and rooms left empty, and tells the rest
    /// of each room (`connection_lost`).
    fn prune(&mut self, now: Instant) {
        while let Some(first) = self.deadlines.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, room, id)) = self.deadlines.pop_first()
                && let Some(slot) = self.remove(&room, &id)
            {
                self.announce(&room, None, &left(&id, LeaveReason::ConnectionLost));
                self.fact(&room, RoomFact::ConnectionLost(slot.entry));
                self.finish_if_empty(&room);
            }
        }
    }

    fn insert(&mut self, room: &RoomId, slot: Slot) {
        self.deadlines
            .insert((slot.deadline, room.clone(), slot.entry.id.clone()));
        self.rooms
            .entry(room.clone())
            .or_default()
            .participants
            .insert(slot.entry.id.clone(), slot);
    }

    /// Removes one entry from its room and the deadline index, dropping the room if it
    /// becomes empty.
    fn remove(&mut self, room: &RoomId, id: &ParticipantId) -> Option<Slot> {
        let slots = &mut self.rooms.get_mut(room)?.participants;
        let slot = slots.remove(id)?;
        if slots.is_empty() {
            self.rooms.remove(room);
        }
        self.deadlines
            .remove(&(slot.deadline, room.clone(), id.clone()));
        Some(slot)
    }

    fn entries(&self, room: &RoomId) -> Vec<ParticipantEntry> {
        self.rooms
            .get(room)
            .map(|r| r.participants.values().map(|s| s.entry.clone()).collect())
            .unwrap_or_default()
    }

    /// Sends presence (`seq` 0) to everyone in the room listened to here, but `except`.
    fn announce(&self, room: &RoomId, except: Option<&ParticipantId>, text: &str) {
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        let text: Arc<str> = text.into();
        for id in state.participants.keys() {
            if Some(id) != except && self.listening.contains(&(room.clone(), id.clone())) {
                let _ = self.events.send(StoreEvent::Message {
                    room: room.clone(),
                    to: id.clone(),
                    seq: 0,
                    text: text.clone(),
                });
            }
        }
    }

    fn fact(&self, room: &RoomId, fact: RoomFact) {
        if let Some(sink) = &self.facts {
            sink.report(room, fact);
        }
    }

    /// Reports the room finished when its last participant is gone (the room was dropped).
    fn finish_if_empty(&self, room: &RoomId) {
        if !self.rooms.contains_key(room) {
            self.fact(room, RoomFact::Finished);
        }
    }

    /// Removes a participant for `reason`, telling the room and reporting it; `false` if it
    /// was not there.
    fn depart(&mut self, room: &RoomId, id: &ParticipantId, reason: LeaveReason) -> bool {
        let Some(slot) = self.remove(room, id) else {
            return false;
        };
        self.announce(room, None, &left(id, reason));
        self.fact(room, RoomFact::Left(slot.entry, reason));
        self.finish_if_empty(room);
        true
    }

    /// Tells the connection of a participant removed by the application to close.
    fn removed(&self, room: &RoomId, id: &ParticipantId, reason: LeaveReason) {
        if self.listening.contains(&(room.clone(), id.clone())) {
            let _ = self.events.send(StoreEvent::Removed {
                room: room.clone(),
                to: id.clone(),
                reason,
            });
        }
    }

    fn replaced(&self, room: &RoomId, id: &ParticipantId, by: &ResumeToken) {
        if self.listening.contains(&(room.clone(), id.clone())) {
            let _ = self.events.send(StoreEvent::Replaced {
                room: room.clone(),
                to: id.clone(),
                by: by.clone(),
            });
        }
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
        Box::pin(async move {
            let (mut state, _) = self.state();
            Ok(state.depart(room, id, LeaveReason::Left))
        })
    }

    fn participants<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Vec<ParticipantEntry>>> {
        Box::pin(async move { Ok(self.state().0.entries(room)) })
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

    fn relay<'a>(
        &'a self,
        room: &'a RoomId,
        to: &'a ParticipantId,
        message: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let prefix = relay_prefix(message)?;
            Ok(self.relay_now(room, to, prefix))
        })
    }

    fn resume<'a>(
        &'a self,
        room: &'a RoomId,
        request: ResumeRequest<'a>,
    ) -> BoxFuture<'a, Result<Resumed>> {
        Box::pin(async move { self.resume_now(room, request) })
    }

    fn restore<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        seq: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.restore_now(room, entry, seq)) })
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
        after: u64,
    ) -> BoxFuture<'a, Result<super::Relayed>> {
        Box::pin(async move { Ok(self.missed_now(room, id, after)) })
    }

    fn rebuilding<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.rebuilding_now(room, sender)) })
    }

    fn listen<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.state().0.listening.insert((room.clone(), id.clone()));
            Ok(())
        })
    }

    fn unlisten<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.state().0.listening.remove(&(room.clone(), id.clone()));
        })
    }

    fn events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// One process: nobody else needs to know it is alive.
    fn heartbeat<'a>(&'a self, _pod: &'a str, _ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn kick<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (mut state, _) = self.state();
            let gone = state.depart(room, id, LeaveReason::Kicked);
            if gone {
                state.removed(room, id, LeaveReason::Kicked);
            }
            Ok(gone)
        })
    }

    fn end_room<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move {
            let (mut state, _) = self.state();
            let ids: Vec<ParticipantId> = state
                .rooms
                .get(room)
                .map(|r| r.participants.keys().cloned().collect())
                .unwrap_or_default();
            // Everyone hears about everyone else before any of them is closed, as in Redis.
            for id in &ids {
                state.announce(room, Some(id), &left(id, LeaveReason::RoomDeleted));
            }
            for id in &ids {
                state.removed(room, id, LeaveReason::RoomDeleted);
                if let Some(slot) = state.remove(room, id) {
                    state.fact(room, RoomFact::Left(slot.entry, LeaveReason::RoomDeleted));
                }
            }
            if !ids.is_empty() {
                state.fact(room, RoomFact::Finished);
            }
            Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
        })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<()>> {
        // As in Redis: a room whose every deadline is within the lead is abandoned, and is
        // pruned that much early.
        Box::pin(async move {
            let (mut state, now) = self.state();
            let cutoff = now + sweep_lead(self.ttl);
            let abandoned: Vec<(RoomId, Vec<ParticipantId>)> = state
                .rooms
                .iter()
                .filter(|(_, r)| r.participants.values().all(|slot| slot.deadline <= cutoff))
                .map(|(room, r)| (room.clone(), r.participants.keys().cloned().collect()))
                .collect();
            for (room, ids) in abandoned {
                for id in ids {
                    if let Some(slot) = state.remove(&room, &id) {
                        state.announce(&room, None, &left(&id, LeaveReason::ConnectionLost));
                        state.fact(&room, RoomFact::ConnectionLost(slot.entry));
                    }
                }
                state.finish_if_empty(&room);
            }
            Ok(())
        })
    }

    fn report_facts(&self, sink: FactSink) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .facts = Some(sink);
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<(RoomId, u32)>>> {
        Box::pin(async move {
            let (state, _) = self.state();
            let mut rooms: Vec<(RoomId, u32)> = state
                .rooms
                .iter()
                .map(|(id, r)| {
                    let count = u32::try_from(r.participants.len()).unwrap_or(u32::MAX);
                    (id.clone(), count)
                })
                .collect();
            rooms.sort();
            Ok(rooms)
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

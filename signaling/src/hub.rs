//! The connections of this process, by room and participant, and delivery to them.
//!
//! The hub does not decide who may talk to whom: every message a participant receives comes
//! from the room store ([`crate::store::RoomStore::relay`] resolves the target inside the
//! sender's room, on whichever pod it is), and arrives here as a [`StoreEvent`]. The hub puts
//! it on the right connection's queue, in `seq` order and exactly once:
//!
//! - a session that is starting (between subscribing and sending `joined`) holds its live
//!   messages back, so `joined` comes first and a resume's replayed messages come before the
//!   live ones;
//! - a session being recovered after the message link was down (see
//!   [`Hub::begin_recovery`]) holds its live messages back the same way, so what its mailbox
//!   replays comes first and a `resync` is not overtaken by presence it does not include;
//! - a relayed message whose `seq` the connection already has (replayed, then also received
//!   live) is dropped.
//!
//! Sending never waits. Each connection has a bounded outgoing queue; when it is full the
//! connection is closed as a slow consumer instead of delaying anyone else. Its messages stay
//! in its mailbox, so the client can resume and get them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::ids::{ParticipantId, RoomId};
use crate::protocol::{CloseCode, LeaveReason, Participant, ResumeToken, ServerMessage};
use crate::store::{ParticipantEntry, StoreEvent};

/// What goes on a connection's outgoing queue, for its task to write to the socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server message.
    Text(Arc<str>),
    /// Close the connection with this code.
    Close(CloseCode),
}

/// What the hub and a session share: the connection's outgoing queue, the waker of its task,
/// and the session's fate. One allocation per connection holds all of it.
///
/// The queue is bounded: a message that finds it full closes the connection as a slow
/// consumer instead of delaying anyone else. Its buffer is released whenever the task empties
/// it, so an idle connection keeps nothing of the bursts it once had.
#[derive(Debug)]
pub struct SessionSignal {
    queue: Mutex<Queue>,
    /// Set when the connection must close although its queue is full (a slow consumer).
    killed: AtomicBool,
    /// The connection's task, woken when a message is queued or `killed` is set. One waker:
    /// only the connection's own task waits, and the future that waits is part of every idle
    /// connection's task, so it should be small.
    task: AtomicWaker,
    /// Set when the participant was taken from this session: a newer session took it over,
    /// or the application removed it (kick, room ended). The session then leaves the room
    /// state alone: it belongs to the newer session, or is gone and must stay gone (a restore
    /// would bring a kicked participant back).
    replaced: AtomicBool,
}

/// A connection's outgoing messages and their bound.
#[derive(Debug)]
struct Queue {
    messages: std::collections::VecDeque<Outbound>,
    /// How many messages it takes; 0 once the connection's task is done with it.
    capacity: usize,
}

impl SessionSignal {
    /// A connection whose queue takes up to `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Self {
        SessionSignal {
            queue: Mutex::new(Queue {
                messages: std::collections::VecDeque::new(),
                capacity: capacity.max(1),
            }),
            killed: AtomicBool::new(false),
            task: AtomicWaker::new(),
            replaced: AtomicBool::new(false),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` and wakes the connection's task. False when the queue is full (the
    /// caller decides what that means) or closed.
    pub fn push(&self, message: Outbound) -> bool {
        let queued = self.enqueue(message);
        if queued {
            self.task.wake();
        }
        queued
    }

    /// Queues a message of the connection's own task (a reply), which finds it the next time
    /// it looks; false when the queue is full or closed.
    pub fn queue_reply(&self, message: Outbound) -> bool {
        self.enqueue(message)
    }

    fn enqueue(&self, message: Outbound) -> bool {
        let mut queue = self.queue();
        if queue.messages.len() >= queue.capacity {
            return false;
        }
        queue.messages.push_back(message);
        true
    }

    /// The next queued message, if any. An emptied queue gives its buffer back.
    pub fn try_next(&self) -> Option<Outbound> {
        let mut queue = self.queue();
        let next = queue.messages.pop_front();
        if queue.messages.is_empty() && queue.messages.capacity() > 0 {
            queue.messages = std::collections::VecDeque::new();
        }
        next
    }

    /// Ends the queue once the connection's task is done with it: what is left is dropped and
    /// nothing more is taken.
    pub fn close_queue(&self) {
        let mut queue = self.queue();
        queue.capacity = 0;
        queue.messages = std::collections::VecDeque::new();
    }

    /// Marks the connection a slow consumer and wakes its task to close it.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Whether the connection was marked a slow consumer.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is marked a slow consumer. For the connection's own task
    /// only: a later waiter takes the wake from an earlier one.
    pub fn killed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_killed() {
                return Poll::Ready(());
            }
            self.task.register(cx.waker());
            // Checked again after registering, so a kill in between is not missed.
            if self.is_killed() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// The next queued message, once there is one. For the connection's own task only, like
    /// [`Self::killed`].
    pub fn next_outbound(&self) -> impl Future<Output = Outbound> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(next) = self.try_next() {
                return Poll::Ready(next);
            }
            self.task.register(cx.waker());
            // Looked at again after registering, so a message queued in between is not missed.
            match self.try_next() {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
    }

    /// Whether the participant was taken from this session (replaced or removed).
    pub fn was_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }
}

/// One connected participant.
#[derive(Debug)]
pub struct Member {
    signal: Arc<SessionSignal>,
    /// The participant as the store keeps it, with the session's current resume token; shared
    /// with the session, which keeps it to restore the entry.
    entry: Arc<ParticipantEntry>,
    /// The highest relayed `seq` put on the queue.
    delivered: u64,
    /// Live messages held back while the session starts or is recovered; `None` otherwise.
    held: Option<Vec<(u64, Arc<str>)>>,
    /// Whether the session is still starting (its `joined` not yet queued).
    starting: bool,
    /// The recovery holding this session's messages back, if any.
    recovering: Option<u64>,
}

impl Member {
    /// A starting session whose client has already seen messages up to `delivered`.
    pub fn new(entry: Arc<ParticipantEntry>, signal: Arc<SessionSignal>, delivered: u64) -> Self {
        Member {
            signal,
            entry,
            delivered,
            held: Some(Vec::new()),
            starting: true,
            recovering: None,
        }
    }

    /// Queues what was held back, unless something else still holds it.
    fn flush(&mut self) {
        if self.starting || self.recovering.is_some() {
            return;
        }
        for (seq, text) in self.held.take().unwrap_or_default() {
            self.deliver(seq, text);
        }
    }

    /// Queues a message; a full queue marks the connection a slow consumer and closes it.
    fn send(&self, message: Outbound) -> bool {
        if self.signal.push(message) {
            true
        } else {
            self.signal.kill();
            false
        }
    }

    /// Queues a relayed (`seq` > 0) or presence (`seq` 0) message, dropping duplicates.
    fn deliver(&mut self, seq: u64, text: Arc<str>) {
        if seq == 0 {
            self.send(Outbound::Text(text));
        } else if seq > self.delivered {
            self.delivered = seq;
            self.send(Outbound::Text(text));
        }
    }

    fn session(&self) -> Option<&ResumeToken> {
        self.entry.resume.as_ref()
    }

    fn hold(&mut self, generation: u64) {
        self.recovering = Some(generation);
        self.held.get_or_insert_with(Vec::new);
    }
}

/// A connected participant's state, for restoring the room state after it was lost.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub room: RoomId,
    pub entry: ParticipantEntry,
    pub delivered: u64,
}

type Rooms = HashMap<RoomId, HashMap<ParticipantId, Member>>;

#[derive(Debug, Default, Clone)]
pub struct Hub {
    rooms: Arc<Mutex<Rooms>>,
    /// The shutdown as seen by connections that have not joined: they are in no room, so
    /// [`Hub::shutdown`] cannot reach them through `rooms`.
    stop: Arc<Stop>,
}

#[derive(Debug, Default)]
struct Stop {
    stopped: AtomicBool,
    wake: Notify,
    /// Open WebSocket sessions, joined or not: the drain waits for all of them.
    sessions: AtomicUsize,
}

/// Counts one open session while it lives (see [`Hub::session_started`]).
#[derive(Debug)]
pub struct SessionGuard(Arc<Stop>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    /// The lock is never held across an await or while anything can panic, so a poisoned
    /// lock still holds consistent data.
    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a starting session. An older connection of the same participant in this process
    /// (a client resuming faster than its old connection was noticed dead) is closed.
    pub fn register(&self, room: &RoomId, member: Member) {
        let id = member.entry.id.clone();
        let mut rooms = self.rooms();
        if let Some(old) = rooms.entry(room.clone()).or_default().insert(id, member) {
            retire(&old, CloseCode::Replaced);
        }
    }

    /// Removes a session, if it is still the one registered (`session` is its resume token).
    /// Returns whether no connection of this participant is left here, in which case its
    /// channel can be unsubscribed.
    pub fn unregister(&self, room: &RoomId, id: &ParticipantId, session: &ResumeToken) -> bool {
        let mut rooms = self.rooms();
        let Some(members) = rooms.get_mut(room) else {
            return true;
        };
        match members.get(id) {
            Some(member) if member.session() == Some(session) => {
                members.remove(id);
                if members.is_empty() {
                    rooms.remove(room);
                }
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Ends a session's start: queues `missed` (a resume's replay), then what was held back,
    /// each only if newer than what the connection has.
    pub fn release(
        &self,
        room: &RoomId,
        id: &ParticipantId,
        session: &ResumeToken,
        missed: Vec<(u64, Arc<str>)>,
    ) {
        let mut rooms = self.rooms();
        let Some(member) = rooms.get_mut(room).and_then(|m| m.get_mut(id)) else {
            return;
        };
        if member.session() != Some(session) {
            return;
        }
        for (seq, text) in missed {
            member.deliver(seq, text);
        }
        member.starting = false;
        member.flush();
    }

    /// Starts recovery `generation` after the message link came back: every running session
    /// holds its live messages back until [`Hub::end_recovery`], and is returned so the
    /// caller can put it back into the room state and replay its mailbox. Must be called
    /// before any message that arrived after the link came back is handed to the hub, so that
    /// none is queued ahead of an older one still to be replayed. A newer generation takes
    /// over sessions an older one still holds; starting sessions are left to their start.
    pub fn begin_recovery(&self, generation: u64) -> Vec<Snapshot> {
        let mut rooms = self.rooms();
        let mut sessions = Vec::new();
        for (room, members) in rooms.iter_mut() {
            for member in members.values_mut() {
                if member.starting {
                    continue;
                }
                member.hold(generation);
                sessions.push(Snapshot {
                    room: room.clone(),
                    entry: ParticipantEntry::clone(&member.entry),
                    delivered: member.delivered,
                });
            }
        }
        sessions
    }

    /// Holds one session's live messages back for `generation` (to send it a `resync` that
    /// nothing newer overtakes); `false` if the session is gone, starting, or a newer
    /// recovery holds it.
    pub fn hold(&self, generation: u64, room: &RoomId, session: &ResumeToken) -> bool {
        let mut rooms = self.rooms();
        let Some(member) = rooms
            .get_mut(room)
            .and_then(|m| m.values_mut().find(|m| m.session() == Some(session)))
        else {
            return false;
        };
        if member.starting || member.recovering.is_some_and(|g| g > generation) {
            return false;
        }
        member.hold(generation);
        true
    }

    /// Ends recovery `generation` for one session: queues `missed` (its mailbox after what
    /// it had), then `resync` with the room's participants if given (its `seq` is the last
    /// relayed `seq` queued before it), then what was held back. Does nothing if the session
    /// is gone or a newer recovery holds it.
    pub fn end_recovery(
        &self,
        generation: u64,
        room: &RoomId,
        session: &ResumeToken,
        missed: Vec<(u64, Arc<str>)>,
        resync: Option<Vec<Participant>>,
    ) -> bool {
        let mut rooms = self.rooms();
        let Some(member) = rooms
            .get_mut(room)
            .and_then(|m| m.values_mut().find(|m| m.session() == Some(session)))
        else {
            return false;
        };
        if member.recovering != Some(generation) {
            return false;
        }
        for (seq, text) in missed {
            member.deliver(seq, text);
        }
        if let Some(participants) = resync {
            let message = ServerMessage::Resync {
                participants,
                seq: member.delivered,
            };
            member.deliver(0, message.to_json().into());
        }
        member.recovering = None;
        member.flush();
        true
    }

    /// Handles what the store sends this process.
    pub fn on_event(&self, event: StoreEvent) {
        match event {
            StoreEvent::Message {
                room,
                to,
                seq,
                text,
            } => {
                let mut rooms = self.rooms();
                if let Some(member) = rooms.get_mut(&room).and_then(|m| m.get_mut(&to)) {
                    match &mut member.held {
                        Some(held) => held.push((seq, text)),
                        None => member.deliver(seq, text),
                    }
                }
            }
            StoreEvent::Replaced { room, to, by } => {
                let mut rooms = self.rooms();
                let Some(members) = rooms.get_mut(&room) else {
                    return;
                };
                if members.get(&to).is_some_and(|m| m.session() != Some(&by))
                    && let Some(old) = members.remove(&to)
                {
                    retire(&old, CloseCode::Replaced);
                    if members.is_empty() {
                        rooms.remove(&room);
                    }
                }
            }
            StoreEvent::Removed { room, to, reason } => {
                let code = match reason {
                    LeaveReason::RoomDeleted => CloseCode::RoomDeleted,
                    _ => CloseCode::Kicked,
                };
                let mut rooms = self.rooms();
                let Some(members) = rooms.get_mut(&room) else {
                    return;
                };
                if let Some(old) = members.remove(&to) {
                    tracing::info!(room = %room.as_str(), participant = %to.as_str(), reason = reason.as_str(), "participant removed; closing its connection");
                    retire(&old, code);
                    if members.is_empty() {
                        rooms.remove(&room);
                    }
                }
            }
            StoreEvent::Lost | StoreEvent::Restored => {}
        }
    }

    /// Sends a message to one connection.
    pub fn send(&self, room: &RoomId, id: &ParticipantId, message: &ServerMessage) {
        if let Some(member) = self.rooms().get(room).and_then(|m| m.get(id)) {
            member.send(Outbound::Text(message.to_json().into()));
        }
    }

    /// Sends a message to this process's connections in the room (every pod watches the
    /// Room itself, so each tells its own clients).
    pub fn broadcast(&self, room: &RoomId, message: &ServerMessage) {
        if let Some(members) = self.rooms().get(room) {
            let text: Arc<str> = message.to_json().into();
            for member in members.values() {
                member.send(Outbound::Text(text.clone()));
            }
        }
    }

    /// Every running session, for restoring the room state after it was lost.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        self.rooms()
            .iter()
            .flat_map(|(room, members)| {
                members.values().map(|m| Snapshot {
                    room: room.clone(),
                    entry: ParticipantEntry::clone(&m.entry),
                    delivered: m.delivered,
                })
            })
            .collect()
    }

    /// The highest `seq` queued to a connection.
    pub fn delivered(&self, room: &RoomId, id: &ParticipantId) -> Option<u64> {
        self.rooms()
            .get(room)
            .and_then(|m| m.get(id))
            .map(|m| m.delivered)
    }

    /// Counts a WebSocket session until the guard is dropped.
    pub fn session_started(&self) -> SessionGuard {
        self.stop.sessions.fetch_add(1, Ordering::AcqRel);
        SessionGuard(self.stop.clone())
    }

    /// Open WebSocket sessions in this process, joined or not.
    pub fn sessions(&self) -> usize {
        self.stop.sessions.load(Ordering::Acquire)
    }

    /// Resolves once [`Hub::shutdown`] has been called (at once if it already was).
    pub async fn stopped(&self) {
        loop {
            let woken = self.stop.wake.notified();
            tokio::pin!(woken);
            // Registered before the check, so a shutdown between the two is not missed.
            woken.as_mut().enable();
            if self.stop.stopped.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// Graceful shutdown: tells every client to reconnect (to another pod, through the same
    /// URL) with its resume token, spread over `spread_ms` so a pod's clients do not all
    /// arrive at once, then closes with 1001. Connections that have not joined get 1001 at
    /// once, from their own session (see [`Hub::stopped`]).
    pub fn shutdown(&self, spread_ms: u64) {
        self.stop.stopped.store(true, Ordering::Release);
        self.stop.wake.notify_waiters();
        let rooms = self.rooms();
        for (i, member) in rooms.values().flat_map(|m| m.values()).enumerate() {
            if let Some(token) = member.session() {
                let retry_after_ms = Some((i as u64).wrapping_mul(7919) % spread_ms.max(1));
                let message = ServerMessage::Reconnect {
                    resume_token: token.clone(),
                    retry_after_ms,
                };
                member.send(Outbound::Text(message.to_json().into()));
            }
            member.send(Outbound::Close(CloseCode::GoingAway));
        }
    }

    /// Connections per room in this process.
    pub fn local_counts(&self) -> Vec<(RoomId, usize)> {
        self.rooms()
            .iter()
            .map(|(room, members)| (room.clone(), members.len()))
            .collect()
    }

    /// Connections in this process.
    pub fn connections(&self) -> usize {
        self.rooms().values().map(HashMap::len).sum()
    }
}

/// Closes a connection whose participant was taken from it (replaced or removed), with
/// `code`.
fn retire(member: &Member, code: CloseCode) {
    member.signal.replaced.store(true, Ordering::Release);
    member.send(Outbound::Close(code));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    fn token(s: &str) -> ResumeToken {
        ResumeToken::parse(s).unwrap()
    }

    fn member(
        id: &str,
        session: &str,
        capacity: usize,
        delivered: u64,
    ) -> (Member, Arc<SessionSignal>, Arc<SessionSignal>) {
        let entry = ParticipantEntry {
            id: ParticipantId::parse(id).unwrap(),
            user: UserId::parse("alice").unwrap(),
            name: None,
            pod: "here".into(),
            resume: Some(token(session)),
            joined_at: None,
        };
        let signal = Arc::new(SessionSignal::new(capacity));
        (
            Member::new(Arc::new(entry), signal.clone(), delivered),
            signal.clone(),
            signal,
        )
    }

    /// Takes everything queued.
    fn texts(queue: &mut Arc<SessionSignal>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = queue.try_next() {
            match m {
                Outbound::Text(t) => out.push(t.to_string()),
                Outbound::Close(code) => out.push(format!("close {}", code.code())),
            }
        }
        out
    }

    /// Proves the queue takes up to its capacity, gives its buffer back once emptied (an idle
    /// connection keeps nothing of a burst), and takes nothing once closed.
    #[test]
    fn the_queue_is_bounded_and_keeps_no_buffer_when_empty() {
        let signal = SessionSignal::new(4);
        for i in 0..4 {
            assert!(signal.push(Outbound::Text(format!("m{i}").into())));
        }
        assert!(
            !signal.push(Outbound::Text("over".into())),
            "a full queue refuses"
        );
        assert!(!signal.queue_reply(Outbound::Close(CloseCode::GoingAway)));
        assert!(signal.queue().messages.capacity() >= 4);
        let mut queue = Arc::new(signal);
        assert_eq!(texts(&mut queue), ["m0", "m1", "m2", "m3"]);
        assert_eq!(
            queue.queue().messages.capacity(),
            0,
            "the burst's buffer is freed"
        );
        assert!(queue.push(Outbound::Text("again".into())));
        queue.close_queue();
        assert!(queue.try_next().is_none(), "closing drops what is left");
        assert!(
            !queue.push(Outbound::Text("late".into())),
            "a closed queue refuses"
        );
        assert_eq!(queue.queue().messages.capacity(), 0);
    }

    fn message(room: &RoomId, to: &str, seq: u64) -> StoreEvent {
        StoreEvent::Message {
            room: room.clone(),
            to: ParticipantId::parse(to).unwrap(),
            seq,
            text: format!("m{seq}").into(),
        }
    }

    /// Live messages wait until the session is released; the replay comes first, and a
    /// message both replayed and received live is delivered once.
    #[test]
    fn release_orders_replay_before_live_and_drops_duplicates() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (m, mut rx, _) = member("p1", "rt1.a", 16, 2);
        hub.register(&room, m);
        hub.on_event(message(&room, "p1", 4));
        hub.on_event(message(&room, "p1", 5));
        assert!(texts(&mut rx).is_empty(), "held until release");
        let missed: Vec<(u64, Arc<str>)> = vec![(3, "m3".into()), (4, "m4".into())];
        hub.release(
            &room,
            &ParticipantId::parse("p1").unwrap(),
            &token("rt1.a"),
            missed,
        );
        hub.on_event(message(&room, "p1", 5));
        hub.on_event(message(&room, "p1", 6));
        assert_eq!(texts(&mut rx), ["m3", "m4", "m5", "m6"]);
    }

    /// A recovery holds live messages from the moment it begins: the mailbox replay comes
    /// first with nothing skipped, the `resync` carries the last `seq` before it, and presence
    /// that arrived while the list was being read comes after the `resync`.
    #[test]
    fn recovery_replays_before_live_and_resync_is_not_overtaken() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let p1 = ParticipantId::parse("p1").unwrap();
        let (m, mut rx, _) = member("p1", "rt1.a", 16, 0);
        hub.register(&room, m);
        hub.release(&room, &p1, &token("rt1.a"), Vec::new());
        hub.on_event(message(&room, "p1", 1));
        assert_eq!(texts(&mut rx), ["m1"]);

        let sessions = hub.begin_recovery(1);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].delivered, 1);
        // Published after the link came back, before the replay of 2 and 3.
        hub.on_event(message(&room, "p1", 4));
        assert!(texts(&mut rx).is_empty(), "held during the recovery");
        let missed: Vec<(u64, Arc<str>)> = vec![(2, "m2".into()), (3, "m3".into())];
        assert!(hub.end_recovery(1, &room, &token("rt1.a"), missed, None));
        assert_eq!(texts(&mut rx), ["m2", "m3", "m4"]);

        assert!(hub.hold(1, &room, &token("rt1.a")));
        hub.on_event(StoreEvent::Message {
            room: room.clone(),
            to: p1.clone(),
            seq: 0,
            text: "joined-late".into(),
        });
        hub.on_event(message(&room, "p1", 5));
        assert!(hub.end_recovery(1, &room, &token("rt1.a"), Vec::new(), Some(Vec::new())));
        let out = texts(&mut rx);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], r#"{"type":"resync","participants":[],"seq":4}"#);
        assert_eq!(out[1..], ["joined-late", "m5"]);
    }

    /// An older recovery cannot release what a newer one holds, and a starting session is
    /// left to its start.
    #[test]
    fn newer_recoveries_win_and_starting_sessions_are_left_alone() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let p1 = ParticipantId::parse("p1").unwrap();
        let (m, mut rx, _) = member("p1", "rt1.a", 16, 0);
        hub.register(&room, m);
        assert!(hub.begin_recovery(1).is_empty(), "still starting");
        hub.release(&room, &p1, &token("rt1.a"), Vec::new());
        assert_eq!(hub.begin_recovery(1).len(), 1);
        assert_eq!(hub.begin_recovery(2).len(), 1);
        hub.on_event(message(&room, "p1", 1));
        assert!(!hub.end_recovery(1, &room, &token("rt1.a"), Vec::new(), None));
        assert!(!hub.hold(1, &room, &token("rt1.a")));
        assert!(texts(&mut rx).is_empty());
        assert!(hub.end_recovery(2, &room, &token("rt1.a"), Vec::new(), None));
        assert_eq!(texts(&mut rx), ["m1"]);
    }

    /// A `replaced` naming another session closes this one; naming this one changes nothing.
    #[test]
    fn replaced_closes_only_other_sessions() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (m, mut rx, signal) = member("p1", "rt1.a", 16, 0);
        hub.register(&room, m);
        let p1 = ParticipantId::parse("p1").unwrap();
        hub.on_event(StoreEvent::Replaced {
            room: room.clone(),
            to: p1.clone(),
            by: token("rt1.a"),
        });
        assert!(!signal.was_replaced());
        hub.on_event(StoreEvent::Replaced {
            room: room.clone(),
            to: p1.clone(),
            by: token("rt1.b"),
        });
        assert!(signal.was_replaced());
        assert_eq!(texts(&mut rx), ["close 4001"]);
        assert_eq!(hub.connections(), 0);
    }

    /// A removal closes the connection with the reason's code and marks the session so it
    /// leaves the (already removed) room state alone.
    #[test]
    fn removed_closes_with_the_reason_code() {
        for (reason, code) in [
            (LeaveReason::Kicked, "close 4002"),
            (LeaveReason::RoomDeleted, "close 4003"),
        ] {
            let hub = Hub::default();
            let room = RoomId::parse("r").unwrap();
            let (m, mut rx, signal) = member("p1", "rt1.a", 16, 0);
            hub.register(&room, m);
            hub.on_event(StoreEvent::Removed {
                room: room.clone(),
                to: ParticipantId::parse("p1").unwrap(),
                reason,
            });
            assert!(signal.was_replaced());
            assert_eq!(texts(&mut rx), [code]);
            assert_eq!(hub.connections(), 0);
        }
    }

    /// Unregistering an old session leaves its successor (same participant) in place.
    #[test]
    fn unregister_keeps_a_newer_session() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let p1 = ParticipantId::parse("p1").unwrap();
        let (old, _old_rx, old_signal) = member("p1", "rt1.a", 16, 0);
        let (new, _new_rx, _) = member("p1", "rt1.b", 16, 0);
        hub.register(&room, old);
        hub.register(&room, new);
        assert!(old_signal.was_replaced());
        assert!(!hub.unregister(&room, &p1, &token("rt1.a")));
        assert_eq!(hub.connections(), 1);
        assert!(hub.unregister(&room, &p1, &token("rt1.b")));
        assert_eq!(hub.connections(), 0);
    }

    /// A full queue cuts the slow consumer instead of blocking the sender.
    #[test]
    fn slow_consumers_are_cut() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let p1 = ParticipantId::parse("p1").unwrap();
        let (m, _rx, signal) = member("p1", "rt1.a", 1, 0);
        hub.register(&room, m);
        hub.release(&room, &p1, &token("rt1.a"), Vec::new());
        hub.on_event(message(&room, "p1", 1));
        hub.on_event(message(&room, "p1", 2));
        assert!(signal.is_killed(), "slow consumer not cut");
    }
}

//! Ephemeral room state shared by every signaling pod: who is in which room, on which pod.
//!
//! [`RoomStore`] is the one interface the server uses; [`MemoryStore`] is the embedded
//! single-process default and [`RedisStore`] the shared one. Both pass the same
//! [`behaviour`] suite, so the server cannot tell them apart except by who else sees the state.
//! It keeps the state and carries messages between pods (see "Messages" below); it does not
//! talk to Kubernetes or know about WebSockets.
//!
//! # Semantics
//!
//! - A participant entry lives for the store's participant TTL (default
//!   [`DEFAULT_PARTICIPANT_TTL`]) after its join or last [`RoomStore::refresh`]. The server
//!   refreshes each connected participant every TTL/3, so a pod that dies simply stops
//!   refreshing and its participants vanish within one TTL, with no cleanup job anywhere.
//! - Expired entries are invisible: they are never listed, never counted toward a room's
//!   maximum and cannot be refreshed or left.
//! - [`RoomStore::join`] is atomic: the capacity check, the replacement of the same user's
//!   older session (duplicate identity, per room) and the insert happen as one step, so
//!   concurrent joins on any number of pods never overfill a room.
//! - Participant lists are ordered by participant id, so both backends return the same order.
//!
//! # Messages
//!
//! The store also carries every message a participant receives from the room, so that a
//! participant can sit on any pod and a resumed session misses nothing:
//!
//! - [`RoomStore::relay`] appends an `offer`/`answer`/`candidate` to the target's **mailbox**
//!   with the target's next sequence number (`seq`) and publishes it on the target's channel,
//!   in one atomic step. The target must be in the same room, or nothing is written.
//! - Presence (`participantJoined`/`participantLeft`) is published by the store operation that
//!   changes the room ([`RoomStore::join`], [`RoomStore::leave`], and expiry), to everyone
//!   else in the room, with `seq` 0: presence is state, not numbered, and not kept.
//! - The pod holding a participant's connection [`RoomStore::listen`]s to its channel and
//!   receives [`StoreEvent`]s from [`RoomStore::events`].
//! - [`RoomStore::resume`] moves a participant to a new connection (any pod) and returns the
//!   mailbox messages after the client's last `seq`.
//! - After the message link was down, [`RoomStore::restore`] puts a pod's connected
//!   participants back if the state was lost (marking the room as being rebuilt, see
//!   [`RoomStore::rebuilding`]), and [`RoomStore::missed`] gives what each one's mailbox got
//!   while the pod was not listening.
//!
//! An entry that expires (its pod died, or its client never came back within the TTL) is
//! announced as `participantLeft` with reason `connection_lost` by whichever operation on the
//! room notices the expiry first; the room's other participants refresh every TTL/3, so that
//! happens within 4/3 of the TTL.
//!
//! # Room facts
//!
//! For webhooks, every operation that changes a room reports what changed as [`RoomFact`]s
//! to the [`FactSink`] given to [`RoomStore::report_facts`]: `Started` when a join fills an
//! empty room, `Joined`, `Left` with its reason (`left`, `kicked`, `duplicate_identity`,
//! `room_deleted`), `ConnectionLost` for each entry a prune removes, and `Finished` when the
//! room becomes empty. On Redis each script collects them in the same atomic step and returns
//! them with its result (`"<kind> <reason> <entry JSON>"`), so exactly one caller, on one pod,
//! learns each fact; the relay script, the hot path, reports none. A resume or a restore
//! after a Redis restart is not a join and reports nothing.
//!
//! # Redis layout
//!
//! Each room has these keys. The room id sits in a hash tag, so they all live in one Redis
//! Cluster slot and one script can touch them atomically. Ids are validated by [`crate::ids`]
//! (`[A-Za-z0-9._-]`, no `:` or braces), so they cannot break out of their key.
//!
//! | key                               | type   | contents                                        |
//! |-----------------------------------|--------|-------------------------------------------------|
//! | `sb:room:{<room>}:participants`   | hash   | participant id -> entry as JSON (below)         |
//! | `sb:room:{<room>}:users`          | hash   | user id -> that user's participant id           |
//! | `sb:room:{<room>}:expiry`         | zset   | participant id, scored by its deadline (unix ms)|
//! | `sb:room:{<room>}:seq`            | hash   | participant id -> last `seq` given to it        |
//! | `sb:room:{<room>}:mailbox:<id>`   | list   | the last relayed messages, as `"<seq> <json>"`  |
//! | `sb:room:{<room>}:rebuilding`     | string | present for [`REBUILD_WINDOW`] after a restore  |
//!
//! and one pub/sub channel per participant, `sb:room:{<room>}:to:<id>`, carrying
//! `"<seq> <json>"` (seq 0 for presence), `"replaced <resume token>"` when a newer session
//! took the participant over, or `"removed kicked"` / `"removed room_deleted"` when the
//! application removed it or ended its room (the pod holding it closes it with 4002/4003). The channel shares the room's hash tag, so the scripts publish
//! with `SPUBLISH` on Redis Cluster (sharded pub/sub, no pattern subscriptions) and with
//! `PUBLISH` on a single Redis.
//!
//! One key outside any room lists the rooms for the server API: `sb:rooms`, a sorted set of
//! room ids scored by when the room may be swept: its latest participant deadline less the
//! sweep lead (unix ms, the writing pod's clock). It is an index, not the truth: written after each join, resume, restore and
//! refresh (a separate command, since on Redis Cluster it lives in another slot; `ZADD GT`,
//! Redis 6.2), with the key's own expiry two TTLs ahead. Every pod sweeps it each second
//! ([`RoomStore::sweep`]): a room whose time has come (its latest deadline is within the
//! sweep lead, [`sweep_lead`]: every participant's pod died, so no one refreshed it) is
//! pruned before Redis expires its keys, which announces and reports its expiries, and leaves
//! the index; the key vanishes a TTL after the last room. [`RoomStore::rooms`] counts each
//! listed room.
//!
//! Each pod also keeps a liveness key, `sb:pod:{<pod>}:alive`, with a short TTL that it
//! renews every second; `redis-cli --scan --pattern 'sb:pod:*'` lists the live pods.
//!
//! The entry JSON is `{"id":"p1","user":"alice","name":"Alice","pod":"signaling-7f9c",
//! "resume":"rt1.…","joinedAt":1764600000000}` (`name` is omitted when absent; `resume` is
//! the session's current resume token; `joinedAt` is the join time in unix ms).
//!
//! Every operation is one Lua script that first prunes the entries whose deadline has passed
//! (from all keys, announcing them), then does its work. Deadlines come from the Redis
//! server's clock (`TIME`), so pods with skewed clocks still agree on who has expired. After
//! each write the room keys' own expiry is set to the latest deadline in the room, and a
//! mailbox's to its participant's deadline, so every key has a TTL and an abandoned room
//! disappears from Redis by itself. Scripts call `TIME` before writing, which needs Redis 5 or
//! newer (effects replication); sharded pub/sub needs Redis 7.

pub mod behaviour;
mod memory;
mod redis;
mod relay_batch;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};
use crate::protocol::{LeaveReason, Participant, ResumeToken, ServerMessage};

pub use self::memory::MemoryStore;
pub use self::redis::{DEFAULT_TIMEOUT, PubSubMode, RedisStore};

/// How long a participant entry lives without a refresh, unless configured otherwise. It is
/// also the resume window: a dropped connection can be resumed until its entry expires.
pub const DEFAULT_PARTICIPANT_TTL: Duration = Duration::from_secs(10);

/// How many relayed messages a participant's mailbox keeps for a resume, unless configured
/// otherwise. A resume that needs older ones fails with [`ResumeRefusal::Overflowed`].
pub const DEFAULT_MAILBOX_LEN: u32 = 256;

/// How long a room counts as being rebuilt after one of its participants was put back with
/// [`RoomStore::restore`] (the state had been lost): every pod reconnects within about a
/// second of Redis coming back and puts its own participants back, so a relay to a
/// participant who is missing meanwhile waits for it instead of failing.
pub const REBUILD_WINDOW: Duration = Duration::from_secs(3);

/// Relayed messages as `(seq, text)`, oldest first.
pub type Relayed = Vec<(u64, Arc<str>)>;

/// One participant as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantEntry {
    pub id: ParticipantId,
    pub user: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    /// The signaling process holding this participant's connection, so another pod knows
    /// where to send its messages (and whom to ask to close it when it is replaced).
    pub pod: String,
    /// The session's current resume token: only its holder may resume this participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeToken>,
    /// When the participant joined, in Unix milliseconds (kept across resumes), for the
    /// server API's participant list.
    #[serde(default, rename = "joinedAt", skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<u64>,
}

impl ParticipantEntry {
    /// The participant as other clients see it (no pod, no resume token).
    pub fn public(&self) -> Participant {
        Participant {
            id: self.id.clone(),
            user: self.user.clone(),
            name: self.name.clone(),
        }
    }

    /// The `participantJoined` message announcing this participant.
    pub fn joined_message(&self) -> String {
        ServerMessage::ParticipantJoined {
            participant: self.public(),
        }
        .to_json()
    }
}

/// What the store tells the process holding participants' connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A message for a participant this process listens to: a relayed message with its `seq`,
    /// or presence with `seq` 0. `text` is the server message as sent to the client.
    Message {
        room: RoomId,
        to: ParticipantId,
        seq: u64,
        text: Arc<str>,
    },
    /// A newer session, holding resume token `by`, took this participant over (a resume
    /// elsewhere, or the same user joining again): close the connection here unless it is
    /// that session.
    Replaced {
        room: RoomId,
        to: ParticipantId,
        by: ResumeToken,
    },
    /// The participant was removed from the room by the application (`kicked`) or with its
    /// room (`room_deleted`): close its connection here with the matching close code, and
    /// leave the room state alone (it is gone already).
    Removed {
        room: RoomId,
        to: ParticipantId,
        reason: LeaveReason,
    },
    /// The link to the shared state is down; messages may be missed until it is back.
    Lost,
    /// The link is back and every channel listened to is subscribed again. Anything published
    /// while it was down was missed, and the state may have been lost with it (an empty Redis
    /// after a restart).
    Restored,
}

/// Something that happened to a room, reported once, by the one store operation that made it
/// happen (on whichever pod ran it), for webhooks. See [`RoomStore::report_facts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomFact {
    /// The room got its first participant.
    Started,
    /// The room's last participant went.
    Finished,
    /// A participant joined (not a resume).
    Joined(ParticipantEntry),
    /// A participant left: `left`, `kicked`, `duplicate_identity` or `room_deleted`.
    Left(ParticipantEntry, LeaveReason),
    /// A participant's entry expired: its connection dropped and was not resumed in time.
    ConnectionLost(ParticipantEntry),
}

/// Where a store reports [`RoomFact`]s. Called while the operation completes, so it must not
/// block: the webhook queue takes or drops each fact at once.
#[derive(Clone)]
pub struct FactSink(Arc<ReportFact>);

type ReportFact = dyn Fn(&RoomId, RoomFact) + Send + Sync;

impl FactSink {
    pub fn new(report: impl Fn(&RoomId, RoomFact) + Send + Sync + 'static) -> Self {
        FactSink(Arc::new(report))
    }

    pub fn report(&self, room: &RoomId, fact: RoomFact) {
        (self.0)(room, fact)
    }
}

impl std::fmt::Debug for FactSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FactSink")
    }
}

/// A request to move a participant to a new connection.
#[derive(Debug, Clone, Copy)]
pub struct ResumeRequest<'a> {
    /// The user the join token names; only that user's session can be resumed.
    pub user: &'a UserId,
    /// The resume token the client presents.
    pub token: &'a ResumeToken,
    /// The highest `seq` the client processed.
    pub last_seq: u64,
    /// The token the resumed session gets; the old one stops working.
    pub new_token: &'a ResumeToken,
    /// The process that now holds the connection.
    pub pod: &'a str,
}

/// A successful resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The participant, now on the new pod with the new token.
    pub entry: ParticipantEntry,
    /// Everyone in the room, the participant included.
    pub participants: Vec<ParticipantEntry>,
    /// The last `seq` given to this participant.
    pub seq: u64,
    /// The relayed messages after the client's `last_seq`, in order.
    pub missed: Vec<(u64, Arc<str>)>,
}

/// Why a session cannot be resumed. The client should join afresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefusal {
    #[error(
        "there is no session of this user in this room to resume (the resume window may have passed)"
    )]
    NoSession,
    #[error("the resume token does not belong to this user's session")]
    TokenMismatch,
    #[error("lastSeq {last_seq} is ahead of the last message sent ({seq})")]
    AheadOfServer { last_seq: u64, seq: u64 },
    #[error("messages after seq {last_seq} are no longer kept; the mailbox starts at {oldest}")]
    Overflowed { last_seq: u64, oldest: u64 },
}

/// The result of a successful [`RoomStore::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// Everyone in the room after the join, the new participant included.
    pub participants: Vec<ParticipantEntry>,
    /// The same user's older session, which the join removed. It is the whole entry, not only
    /// its id, because its `pod` is where the old connection must be closed.
    pub replaced: Option<ParticipantEntry>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The room already holds its maximum of live participants.
    #[error("room is full (at most {max} participants)")]
    RoomFull { max: u32 },
    /// The backend could not be reached or did not answer in time. Transient: the same call
    /// may succeed later.
    #[error("room store is unavailable: {0}")]
    Unavailable(#[source] ::redis::RedisError),
    /// The backend answered with an error that retrying will not fix (a script error, a key of
    /// the wrong type, a permission problem).
    #[error("room store refused the request: {0}")]
    Backend(#[source] ::redis::RedisError),
    /// A stored entry is not a valid participant (written by something else, or by an
    /// incompatible version).
    #[error("room {room} holds an entry that is not a valid participant: {source}")]
    Corrupt {
        room: RoomId,
        #[source]
        source: serde_json::Error,
    },
    /// The store was configured with values it cannot work with.
    #[error("invalid room store configuration: {0}")]
    Config(String),
    /// A resume was refused.
    #[error("cannot resume: {0}")]
    ResumeRefused(ResumeRefusal),
    /// A message handed to [`RoomStore::relay`] does not end with the `"seq":0` placeholder.
    #[error("a relayed message must end with \"seq\":0")]
    NotRelayable,
}

impl StoreError {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::RoomFull { .. } => "room_full",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Backend(_) => "backend",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Config(_) => "config",
            StoreError::ResumeRefused(_) => "resume_refused",
            StoreError::NotRelayable => "not_relayable",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Ephemeral room membership, shared by the signaling pods.
///
/// Methods return boxed futures so a store can be used as `Arc<dyn RoomStore>` and chosen at
/// start-up. Every method is a single atomic step in the backend.
pub trait RoomStore: Send + Sync {
    /// How long an entry lives without a refresh; the server refreshes every third of it.
    fn participant_ttl(&self) -> Duration;

    /// Adds `entry` to `room` if the room has fewer than `max` live participants, replacing
    /// the same user's older entry in that room (which frees its seat first).
    ///
    /// Joining again with an id that is already present updates that entry in place and
    /// reports nothing replaced. A full room gives [`StoreError::RoomFull`].
    fn join<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        max: u32,
    ) -> BoxFuture<'a, Result<JoinOutcome>>;

    /// Removes a participant; `false` if it was not there (left, replaced or expired).
    fn leave<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>>;

    /// The room's live participants, ordered by participant id.
    fn participants<'a>(&'a self, room: &'a RoomId)
    -> BoxFuture<'a, Result<Vec<ParticipantEntry>>>;

    /// Extends a participant's life by one TTL from now; `false` if it is gone, in which case
    /// the connection should be treated as no longer in the room.
    fn refresh<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>>;

    /// How many live participants the room has.
    fn count<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>>;

    /// Relays `message` to participant `to` of `room`: appends it to `to`'s mailbox with the
    /// next `seq` and publishes it to whoever listens to `to`. `message` is the server message
    /// as JSON ending with `"seq":0}` (see [`relay_prefix`]); the placeholder becomes the real
    /// number. `None` when `to` is not in the room: nothing is written or published.
    fn relay<'a>(
        &'a self,
        room: &'a RoomId,
        to: &'a ParticipantId,
        message: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Moves the user's session in `room` to a new connection, if the token matches and the
    /// mailbox still holds everything after `last_seq`. Publishes `replaced` to the old
    /// connection. Fails with [`StoreError::ResumeRefused`] otherwise, changing nothing.
    fn resume<'a>(
        &'a self,
        room: &'a RoomId,
        request: ResumeRequest<'a>,
    ) -> BoxFuture<'a, Result<Resumed>>;

    /// Puts a connected participant back after the state was lost (Redis restarted empty),
    /// with its `seq` counter at least `seq`, so numbering continues. Announces it as joined
    /// when it was missing; `true` if it was. Ignores the room's limit: the participant is
    /// already connected.
    fn restore<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        seq: u64,
    ) -> BoxFuture<'a, Result<bool>>;

    /// The relayed messages for `id` after `after` that its mailbox still holds, in order:
    /// what a connection missed while this process's message link was down.
    fn missed<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
        after: u64,
    ) -> BoxFuture<'a, Result<Relayed>>;

    /// Whether `room`'s state is being rebuilt after it was lost, so a participant missing
    /// from it may still be connected and about to be put back: `sender` (who is connected)
    /// is missing itself, or a participant was restored within [`REBUILD_WINDOW`].
    fn rebuilding<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Starts delivering `id`'s messages to [`RoomStore::events`]; returns once subscribed.
    fn listen<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<()>>;

    /// Stops delivering `id`'s messages here.
    fn unlisten<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, ()>;

    /// The events for the participants listened to; `None` after the first call.
    fn events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>>;

    /// Whether the store is usable right now: reachable, and its message link up.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// Renews this process's liveness key, `sb:pod:{<pod>}:alive`, for `ttl`.
    fn heartbeat<'a>(&'a self, pod: &'a str, ttl: Duration) -> BoxFuture<'a, Result<()>>;

    /// Removes a participant on the application's behalf: everyone else in the room gets
    /// `participantLeft` with `kicked`, and the participant's own connection, on whichever pod
    /// holds it, is told to close with 4002 ([`StoreEvent::Removed`]). Its entry, mailbox and
    /// resume token go with it, so it cannot resume. `false` if it was not in the room.
    fn kick<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>>;

    /// Ends the call: every participant gets `participantLeft` with `room_deleted` for each of
    /// the others and is told to close with 4003, and all of the room's state is removed, so
    /// nothing can be resumed. Returns how many participants were removed.
    fn end_room<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>>;

    /// Every room with live participants and how many it has, ordered by room id.
    fn rooms(&self) -> BoxFuture<'_, Result<Vec<(RoomId, u32)>>>;

    /// Prunes the rooms nobody has refreshed for most of a TTL (every participant's pod
    /// died), up to [`sweep_lead`] early, so their expiry is announced and reported even with
    /// no one left to notice. The server calls it every second.
    fn sweep(&self) -> BoxFuture<'_, Result<()>>;

    /// Reports every [`RoomFact`] to `sink` from now on: each exactly once, from the store
    /// operation that made it happen. Without a sink, facts are not collected.
    fn report_facts(&self, sink: FactSink);
}

/// The part of a relayed message before its `"seq":0}` placeholder, which the store replaces
/// with the real number. The protocol puts `seq` last in every relayed message.
pub fn relay_prefix(message: &str) -> Result<&str> {
    message
        .strip_suffix(",\"seq\":0}")
        .ok_or(StoreError::NotRelayable)
}

/// Splits a channel or mailbox payload `"<seq> <json>"`.
pub(crate) fn split_payload(payload: &str) -> Option<(u64, &str)> {
    let (seq, text) = payload.split_once(' ')?;
    Some((seq.parse().ok()?, text))
}

/// Lets a shared store (`Arc<MemoryStore>`, `Arc<dyn RoomStore>`) be passed wherever a store is
/// expected.
impl<S: RoomStore + ?Sized> RoomStore for Arc<S> {
    fn participant_ttl(&self) -> Duration {
        (**self).participant_ttl()
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        max: u32,
    ) -> BoxFuture<'a, Result<JoinOutcome>> {
        (**self).join(room, entry, max)
    }

    fn leave<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        (**self).leave(room, id)
    }

    fn participants<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Vec<ParticipantEntry>>> {
        (**self).participants(room)
    }

    fn refresh<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).refresh(room, id)
    }

    fn count<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        (**self).count(room)
    }

    fn relay<'a>(
        &'a self,
        room: &'a RoomId,
        to: &'a ParticipantId,
        message: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        (**self).relay(room, to, message)
    }

    fn resume<'a>(
        &'a self,
        room: &'a RoomId,
        request: ResumeRequest<'a>,
    ) -> BoxFuture<'a, Result<Resumed>> {
        (**self).resume(room, request)
    }

    fn restore<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        seq: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).restore(room, entry, seq)
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
        after: u64,
    ) -> BoxFuture<'a, Result<Relayed>> {
        (**self).missed(room, id, after)
    }

    fn rebuilding<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        (**self).rebuilding(room, sender)
    }

    fn listen<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<()>> {
        (**self).listen(room, id)
    }

    fn unlisten<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, ()> {
        (**self).unlisten(room, id)
    }

    fn events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>> {
        (**self).events()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        (**self).ping()
    }

    fn heartbeat<'a>(&'a self, pod: &'a str, ttl: Duration) -> BoxFuture<'a, Result<()>> {
        (**self).heartbeat(pod, ttl)
    }

    fn kick<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        (**self).kick(room, id)
    }

    fn end_room<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        (**self).end_room(room)
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<(RoomId, u32)>>> {
        (**self).rooms()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<()>> {
        (**self).sweep()
    }

    fn report_facts(&self, sink: FactSink) {
        (**self).report_facts(sink)
    }
}

/// How far ahead of its last deadline an abandoned room is swept: a third of the TTL (a live
/// participant refreshes that often, so a live room's latest deadline is always further
/// away), at most 2 s. An abandoned room's participants so lose at most that much of their
/// resume window; the sweep must run before Redis expires the room's keys, or nothing would
/// be left to report.
pub fn sweep_lead(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(2))
}

/// Checks a participant TTL both backends can honour: at least a millisecond (the Redis
/// resolution) and small enough to add to a unix-ms clock without overflow.
fn check_ttl(ttl: Duration) -> Result<Duration> {
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
    if ttl < Duration::from_millis(1) || ttl > MAX {
        return Err(StoreError::Config(format!(
            "participant TTL must be between 1 ms and 365 days, not {ttl:?}"
        )));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry JSON is the documented shape, with `name` left out when absent.
    #[test]
    fn entry_json_shape() {
        let entry = ParticipantEntry {
            id: ParticipantId::parse("p1").unwrap(),
            user: UserId::parse("alice").unwrap(),
            name: None,
            pod: "signaling-0".to_owned(),
            resume: None,
            joined_at: None,
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(json, r#"{"id":"p1","user":"alice","pod":"signaling-0"}"#);
        assert_eq!(
            serde_json::from_str::<ParticipantEntry>(&json).unwrap(),
            entry
        );
    }

    /// JSON from Redis cannot smuggle an invalid id past the id rules.
    #[test]
    fn entry_json_revalidates_ids() {
        let json = r#"{"id":"p:1","user":"alice","pod":"x"}"#;
        assert!(serde_json::from_str::<ParticipantEntry>(json).is_err());
    }

    /// TTLs outside what the backends can represent are refused up front.
    #[test]
    fn ttl_bounds() {
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(Duration::from_micros(999)).is_err());
        assert!(check_ttl(Duration::from_millis(1)).is_ok());
        assert!(check_ttl(DEFAULT_PARTICIPANT_TTL).is_ok());
        assert!(check_ttl(Duration::from_secs(400 * 24 * 3600)).is_err());
    }
}

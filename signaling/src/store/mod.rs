//! Ephemeral room state shared by every signaling pod: who is in which room, on which pod.
//!
//! [`RoomStore`] is the one interface the server uses; [`MemoryStore`] is the embedded
//! single-process default and [`RedisStore`] the shared one. Both pass the same
//! [`behaviour`] suite, so the server cannot tell them apart except by who else sees the state.
//! This module only keeps state: it does not relay messages, talk to Kubernetes or know about
//! WebSockets.
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
//! # Redis layout
//!
//! Each room has three keys. The room id sits in a hash tag, so all three live in one Redis
//! Cluster slot and one script can touch them atomically. Ids are validated by [`crate::ids`]
//! (`[A-Za-z0-9._-]`, no `:` or braces), so they cannot break out of their key.
//!
//! | key                            | type   | contents                                          |
//! |--------------------------------|--------|---------------------------------------------------|
//! | `sb:room:{<room>}:participants`| hash   | participant id -> entry as JSON (below)           |
//! | `sb:room:{<room>}:users`       | hash   | user id -> that user's participant id             |
//! | `sb:room:{<room>}:expiry`      | zset   | participant id, scored by its deadline (unix ms)  |
//!
//! The entry JSON is `{"id":"p1","user":"alice","name":"Alice","pod":"signaling-7f9c"}`
//! (`name` is omitted when absent).
//!
//! Every operation is one Lua script that first prunes the entries whose deadline has passed
//! (from all three keys), then does its work. Deadlines come from the Redis server's clock
//! (`TIME`), so pods with skewed clocks still agree on who has expired. After each write the
//! three keys' own expiry is set to the latest deadline in the room, so every key has a TTL and
//! an abandoned room disappears from Redis by itself when its last participant's TTL runs out.
//! Scripts call `TIME` before writing, which needs Redis 5 or newer (effects replication).

pub mod behaviour;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};

pub use self::memory::MemoryStore;
pub use self::redis::{DEFAULT_TIMEOUT, RedisStore};

/// How long a participant entry lives without a refresh, unless configured otherwise.
pub const DEFAULT_PARTICIPANT_TTL: Duration = Duration::from_secs(30);

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

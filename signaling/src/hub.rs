//! The rooms of this process: who is in each room and how to reach their connections.
//!
//! The hub is the one place that resolves a message's target, and it resolves it inside the
//! sender's room only: a participant of another room is as unknown as an id that never
//! existed, so no client can reach a connection outside its room (the original design let any
//! client message any connection id).
//!
//! Sending never waits. Each connection has a bounded outgoing queue; when it is full the
//! connection is closed as a slow consumer instead of delaying the sender or anyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};
use crate::protocol::{CloseCode, LeaveReason, Participant, ServerMessage};

/// What a connection's writer task receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server message.
    Text(Arc<str>),
    /// Close the connection with this code.
    Close(CloseCode),
}

/// The handle of one connected participant.
#[derive(Debug, Clone)]
pub struct Member {
    pub participant: Participant,
    tx: mpsc::Sender<Outbound>,
    /// Woken when the connection must close although its queue is full.
    pub kill: Arc<Notify>,
    /// The last `seq` given to a relayed message for this participant.
    seq: u64,
    /// Handed back in `reconnect` when this process shuts down.
    pub resume_token: Option<crate::protocol::ResumeToken>,
}

impl Member {
    pub fn new(participant: Participant, tx: mpsc::Sender<Outbound>) -> Self {
        Member {
            participant,
            tx,
            kill: Arc::new(Notify::new()),
            seq: 0,
            resume_token: None,
        }
    }

    /// Queues a message; a full queue marks the connection a slow consumer and closes it.
    fn send(&self, message: Outbound) -> bool {
        if self.tx.try_send(message).is_ok() {
            true
        } else {
            self.kill.notify_one();
            false
        }
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the room is full ({max} participants)")]
    RoomFull { max: u32 },
}

/// Why a relay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Unknown id, or a participant of another room: the same answer either way.
    #[error("no participant {0} in this room")]
    UnknownParticipant(String),
}

#[derive(Default)]
struct Room {
    members: HashMap<ParticipantId, Member>,
}

/// The outcome of a join.
#[derive(Debug)]
pub struct Joined {
    /// Everyone in the room after the join, the joiner included.
    pub participants: Vec<Participant>,
    /// The older session of the same user, already told to close.
    pub replaced: Option<ParticipantId>,
}

#[derive(Default, Clone)]
pub struct Hub {
    rooms: Arc<Mutex<HashMap<RoomId, Room>>>,
}

impl Hub {
    /// Adds a participant, replacing an older session of the same user (reason
    /// `duplicate_identity`), and tells the others. `max` counts the room after the join.
    pub fn join(
        &self,
        room: &RoomId,
        member: Member,
        max: Option<u32>,
    ) -> Result<Joined, JoinError> {
        let Ok(mut rooms) = self.rooms.lock() else {
            return Err(JoinError::RoomFull { max: 0 });
        };
        let state = rooms.entry(room.clone()).or_default();
        let user = member.participant.user.clone();
        let replaced = state
            .members
            .iter()
            .find(|(_, m)| m.participant.user == user)
            .map(|(id, _)| id.clone());
        let count_after = state.members.len() + 1 - usize::from(replaced.is_some());
        if let Some(max) = max
            && count_after > max as usize
        {
            return Err(JoinError::RoomFull { max });
        }
        if let Some(old_id) = &replaced
            && let Some(old) = state.members.remove(old_id)
        {
            old.send(Outbound::Close(CloseCode::Replaced));
            broadcast(
                state,
                None,
                &ServerMessage::ParticipantLeft {
                    id: old_id.clone(),
                    reason: LeaveReason::DuplicateIdentity,
                },
            );
        }
        let joined_msg = ServerMessage::ParticipantJoined {
            participant: member.participant.clone(),
        };
        broadcast(state, None, &joined_msg);
        let id = member.participant.id.clone();
        state.members.insert(id, member);
        let participants = state
            .members
            .values()
            .map(|m| m.participant.clone())
            .collect();
        Ok(Joined {
            participants,
            replaced,
        })
    }

    /// Removes a participant and tells the others why. Returns false if it was not there
    /// (already replaced, for instance).
    pub fn leave(&self, room: &RoomId, id: &ParticipantId, reason: LeaveReason) -> bool {
        let Ok(mut rooms) = self.rooms.lock() else {
            return false;
        };
        let Some(state) = rooms.get_mut(room) else {
            return false;
        };
        if state.members.remove(id).is_none() {
            return false;
        }
        broadcast(
            state,
            None,
            &ServerMessage::ParticipantLeft {
                id: id.clone(),
                reason,
            },
        );
        if state.members.is_empty() {
            rooms.remove(room);
        }
        true
    }

    /// Delivers a message from `from` to `to`, both in `room`. `build` gets the recipient's
    /// next `seq`, so the server, not the client, stamps sender and order.
    pub fn relay(
        &self,
        room: &RoomId,
        to: &ParticipantId,
        build: impl FnOnce(u64) -> ServerMessage,
    ) -> Result<(), RelayError> {
        let Ok(mut rooms) = self.rooms.lock() else {
            return Err(RelayError::UnknownParticipant(to.as_str().to_owned()));
        };
        let Some(target) = rooms.get_mut(room).and_then(|r| r.members.get_mut(to)) else {
            return Err(RelayError::UnknownParticipant(to.as_str().to_owned()));
        };
        target.seq += 1;
        let text: Arc<str> = build(target.seq).to_json().into();
        target.send(Outbound::Text(text));
        Ok(())
    }

    /// Sends a message to everyone in the room.
    pub fn broadcast(&self, room: &RoomId, message: &ServerMessage) {
        if let Ok(mut rooms) = self.rooms.lock()
            && let Some(state) = rooms.get_mut(room)
        {
            broadcast(state, None, message);
        }
    }

    /// Graceful shutdown: tells every client to reconnect (to another pod, through the same
    /// URL) with its resume token, spread over `spread_ms` so a pod's clients do not all
    /// arrive at once, then closes with 1001.
    pub fn shutdown(&self, spread_ms: u64) {
        if let Ok(rooms) = self.rooms.lock() {
            for (i, member) in rooms.values().flat_map(|s| s.members.values()).enumerate() {
                if let Some(token) = &member.resume_token {
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
    }

    /// Participants in a room right now.
    pub fn count(&self, room: &RoomId) -> usize {
        self.rooms
            .lock()
            .ok()
            .and_then(|r| r.get(room).map(|s| s.members.len()))
            .unwrap_or(0)
    }

    /// Participants per room in this process.
    pub fn counts(&self) -> Vec<(RoomId, usize)> {
        self.rooms
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(id, s)| (id.clone(), s.members.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connections in this process.
    pub fn connections(&self) -> usize {
        self.rooms
            .lock()
            .map(|r| r.values().map(|s| s.members.len()).sum())
            .unwrap_or(0)
    }
}

fn broadcast(state: &Room, except: Option<&ParticipantId>, message: &ServerMessage) {
    let text: Arc<str> = message.to_json().into();
    for (id, member) in &state.members {
        if Some(id) != except {
            member.send(Outbound::Text(text.clone()));
        }
    }
}

/// A participant as others see it.
pub fn participant(id: ParticipantId, user: UserId, name: Option<DisplayName>) -> Participant {
    Participant { id, user, name }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Sdp;

    fn member(id: &str, user: &str, capacity: usize) -> (Member, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        let p = participant(
            ParticipantId::parse(id).unwrap(),
            UserId::parse(user).unwrap(),
            None,
        );
        (Member::new(p, tx), rx)
    }

    fn texts(rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Outbound::Text(t) = m {
                out.push(t.to_string());
            }
        }
        out
    }

    #[test]
    fn relay_stays_inside_the_room() {
        let hub = Hub::default();
        let (a, mut arx) = member("a", "alice", 16);
        let (b, mut brx) = member("b", "bob", 16);
        let room1 = RoomId::parse("one").unwrap();
        let room2 = RoomId::parse("two").unwrap();
        hub.join(&room1, a, None).unwrap();
        hub.join(&room2, b, None).unwrap();
        let offer = |seq| ServerMessage::Offer {
            from: ParticipantId::parse("a").unwrap(),
            sdp: Sdp::parse("v=0").unwrap(),
            seq,
        };
        let err = hub
            .relay(&room1, &ParticipantId::parse("b").unwrap(), offer)
            .unwrap_err();
        assert_eq!(err, RelayError::UnknownParticipant("b".into()));
        assert!(texts(&mut brx).is_empty(), "nothing reached the other room");
        assert!(texts(&mut arx).is_empty());
    }

    #[test]
    fn duplicate_identity_replaces_the_older_session() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (old, mut old_rx) = member("p1", "alice", 16);
        let (other, mut other_rx) = member("p2", "bob", 16);
        let (new, _new_rx) = member("p3", "alice", 16);
        hub.join(&room, old, None).unwrap();
        hub.join(&room, other, None).unwrap();
        let joined = hub.join(&room, new, Some(2)).unwrap();
        assert_eq!(joined.replaced.as_ref().map(|p| p.as_str()), Some("p1"));
        assert_eq!(joined.participants.len(), 2);
        assert!(
            matches!(old_rx.try_recv(), Ok(Outbound::Text(_))),
            "old session first saw bob join"
        );
        assert!(
            std::iter::from_fn(|| old_rx.try_recv().ok())
                .any(|m| matches!(m, Outbound::Close(CloseCode::Replaced)))
        );
        let seen = texts(&mut other_rx).join("\n");
        assert!(
            seen.contains("duplicate_identity") && seen.contains("participantJoined"),
            "{seen}"
        );
    }

    #[test]
    fn full_rooms_refuse_and_slow_consumers_are_cut() {
        let hub = Hub::default();
        let room = RoomId::parse("r").unwrap();
        let (a, _arx) = member("a", "alice", 1);
        let (b, _brx) = member("b", "bob", 1);
        let kill = a.kill.clone();
        hub.join(&room, a, Some(1)).unwrap();
        assert_eq!(
            hub.join(&room, b, Some(1)).unwrap_err(),
            JoinError::RoomFull { max: 1 }
        );
        let to = ParticipantId::parse("a").unwrap();
        let offer = |seq| ServerMessage::Offer {
            from: ParticipantId::parse("x").unwrap(),
            sdp: Sdp::parse("v=0").unwrap(),
            seq,
        };
        hub.relay(&room, &to, offer).unwrap();
        hub.relay(&room, &to, offer).unwrap();
        // The second message did not fit: the connection is told to close.
        use futures::FutureExt;
        assert!(
            kill.notified().now_or_never().is_some(),
            "slow consumer not cut"
        );
    }
}

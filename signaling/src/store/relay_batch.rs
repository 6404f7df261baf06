//! Relays to Redis in batches: one script call carries every relay that is waiting, instead of
//! one call per message.
//!
//! Redis spends a fixed cost on every script call (finding the script, building its arguments,
//! the call's share of a socket read and write) on top of the commands the script runs. A pod
//! relaying thousands of messages a second has many relays waiting at any moment (one per
//! sending connection at most: a connection waits for its relay before it relays again), so one
//! task gathers whatever is waiting and sends it as one call. A relay that finds nothing
//! else waiting goes at once as a batch of one: batching never waits for company, so a quiet
//! pod's latency is what it was.
//!
//! Each message still gets the whole relay ([`super::redis`]'s `RELAY` script): the membership
//! check, its own `seq`, the mailbox and the publish, atomically with the rest of its batch.
//! Messages from one connection keep their order because that connection relays one at a time.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, Script};
use tokio::sync::{mpsc, oneshot};

use super::redis::{classify, keys, timed_out};
use super::{Result, StoreError};
use crate::ids::{ParticipantId, RoomId};

/// The most relays one script call carries. Bounds the time one call holds Redis (each
/// message is a handful of commands, so a full batch is well under a millisecond) and the
/// size of the request.
pub(super) const MAX_BATCH: usize = 256;

/// A relay waiting for the next batch.
pub(super) struct PendingRelay {
    pub(super) room: RoomId,
    pub(super) to: ParticipantId,
    /// The message up to its `"seq":0}` placeholder.
    pub(super) prefix: String,
    /// The target's new `seq`, 0 when the target is not in the room.
    pub(super) reply: oneshot::Sender<Result<u64>>,
}

/// How the batches are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grouping {
    /// Any relays together: a single Redis runs a script on any keys.
    AnyRooms,
    /// One room's relays per call: on Redis Cluster a script's keys must share a slot, and a
    /// room's keys share the room's hash tag.
    PerRoom,
}

/// What every batch call needs.
pub(super) struct Batcher<C> {
    pub(super) connection: C,
    pub(super) script: Script,
    pub(super) timeout: Duration,
    pub(super) mailbox_len: u32,
    pub(super) grouping: Grouping,
}

impl<C> Batcher<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Starts the task that gathers relays into batches; it ends when the returned sender (held
    /// by the store) is dropped and the queue is empty.
    ///
    /// The queue is unbounded, but what is in it is bounded: each connection has at most one
    /// relay waiting.
    pub(super) fn start(self) -> mpsc::UnboundedSender<PendingRelay> {
        let (sender, queue) = mpsc::unbounded_channel();
        tokio::spawn(self.run(queue));
        sender
    }

    async fn run(self, mut queue: mpsc::UnboundedReceiver<PendingRelay>) {
        let mut waiting = Vec::with_capacity(MAX_BATCH);
        // `recv_many` waits for the first relay, then takes every other one already queued.
        while queue.recv_many(&mut waiting, MAX_BATCH).await > 0 {
            let batch = std::mem::replace(&mut waiting, Vec::with_capacity(MAX_BATCH));
            let groups = match self.grouping {
                Grouping::AnyRooms => vec![batch],
                Grouping::PerRoom => by_room(batch),
            };
            for group in groups {
                // Sent from a task of its own, so the next batch is gathered (and pipelined on
                // the same connection) while this one is in Redis.
                tokio::spawn(send(
                    group,
                    self.connection.clone(),
                    self.script.clone(),
                    self.timeout,
                    self.mailbox_len,
                ));
            }
        }
    }
}

/// Splits a batch into one group per room, each in its arrival order.
fn by_room(batch: Vec<PendingRelay>) -> Vec<Vec<PendingRelay>> {
    let mut groups: Vec<Vec<PendingRelay>> = Vec::new();
    let mut group_of: HashMap<RoomId, usize> = HashMap::new();
    for relay in batch {
        match group_of.get(&relay.room) {
            Some(&index) => groups[index].push(relay),
            None => {
                group_of.insert(relay.room.clone(), groups.len());
                groups.push(vec![relay]);
            }
        }
    }
    groups
}

/// The script's keys and arguments for `batch`: each room's keys once; the mailbox length;
/// then per message where its room's keys start (less one), its target and its prefix.
fn layout(batch: &[PendingRelay], mailbox_len: u32) -> (Vec<String>, Vec<String>) {
    let mut keys_in_order = Vec::new();
    let mut args = Vec::with_capacity(1 + 3 * batch.len());
    args.push(mailbox_len.to_string());
    let mut base_of: HashMap<&RoomId, usize> = HashMap::new();
    for relay in batch {
        let base = match base_of.get(&relay.room) {
            Some(&base) => base,
            None => {
                let base = keys_in_order.len();
                keys_in_order.extend(keys(&relay.room));
                base_of.insert(&relay.room, base);
                base
            }
        };
        args.push(base.to_string());
        args.push(relay.to.as_str().to_owned());
        args.push(relay.prefix.clone());
    }
    (keys_in_order, args)
}

/// Runs one batch, bounded by the timeout, and answers each of its relays.
async fn send<C: ConnectionLike + Send + Sync>(
    batch: Vec<PendingRelay>,
    mut connection: C,
    script: Script,
    timeout: Duration,
    mailbox_len: u32,
) {
    let (batch_keys, args) = layout(&batch, mailbox_len);
    let mut call = script.prepare_invoke();
    for key in batch_keys {
        call.key(key);
    }
    for arg in args {
        call.arg(arg);
    }
    let outcome =
        tokio::time::timeout(timeout, call.invoke_async::<Vec<u64>>(&mut connection)).await;
    let count = batch.len();
    for (index, relay) in batch.into_iter().enumerate() {
        let answer = match &outcome {
            Ok(Ok(seqs)) if seqs.len() == count => Ok(seqs[index]),
            Ok(Ok(seqs)) => Err(StoreError::Backend(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "the relay script answered a different number of messages than it was sent",
                format!("{} answers for {count} messages", seqs.len()),
            )))),
            Ok(Err(error)) => Err(classify(error.clone())),
            Err(_) => Err(timed_out(timeout)),
        };
        // The relay's connection may have closed meanwhile; its answer has nowhere to go.
        let _ = relay.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(room: &str, to: &str) -> PendingRelay {
        let (reply, _answer) = oneshot::channel();
        PendingRelay {
            room: RoomId::parse(room).unwrap(),
            to: ParticipantId::parse(to).unwrap(),
            prefix: format!("{{\"type\":\"offer\",\"to\":\"{to}\""),
            reply,
        }
    }

    #[test]
    fn per_room_groups_keep_each_rooms_order() {
        let batch = vec![
            pending("a", "p1"),
            pending("b", "p2"),
            pending("a", "p3"),
            pending("c", "p4"),
            pending("b", "p5"),
        ];
        let groups: Vec<Vec<(String, String)>> = by_room(batch)
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|r| (r.room.as_str().to_owned(), r.to.as_str().to_owned()))
                    .collect()
            })
            .collect();
        let pair = |room: &str, to: &str| (room.to_owned(), to.to_owned());
        assert_eq!(
            groups,
            vec![
                vec![pair("a", "p1"), pair("a", "p3")],
                vec![pair("b", "p2"), pair("b", "p5")],
                vec![pair("c", "p4")],
            ]
        );
    }

    #[test]
    fn each_rooms_keys_are_passed_once_and_messages_point_at_them() {
        let batch = vec![pending("a", "p1"), pending("b", "p2"), pending("a", "p3")];
        let (batch_keys, args) = layout(&batch, 64);
        let room = |id: &str| keys(&RoomId::parse(id).unwrap()).to_vec();
        assert_eq!(batch_keys, [room("a"), room("b")].concat());
        let prefix = |to: &str| format!("{{\"type\":\"offer\",\"to\":\"{to}\"");
        assert_eq!(
            args,
            vec![
                "64".to_owned(),
                "0".to_owned(),
                "p1".to_owned(),
                prefix("p1"),
                "4".to_owned(),
                "p2".to_owned(),
                prefix("p2"),
                "0".to_owned(),
                "p3".to_owned(),
                prefix("p3"),
            ]
        );
    }
}

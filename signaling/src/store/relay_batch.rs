//! Relays on a single Redis, gathered into batched script calls.
//!
//! A script call costs Redis about 3 µs before it does anything, and each request its reading
//! and reply besides, against about 8 µs for one relay's own commands ("Redis time per relay
//! call" in `docs/benchmarks.md`). So a pod keeps at most one relay call out at a time: relays
//! asked for while it is out wait, and the next call carries all of them, up to [`MAX_BATCH`]
//! messages or about [`MAX_BATCH_BYTES`]. A quiet pod's relay goes out at once, alone; a busy
//! pod's relays share calls in proportion to its load, and wait for the call out before theirs
//! (for more than one only when more than a call's worth queue up meanwhile). (Two calls out were measured too: batches at 10,000 relays/s were smaller and
//! cost the server and Redis about 6 and 5 µs more per message, for no better median latency.)
//!
//! Order is kept: the calls go out one after the other, and a call relays its messages in the
//! order they were asked for. A session waits for each relay before its next, so one sender's
//! messages to one target keep their order whether they share a call or not.
//!
//! A message that fails in Redis (a room key of the wrong type) fails alone: the script answers
//! its error in its place and goes on, and only its caller gets the error.
//!
//! Only for a single Redis: one call can touch many rooms' keys there. In Redis Cluster a call
//! is bound to one slot, and one slow shard must not hold back every other room's relays, so
//! the cluster store sends each relay as its own call.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::redis::keys;
use super::{Result, StoreError};
use crate::ids::{ParticipantId, RoomId};

/// The most messages one call carries.
pub(super) const MAX_BATCH: usize = 64;
/// Messages are taken into a call until their text reaches this much (a call takes at least one).
pub(super) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One relay waiting for its call.
struct Job {
    room: RoomId,
    to: ParticipantId,
    /// The message up to its `"seq":0}` placeholder.
    prefix: String,
    seq: oneshot::Sender<Result<u64>>,
}

/// The handle the store keeps; the calls go out from a task of their own, which ends when
/// this is dropped.
#[derive(Debug)]
pub(super) struct RelayBatcher {
    jobs: mpsc::UnboundedSender<Job>,
    timeout: Duration,
}

impl RelayBatcher {
    /// Starts the task that sends the relay calls on `connection`. Must run inside a Tokio
    /// runtime.
    pub(super) fn start<C>(
        connection: C,
        script: Script,
        mailbox_len: u32,
        timeout: Duration,
    ) -> Self
    where
        C: ConnectionLike + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_calls(connection, script, mailbox_len, timeout, queue));
        RelayBatcher { jobs, timeout }
    }

    /// Relays `prefix` to `to` in `room` with the next call; the target's new seq, or 0 when
    /// it is not in the room. Bounded by the timeout, the wait for the call included.
    pub(super) async fn relay(
        &self,
        room: &RoomId,
        to: &ParticipantId,
        prefix: &str,
    ) -> Result<u64> {
        let (seq, answer) = oneshot::channel();
        let job = Job {
            room: room.clone(),
            to: to.clone(),
            prefix: prefix.to_owned(),
            seq,
        };
        if self.jobs.send(job).is_err() {
            return Err(unavailable("the relay task has stopped".to_owned()));
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(unavailable("the relay task has stopped".to_owned())),
            Err(_) => Err(unavailable(format!(
                "no answer from Redis within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Sends one call at a time, each with everything queued when it goes out, until the store is
/// dropped.
async fn send_calls<C>(
    mut connection: C,
    script: Script,
    mailbox_len: u32,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Job>,
) where
    C: ConnectionLike + Send,
{
    let mailbox_len = mailbox_len.to_string();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        gather(first, &mut queue, &mut batch);
        if batch.is_empty() {
            continue;
        }
        let mut invocation = script.prepare_invoke();
        invocation.arg(&mailbox_len);
        for job in &batch {
            for key in keys(&job.room) {
                invocation.key(key);
            }
            invocation.arg(job.to.as_str()).arg(&job.prefix);
        }
        let call = invocation.invoke_async::<Vec<Value>>(&mut connection);
        let outcome = super::redis::bounded(timeout, call).await;
        answer(&mut batch, outcome);
    }
}

/// Fills `batch` with `first` and the jobs queued behind it, up to [`MAX_BATCH`] messages or
/// [`MAX_BATCH_BYTES`], leaving out those whose caller has stopped waiting. A caller that timed
/// out (Redis slow, a call ahead of it out for the whole timeout) has told its client the
/// message was not delivered, so it is not sent later after all.
fn gather(first: Job, queue: &mut mpsc::UnboundedReceiver<Job>, batch: &mut Vec<Job>) {
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        if !job.seq.is_closed() {
            bytes += job.prefix.len();
            batch.push(job);
        }
        if batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            next = queue.try_recv().ok();
        }
    }
}

/// Hands each job of a call its answer, or each the call's error. Empties `batch`.
fn answer(batch: &mut Vec<Job>, outcome: Result<Vec<Value>>) {
    match outcome {
        Ok(answers) if answers.len() == batch.len() => {
            for (job, answer) in batch.drain(..).zip(answers) {
                let _ = job.seq.send(seq_of(answer));
            }
        }
        Ok(answers) => {
            let why = format!(
                "the relay script answered {} times for {} messages",
                answers.len(),
                batch.len()
            );
            tracing::error!(%why, "relay call answered wrongly");
            for job in batch.drain(..) {
                let error = redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "relay call answered wrongly",
                    why.clone(),
                ));
                let _ = job.seq.send(Err(StoreError::Backend(error)));
            }
        }
        Err(error) => {
            for job in batch.drain(..) {
                let _ = job.seq.send(Err(same_error(&error)));
            }
        }
    }
}

/// One message's answer from the relay script: its seq (0: the target is not in the room), or
/// the error Redis gave for that message alone.
pub(super) fn seq_of(answer: Value) -> Result<u64> {
    match answer {
        Value::Int(seq) => u64::try_from(seq).map_err(|_| {
            StoreError::Backend(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "relay script answered a negative seq",
                seq.to_string(),
            )))
        }),
        Value::BulkString(text) => Err(StoreError::Backend(redis::RedisError::from((
            redis::ErrorKind::Client,
            "Redis refused to relay the message",
            String::from_utf8_lossy(&text).into_owned(),
        )))),
        other => Err(StoreError::Backend(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "relay script answered neither a seq nor an error",
            format!("{other:?}"),
        )))),
    }
}

/// The call's error, for each of its jobs.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(e) => StoreError::Unavailable(e.clone()),
        StoreError::Backend(e) => StoreError::Backend(e.clone()),
        // `bounded` gives nothing else; a relay call's failure is the backend's all the same.
        other => StoreError::Backend(redis::RedisError::from((
            redis::ErrorKind::Client,
            "relay call failed",
            other.to_string(),
        ))),
    }
}

fn unavailable(why: String) -> StoreError {
    StoreError::Unavailable(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        why,
    )))
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn job(to: &str, bytes: usize) -> (Job, oneshot::Receiver<Result<u64>>) {
        let (seq, answer) = oneshot::channel();
        let job = Job {
            room: RoomId::parse("r1").unwrap(),
            to: ParticipantId::parse(to).unwrap(),
            prefix: "x".repeat(bytes),
            seq,
        };
        (job, answer)
    }

    fn targets(batch: &[Job]) -> Vec<&str> {
        batch.iter().map(|job| job.to.as_str()).collect()
    }

    #[test]
    fn a_call_takes_what_is_queued_in_order_but_not_what_nobody_waits_for() {
        let (tx, mut queue) = mpsc::unbounded_channel();
        let (first, _first_answer) = job("p1", 10);
        let mut waiting = Vec::new();
        for (i, to) in ["p2", "p3", "p4", "p5"].into_iter().enumerate() {
            let (queued, answer) = job(to, 10);
            tx.send(queued).unwrap();
            // p3's caller timed out: its answer is dropped.
            if i != 1 {
                waiting.push(answer);
            }
        }
        let mut batch = Vec::new();
        gather(first, &mut queue, &mut batch);
        assert_eq!(targets(&batch), ["p1", "p2", "p4", "p5"]);
        assert!(queue.try_recv().is_err(), "everything queued was taken");

        // A call whose every caller gave up is not made.
        let (gone, answer) = job("p6", 10);
        drop(answer);
        let mut batch = Vec::new();
        gather(gone, &mut queue, &mut batch);
        assert!(batch.is_empty());
    }

    #[test]
    fn each_caller_gets_its_own_answer_or_the_whole_call_s_failure() {
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for to in ["p1", "p2", "p3"] {
            let (queued, answer) = job(to, 1);
            batch.push(queued);
            answers.push(answer);
        }
        let refused = Value::BulkString(b"WRONGTYPE Operation against a key".to_vec());
        answer(&mut batch, Ok(vec![Value::Int(7), Value::Int(0), refused]));
        let got: Vec<_> = answers.iter_mut().map(|a| a.try_recv().unwrap()).collect();
        assert_eq!(got[0].as_ref().unwrap(), &7);
        assert_eq!(got[1].as_ref().unwrap(), &0, "0: not in the room");
        let error = got[2].as_ref().unwrap_err();
        assert!(matches!(error, StoreError::Backend(_)), "{error}");
        assert!(error.to_string().contains("WRONGTYPE"), "{error}");

        // Too few answers: nobody can tell which is whose, so every caller gets an error.
        let (queued, mut one) = job("p1", 1);
        let (queued2, mut two) = job("p2", 1);
        let mut batch = vec![queued, queued2];
        answer(&mut batch, Ok(vec![Value::Int(1)]));
        for answer in [&mut one, &mut two] {
            assert!(matches!(
                answer.try_recv().unwrap(),
                Err(StoreError::Backend(_))
            ));
        }
        // The call failed: each caller gets the failure, as unavailable as it was.
        let (queued, mut one) = job("p1", 1);
        let mut batch = vec![queued];
        let down = StoreError::Unavailable(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        answer(&mut batch, Err(down));
        assert!(matches!(
            one.try_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        assert!(batch.is_empty());
    }

    #[test]
    fn a_call_stops_at_its_message_or_byte_limit() {
        let (tx, mut queue) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for n in 0..MAX_BATCH + 5 {
            let (queued, answer) = job(&format!("p{n}"), 1);
            tx.send(queued).unwrap();
            answers.push(answer);
        }
        let (first, _answer) = job("first", 1);
        let mut batch = Vec::new();
        gather(first, &mut queue, &mut batch);
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[1].to.as_str(), "p0", "the queue's order is kept");

        let mut batch = Vec::new();
        let (big, _big_answer) = job("big", MAX_BATCH_BYTES);
        gather(big, &mut queue, &mut batch);
        assert_eq!(
            targets(&batch),
            ["big"],
            "a call takes at least one message"
        );
    }
}

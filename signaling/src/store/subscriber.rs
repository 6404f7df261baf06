//! The receiving half of the Redis message link: one pub/sub connection per process,
//! subscribed to the channel of every participant whose connection this process holds.
//!
//! A single task owns the connection. It turns each channel message into a
//! [`StoreEvent`] at once (the push queue is unbounded and drained continuously, so Redis never
//! sees a slow subscriber and cuts it off), reconnects with backoff when the connection drops,
//! subscribes to every channel again, and then reports [`StoreEvent::Restored`] so the server
//! can tell clients what they may have missed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, PushInfo, PushKind, RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreEvent, split_payload};
use crate::ids::{ParticipantId, RoomId};
use crate::protocol::{LeaveReason, ResumeToken};

/// Subscriptions sent per SUBSCRIBE when re-subscribing after a reconnect.
const RESUBSCRIBE_BATCH: usize = 512;
/// The most commands taken off the queue for one round of `SUBSCRIBE`/`UNSUBSCRIBE`.
const COMMAND_BATCH: usize = 512;
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the link is checked with a PING. A subscribed connection is otherwise silent, so
/// a cut network (no reset, packets dropped) would not be noticed until the kernel gives up
/// on the socket, minutes later; the PING, bounded by the timeout, notices it within seconds.
const LINK_CHECK: Duration = Duration::from_secs(1);

enum Command {
    Listen(String, oneshot::Sender<redis::RedisResult<()>>),
    Unlisten(String, oneshot::Sender<()>),
}

/// The handle the store uses; the connection lives in a background task.
#[derive(Debug)]
pub(super) struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
    link_up: Arc<AtomicBool>,
    timeout: Duration,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Listen(channel, _) => write!(f, "Listen({channel})"),
            Command::Unlisten(channel, _) => write!(f, "Unlisten({channel})"),
        }
    }
}

impl Subscriber {
    /// Starts the task. `client` must speak RESP3 (pub/sub messages arrive as pushes).
    pub(super) fn start(
        client: redis::Client,
        events: mpsc::UnboundedSender<StoreEvent>,
        timeout: Duration,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let link_up = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(client, rx, events, link_up.clone(), timeout));
        Subscriber {
            commands,
            link_up,
            timeout,
        }
    }

    /// Starts the task for Redis Cluster: `connection` is a RESP3 cluster connection whose
    /// push messages arrive on `pushes`. It subscribes with `SSUBSCRIBE` on the shard that
    /// owns each channel's slot, and re-subscribes by itself when shards move or reconnect.
    pub(super) fn start_cluster(
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        events: mpsc::UnboundedSender<StoreEvent>,
        timeout: Duration,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let link_up = Arc::new(AtomicBool::new(true));
        tokio::spawn(run_cluster(connection, rx, pushes, events));
        Subscriber {
            commands,
            link_up,
            timeout,
        }
    }

    /// Whether the subscriber connection is up.
    pub(super) fn is_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    /// Subscribes to `channel`; returns once Redis confirmed it. Fails at once while the link
    /// is down, rather than leaving a join waiting for a reconnect.
    pub(super) async fn listen(&self, channel: String) -> Result<(), StoreError> {
        if !self.is_up() {
            return Err(unavailable("the Redis message link is down"));
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Listen(channel, reply))
            .map_err(|_| unavailable("the Redis message link has stopped"))?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(StoreError::Unavailable(error)),
            Ok(Err(_)) => Err(unavailable("the Redis message link was reset")),
            Err(_) => Err(unavailable(
                "no subscription confirmation from Redis in time",
            )),
        }
    }

    /// Unsubscribes from `channel` (and forgets it for re-subscription); returns once Redis
    /// confirmed it, or after the timeout.
    pub(super) async fn unlisten(&self, channel: String) {
        let (done, confirmed) = oneshot::channel();
        if self.commands.send(Command::Unlisten(channel, done)).is_ok() {
            let _ = tokio::time::timeout(self.timeout, confirmed).await;
        }
    }
}

/// The answer to a listen that cannot be sent because the link is down.
fn link_down() -> RedisError {
    RedisError::from(io::Error::from(io::ErrorKind::NotConnected))
}

fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(RedisError::from(io::Error::new(
        io::ErrorKind::NotConnected,
        why.to_owned(),
    )))
}

async fn run(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<StoreEvent>,
    link_up: Arc<AtomicBool>,
    timeout: Duration,
) {
    let mut channels: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let config = AsyncConnectionConfig::new()
            .set_push_sender(push_tx)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match connect(&client, &config, &channels).await {
            Ok(mut connection) => {
                link_up.store(true, Ordering::Release);
                if first {
                    tracing::info!("Redis message link up");
                } else {
                    tracing::info!(
                        channels = channels.len(),
                        "Redis message link restored; subscriptions renewed"
                    );
                    let _ = events.send(StoreEvent::Restored);
                }
                first = false;
                backoff = Duration::from_millis(100);
                let stop = serve(
                    &mut connection,
                    &mut commands,
                    &mut pushes,
                    &events,
                    &mut channels,
                    timeout,
                )
                .await;
                link_up.store(false, Ordering::Release);
                if stop {
                    return;
                }
                tracing::warn!("Redis message link lost; reconnecting");
                let _ = events.send(StoreEvent::Lost);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot connect the Redis message link");
            }
        }
        // Commands that arrived while down: listens fail (their callers were already told
        // the link is down), unlistens just drop the channel.
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Listen(_, reply) => {
                    let _ = reply.send(Err(link_down()));
                }
                Command::Unlisten(channel, done) => {
                    channels.remove(&channel);
                    let _ = done.send(());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
    channels: &HashSet<String>,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut connection = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let all: Vec<&String> = channels.iter().collect();
    for batch in all.chunks(RESUBSCRIBE_BATCH) {
        connection.subscribe(batch).await?;
    }
    Ok(connection)
}

/// Serves one connection until it fails (`false`) or the store is dropped (`true`).
async fn serve(
    connection: &mut MultiplexedConnection,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    events: &mpsc::UnboundedSender<StoreEvent>,
    channels: &mut HashSet<String>,
    timeout: Duration,
) -> bool {
    let mut check = tokio::time::interval(LINK_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Messages first: draining them keeps Redis's output buffer for us small.
            biased;
            push = pushes.recv() => {
                let Some(push) = push else { return false };
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(event) = decode(push.data) {
                            let _ = events.send(event);
                        }
                    }
                    PushKind::Disconnection => return false,
                    _ => {}
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return true };
                if !apply(connection, take_batch(command, commands), channels).await {
                    return false;
                }
            }
            _ = check.tick() => {
                let command = redis::cmd("PING");
                let ping = command.query_async::<Value>(connection);
                match tokio::time::timeout(timeout, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "Redis message link check failed");
                        return false;
                    }
                    Err(_) => {
                        tracing::warn!(?timeout, "Redis message link check not answered in time");
                        return false;
                    }
                }
            }
        }
    }
}

/// Takes the first command and everything else already queued (at most [`COMMAND_BATCH`]):
/// while one `SUBSCRIBE` is out, the joins of that moment queue up, and the next one carries
/// them all.
fn take_batch(first: Command, commands: &mut mpsc::UnboundedReceiver<Command>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(command) = next.take() {
        taken += 1;
        match (command, runs.last_mut()) {
            (Command::Listen(channel, reply), Some(Run::Listen(run))) => run.push((channel, reply)),
            (Command::Listen(channel, reply), _) => runs.push(Run::Listen(vec![(channel, reply)])),
            (Command::Unlisten(channel, done), Some(Run::Unlisten(run))) => {
                run.push((channel, done))
            }
            (Command::Unlisten(channel, done), _) => {
                runs.push(Run::Unlisten(vec![(channel, done)]))
            }
        }
        if taken < COMMAND_BATCH {
            next = commands.try_recv().ok();
        }
    }
    runs
}

/// Consecutive commands of one kind, sent together; runs keep their order, so a channel's
/// listen and unlisten reach Redis in the order they were asked for.
enum Run {
    Listen(Vec<(String, oneshot::Sender<redis::RedisResult<()>>)>),
    Unlisten(Vec<(String, oneshot::Sender<()>)>),
}

/// Sends `runs` in order, each run of listens as one `SUBSCRIBE` and each run of unlistens as
/// one `UNSUBSCRIBE`, and answers every caller. False when Redis refused one, which means the
/// link is no longer usable; the runs after it are then answered as while the link is down.
async fn apply(
    connection: &mut MultiplexedConnection,
    runs: Vec<Run>,
    channels: &mut HashSet<String>,
) -> bool {
    let mut runs = runs.into_iter();
    let up = send_runs(connection, &mut runs, channels).await;
    if !up {
        for run in runs {
            match run {
                Run::Listen(run) => {
                    for (_, reply) in run {
                        let _ = reply.send(Err(link_down()));
                    }
                }
                Run::Unlisten(run) => {
                    for (channel, done) in run {
                        channels.remove(&channel);
                        let _ = done.send(());
                    }
                }
            }
        }
    }
    up
}

/// The sending part of [`apply`]: stops at the first refusal, leaving the rest in `runs`.
async fn send_runs(
    connection: &mut MultiplexedConnection,
    runs: &mut std::vec::IntoIter<Run>,
    channels: &mut HashSet<String>,
) -> bool {
    for run in runs.by_ref() {
        match run {
            Run::Listen(mut run) => {
                // A caller that gave up (its timeout passed) no longer needs the channel.
                run.retain(|(_, reply)| !reply.is_closed());
                if run.is_empty() {
                    continue;
                }
                let names: Vec<&str> = run.iter().map(|(channel, _)| channel.as_str()).collect();
                let result = connection.subscribe(&names).await;
                let failed = result.is_err();
                for (channel, reply) in run {
                    if !failed {
                        channels.insert(channel);
                    }
                    let _ = reply.send(result.clone());
                }
                if failed {
                    return false;
                }
            }
            Run::Unlisten(run) => {
                for (channel, _) in &run {
                    channels.remove(channel);
                }
                let names: Vec<&str> = run.iter().map(|(channel, _)| channel.as_str()).collect();
                let failed = connection.unsubscribe(&names).await.is_err();
                for (_, done) in run {
                    let _ = done.send(());
                }
                if failed {
                    return false;
                }
            }
        }
    }
    true
}

/// [`apply`] for Redis Cluster: a sharded `SSUBSCRIBE` takes channels of one slot only, so each
/// run is split by room (a room's channels share its hash tag), and the rooms' commands go
/// out together. A refusal goes to its callers; the cluster client reconnects by itself.
async fn apply_cluster(connection: &ClusterConnection, runs: Vec<Run>) {
    for run in runs {
        match run {
            Run::Listen(mut run) => {
                run.retain(|(_, reply)| !reply.is_closed());
                let rooms = by_room(run);
                let results = send_by_room(connection, &rooms, true).await;
                for (room, result) in rooms.into_iter().zip(results) {
                    for (_, reply) in room {
                        let _ = reply.send(result.clone());
                    }
                }
            }
            Run::Unlisten(run) => {
                let rooms = by_room(run);
                let results = send_by_room(connection, &rooms, false).await;
                for (room, result) in rooms.into_iter().zip(results) {
                    if let Err(error) = result {
                        tracing::debug!(%error, channels = room.len(), "cannot unsubscribe");
                    }
                    for (_, done) in room {
                        let _ = done.send(());
                    }
                }
            }
        }
    }
}

/// One `SSUBSCRIBE` (or `SUNSUBSCRIBE`) per room of `rooms`, all in flight at once; their
/// results in the same order.
async fn send_by_room<T>(
    connection: &ClusterConnection,
    rooms: &[Vec<(String, T)>],
    subscribe: bool,
) -> Vec<redis::RedisResult<()>> {
    let sent = rooms.iter().map(|room| {
        let mut connection = connection.clone();
        let names: Vec<&str> = room.iter().map(|(channel, _)| channel.as_str()).collect();
        async move {
            if subscribe {
                connection.ssubscribe(&names).await
            } else {
                connection.sunsubscribe(&names).await
            }
        }
    });
    futures::future::join_all(sent).await
}

/// Groups `(channel, caller)` pairs by the channel's hash tag (its room), keeping their order
/// within a room.
fn by_room<T>(items: Vec<(String, T)>) -> Vec<Vec<(String, T)>> {
    let mut rooms: Vec<Vec<(String, T)>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (channel, caller) in items {
        let tag = channel
            .split_once('}')
            .map_or(channel.as_str(), |(tag, _)| tag);
        match index.get(tag) {
            Some(&i) => rooms[i].push((channel, caller)),
            None => {
                index.insert(tag.to_owned(), rooms.len());
                rooms.push(vec![(channel, caller)]);
            }
        }
    }
    rooms
}

async fn run_cluster(
    connection: ClusterConnection,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    events: mpsc::UnboundedSender<StoreEvent>,
) {
    loop {
        tokio::select! {
            biased;
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if matches!(push.kind, PushKind::Message | PushKind::SMessage)
                    && let Some(event) = decode(push.data)
                {
                    let _ = events.send(event);
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                apply_cluster(&connection, take_batch(command, &mut commands)).await;
            }
        }
    }
}

/// A participant's channel name.
pub(super) fn channel(room: &RoomId, id: &ParticipantId) -> String {
    format!("sb:room:{{{}}}:to:{}", room.as_str(), id.as_str())
}

/// The room and participant a channel belongs to.
fn parse_channel(channel: &str) -> Option<(RoomId, ParticipantId)> {
    let rest = channel.strip_prefix("sb:room:{")?;
    let (room, id) = rest.split_once("}:to:")?;
    Some((RoomId::parse(room).ok()?, ParticipantId::parse(id).ok()?))
}

/// Turns a pushed `[channel, payload]` into an event; anything else is ignored with a log.
fn decode(data: Vec<Value>) -> Option<StoreEvent> {
    let mut data = data.into_iter();
    let channel = String::from_redis_value(data.next()?).ok()?;
    let payload = String::from_redis_value(data.next()?).ok()?;
    let Some((room, to)) = parse_channel(&channel) else {
        tracing::warn!(%channel, "message on an unknown channel");
        return None;
    };
    if let Some(by) = payload.strip_prefix("replaced ") {
        let by = ResumeToken::parse(by).ok()?;
        return Some(StoreEvent::Replaced { room, to, by });
    }
    if let Some(reason) = payload.strip_prefix("removed ") {
        let reason = match reason {
            "kicked" => LeaveReason::Kicked,
            "room_deleted" => LeaveReason::RoomDeleted,
            _ => {
                tracing::warn!(%channel, "unknown removal reason");
                return None;
            }
        };
        return Some(StoreEvent::Removed { room, to, reason });
    }
    let Some((seq, text)) = split_payload(&payload) else {
        tracing::warn!(%channel, "malformed message payload");
        return None;
    };
    Some(StoreEvent::Message {
        room,
        to,
        seq,
        text: text.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_grouped_by_room_in_order() {
        let ch = |room: &str, id: &str| {
            channel(
                &RoomId::parse(room).unwrap(),
                &ParticipantId::parse(id).unwrap(),
            )
        };
        let items = vec![
            (ch("a", "p-1"), 1),
            (ch("b", "p-2"), 2),
            (ch("a", "p-3"), 3),
            (ch("ab", "p-4"), 4),
            (ch("b", "p-5"), 5),
        ];
        let callers: Vec<Vec<i32>> = by_room(items)
            .into_iter()
            .map(|room| room.into_iter().map(|(_, caller)| caller).collect())
            .collect();
        assert_eq!(callers, [vec![1, 3], vec![2, 5], vec![4]]);
    }

    #[test]
    fn channels_round_trip_and_carry_the_room_tag() {
        let room = RoomId::parse("Stand-up_1.a").unwrap();
        let id = ParticipantId::parse("p-1f").unwrap();
        let name = channel(&room, &id);
        assert_eq!(name, "sb:room:{Stand-up_1.a}:to:p-1f");
        assert_eq!(parse_channel(&name), Some((room, id)));
        assert_eq!(parse_channel("sb:room:{a}:participants"), None);
    }

    #[test]
    fn payloads_decode_into_events() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let event = decode(vec![
            bulk("sb:room:{r}:to:p1"),
            bulk(r#"7 {"type":"offer","seq":7}"#),
        ]);
        assert_eq!(
            event,
            Some(StoreEvent::Message {
                room: RoomId::parse("r").unwrap(),
                to: ParticipantId::parse("p1").unwrap(),
                seq: 7,
                text: r#"{"type":"offer","seq":7}"#.into(),
            })
        );
        let replaced = decode(vec![bulk("sb:room:{r}:to:p1"), bulk("replaced rt1.abc")]);
        assert!(matches!(replaced, Some(StoreEvent::Replaced { .. })));
        let kicked = decode(vec![bulk("sb:room:{r}:to:p1"), bulk("removed kicked")]);
        assert!(matches!(
            kicked,
            Some(StoreEvent::Removed {
                reason: LeaveReason::Kicked,
                ..
            })
        ));
        let ended = decode(vec![
            bulk("sb:room:{r}:to:p1"),
            bulk("removed room_deleted"),
        ]);
        assert!(matches!(
            ended,
            Some(StoreEvent::Removed {
                reason: LeaveReason::RoomDeleted,
                ..
            })
        ));
        assert_eq!(
            decode(vec![bulk("sb:room:{r}:to:p1"), bulk("removed nothing")]),
            None
        );
        assert_eq!(
            decode(vec![bulk("sb:room:{r}:to:p1"), bulk("garbage")]),
            None
        );
    }
}

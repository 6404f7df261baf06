//! [`RedisStore`]: room state in Redis, shared by every signaling pod. The key layout is
//! documented on the [`store`](super) module.
//!
//! Each operation is one Lua script, so it is atomic across pods, and is bounded by a timeout:
//! when Redis is down a call fails with [`StoreError::Unavailable`] after at most that long,
//! never hangs, and the connection is re-established in the background by
//! [`ConnectionManager`]. Messages for this process's participants arrive on a separate
//! pub/sub connection ([`super::subscriber`]). This module holds no room state of its own:
//! beyond the connections, only when it last wrote each room to the room index.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    ErrorKind, FromRedisValue, IntoConnectionInfo, ProtocolVersion, RedisError, Script,
    ServerErrorKind,
};
use tokio::sync::mpsc;

use super::relay_batch::{self, RelayBatcher};
use super::subscriber::{Subscriber, channel};
use super::{
    DEFAULT_MAILBOX_LEN, FactSink, JoinOutcome, ParticipantEntry, Result, ResumeRefusal,
    ResumeRequest, Resumed, RoomFact, RoomStore, StoreError, StoreEvent, check_ttl, relay_prefix,
    split_payload, sweep_lead,
};
use crate::ids::{ParticipantId, RoomId};
use crate::protocol::LeaveReason;

/// How many rooms the record of recent index writes holds, at least, before rooms not indexed
/// within a third of a TTL are dropped from it.
const INDEXED_ROOMS_BEFORE_CLEANUP: usize = 4096;

/// How long one operation may take, connecting included, before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Room state in Redis.
///
/// Generic over the connection so a cluster connection can be used in place of the default
/// auto-reconnecting [`ConnectionManager`]: every script touches one room's keys only, which
/// share a hash slot.
#[derive(Debug)]
pub struct RedisStore<C = ConnectionManager> {
    connection: C,
    scripts: Scripts,
    ttl: Duration,
    timeout: Duration,
    mailbox_len: u32,
    /// Absent when built from a bare connection (state only, no message link).
    subscriber: Option<Subscriber>,
    events: Mutex<Option<mpsc::UnboundedReceiver<StoreEvent>>>,
    /// Where room facts go (webhooks), once someone asked for them.
    facts: OnceLock<FactSink>,
    /// When this process last wrote each room to the room index (see [`Self::index_room`]).
    indexed: Mutex<RecentIndexWrites>,
    /// Whether relays share calls ([`RelayBatcher`]): only when [`RedisStore::connect`] made
    /// the connection, to a single Redis. A call may touch many rooms' keys, which a cluster
    /// refuses, and `from_connection` cannot tell what it was given.
    batch_relays: bool,
    /// Started with the first relay, when relays share calls.
    relays: OnceLock<RelayBatcher>,
}

/// When this process last wrote each room to the room index.
#[derive(Debug)]
struct RecentIndexWrites {
    at: HashMap<RoomId, Instant>,
    /// The size at which rooms not indexed lately are dropped: twice what was left after the
    /// last cleanup, so the cleanups' cost stays in proportion to the writes.
    cleanup_at: usize,
}

/// Which publish command the scripts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubMode {
    /// `PUBLISH`/`SUBSCRIBE`, for a single Redis (and Sentinel-managed primaries).
    Classic,
    /// `SPUBLISH`/`SSUBSCRIBE` (sharded pub/sub), for Redis Cluster.
    Sharded,
}

impl RedisStore<ConnectionManager> {
    /// Connects to `url` (`redis://host:port/db`), with entries living `ttl` without a refresh
    /// and the [`DEFAULT_TIMEOUT`] per operation.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self> {
        Self::connect_with_timeout(url, ttl, DEFAULT_TIMEOUT).await
    }

    /// Like [`RedisStore::connect`], with `timeout` bounding each operation and the first
    /// connection.
    pub async fn connect_with_timeout(url: &str, ttl: Duration, timeout: Duration) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Config(format!("Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnect attempts back off, but never wait more than a second between them, so
            // service resumes within about a second of Redis coming back.
            .set_max_delay(Duration::from_secs(1));
        let connect = ConnectionManager::new_with_config(client, config);
        let connection = bounded(timeout, connect).await?;
        let mut store = Self::from_connection(connection, ttl, timeout)?;
        store.batch_relays = true;
        // Pub/sub messages arrive as RESP3 pushes on a connection of their own.
        let info = url
            .into_connection_info()
            .map_err(|e| StoreError::Config(format!("Redis URL: {e}")))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let pubsub_client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| StoreError::Config(format!("Redis URL: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        store.subscriber = Some(Subscriber::start(pubsub_client, tx, timeout));
        store.events = Mutex::new(Some(rx));
        // Wait (bounded) for the message link, so the first joins do not fail.
        let deadline = tokio::time::Instant::now() + timeout;
        while !store.subscriber.as_ref().is_some_and(Subscriber::is_up)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(store)
    }
}

impl RedisStore<ClusterConnection> {
    /// Connects to a Redis Cluster through any of `nodes` (`redis://host:port`). The scripts
    /// publish with `SPUBLISH` and the pod subscribes with `SSUBSCRIBE`: every room's keys and
    /// channels share the room's hash slot, so each operation runs on one shard.
    pub async fn connect_cluster(
        nodes: &[String],
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let config = |e: RedisError| StoreError::Config(format!("Redis Cluster: {e}"));
        let client = ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(config)?;
        let connection = bounded(timeout, client.get_async_connection()).await?;
        let mut store = Self::from_connection(connection, ttl, timeout)?;
        store.scripts = Scripts::new(PubSubMode::Sharded);
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let pubsub_client = ClusterClientBuilder::new(nodes.to_vec())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(push_tx)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(config)?;
        let pubsub = bounded(timeout, pubsub_client.get_async_connection()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        store.subscriber = Some(Subscriber::start_cluster(pubsub, pushes, tx, timeout));
        store.events = Mutex::new(Some(rx));
        Ok(store)
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Wraps an existing connection. `timeout` bounds each operation. Each relay is a call of
    /// its own here (the connection may be a cluster's); [`RedisStore::connect`]'s relays
    /// share calls.
    pub fn from_connection(connection: C, ttl: Duration, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(StoreError::Config(
                "Redis timeout must not be zero".to_owned(),
            ));
        }
        Ok(RedisStore {
            connection,
            scripts: Scripts::new(PubSubMode::Classic),
            ttl: check_ttl(ttl)?,
            timeout,
            mailbox_len: DEFAULT_MAILBOX_LEN,
            subscriber: None,
            events: Mutex::new(None),
            facts: OnceLock::new(),
            indexed: Mutex::new(RecentIndexWrites {
                at: HashMap::new(),
                cleanup_at: INDEXED_ROOMS_BEFORE_CLEANUP,
            }),
            batch_relays: false,
            relays: OnceLock::new(),
        })
    }

    /// Keeps `len` relayed messages per participant for resumes instead of the default.
    pub fn with_mailbox_len(mut self, len: u32) -> Result<Self> {
        if len == 0 {
            return Err(StoreError::Config(
                "mailbox length must be at least 1".into(),
            ));
        }
        self.mailbox_len = len;
        Ok(self)
    }

    /// Runs a script that reports room facts ([`WRAP_END`]) on `room`'s keys, bounded by the
    /// timeout; reports the facts and returns the script's own result.
    async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        room: &RoomId,
        args: &[&str],
    ) -> Result<T> {
        Ok(self.run_noting_start(script, room, args).await?.0)
    }

    /// Like [`Self::run`], and also says whether the script started the room (a join into an
    /// empty room).
    async fn run_noting_start<T: FromRedisValue>(
        &self,
        script: &Script,
        room: &RoomId,
        args: &[&str],
    ) -> Result<(T, bool)> {
        let (facts, result): (Vec<String>, T) = self.run_plain(script, room, args).await?;
        let mut started = false;
        for text in &facts {
            match parse_fact(text) {
                Some(fact) => {
                    started |= matches!(fact, RoomFact::Started);
                    if let Some(sink) = self.facts.get() {
                        sink.report(room, fact);
                    }
                }
                None => {
                    tracing::warn!(room = %room.as_str(), fact = %text, "a room fact from Redis cannot be read")
                }
            }
        }
        Ok((result, started))
    }

    /// Runs `script` on `room`'s keys, bounded by the timeout.
    async fn run_plain<T: FromRedisValue>(
        &self,
        script: &Script,
        room: &RoomId,
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys(room) {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        // The connection is a cheap handle to a shared multiplexed connection.
        let mut connection = self.connection.clone();
        bounded(self.timeout, invocation.invoke_async(&mut connection)).await
    }

    /// Notes in the `sb:rooms` index that `room` has a participant until one TTL from now,
    /// unless this process did so less than a third of a TTL ago and the room did not just
    /// start. Best effort: the index only serves listings and the sweep, and a room missing
    /// from it still works.
    ///
    /// Why skipping is safe: a room this process indexed within a third of a TTL keeps its
    /// index entry (the entry outlives two TTLs) and its score is at most a third of a TTL
    /// early, which only makes the sweep look at it sooner (the sweep checks the room's real
    /// deadlines before it prunes, and keeps a room that still has participants). A sweep
    /// drops a room from the index only if its score did not change, so a room that went
    /// empty and started again must write; it always does, though a sweep can only empty a
    /// room two thirds of a TTL after its last write anyway, later than the skip window.
    async fn index_room_unless_recent(&self, room: &RoomId, started: bool) {
        let now = Instant::now();
        let recently = self.ttl / 3;
        {
            let mut indexed = self.indexed.lock().unwrap_or_else(PoisonError::into_inner);
            let last = indexed.at.get(room);
            if !started && last.is_some_and(|at| now.duration_since(*at) < recently) {
                return;
            }
            // Forget rooms not indexed for a while, so the map holds only active rooms.
            if indexed.at.len() >= indexed.cleanup_at {
                indexed
                    .at
                    .retain(|_, at| now.duration_since(*at) < recently);
                indexed.cleanup_at = (indexed.at.len() * 2).max(INDEXED_ROOMS_BEFORE_CLEANUP);
            }
            indexed.at.insert(room.clone(), now);
        }
        if !self.index_room(room).await {
            // Not written after all: the next join or refresh tries again.
            let mut indexed = self.indexed.lock().unwrap_or_else(PoisonError::into_inner);
            indexed.at.remove(room);
        }
    }

    /// Writes `room`'s index entry now (see [`Self::index_room_unless_recent`]); false if it
    /// could not.
    async fn index_room(&self, room: &RoomId) -> bool {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let lead = u64::try_from(sweep_lead(self.ttl).as_millis()).unwrap_or(0);
        // Scored by when a sweep may look at it: the deadline less the sweep lead.
        let sweep_at = unix_ms().saturating_add(ttl - lead).to_string();
        let mut index = self.scripts.index.prepare_invoke();
        index
            .key(ROOM_INDEX)
            .arg(room.as_str())
            .arg(&sweep_at)
            .arg(ttl.saturating_mul(2).to_string());
        let mut connection = self.connection.clone();
        let indexed: Result<i64> = bounded(self.timeout, index.invoke_async(&mut connection)).await;
        if let Err(error) = &indexed {
            tracing::debug!(%error, room = %room.as_str(), "cannot index the room");
        }
        indexed.is_ok()
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }
}

/// The index of rooms for the server API (see the layout on the module).
const ROOM_INDEX: &str = "sb:rooms";

/// Now, in unix milliseconds (this pod's clock: the index only needs it roughly).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A room's keys in the order the scripts expect them: participants, users, expiry, seq.
/// Mailboxes and channels are derived from the first in the scripts.
pub(super) fn keys(room: &RoomId) -> [String; 4] {
    let room = room.as_str();
    [
        format!("sb:room:{{{room}}}:participants"),
        format!("sb:room:{{{room}}}:users"),
        format!("sb:room:{{{room}}}:expiry"),
        format!("sb:room:{{{room}}}:seq"),
    ]
}

fn corrupt(room: &RoomId, source: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        room: room.clone(),
        source,
    }
}

/// Awaits a Redis call for at most `timeout`, sorting its failure into a [`StoreError`].
pub(super) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(error)),
        Err(_) => Err(StoreError::Unavailable(RedisError::from(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from Redis within {timeout:?}"),
        )))),
    }
}

/// Transient failures (connection, timeout, a server that is loading or failing over) are
/// [`StoreError::Unavailable`]; the rest will not go away by retrying.
fn classify(error: RedisError) -> StoreError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if transient {
        StoreError::Unavailable(error)
    } else {
        StoreError::Backend(error)
    }
}

/// Decodes entries as stored, in participant id order.
fn decode(room: &RoomId, values: Vec<String>) -> Result<Vec<ParticipantEntry>> {
    let mut entries = values
        .iter()
        .map(|json| serde_json::from_str::<ParticipantEntry>(json))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| StoreError::Corrupt {
            room: room.clone(),
            source,
        })?;
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(entries)
}

impl<C> RoomStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn participant_ttl(&self) -> Duration {
        self.ttl
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        max: u32,
    ) -> BoxFuture<'a, Result<JoinOutcome>> {
        Box::pin(async move {
            // Cannot fail for a struct of strings; mapped rather than unwrapped all the same.
            let json = serde_json::to_string(&entry).map_err(|e| corrupt(room, e))?;
            let max_arg = max.to_string();
            let announcement = entry.joined_message();
            let args = [
                entry.id.as_str(),
                entry.user.as_str(),
                json.as_str(),
                max_arg.as_str(),
                &self.ttl_ms(),
                announcement.as_str(),
                entry.resume.as_ref().map_or("", |t| t.as_str()),
            ];
            let ((status, replaced, participants), started): ((String, String, Vec<String>), bool) =
                self.run_noting_start(&self.scripts.join, room, &args)
                    .await?;
            if status != "ok" {
                return Err(StoreError::RoomFull { max });
            }
            self.index_room_unless_recent(room, started).await;
            let replaced = if replaced.is_empty() {
                None
            } else {
                decode(room, vec![replaced])?.pop()
            };
            Ok(JoinOutcome {
                participants: decode(room, participants)?,
                replaced,
            })
        })
    }

    fn leave<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.run(&self.scripts.leave, room, &[id.as_str()]).await })
    }

    fn participants<'a>(
        &'a self,
        room: &'a RoomId,
    ) -> BoxFuture<'a, Result<Vec<ParticipantEntry>>> {
        Box::pin(async move {
            let values = self.run(&self.scripts.participants, room, &[]).await?;
            decode(room, values)
        })
    }

    fn refresh<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let args = [id.as_str(), &self.ttl_ms()];
            let alive: bool = self.run(&self.scripts.refresh, room, &args).await?;
            if alive {
                self.index_room_unless_recent(room, false).await;
            }
            Ok(alive)
        })
    }

    fn count<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move { self.run(&self.scripts.count, room, &[]).await })
    }

    fn relay<'a>(
        &'a self,
        room: &'a RoomId,
        to: &'a ParticipantId,
        message: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let prefix = relay_prefix(message)?;
            let seq = if self.batch_relays {
                let relays = self.relays.get_or_init(|| {
                    let script = self.scripts.relay.clone();
                    let connection = self.connection.clone();
                    RelayBatcher::start(connection, script, self.mailbox_len, self.timeout)
                });
                relays.relay(room, to, prefix).await?
            } else {
                // The relay script of one message: mailbox length, then target and message.
                let len = self.mailbox_len.to_string();
                let answers: Vec<redis::Value> = self
                    .run_plain(&self.scripts.relay, room, &[&len, to.as_str(), prefix])
                    .await?;
                match <[redis::Value; 1]>::try_from(answers) {
                    Ok([answer]) => relay_batch::seq_of(answer)?,
                    Err(answers) => {
                        return Err(StoreError::Backend(RedisError::from((
                            ErrorKind::UnexpectedReturnType,
                            "relay call answered wrongly",
                            format!("{} answers for one message", answers.len()),
                        ))));
                    }
                }
            };
            Ok((seq > 0).then_some(seq))
        })
    }

    fn resume<'a>(
        &'a self,
        room: &'a RoomId,
        request: ResumeRequest<'a>,
    ) -> BoxFuture<'a, Result<Resumed>> {
        Box::pin(async move {
            let last_seq = request.last_seq.to_string();
            let args = [
                request.user.as_str(),
                request.token.as_str(),
                last_seq.as_str(),
                request.new_token.as_str(),
                request.pod,
                &self.ttl_ms(),
            ];
            let reply: Vec<redis::Value> = self.run(&self.scripts.resume, room, &args).await?;
            let resumed = decode_resume(room, request.last_seq, reply)?;
            self.index_room(room).await;
            Ok(resumed)
        })
    }

    fn restore<'a>(
        &'a self,
        room: &'a RoomId,
        entry: ParticipantEntry,
        seq: u64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let json = serde_json::to_string(&entry).map_err(|e| corrupt(room, e))?;
            let seq = seq.to_string();
            let announcement = entry.joined_message();
            let window = super::REBUILD_WINDOW.as_millis().to_string();
            let args = [
                entry.id.as_str(),
                entry.user.as_str(),
                json.as_str(),
                &self.ttl_ms(),
                seq.as_str(),
                announcement.as_str(),
                window.as_str(),
            ];
            let restored: bool = self.run(&self.scripts.restore, room, &args).await?;
            if restored {
                self.index_room(room).await;
            }
            Ok(restored)
        })
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomId,
        id: &'a ParticipantId,
        after: u64,
    ) -> BoxFuture<'a, Result<super::Relayed>> {
        Box::pin(async move {
            let after = after.to_string();
            let items: Vec<String> = self
                .run(&self.scripts.missed, room, &[id.as_str(), after.as_str()])
                .await?;
            Ok(items
                .iter()
                .filter_map(|item| split_payload(item).map(|(seq, text)| (seq, Arc::from(text))))
                .collect())
        })
    }

    fn rebuilding<'a>(
        &'a self,
        room: &'a RoomId,
        sender: &'a ParticipantId,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.run(&self.scripts.rebuilding, room, &[sender.as_str()])
                .await
        })
    }

    fn listen<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match &self.subscriber {
                Some(subscriber) => subscriber.listen(channel(room, id)).await,
                None => Err(StoreError::Config(
                    "this Redis store has no message link".into(),
                )),
            }
        })
    }

    fn unlisten<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(subscriber) = &self.subscriber {
                subscriber.unlisten(channel(room, id)).await;
            }
        })
    }

    fn events(&self) -> Option<mpsc::UnboundedReceiver<StoreEvent>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: String = bounded(
                self.timeout,
                redis::cmd("PING").query_async(&mut connection),
            )
            .await?;
            match &self.subscriber {
                Some(subscriber) if !subscriber.is_up() => {
                    Err(StoreError::Unavailable(RedisError::from(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the Redis message link is down",
                    ))))
                }
                _ => Ok(()),
            }
        })
    }

    fn heartbeat<'a>(&'a self, pod: &'a str, ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let key = format!("sb:pod:{{{pod}}}:alive");
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(ms).arg("PX").arg(ms);
            bounded(self.timeout, set.exec_async(&mut connection)).await
        })
    }

    fn kick<'a>(&'a self, room: &'a RoomId, id: &'a ParticipantId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.run(&self.scripts.kick, room, &[id.as_str()]).await })
    }

    fn end_room<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move {
            let removed = self.run(&self.scripts.end, room, &[]).await?;
            let mut connection = self.connection.clone();
            let mut unindex = redis::cmd("ZREM");
            unindex.arg(ROOM_INDEX).arg(room.as_str());
            if let Err(error) = bounded(self.timeout, unindex.exec_async(&mut connection)).await {
                tracing::debug!(%error, room = %room.as_str(), "cannot drop the room from the index");
            }
            Ok(removed)
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Vec<(RoomId, u32)>>> {
        Box::pin(self.list_rooms())
    }

    fn sweep(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.sweep_rooms())
    }

    fn report_facts(&self, sink: FactSink) {
        if self.facts.set(sink).is_err() {
            tracing::warn!("room facts already go elsewhere; the new sink is ignored");
        }
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn list_rooms(&self) -> Result<Vec<(RoomId, u32)>> {
        let mut connection = self.connection.clone();
        let mut range = redis::cmd("ZRANGE");
        range.arg(ROOM_INDEX).arg(0).arg(-1);
        let indexed: Vec<String> =
            bounded(self.timeout, range.query_async(&mut connection)).await?;
        let mut rooms = Vec::new();
        for name in indexed {
            let Ok(room) = RoomId::parse(&name) else {
                tracing::warn!(room = %name, "the room index holds an invalid room id");
                continue;
            };
            // The index may still name a room everyone has left; the count is the truth.
            let count = self.count(&room).await?;
            if count > 0 {
                rooms.push((room, count));
            }
        }
        rooms.sort();
        Ok(rooms)
    }

    /// Prunes each indexed room whose latest deadline is within the sweep lead (no one
    /// refreshed it for most of a TTL: its pods died), before Redis expires its keys, which
    /// announces and reports the expiries; then drops it from the index unless a join
    /// re-scored it meanwhile. Any pod may do it; the prune is atomic, so each expiry is
    /// reported once.
    async fn sweep_rooms(&self) -> Result<()> {
        let lead = u64::try_from(sweep_lead(self.ttl).as_millis()).unwrap_or(0);
        let mut connection = self.connection.clone();
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range
            .arg(ROOM_INDEX)
            .arg("-inf")
            .arg(unix_ms())
            .arg("WITHSCORES");
        let due: Vec<(String, String)> =
            bounded(self.timeout, range.query_async(&mut connection)).await?;
        let lead = lead.to_string();
        for (name, score) in due {
            if let Ok(room) = RoomId::parse(&name) {
                let left: u32 = self.run(&self.scripts.sweep, &room, &[&lead]).await?;
                if left > 0 {
                    continue;
                }
            }
            let mut unindex = self.scripts.unindex.prepare_invoke();
            unindex.key(ROOM_INDEX).arg(&name).arg(&score);
            let _: i64 = bounded(self.timeout, unindex.invoke_async(&mut connection)).await?;
        }
        Ok(())
    }
}

/// Reads a fact a script reported: `"<kind> <reason> <entry JSON>"`.
fn parse_fact(text: &str) -> Option<RoomFact> {
    let mut parts = text.splitn(3, ' ');
    let (kind, reason, json) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    let entry = || serde_json::from_str::<ParticipantEntry>(json).ok();
    Some(match kind {
        "started" => RoomFact::Started,
        "finished" => RoomFact::Finished,
        "joined" => RoomFact::Joined(entry()?),
        "lost" => RoomFact::ConnectionLost(entry()?),
        "left" => {
            let reason = match reason {
                "left" => LeaveReason::Left,
                "kicked" => LeaveReason::Kicked,
                "duplicate_identity" => LeaveReason::DuplicateIdentity,
                "room_deleted" => LeaveReason::RoomDeleted,
                _ => return None,
            };
            RoomFact::Left(entry()?, reason)
        }
        _ => return None,
    })
}

/// Reads the resume script's reply: `{'ok', entry, seq, entries, missed}` or a refusal.
fn decode_resume(room: &RoomId, last_seq: u64, reply: Vec<redis::Value>) -> Result<Resumed> {
    let mut parts = reply.into_iter();
    let text = |value: Option<redis::Value>| -> Result<String> {
        let value = value.unwrap_or(redis::Value::Nil);
        String::from_redis_value(value).map_err(|e| StoreError::Backend(e.into()))
    };
    let status = text(parts.next())?;
    let refuse = |why| Err(StoreError::ResumeRefused(why));
    match status.as_str() {
        "ok" => {}
        "no_session" => return refuse(ResumeRefusal::NoSession),
        "token_mismatch" => return refuse(ResumeRefusal::TokenMismatch),
        "ahead" => {
            let seq = text(parts.next())?.parse().unwrap_or(0);
            return refuse(ResumeRefusal::AheadOfServer { last_seq, seq });
        }
        "overflowed" => {
            let oldest = text(parts.next())?.parse().unwrap_or(0);
            return refuse(ResumeRefusal::Overflowed { last_seq, oldest });
        }
        other => {
            return Err(StoreError::Backend(RedisError::from((
                ErrorKind::Client,
                "unexpected resume reply",
                other.to_owned(),
            ))));
        }
    }
    let entry: ParticipantEntry =
        serde_json::from_str(&text(parts.next())?).map_err(|e| corrupt(room, e))?;
    let seq = text(parts.next())?.parse().unwrap_or(0);
    let list = |value: Option<redis::Value>| -> Result<Vec<String>> {
        Vec::<String>::from_redis_value(value.unwrap_or(redis::Value::Nil))
            .map_err(|e| StoreError::Backend(e.into()))
    };
    let participants = decode(room, list(parts.next())?)?;
    let missed = list(parts.next())?
        .iter()
        .filter_map(|item| split_payload(item).map(|(seq, text)| (seq, Arc::from(text))))
        .collect();
    Ok(Resumed {
        entry,
        participants,
        seq,
        missed,
    })
}

/// The scripts, each the shared [`PRELUDE`] followed by its own body. `Script` sends the
/// SHA1 first and the source only when Redis does not know it (after a restart, say).
#[derive(Debug)]
struct Scripts {
    join: Script,
    leave: Script,
    participants: Script,
    refresh: Script,
    count: Script,
    relay: Script,
    resume: Script,
    restore: Script,
    missed: Script,
    rebuilding: Script,
    kick: Script,
    end: Script,
    /// Adds a room's deadline to the `sb:rooms` index.
    index: Script,
    /// Drops a room from the index if its score is still the one read.
    unindex: Script,
    sweep: Script,
}

impl Scripts {
    fn new(mode: PubSubMode) -> Self {
        let publish = match mode {
            PubSubMode::Classic => "PUBLISH",
            PubSubMode::Sharded => "SPUBLISH",
        };
        // Every script but the relay reports room facts: its body runs as a function, and
        // WRAP_END adds `started`/`finished` and returns {facts, result}.
        let reporting = |body: &str, starts: bool| {
            Script::new(&format!(
                "local PUBLISH = '{publish}'\nlocal STARTS = {starts}\n\
                 local BEFORE = redis.call('HLEN', KEYS[1])\n{EXPIRE_KEYS}\n{PRELUDE}\n\
                 local function body()\n{body}\nend\n{WRAP_END}"
            ))
        };
        let script = |body: &str| reporting(body, false);
        Scripts {
            join: reporting(JOIN, true),
            leave: script(LEAVE),
            participants: script(PARTICIPANTS),
            refresh: script(REFRESH),
            count: script(COUNT),
            relay: Script::new(&format!(
                "local PUBLISH = '{publish}'\n{EXPIRE_KEYS}\n{RELAY}"
            )),
            resume: script(RESUME),
            restore: script(RESTORE),
            missed: script(MISSED),
            rebuilding: script(REBUILDING),
            kick: script(KICK),
            end: script(END),
            index: Script::new(INDEX),
            unindex: Script::new(UNINDEX),
            sweep: script(SWEEP),
        }
    }
}

/// Makes the room's keys expire with its latest deadline, so an abandoned room leaves nothing
/// behind. Called after every write that adds or removes a deadline or creates a key. Every
/// script has it, the relay included (which does without the rest of the [`PRELUDE`]). The
/// room's four keys are `KEYS[base + 1]` to `KEYS[base + 4]`: the relay passes one room's keys
/// per message; every other script passes one room's, and no `base`.
const EXPIRE_KEYS: &str = r#"
local function expire_keys(now, base)
  base = base or 0
  local last = redis.call('ZRANGE', KEYS[base + 3], -1, -1, 'WITHSCORES')
  if last[2] then
    -- As text once: Redis would format a Lua number for every call.
    local ms = tostring(math.max(1, math.floor(tonumber(last[2]) - now)))
    for i = 1, 4 do
      redis.call('PEXPIRE', KEYS[base + i], ms)
    end
  end
end
"#;

/// Helpers every script starts with. KEYS are always the room's participants hash, users
/// hash, expiry sorted set and seq hash, in that order; a participant's mailbox and channel
/// are named from the same prefix, so every key a script touches is in the room's slot.
/// `PUBLISH` is defined before this: `PUBLISH` or `SPUBLISH`.
const PRELUDE: &str = r#"
local ROOM = string.sub(KEYS[1], 1, #KEYS[1] - #':participants')

-- Room facts for webhooks, as '<kind> <reason> <entry JSON>', returned with the result.
local FACTS = {}
-- The room's size after the prune, and how many facts the prune reported.
local AFTER_PRUNE = false
local PRUNE_END = 0
-- The room's size at the end, when the body knows it (saves WRAP_END an HLEN).
local AFTER = false

local function fact(kind, reason, json)
  table.insert(FACTS, kind .. ' ' .. reason .. ' ' .. json)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function mailbox(id)
  return ROOM .. ':mailbox:' .. id
end

local function publish(id, payload)
  redis.call(PUBLISH, ROOM .. ':to:' .. id, payload)
end

-- Presence goes to everyone in the room but `except`, with seq 0, and is not kept.
local function announce(text, except)
  local payload = '0 ' .. text
  for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
    if id ~= except then
      publish(id, payload)
    end
  end
end

-- The same JSON as the server's participantLeft (ids never need escaping).
local function left(id, reason)
  return '{"type":"participantLeft","id":"' .. id .. '","reason":"' .. reason .. '"}'
end

-- Removes a participant from every key (its user's pointer only if it still points to it: a
-- newer session of the same user keeps its own) and returns its JSON, or false.
local function forget(id)
  local json = redis.call('HGET', KEYS[1], id)
  if json then
    local ok, entry = pcall(cjson.decode, json)
    if ok and type(entry) == 'table' and type(entry.user) == 'string'
        and redis.call('HGET', KEYS[2], entry.user) == id then
      redis.call('HDEL', KEYS[2], entry.user)
    end
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('DEL', mailbox(id))
  return json
end

-- Drops every participant whose deadline is not after now and tells the rest of the room.
-- A room emptied this way has empty keys, which Redis deletes.
local function prune(now)
  local gone = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    local json = forget(id)
    if json then
      table.insert(gone, id)
      fact('lost', '-', json)
    end
  end
  for _, id in ipairs(gone) do
    announce(left(id, 'connection_lost'))
  end
  -- Every id in `gone` had its entry removed, and nothing else was.
  AFTER_PRUNE = BEFORE - #gone
  PRUNE_END = #FACTS
end


local function seq_of(item)
  return tonumber(string.match(item, '^(%d+) '))
end
"#;

/// ARGV: participant id, user id, entry JSON, max, TTL in ms, participantJoined JSON, the new
/// session's resume token (or '').
/// Returns {'ok', replaced JSON or '', all entries} or {'full', '', {}}.
const JOIN: &str = r#"
local now = now_ms()
prune(now)
local id, user, max = ARGV[1], ARGV[2], tonumber(ARGV[4])
local previous = redis.call('HGET', KEYS[2], user)
if previous == id then
  previous = false
end
-- The entry being rewritten and the session being replaced both give their seat to this one.
local taken = AFTER_PRUNE
local rejoin = redis.call('HEXISTS', KEYS[1], id) == 1
if rejoin then
  taken = taken - 1
end
if previous and redis.call('HEXISTS', KEYS[1], previous) == 1 then
  taken = taken - 1
end
if taken >= max then
  return {'full', '', {}}
end
local replaced = ''
if previous then
  replaced = forget(previous) or ''
  if replaced ~= '' then
    fact('left', 'duplicate_identity', replaced)
    if ARGV[7] ~= '' then
      publish(previous, 'replaced ' .. ARGV[7])
    end
    announce(left(previous, 'duplicate_identity'))
  end
end
-- A new id has nothing to forget (every write of an id's keys goes with its entry).
if not (rejoin and forget(id)) then
  announce(ARGV[6])
  fact('joined', '-', ARGV[3])
end
redis.call('HSET', KEYS[1], id, ARGV[3])
redis.call('HSET', KEYS[2], user, id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), id)
expire_keys(now)
local entries = redis.call('HVALS', KEYS[1])
AFTER = #entries
return {'ok', replaced, entries}
"#;

/// ARGV: participant id. Returns 1 if it was there (and tells the others it left).
const LEAVE: &str = r#"
local now = now_ms()
prune(now)
local gone = forget(ARGV[1])
expire_keys(now)
if gone then
  announce(left(ARGV[1], 'left'))
  fact('left', 'left', gone)
  return 1
end
return 0
"#;

/// Returns the live entries' JSON.
const PARTICIPANTS: &str = r#"
prune(now_ms())
local entries = redis.call('HVALS', KEYS[1])
AFTER = #entries
return entries
"#;

/// ARGV: participant id, TTL in ms. Returns 1 if it was there (and is now extended).
const REFRESH: &str = r#"
local now = now_ms()
prune(now)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', mailbox(ARGV[1]), ARGV[2])
expire_keys(now)
return 1
"#;

/// Returns the number of live entries.
const COUNT: &str = r#"
prune(now_ms())
AFTER = AFTER_PRUNE
return AFTER
"#;

/// Relays one or more messages, each to its own target in its own room.
/// KEYS: the four room keys (participants hash, users hash, expiry set, seq hash) of each
/// message's room, message after message.
/// ARGV: the mailbox length, then for each message its target id and the message up to its
/// `"seq":0}` placeholder.
/// Returns each message's seq, in order, or 0 where the target is not in the room (or has
/// expired): nothing is written or published for that one; or, where that message failed,
/// Redis's error as text.
///
/// This is the hot path, so it does the least that keeps the invariants, and it runs without
/// the [`PRELUDE`] (Redis runs a script's whole body on every call, and the prelude's helpers
/// cost more than this body's own work): it checks each target's own deadline instead of
/// pruning the room (the participants' refreshes prune and announce), formats a seq once, and
/// sets a key's expiry only when this call created the key (a refresh extends them
/// afterwards). Several messages per call share the call's own cost (on a single Redis,
/// [`super::relay_batch`] gathers them). `PUBLISH` and [`EXPIRE_KEYS`] are
/// defined before this.
const RELAY: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local limit = tonumber(ARGV[1])

local function relay(i)
  local base = (i - 1) * 4
  local to = ARGV[2 * i]
  local deadline = tonumber(redis.call('ZSCORE', KEYS[base + 3], to))
  if not deadline or deadline <= now then
    return 0
  end
  local room = string.sub(KEYS[base + 1], 1, #KEYS[base + 1] - 13)
  local count = redis.call('HINCRBY', KEYS[base + 4], to, 1)
  local seq = tostring(count)
  local payload = seq .. ' ' .. ARGV[2 * i + 1] .. ',"seq":' .. seq .. '}'
  local box = room .. ':mailbox:' .. to
  local length = redis.call('RPUSH', box, payload)
  if length > limit then
    redis.call('LPOP', box, length - limit)
  end
  if length == 1 then
    redis.call('PEXPIRE', box, math.max(1, math.floor(deadline - now)))
  end
  if count == 1 and redis.call('PTTL', KEYS[base + 4]) < 0 then
    -- The room's first relay to this target created the seq hash.
    expire_keys(now, base)
  end
  redis.call(PUBLISH, room .. ':to:' .. to, payload)
  return count
end

-- A message that fails (a room key of the wrong type, say) answers its error as text and
-- the others still go: Redis keeps what a script wrote before an error, so failing the whole
-- call would report as failed the messages already published, in rooms that are fine.
local seqs = {}
for i = 1, (#ARGV - 1) / 2 do
  local ok, result = pcall(relay, i)
  if ok then
    seqs[i] = result
  elseif type(result) == 'table' and result.err then
    seqs[i] = result.err
  else
    seqs[i] = tostring(result)
  end
end
return seqs
"#;

/// ARGV: user, presented token, last seq, new token, new pod, TTL in ms.
/// Returns {'ok', entry JSON, seq, all entries, missed payloads} or {refusal[, detail]}.
const RESUME: &str = r#"
local now = now_ms()
prune(now)
local id = redis.call('HGET', KEYS[2], ARGV[1])
local json = id and redis.call('HGET', KEYS[1], id)
if not json then
  return {'no_session'}
end
local entry = cjson.decode(json)
if entry.resume ~= ARGV[2] then
  return {'token_mismatch'}
end
local seq = tonumber(redis.call('HGET', KEYS[4], id) or '0')
local last = tonumber(ARGV[3])
if last > seq then
  return {'ahead', tostring(seq)}
end
local box = mailbox(id)
local items = redis.call('LRANGE', box, 0, -1)
local oldest = seq + 1
if items[1] then
  oldest = seq_of(items[1])
end
if last + 1 < oldest then
  return {'overflowed', tostring(oldest)}
end
entry.pod = ARGV[5]
entry.resume = ARGV[4]
local updated = cjson.encode(entry)
local ttl = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], id, updated)
redis.call('ZADD', KEYS[3], now + ttl, id)
redis.call('PEXPIRE', box, ttl)
expire_keys(now)
publish(id, 'replaced ' .. ARGV[4])
local missed = {}
for _, item in ipairs(items) do
  if seq_of(item) > last then
    table.insert(missed, item)
  end
end
return {'ok', updated, tostring(seq), redis.call('HVALS', KEYS[1]), missed}
"#;

/// ARGV: participant id, user, entry JSON, TTL in ms, seq, participantJoined JSON, rebuild
/// window in ms. Returns 1 if the participant was missing and is back (and announced), else
/// 0. Putting one back marks the room as being rebuilt for the window (see REBUILDING).
const RESTORE: &str = r#"
local now = now_ms()
prune(now)
local id, user = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[1], id) == 1 then
  if tonumber(ARGV[5]) > tonumber(redis.call('HGET', KEYS[4], id) or '0') then
    redis.call('HSET', KEYS[4], id, ARGV[5])
    expire_keys(now)
  end
  return 0
end
-- A newer session of the same user wins over the one being restored.
local holder = redis.call('HGET', KEYS[2], user)
if holder and redis.call('HEXISTS', KEYS[1], holder) == 1 then
  return 0
end
announce(ARGV[6])
redis.call('HSET', KEYS[1], id, ARGV[3])
redis.call('HSET', KEYS[2], user, id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
if tonumber(ARGV[5]) > 0 then
  redis.call('HSET', KEYS[4], id, ARGV[5])
end
expire_keys(now)
redis.call('SET', ROOM .. ':rebuilding', '1', 'PX', tonumber(ARGV[7]))
return 1
"#;

/// ARGV: participant id, seq. Returns the mailbox payloads after that seq, oldest first.
const MISSED: &str = r#"
local after = tonumber(ARGV[2])
local missed = {}
for _, item in ipairs(redis.call('LRANGE', mailbox(ARGV[1]), 0, -1)) do
  if seq_of(item) > after then
    table.insert(missed, item)
  end
end
return missed
"#;

/// ARGV: the sender's participant id. Returns 1 while the room's state is being rebuilt after
/// it was lost: the sender (connected, since it is sending) is missing itself, or a
/// participant was put back within the rebuild window.
const REBUILDING: &str = r#"
local now = now_ms()
local deadline = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))
if not deadline or deadline <= now then
  return 1
end
return redis.call('EXISTS', ROOM .. ':rebuilding')
"#;

/// ARGV: participant id. Returns 1 if it was there: the others hear `kicked`, and its own
/// connection is told to close (`removed kicked`).
const KICK: &str = r#"
local now = now_ms()
prune(now)
local gone = forget(ARGV[1])
expire_keys(now)
if gone then
  announce(left(ARGV[1], 'kicked'))
  publish(ARGV[1], 'removed kicked')
  fact('left', 'kicked', gone)
  return 1
end
return 0
"#;

/// Removes the whole room. Every participant hears `room_deleted` for each of the others, then
/// its connection is told to close (`removed room_deleted`). Returns how many were removed.
const END: &str = r#"
prune(now_ms())
local ids = redis.call('HKEYS', KEYS[1])
for _, id in ipairs(ids) do
  announce(left(id, 'room_deleted'), id)
end
for _, id in ipairs(ids) do
  publish(id, 'removed room_deleted')
  fact('left', 'room_deleted', redis.call('HGET', KEYS[1], id))
  redis.call('DEL', mailbox(id))
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return #ids
"#;

/// ARGV: the sweep lead in ms. When every deadline in the room is within the lead (the room
/// is abandoned: a live participant refreshes every third of a TTL), prunes them all now,
/// before Redis expires the keys; otherwise prunes as usual. Returns the participants left.
const SWEEP: &str = r#"
local now = now_ms()
local lead = tonumber(ARGV[1])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) <= now + lead then
  prune(now + lead)
else
  prune(now)
end
return redis.call('HLEN', KEYS[1])
"#;

/// The end of every fact-reporting script: runs the body, adds `finished` when the room
/// became empty (by the prune, or by the body) and `started` when a join made an empty room
/// non-empty (after the prune's facts, before the body's), and returns {facts, result}.
const WRAP_END: &str = r#"
local result = body()
local after = AFTER or redis.call('HLEN', KEYS[1])
local pruned = AFTER_PRUNE or BEFORE
local at = PRUNE_END
if BEFORE > 0 and pruned == 0 then
  table.insert(FACTS, at + 1, 'finished - ')
  at = at + 1
end
if STARTS and pruned == 0 and after > 0 then
  table.insert(FACTS, at + 1, 'started - ')
end
if pruned > 0 and after == 0 then
  table.insert(FACTS, 'finished - ')
end
return {FACTS, result}
"#;

/// KEYS: the room index. ARGV: room, the score read. Drops the room only if no join has
/// re-scored it since it was read.
const UNINDEX: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#;

/// KEYS: the room index. ARGV: room, when it may be swept (unix ms), the index's lifetime in
/// ms (two TTLs). Keeps the later of the two times (`GT`, Redis 6.2), and the index's own
/// expiry more than a TTL past the latest deadline in it: long enough for a sweep to find the
/// abandoned rooms, and then it disappears with the last room.
const INDEX: &str = r#"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A room's keys share one hash tag (one cluster slot) and carry the room id verbatim.
    #[test]
    fn keys_share_the_room_hash_tag() {
        let room = RoomId::parse("Stand-up_1.a").unwrap();
        let keys = keys(&room);
        assert_eq!(
            keys,
            [
                "sb:room:{Stand-up_1.a}:participants",
                "sb:room:{Stand-up_1.a}:users",
                "sb:room:{Stand-up_1.a}:expiry",
                "sb:room:{Stand-up_1.a}:seq",
            ]
        );
        for key in &keys {
            let tag = key
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'));
            assert_eq!(tag.map(|(tag, _)| tag), Some(room.as_str()));
        }
    }

    /// Connection failures and failovers are transient; script errors are not.
    #[test]
    fn errors_are_classified() {
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(refused), StoreError::Unavailable(_)));
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(matches!(classify(loading), StoreError::Unavailable(_)));
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "script error",
        ));
        assert!(matches!(classify(script), StoreError::Backend(_)));
    }

    /// Facts from the scripts read back as the store reports them; anything else is refused
    /// rather than guessed at.
    #[test]
    fn facts_are_read_back() {
        let json = r#"{"id":"p1","user":"alice","pod":"pod-a"}"#;
        assert_eq!(parse_fact("started - "), Some(RoomFact::Started));
        assert_eq!(parse_fact("finished - "), Some(RoomFact::Finished));
        let Some(RoomFact::Left(entry, LeaveReason::Kicked)) =
            parse_fact(&format!("left kicked {json}"))
        else {
            panic!("a kick")
        };
        assert_eq!(entry.user.as_str(), "alice");
        assert!(matches!(
            parse_fact(&format!("lost - {json}")),
            Some(RoomFact::ConnectionLost(_))
        ));
        assert_eq!(parse_fact(&format!("left exploded {json}")), None);
        assert_eq!(parse_fact("joined - {not json"), None);
        assert_eq!(parse_fact("teleported - "), None);
    }

    /// A call that never answers is cut off at the timeout as unavailable.
    #[tokio::test(start_paused = true)]
    async fn silence_is_unavailable() {
        let never = std::future::pending::<redis::RedisResult<()>>();
        let error = bounded(Duration::from_secs(2), never).await.unwrap_err();
        assert_eq!(error.metric_label(), "unavailable");
    }
}

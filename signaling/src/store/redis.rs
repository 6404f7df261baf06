//! [`RedisStore`]: room state in Redis, shared by every signaling pod. The key layout is
//! documented on the [`store`](super) module.
//!
//! Each operation is one Lua script, so it is atomic across pods, and is bounded by a timeout:
//! when Redis is down a call fails with [`StoreError::Unavailable`] after at most that long,
//! never hangs, and the connection is re-established in the background by
//! [`ConnectionManager`]. This module holds no state of its own beyond the connection.

use std::io;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind};

use super::{JoinOutcome, ParticipantEntry, Result, RoomStore, StoreError, check_ttl};
use crate::ids::{ParticipantId, RoomId};

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
        Self::from_connection(connection, ttl, timeout)
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Wraps an existing connection. `timeout` bounds each operation.
    pub fn from_connection(connection: C, ttl: Duration, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(StoreError::Config(
                "Redis timeout must not be zero".to_owned(),
            ));
        }
        Ok(RedisStore {
            connection,
            scripts: Scripts::new(),
            ttl: check_ttl(ttl)?,
            timeout,
        })
    }

    /// Runs `script` on `room`'s keys, bounded by the timeout.
    async fn run<T: FromRedisValue>(
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

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }
}

/// A room's keys in the order the scripts expect them: participants, users, expiry.
fn keys(room: &RoomId) -> [String; 3] {
    let room = room.as_str();
    [
        format!("sb:room:{{{room}}}:participants"),
        format!("sb:room:{{{room}}}:users"),
        format!("sb:room:{{{room}}}:expiry"),
    ]
}

/// Awaits a Redis call for at most `timeout`, sorting its failure into a [`StoreError`].
async fn bounded<T>(
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
    C: ConnectionLike + Clone + Send + Sync,
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
            let json = serde_json::to_string(&entry).map_err(|source| StoreError::Corrupt {
                room: room.clone(),
                source,
            })?;
            let max_arg = max.to_string();
            let args = [
                entry.id.as_str(),
                entry.user.as_str(),
                json.as_str(),
                max_arg.as_str(),
                &self.ttl_ms(),
            ];
            let (status, replaced, participants): (String, String, Vec<String>) =
                self.run(&self.scripts.join, room, &args).await?;
            if status != "ok" {
                return Err(StoreError::RoomFull { max });
            }
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
            self.run(&self.scripts.refresh, room, &args).await
        })
    }

    fn count<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<u32>> {
        Box::pin(async move { self.run(&self.scripts.count, room, &[]).await })
    }
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
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            join: script(JOIN),
            leave: script(LEAVE),
            participants: script(PARTICIPANTS),
            refresh: script(REFRESH),
            count: script(COUNT),
        }
    }
}

/// Helpers every script starts with. KEYS are always the room's participants hash, users hash
/// and expiry sorted set, in that order.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes a participant from all three keys (its user's pointer only if it still points to
-- it: a newer session of the same user keeps its own) and returns its JSON, or false.
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
  return json
end

-- Drops every participant whose deadline is not after now. A room emptied this way has
-- empty keys, which Redis deletes.
local function prune(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    forget(id)
  end
end

-- Makes the room's keys expire with its latest deadline, so an abandoned room leaves nothing
-- behind. Called after every write that adds or removes a deadline.
local function expire_keys(now)
  local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  if last[2] then
    local ms = math.max(1, math.floor(tonumber(last[2]) - now))
    for i = 1, 3 do
      redis.call('PEXPIRE', KEYS[i], ms)
    end
  end
end
"#;

/// ARGV: participant id, user id, entry JSON, max, TTL in ms.
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
local taken = redis.call('HLEN', KEYS[1])
if redis.call('HEXISTS', KEYS[1], id) == 1 then
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
end
forget(id)
redis.call('HSET', KEYS[1], id, ARGV[3])
redis.call('HSET', KEYS[2], user, id)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), id)
expire_keys(now)
return {'ok', replaced, redis.call('HVALS', KEYS[1])}
"#;

/// ARGV: participant id. Returns 1 if it was there.
const LEAVE: &str = r#"
local now = now_ms()
prune(now)
local gone = forget(ARGV[1])
expire_keys(now)
if gone then
  return 1
end
return 0
"#;

/// Returns the live entries' JSON.
const PARTICIPANTS: &str = r#"
prune(now_ms())
return redis.call('HVALS', KEYS[1])
"#;

/// ARGV: participant id, TTL in ms. Returns 1 if it was there (and is now extended).
const REFRESH: &str = r#"
local now = now_ms()
prune(now)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
expire_keys(now)
return 1
"#;

/// Returns the number of live entries.
const COUNT: &str = r#"
prune(now_ms())
return redis.call('HLEN', KEYS[1])
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

    /// A call that never answers is cut off at the timeout as unavailable.
    #[tokio::test(start_paused = true)]
    async fn silence_is_unavailable() {
        let never = std::future::pending::<redis::RedisResult<()>>();
        let error = bounded(Duration::from_secs(2), never).await.unwrap_err();
        assert_eq!(error.metric_label(), "unavailable");
    }
}

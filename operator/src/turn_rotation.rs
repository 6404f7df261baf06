//! TURN shared-secret rotation: the loop that drives [`switchboard_turn::rotation::plan`]
//! against the rotation Secret and coturn's Redis user databases.
//!
//! Each pass observes, plans one step, applies it and starts over, until the planner says
//! `Idle`: read the Secret with a fresh GET, read the secret set
//! `turn/realm/<realm>/secret` of every configured Redis, call `plan`, then create or replace
//! the Secret, or SADD/SREM in Redis. The loop then sleeps until the planner's recheck time or
//! until the Secret changes, so a `switchboard.dev/rotate` annotation is acted on at once. It
//! runs on the leader only.
//!
//! # Guarantees
//!
//! - All rotation state is in the Secret; nothing is carried between steps in memory, so an
//!   operator killed at any point resumes from what it persisted.
//! - A Secret write is a create, or a replace carrying the `resourceVersion` read in the same
//!   step. A 409 means someone else wrote in between: the loop reads again and re-plans, it
//!   never overwrites blindly.
//! - With several Redis servers, SADD reaches every server before any SREM is sent, and a
//!   valid secret counts as held only when every server holds it ([`combined_hold`]), so a
//!   secret is promoted only once all TURN servers accept it.
//! - Secret values never reach logs, Events, errors or metrics: they are named by fingerprint.
//!
//! # Assumptions
//!
//! - Only the leader runs this loop (`--leader-election`, on by default); the planner's own
//!   assumptions are listed in `switchboard_turn::rotation`.
//! - coturn reads the Redis set on every authentication (`redis-userdb`), so what Redis holds
//!   is what the TURN servers accept.
//!
//! # Caveats
//!
//! - A Secret that does not parse is never overwritten: the loop reports it (log and Warning
//!   Event) and waits for the Secret to change.
//! - Without `--turn-redis-url` nothing is pushed: the loop assumes the TURN servers already
//!   hold every valid secret, which only something outside the operator can make true.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_turn::rotation::{self, RotationError, RotationPolicy, RotationState, Step, keys};
use switchboard_turn::secret::fingerprint_of;

use crate::args::Args;
use crate::events::EventSink;
use crate::metrics::{ErrorLabel, Metrics};

/// The annotation a user sets (to any new value) to ask for a rotation now.
pub const ROTATE_ANNOTATION: &str = "switchboard.dev/rotate";
/// The label marking the Secret as the operator's.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "switchboard-operator";

/// Upper bound on steps in one pass. A normal rotation takes four (stage, push, promote,
/// idle); hitting the bound means something keeps undoing our writes, so back off instead of
/// spinning.
const MAX_STEPS_PER_PASS: usize = 16;
/// Redis must answer within this, or the pass fails and is retried with backoff: a hung TURN
/// database must not stall the loop.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long to wait for the Secret to change after finding it unparseable, before looking
/// again anyway.
const INVALID_STATE_RECHECK: Duration = Duration::from_secs(300);
/// How often the secret-age gauge is refreshed while the loop sleeps; a day-long idle must not
/// leave it frozen.
const AGE_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("--turn-secret-name {name:?} is not a valid Secret name")]
    InvalidSecretName { name: String },
    #[error("--turn-redis-url needs --turn-secret-name")]
    RedisWithoutSecret,
    #[error("--turn-redis-url needs a non-empty --turn-realm to name the Redis set")]
    RedisWithoutRealm,
    // The URL itself is not shown: it may carry a password.
    #[error("--turn-redis-url number {index} is not a valid Redis URL: {source}")]
    InvalidRedisUrl {
        index: usize,
        #[source]
        source: redis::RedisError,
    },
    #[error("TURN rotation options: {0}")]
    Policy(#[source] RotationError),
    #[error("cannot read Secret {name}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write Secret {name}: {source}")]
    WriteSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {name} holds no valid rotation state and is left alone: {source}")]
    InvalidState {
        name: String,
        #[source]
        source: RotationError,
    },
    #[error("cannot plan the rotation: {0}")]
    Plan(#[source] RotationError),
    #[error("Redis {target}: {source}")]
    Redis {
        target: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis {target} did not answer within {seconds}s")]
    RedisTimeout { target: String, seconds: u64 },
    #[error("no steady state after {MAX_STEPS_PER_PASS} steps; something keeps changing it")]
    TooManySteps,
}

impl TurnError {
    /// Stable, low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidSecretName { .. } => "invalid_secret_name",
            Self::RedisWithoutSecret => "redis_without_secret",
            Self::RedisWithoutRealm => "redis_without_realm",
            Self::InvalidRedisUrl { .. } => "invalid_redis_url",
            Self::Policy(_) => "invalid_policy",
            Self::ReadSecret { .. } => "read_secret",
            Self::WriteSecret { .. } => "write_secret",
            Self::InvalidState { .. } => "invalid_state",
            Self::Plan(_) => "plan",
            Self::Redis { .. } => "redis",
            Self::RedisTimeout { .. } => "redis_timeout",
            Self::TooManySteps => "too_many_steps",
        }
    }
}

pub type Result<T, E = TurnError> = std::result::Result<T, E>;

/// Validated rotation settings; built once at startup so bad options stop the operator with a
/// clear message instead of failing later in the loop.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub namespace: String,
    pub secret_name: String,
    pub realm: Option<String>,
    pub policy: RotationPolicy,
    redis: Vec<redis::Client>,
}

impl TurnConfig {
    /// `Ok(None)` when rotation is off (no `--turn-secret-name`).
    pub fn from_args(args: &Args) -> Result<Option<Self>> {
        let turn = &args.turn;
        let Some(secret_name) = turn.secret_name.clone() else {
            if turn.redis_urls.is_empty() {
                return Ok(None);
            }
            return Err(TurnError::RedisWithoutSecret);
        };
        if !is_dns_subdomain(&secret_name) {
            return Err(TurnError::InvalidSecretName { name: secret_name });
        }
        let policy = RotationPolicy {
            interval_secs: turn.rotation_interval.as_secs(),
            credential_ttl_secs: turn.credential_ttl.as_secs(),
            propagation_margin_secs: turn.propagation_margin.as_secs(),
        };
        policy.validate().map_err(TurnError::Policy)?;
        let realm = turn.realm.clone().filter(|realm| !realm.trim().is_empty());
        let urls: Vec<&String> = turn.redis_urls.iter().filter(|u| !u.is_empty()).collect();
        if !urls.is_empty() && realm.is_none() {
            return Err(TurnError::RedisWithoutRealm);
        }
        let redis = urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| {
                redis::Client::open(url.as_str()).map_err(|source| TurnError::InvalidRedisUrl {
                    index: i + 1,
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(TurnConfig {
            namespace: args.scope.namespace.clone(),
            secret_name,
            realm,
            policy,
            redis,
        }))
    }
}

/// A Kubernetes object name (RFC 1123 subdomain), checked here so a typo fails at startup.
fn is_dns_subdomain(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

/// The Redis key coturn reads a realm's shared secrets from.
pub fn redis_secret_key(realm: &str) -> String {
    format!("turn/realm/{realm}/secret")
}

/// What the TURN servers hold, in the form [`rotation::plan`] expects from a single server.
///
/// A valid secret counts as held only if *every* server holds it: a promotion must wait for
/// the slowest server. Any other value counts if *any* server holds it, so it gets removed
/// everywhere. With no servers at all the valid secrets are taken as held: there is nothing
/// to push to.
pub fn combined_hold(
    per_server: &[BTreeSet<String>],
    valid: &BTreeSet<String>,
) -> BTreeSet<String> {
    if per_server.is_empty() {
        return valid.clone();
    }
    let mut held: BTreeSet<String> = valid
        .iter()
        .filter(|secret| per_server.iter().all(|set| set.contains(*secret)))
        .cloned()
        .collect();
    for set in per_server {
        held.extend(set.difference(valid).cloned());
    }
    held
}

/// Doubling delay after failed passes, reset by a good one.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(MIN_BACKOFF)
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        delay
    }

    fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
}

/// One coturn Redis user database.
struct RedisTarget {
    /// `host:port/db`, never the URL: that may hold a password.
    name: String,
    connection: ConnectionManager,
}

/// What one applied step leads to.
enum Applied {
    /// Something was written; plan again.
    Progress,
    /// The Secret changed under us (409): read again and plan again.
    Conflict,
    /// Nothing to do for this long, unless the Secret changes.
    Idle(Duration),
}

/// The rotation loop; see the module docs.
pub struct TurnRotator {
    config: TurnConfig,
    secrets: Api<Secret>,
    redis: Vec<RedisTarget>,
    key: Option<String>,
    metrics: Arc<Metrics>,
    events: EventSink,
    /// Only for refreshing the age gauge between passes; never used for decisions.
    current_since_unix: Option<u64>,
}

impl TurnRotator {
    pub fn new(
        client: Client,
        config: TurnConfig,
        metrics: Arc<Metrics>,
        events: EventSink,
    ) -> Result<Self> {
        let redis = config
            .redis
            .iter()
            .map(|client| {
                let info = client.get_connection_info();
                let name = format!("{}/{}", info.addr(), info.redis_settings().db());
                // Lazy: an unreachable Redis must not stop the operator from starting; the
                // pass that needs it fails and is retried with backoff.
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(2);
                client
                    .get_connection_manager_lazy(manager_config)
                    .map(|connection| RedisTarget {
                        name: name.clone(),
                        connection,
                    })
                    .map_err(|source| TurnError::Redis {
                        target: name,
                        source,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if redis.is_empty() {
            tracing::warn!(
                secret = %config.secret_name,
                "no --turn-redis-url: TURN servers must get the secrets from elsewhere"
            );
        }
        Ok(TurnRotator {
            secrets: Api::namespaced(client, &config.namespace),
            key: config.realm.as_deref().map(redis_secret_key),
            redis,
            config,
            metrics,
            events,
            current_since_unix: None,
        })
    }

    /// Runs until the task is aborted (leadership lost).
    pub async fn run(mut self) {
        let watch = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.config.secret_name));
        let changes = watcher(self.secrets.clone(), watch).default_backoff();
        futures::pin_mut!(changes);
        let mut backoff = Backoff::new();
        loop {
            let wait = match self.pass().await {
                Ok(wait) => {
                    backoff.reset();
                    wait
                }
                Err(error) => {
                    self.metrics
                        .turn_rotation_errors
                        .get_or_create(&ErrorLabel {
                            error: error.metric_label(),
                        })
                        .inc();
                    if let TurnError::InvalidState { .. } = error {
                        tracing::error!(%error, "TURN rotation waits for the Secret to be fixed");
                        self.warn_invalid_state(&error).await;
                        INVALID_STATE_RECHECK
                    } else {
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, retry_in = ?delay, "TURN rotation pass failed");
                        delay
                    }
                }
            };
            self.sleep_or_change(&mut changes, wait).await;
        }
    }

    /// Sleeps for `wait`, or less if the Secret changes, refreshing the age gauge meanwhile.
    async fn sleep_or_change<S>(&self, changes: &mut std::pin::Pin<&mut S>, wait: Duration)
    where
        S: Stream<Item = Result<watcher::Event<Secret>, watcher::Error>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let mut age_tick = tokio::time::interval(AGE_REFRESH);
        age_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                _ = age_tick.tick() => self.refresh_age(),
                event = changes.next() => match event {
                    // A re-list starts with Init and InitApply; act once it is complete.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                    Some(Ok(_)) => {
                        // Our own writes arrive as a burst of events: one pass covers them all.
                        while let Some(Some(_)) = changes.next().now_or_never() {}
                        return;
                    }
                    Some(Err(error)) => tracing::warn!(%error, "TURN Secret watch error"),
                    None => {
                        // The watcher never ends; if it did, fall back to timed passes.
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                },
            }
        }
    }

    fn refresh_age(&self) {
        if let Some(since) = self.current_since_unix {
            let age = unix_now().saturating_sub(since);
            self.metrics
                .turn_secret_age
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
    }

    /// Applies steps until the planner says `Idle`, and returns how long to wait then.
    async fn pass(&mut self) -> Result<Duration> {
        for _ in 0..MAX_STEPS_PER_PASS {
            match self.step().await? {
                Applied::Idle(wait) => return Ok(wait),
                Applied::Progress => {}
                Applied::Conflict => {
                    tracing::debug!(secret = %self.config.secret_name, "Secret changed meanwhile; planning again");
                }
            }
        }
        Err(TurnError::TooManySteps)
    }

    /// Observe, plan one step, apply it.
    async fn step(&mut self) -> Result<Applied> {
        let name = self.config.secret_name.clone();
        let observed =
            self.secrets
                .get_opt(&name)
                .await
                .map_err(|source| TurnError::ReadSecret {
                    name: name.clone(),
                    source,
                })?;
        let data = secret_data(observed.as_ref());
        let request = observed
            .as_ref()
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(ROTATE_ANNOTATION))
            .cloned();
        let state =
            RotationState::from_secret_data(&data).map_err(|source| TurnError::InvalidState {
                name: name.clone(),
                source,
            })?;
        if let Some(state) = &state {
            self.current_since_unix = Some(state.current.current_since_unix);
            self.refresh_age();
        }
        let held = match &state {
            Some(state) => {
                let valid = encoded(state.valid_secrets().into_iter().map(|s| s.expose()));
                let per_server = self.read_turn_sets().await?;
                combined_hold(&per_server, &valid)
            }
            // With no state the planner initializes whatever the servers hold.
            None => BTreeSet::new(),
        };
        let now = unix_now();
        let step = rotation::plan(
            state.as_ref(),
            now,
            &self.config.policy,
            request.as_deref(),
            &held,
        )
        .map_err(TurnError::Plan)?;
        // Step's Debug shows fingerprints only.
        tracing::debug!(secret = %name, ?step, "TURN rotation step");
        match step {
            Step::Idle { recheck_after_secs } => {
                Ok(Applied::Idle(Duration::from_secs(recheck_after_secs)))
            }
            Step::PushToTurn { add, remove } => {
                self.push(&add, &remove).await?;
                tracing::info!(
                    secret = %name,
                    added = ?fingerprints(&add),
                    removed = ?fingerprints(&remove),
                    "TURN servers' secret set updated"
                );
                Ok(Applied::Progress)
            }
            Step::Initialize { state } => {
                // The TURN servers must know the secret before anyone can read it to mint.
                let first = encoded([state.current.secret.expose()]);
                self.push(&first, &BTreeSet::new()).await?;
                let Some(written) = self.write(observed.as_ref(), &state).await? else {
                    return Ok(Applied::Conflict);
                };
                let fingerprint = state.current.secret.fingerprint();
                tracing::info!(secret = %name, current = %fingerprint, "TURN shared secret initialized");
                self.emit(
                    &written,
                    "TurnSecretInitialized",
                    format!("TURN shared secret {fingerprint} created and made current"),
                );
                Ok(Applied::Progress)
            }
            Step::StageNext { state } => {
                if self.write(observed.as_ref(), &state).await?.is_none() {
                    return Ok(Applied::Conflict);
                }
                let next = state.next.as_ref().map(|n| n.secret.fingerprint());
                tracing::info!(
                    secret = %name,
                    next = ?next,
                    request = ?state.rotate_request_handled,
                    "TURN shared secret staged"
                );
                Ok(Applied::Progress)
            }
            Step::Promote { state } => {
                let Some(written) = self.write(observed.as_ref(), &state).await? else {
                    return Ok(Applied::Conflict);
                };
                self.metrics.turn_rotations.inc();
                let current = state.current.secret.fingerprint();
                let previous = state.previous.as_ref().map(|p| p.secret.fingerprint());
                let valid_until = state.previous_drop_at(&self.config.policy);
                tracing::info!(
                    secret = %name,
                    %current,
                    previous = ?previous,
                    previous_valid_until = ?valid_until,
                    "TURN shared secret rotated"
                );
                let note = match (&previous, valid_until) {
                    (Some(previous), Some(until)) => format!(
                        "TURN shared secret {current} is now current; {previous} stays valid until unix time {until}"
                    ),
                    _ => format!("TURN shared secret {current} is now current"),
                };
                self.emit(&written, "TurnSecretRotated", note);
                Ok(Applied::Progress)
            }
            Step::DropPrevious { state } => {
                let dropped = self.dropped_fingerprint(observed.as_ref());
                let Some(written) = self.write(observed.as_ref(), &state).await? else {
                    return Ok(Applied::Conflict);
                };
                tracing::info!(secret = %name, previous = ?dropped, "TURN previous secret retired");
                self.emit(
                    &written,
                    "TurnSecretRetired",
                    format!(
                        "TURN shared secret {} is past its overlap and no longer valid",
                        dropped.as_deref().unwrap_or("-")
                    ),
                );
                Ok(Applied::Progress)
            }
        }
    }

    fn dropped_fingerprint(&self, observed: Option<&Secret>) -> Option<String> {
        let data = secret_data(observed);
        let previous = data.get(keys::PREVIOUS)?;
        std::str::from_utf8(previous).ok().map(fingerprint_of)
    }

    /// Each server's set, in configuration order.
    async fn read_turn_sets(&mut self) -> Result<Vec<BTreeSet<String>>> {
        let Some(key) = self.key.clone() else {
            return Ok(Vec::new());
        };
        let mut sets = Vec::with_capacity(self.redis.len());
        for target in &mut self.redis {
            let members: Vec<String> =
                query(target, redis::cmd("SMEMBERS").arg(&key).clone()).await?;
            sets.push(members.into_iter().collect());
        }
        Ok(sets)
    }

    /// SADD on every server, then SREM on every server: a secret is never missing everywhere
    /// while being swapped.
    async fn push(&mut self, add: &BTreeSet<String>, remove: &BTreeSet<String>) -> Result<()> {
        let Some(key) = self.key.clone() else {
            return Ok(());
        };
        for (command, members) in [("SADD", add), ("SREM", remove)] {
            if members.is_empty() {
                continue;
            }
            for target in &mut self.redis {
                let mut cmd = redis::cmd(command);
                cmd.arg(&key);
                for member in members {
                    cmd.arg(member);
                }
                let _: i64 = query(target, cmd).await?;
            }
        }
        Ok(())
    }

    /// Writes `state` over the observed Secret (or creates it). `None` on a conflict.
    async fn write(
        &self,
        observed: Option<&Secret>,
        state: &RotationState,
    ) -> Result<Option<Secret>> {
        let name = &self.config.secret_name;
        // Keys someone else put in the Secret stay; ours are replaced as a whole, so a key the
        // new state lacks (a dropped `previous`) disappears.
        let mut data: BTreeMap<String, ByteString> = observed
            .and_then(|s| s.data.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| !keys::ALL.contains(&key.as_str()))
            .collect();
        data.extend(
            state
                .to_secret_data()
                .into_iter()
                .map(|(key, value)| (key, ByteString(value))),
        );
        let result = match observed {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.to_owned(),
                            MANAGED_BY_VALUE.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    data: Some(data),
                    ..Secret::default()
                };
                self.secrets.create(&PostParams::default(), &secret).await
            }
            Some(observed) => {
                // The observed resourceVersion stays in the metadata: the apiserver refuses
                // the replace with 409 if the Secret changed since we read it.
                let mut secret = observed.clone();
                secret.data = Some(data);
                secret.string_data = None;
                secret
                    .metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
                self.secrets
                    .replace(name, &PostParams::default(), &secret)
                    .await
            }
        };
        match result {
            Ok(written) => Ok(Some(written)),
            // 409: changed or created meanwhile; 404: deleted meanwhile. Re-read either way.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(None),
            Err(source) => Err(TurnError::WriteSecret {
                name: name.clone(),
                source,
            }),
        }
    }

    fn emit(&self, secret: &Secret, reason: &str, note: String) {
        self.events
            .emit(secret.object_ref(&()), false, reason, "Rotate", note);
    }

    async fn warn_invalid_state(&self, error: &TurnError) {
        // The error names the bad key, never its value.
        if let Ok(Some(secret)) = self.secrets.get_opt(&self.config.secret_name).await {
            self.events.emit(
                secret.object_ref(&()),
                true,
                "TurnSecretInvalid",
                "Rotate",
                error.to_string(),
            );
        }
    }
}

/// Runs one Redis command with a deadline on top of the connection's own timeouts.
async fn query<T: redis::FromRedisValue>(target: &mut RedisTarget, cmd: redis::Cmd) -> Result<T> {
    let name = target.name.clone();
    match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut target.connection)).await {
        Ok(result) => result.map_err(|source| TurnError::Redis {
            target: name,
            source,
        }),
        Err(_) => Err(TurnError::RedisTimeout {
            target: name,
            seconds: REDIS_TIMEOUT.as_secs(),
        }),
    }
}

fn secret_data(secret: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    secret
        .and_then(|s| s.data.as_ref())
        .map(|data| {
            data.iter()
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn encoded<'a>(secrets: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    secrets.into_iter().map(str::to_owned).collect()
}

fn fingerprints(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().map(|s| fingerprint_of(s)).collect()
}

fn unix_now() -> u64 {
    // A clock before 1970 reads as 0: the planner then just waits, it never drops early.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn args(extra: &[&str]) -> Args {
        let mut all = vec!["switchboard-operator"];
        all.extend_from_slice(extra);
        Args::try_parse_from(all).unwrap()
    }

    #[test]
    fn valid_secrets_count_only_when_every_server_has_them() {
        let valid = set(&["cur", "next"]);
        let servers = [set(&["cur", "next"]), set(&["cur"])];
        assert_eq!(combined_hold(&servers, &valid), set(&["cur"]));
    }

    #[test]
    fn strays_count_when_any_server_has_them() {
        let valid = set(&["cur"]);
        let servers = [set(&["cur", "old"]), set(&["cur", "junk"])];
        assert_eq!(
            combined_hold(&servers, &valid),
            set(&["cur", "old", "junk"])
        );
    }

    #[test]
    fn no_servers_means_nothing_to_push() {
        let valid = set(&["cur", "prev"]);
        assert_eq!(combined_hold(&[], &valid), valid);
    }

    #[test]
    fn combined_hold_drives_the_planner_to_converge_every_server() {
        // Whatever each server holds, the push the planner asks for makes them all equal to
        // the valid set, and then it stops asking.
        let state = RotationState::new(
            switchboard_turn::SharedSecret::from_entropy([7; 32]),
            0,
            None,
        );
        let valid = encoded(state.valid_secrets().into_iter().map(|s| s.expose()));
        let policy = RotationPolicy {
            interval_secs: 100,
            credential_ttl_secs: 10,
            propagation_margin_secs: 1,
        };
        let mut servers = vec![set(&["x"]), BTreeSet::new(), valid.clone()];
        for _ in 0..3 {
            let held = combined_hold(&servers, &valid);
            match rotation::plan(Some(&state), 1, &policy, None, &held).unwrap() {
                Step::PushToTurn { add, remove } => {
                    for server in &mut servers {
                        server.extend(add.iter().cloned());
                        server.retain(|s| !remove.contains(s));
                    }
                }
                Step::Idle { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(servers.iter().all(|s| *s == valid), "{servers:?}");
    }

    #[test]
    fn rotation_is_off_without_a_secret_name() {
        assert!(TurnConfig::from_args(&args(&[])).unwrap().is_none());
    }

    #[test]
    fn config_takes_the_options() {
        let config = TurnConfig::from_args(&args(&[
            "--namespace=calls",
            "--turn-secret-name=turn-secret",
            "--turn-realm=example.org",
            "--turn-rotation-interval=3s",
            "--turn-credential-ttl=4s",
            "--turn-propagation-margin=1s",
            "--turn-redis-url=redis://127.0.0.1:6379/0,redis://:pw@10.0.0.2:6380/1",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.namespace, "calls");
        assert_eq!(config.secret_name, "turn-secret");
        assert_eq!(
            config.policy,
            RotationPolicy {
                interval_secs: 3,
                credential_ttl_secs: 4,
                propagation_margin_secs: 1
            }
        );
        assert_eq!(config.redis.len(), 2);
        assert_eq!(
            redis_secret_key("example.org"),
            "turn/realm/example.org/secret"
        );
    }

    #[test]
    fn invalid_combinations_are_refused_with_a_clear_error() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--turn-secret-name=t", "--turn-credential-ttl=0s"],
                "invalid_policy",
            ),
            (
                &["--turn-secret-name=t", "--turn-rotation-interval=0s"],
                "invalid_policy",
            ),
            (&["--turn-redis-url=redis://r:6379"], "redis_without_secret"),
            (
                &["--turn-secret-name=t", "--turn-redis-url=redis://r:6379"],
                "redis_without_realm",
            ),
            (
                &[
                    "--turn-secret-name=t",
                    "--turn-realm=r",
                    "--turn-redis-url=http://r:6379",
                ],
                "invalid_redis_url",
            ),
            (&["--turn-secret-name=Not_A_Name"], "invalid_secret_name"),
        ];
        for (flags, label) in cases {
            let error = TurnConfig::from_args(&args(flags)).unwrap_err();
            assert_eq!(error.metric_label(), *label, "{flags:?}: {error}");
        }
    }

    #[test]
    fn redis_url_errors_do_not_echo_the_url() {
        let error = TurnConfig::from_args(&args(&[
            "--turn-secret-name=t",
            "--turn-realm=r",
            "--turn-redis-url=http://user:hunter2@r:6379",
        ]))
        .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn secret_names_follow_kubernetes_rules() {
        for good in ["turn", "turn-secret", "a.b-c", "x1"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in [
            "",
            "-turn",
            "turn-",
            "Turn",
            "turn_secret",
            &"a".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay(), MIN_BACKOFF);
        assert_eq!(backoff.next_delay(), MIN_BACKOFF * 2);
        for _ in 0..20 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.next_delay(), MIN_BACKOFF);
    }
}

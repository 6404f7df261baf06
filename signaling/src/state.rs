//! What every connection shares ([`AppState`]), and the process-wide tasks that keep it true:
//! delivering the room store's events to this pod's sockets, rebuilding the room state after
//! a store outage, and the pod's liveness key.
//!
//! Sessions use the state; the HTTP layer and the wiring build it. Nothing here knows about
//! HTTP or about where the configuration came from.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::config::LimitArgs;
use crate::hub::{Hub, Snapshot};
use crate::ice::IceConfig;
use crate::ids::RoomId;
use crate::metrics::Metrics;
use crate::protocol::ResumeToken;
use crate::rooms::RoomSource;
use crate::store::{RoomStore, StoreError, StoreEvent};

/// How long a pod's liveness key outlives its last renewal.
const POD_LIVENESS_TTL: Duration = Duration::from_secs(5);

/// Everything a connection needs.
pub struct AppState {
    pub hub: Hub,
    /// Room membership shared by every pod (Redis), or this process's own (memory).
    pub store: Arc<dyn RoomStore>,
    /// This process's name in the store.
    pub pod: String,
    /// Each room's limit and SFU: Kubernetes, a fixed node list, or none.
    pub rooms: Arc<dyn RoomSource>,
    pub auth: AuthConfig,
    pub ice: IceConfig,
    pub limits: LimitArgs,
    /// Lifetime of the SFU tokens minted per participant (`--sfu-token-ttl`).
    pub sfu_token_ttl: Duration,
    pub metrics: Metrics,
    /// The room state's health, kept up to date in the background for readiness and for
    /// failing relays fast during an outage.
    pub health: Health,
}

impl AppState {
    /// Starts the background tasks: store event delivery (and recovery), the room state
    /// watch behind readiness, and the heartbeat.
    pub fn start_tasks(self: &Arc<Self>) {
        tokio::spawn(dispatch_store_events(self.clone()));
        tokio::spawn(watch_store(self.clone()));
        tokio::spawn(heartbeat(self.clone()));
    }

    /// Why the pod is not ready, or `None` when it is. Answers at once from what the
    /// background tasks keep up to date: it never waits on Redis.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(why) = self.health.store_down() {
            return Some(format!("room state: {why}"));
        }
        if self.health.recovering() {
            return Some(
                "putting this pod's participants back into the room state after an outage"
                    .to_owned(),
            );
        }
        if !self.rooms.is_healthy() {
            return Some("the Kubernetes watch of Rooms and SfuNodes is failing".to_owned());
        }
        None
    }
}

/// The room state's health as the background tasks last saw it.
#[derive(Debug, Default)]
pub struct Health {
    /// Why the room state is unusable, or `None` while it answers.
    down: Mutex<Option<String>>,
    /// The latest recovery started, and the latest whose sessions are all back.
    started: AtomicU64,
    finished: AtomicU64,
}

impl Health {
    /// Why the room state is unusable right now, if it is.
    pub fn store_down(&self) -> Option<String> {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether this pod's sessions are being put back after an outage.
    pub fn recovering(&self) -> bool {
        self.finished.load(Ordering::Acquire) < self.started.load(Ordering::Acquire)
    }

    fn set_down(&self, why: Option<String>) {
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Records a failed room state call: relays fail fast until the watch sees it answer.
    pub fn store_failed(&self, error: &StoreError) {
        if matches!(error, StoreError::Unavailable(_)) {
            self.set_down(Some(error.to_string()));
        }
    }
}

/// How often the room state is checked for readiness and for failing relays fast.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a check may take before the room state counts as down. Shorter than the
/// per-operation timeout: a Redis that takes this long for a PING is of no use to clients.
const WATCH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after this pod put its participants back it sends `resync`: every pod reconnects
/// within about a second of Redis returning (its backoff is capped at 1 s), so by then the
/// other pods have put theirs back too and the list is complete.
pub const RESYNC_SETTLE: Duration = Duration::from_secs(2);
/// How long a recovery keeps retrying to put participants back before it lets held messages
/// go anyway (the `resync` still tells clients the state).
const RECOVERY_GIVE_UP: Duration = Duration::from_secs(10);

/// Keeps [`Health`] up to date: a bounded PING every [`WATCH_INTERVAL`].
async fn watch_store(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let why = match tokio::time::timeout(WATCH_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {WATCH_TIMEOUT:?}")),
        };
        state.health.set_down(why);
    }
}

/// Delivers what the store sends to this process's connections, and rebuilds the room state
/// from them when the store's link comes back after an outage.
async fn dispatch_store_events(state: Arc<AppState>) {
    let Some(mut events) = state.store.events() else {
        return;
    };
    while let Some(event) = events.recv().await {
        match event {
            StoreEvent::Restored => {
                // Held here, before the next event is looked at: a message that arrived
                // after the link came back must not be queued ahead of the older ones the
                // mailbox replay brings.
                let generation = state.health.started.fetch_add(1, Ordering::AcqRel) + 1;
                let sessions = state.hub.begin_recovery(generation);
                tokio::spawn(recover(state.clone(), generation, sessions));
            }
            StoreEvent::Lost => {
                state.metrics.state_link_losses.inc();
                state
                    .health
                    .set_down(Some("the Redis message link is down".to_owned()));
            }
            event => state.hub.on_event(event),
        }
    }
}

/// After the message link was down, messages may have been missed and Redis may have
/// restarted empty. In two steps:
///
/// 1. put every session connected here back into the room state (numbering continuing from
///    what each was sent), queue what its mailbox holds that it missed, then let its held
///    messages go; the pod is ready again after this;
/// 2. [`RESYNC_SETTLE`] later, when the other pods have put theirs back too, send each client
///    `resync` with the room as it is now, holding its messages meanwhile so nothing about
///    the room overtakes the list. A participant put back even later is announced with
///    `participantJoined` to everyone already back, which includes this pod's clients.
async fn recover(state: Arc<AppState>, generation: u64, sessions: Vec<Snapshot>) {
    let current = || state.health.started.load(Ordering::Acquire) == generation;
    let give_up = tokio::time::Instant::now() + RECOVERY_GIVE_UP;
    loop {
        match restore_sessions(&state, &sessions).await {
            Ok(()) => break,
            Err(error) => {
                state.metrics.store_error(&error);
                if !current() || tokio::time::Instant::now() >= give_up {
                    tracing::warn!(%error, "cannot put participants back after the outage");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    for session in &sessions {
        let Some(token) = session.entry.resume.as_ref() else {
            continue;
        };
        let missed = match state
            .store
            .missed(&session.room, &session.entry.id, session.delivered)
            .await
        {
            Ok(missed) => missed,
            Err(error) => {
                state.metrics.store_error(&error);
                Vec::new()
            }
        };
        state
            .hub
            .end_recovery(generation, &session.room, token, missed, None);
    }
    if current() {
        state
            .health
            .finished
            .fetch_max(generation, Ordering::AcqRel);
    }
    tokio::time::sleep(RESYNC_SETTLE).await;
    if !current() {
        return;
    }
    let mut rooms: HashMap<RoomId, Vec<&Snapshot>> = HashMap::new();
    for session in &sessions {
        rooms.entry(session.room.clone()).or_default().push(session);
    }
    for (room, members) in &rooms {
        let tokens: Vec<&ResumeToken> = members
            .iter()
            .filter_map(|s| s.entry.resume.as_ref())
            .filter(|token| state.hub.hold(generation, room, token))
            .collect();
        let participants = match state.store.participants(room).await {
            Ok(entries) => Some(entries.iter().map(|e| e.public()).collect::<Vec<_>>()),
            Err(error) => {
                state.metrics.store_error(&error);
                tracing::warn!(%error, room = %room.as_str(), "cannot list participants for resync");
                None
            }
        };
        for token in tokens {
            let sent =
                state
                    .hub
                    .end_recovery(generation, room, token, Vec::new(), participants.clone());
            if sent && participants.is_some() {
                state.metrics.resyncs.inc();
            }
        }
    }
    tracing::info!(
        rooms = rooms.len(),
        sessions = sessions.len(),
        "room state restored after the outage; clients told to resync"
    );
}

/// Puts every session back into the room state; stops at the first failure.
async fn restore_sessions(state: &AppState, sessions: &[Snapshot]) -> Result<(), StoreError> {
    for session in sessions {
        state
            .store
            .restore(&session.room, session.entry.clone(), session.delivered)
            .await?;
    }
    Ok(())
}

/// Renews this pod's liveness key every second.
async fn heartbeat(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = state.store.heartbeat(&state.pod, POD_LIVENESS_TTL).await {
            tracing::debug!(%error, "cannot renew the pod liveness key");
        }
    }
}

//! What every connection shares ([`AppState`]), and the process-wide tasks that keep it true:
//! delivering the room store's events to this pod's sockets, rebuilding the room state after
//! a store outage, and the pod's liveness key.
//!
//! Sessions use the state; the HTTP layer and the wiring build it. Nothing here knows about
//! HTTP or about where the configuration came from.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::config::LimitArgs;
use crate::hub::Hub;
use crate::ice::IceConfig;
use crate::ids::RoomId;
use crate::metrics::Metrics;
use crate::protocol::{Participant, ServerMessage};
use crate::rooms::RoomSource;
use crate::store::{RoomStore, StoreEvent};

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
}

impl AppState {
    /// Starts the background tasks: store event delivery (and recovery) and the heartbeat.
    pub fn start_tasks(self: &Arc<Self>) {
        tokio::spawn(dispatch_store_events(self.clone()));
        tokio::spawn(heartbeat(self.clone()));
    }

    /// Why the pod is not ready, or `None` when it is.
    pub async fn not_ready(&self) -> Option<String> {
        if let Err(error) = self.store.ping().await {
            return Some(format!("room state: {error}"));
        }
        if !self.rooms.is_healthy() {
            return Some("the Kubernetes watch of Rooms and SfuNodes is failing".to_owned());
        }
        None
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
                tokio::spawn(restore_after_outage(state.clone()));
            }
            StoreEvent::Lost => {
                state.metrics.state_link_losses.inc();
            }
            event => state.hub.on_event(event),
        }
    }
}

/// After the message link was down, messages may be lost and Redis may have restarted empty:
/// put every participant connected here back, then tell each client the room as it is now
/// (`resync`), so it renegotiates instead of waiting for messages that will never come.
async fn restore_after_outage(state: Arc<AppState>) {
    let sessions = state.hub.snapshot();
    for session in &sessions {
        if let Err(error) = state
            .store
            .restore(&session.room, session.entry.clone(), session.delivered)
            .await
        {
            state.metrics.store_error(&error);
            tracing::warn!(%error, room = %session.room.as_str(), "cannot restore participant");
        }
    }
    let mut rooms: HashMap<RoomId, Vec<Participant>> = HashMap::new();
    for session in sessions {
        if !rooms.contains_key(&session.room) {
            match state.store.participants(&session.room).await {
                Ok(entries) => {
                    let list = entries.iter().map(|e| e.public()).collect();
                    rooms.insert(session.room.clone(), list);
                }
                Err(error) => {
                    state.metrics.store_error(&error);
                    tracing::warn!(%error, "cannot list participants for resync");
                    continue;
                }
            }
        }
        let participants = rooms.get(&session.room).cloned().unwrap_or_default();
        let seq = state
            .hub
            .delivered(&session.room, &session.entry.id)
            .unwrap_or(session.delivered);
        state.hub.send(
            &session.room,
            &session.entry.id,
            &ServerMessage::Resync { participants, seq },
        );
        state.metrics.resyncs.inc();
    }
    tracing::info!(
        rooms = rooms.len(),
        "room state restored after the outage; clients told to resync"
    );
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

//! Prometheus metrics and the HTTP endpoint that serves them with the probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `placed`, `failover`, `unschedulable`, `conflict` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub namespace: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// An error's `metric_label()`.
    pub error: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub placements: Family<ResultLabel, Counter>,
    /// Seconds from when a room was first seen needing a node to when its placement was
    /// written.
    pub placement_latency: Histogram,
    pub node_rooms: Family<NodeLabel, Gauge>,
    pub node_participants: Family<NodeLabel, Gauge>,
    pub failovers: Counter,
    pub is_leader: Gauge,
    /// Seconds since the TURN secret signaling mints with became current.
    pub turn_secret_age: Gauge,
    /// TURN secret promotions (a new secret became current) done by this replica.
    pub turn_rotations: Counter,
    pub turn_rotation_errors: Family<ErrorLabel, Counter>,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard_operator");
        let placements = Family::<ResultLabel, Counter>::default();
        registry.register(
            "placements",
            "Placement writes by result",
            placements.clone(),
        );
        let placement_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "placement_latency_seconds",
            "Time from a room needing a node to its placement being written",
            placement_latency.clone(),
        );
        let node_rooms = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "node_rooms",
            "Rooms placed per SfuNode (ledger)",
            node_rooms.clone(),
        );
        let node_participants = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "node_participants",
            "Participant slots reserved per SfuNode (ledger)",
            node_participants.clone(),
        );
        let failovers = Counter::default();
        registry.register(
            "failovers",
            "Rooms moved off a failed or deleted node",
            failovers.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "is_leader",
            "1 while this replica reconciles",
            is_leader.clone(),
        );
        let turn_secret_age = Gauge::default();
        registry.register(
            "turn_secret_age_seconds",
            "Seconds since the current TURN shared secret became current",
            turn_secret_age.clone(),
        );
        let turn_rotations = Counter::default();
        registry.register(
            "turn_rotations",
            "TURN shared secrets promoted to current",
            turn_rotations.clone(),
        );
        let turn_rotation_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "turn_rotation_errors",
            "Failed TURN rotation reconciles by error",
            turn_rotation_errors.clone(),
        );
        Metrics {
            placements,
            placement_latency,
            node_rooms,
            node_participants,
            failovers,
            is_leader,
            turn_secret_age,
            turn_rotations,
            turn_rotation_errors,
            registry,
        }
    }

    pub fn placed(&self, result: &'static str) {
        self.placements.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared by the HTTP handlers.
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// True once the watches have synced.
    pub ready: AtomicBool,
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced")
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the listener fails.
pub async fn serve(addr: SocketAddr, state: Arc<HttpState>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and probes");
    axum::serve(listener, app).await
}

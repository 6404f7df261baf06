//! What `/metrics` exports, with `prometheus-client` (as the operator does). The hot paths only
//! increment; a scrape sets the two gauges and encodes the registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;
use crate::store::StoreError;

/// The `error` code a refused join or resume was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// An [`ErrorCode`] as sent on the wire (`room_full`, `placement_timeout`, ...).
    pub code: &'static str,
}

/// Why a relay was not delivered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `unknown_participant`, or the room store's [`StoreError::metric_label`].
    pub reason: &'static str,
}

/// A room store failure, by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// [`StoreError::metric_label`].
    pub error: &'static str,
}

/// Every metric signaling exports, under the `switchboard_signaling_` prefix.
#[derive(Debug)]
pub struct Metrics {
    connections: Gauge,
    ready: Gauge,
    pub joins: Counter,
    pub join_failures: Family<CodeLabel, Counter>,
    pub resumes: Counter,
    pub resume_failures: Family<CodeLabel, Counter>,
    pub relayed: Counter,
    pub relay_failures: Family<ReasonLabel, Counter>,
    pub store_errors: Family<ErrorLabel, Counter>,
    pub resyncs: Counter,
    pub state_link_losses: Counter,
    pub webhook_delivered: Counter,
    pub webhook_dropped: Family<ReasonLabel, Counter>,
    pub webhook_failed_attempts: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard_signaling");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Joined WebSocket connections in this process",
            connections.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while the room state (and the Kubernetes watch, when used) is reachable",
            ready.clone(),
        );
        let joins = Counter::default();
        registry.register(
            "joins",
            "Joins answered with joined (fresh, not resumed)",
            joins.clone(),
        );
        let join_failures = Family::<CodeLabel, Counter>::default();
        registry.register(
            "join_failures",
            "Joins refused, by the error code sent back",
            join_failures.clone(),
        );
        let resumes = Counter::default();
        registry.register("resumes", "Sessions resumed", resumes.clone());
        let resume_failures = Family::<CodeLabel, Counter>::default();
        registry.register(
            "resume_failures",
            "Resumes refused, by the error code sent back",
            resume_failures.clone(),
        );
        let relayed = Counter::default();
        registry.register(
            "relayed",
            "Offers, answers and candidates accepted for relay",
            relayed.clone(),
        );
        let relay_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "relay_failures",
            "Relays refused (unknown participant) or failed (room state), by reason",
            relay_failures.clone(),
        );
        let store_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Room state operations that failed during joins and relays, by kind",
            store_errors.clone(),
        );
        let resyncs = Counter::default();
        registry.register(
            "resyncs",
            "resync messages sent after the room state link came back",
            resyncs.clone(),
        );
        let state_link_losses = Counter::default();
        registry.register(
            "state_link_losses",
            "Times the room state message link was lost",
            state_link_losses.clone(),
        );
        let webhook_delivered = Counter::default();
        registry.register(
            "webhook_events_delivered",
            "Webhook events a receiver accepted (2xx), counted per URL",
            webhook_delivered.clone(),
        );
        let webhook_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "webhook_events_dropped",
            "Webhook events given up, per URL: queue_full (the receiver fell behind) or retries_exhausted",
            webhook_dropped.clone(),
        );
        let webhook_failed_attempts = Counter::default();
        registry.register(
            "webhook_failed_attempts",
            "Webhook deliveries that failed and were retried or given up",
            webhook_failed_attempts.clone(),
        );
        Metrics {
            webhook_delivered,
            webhook_dropped,
            webhook_failed_attempts,
            connections,
            ready,
            joins,
            join_failures,
            resumes,
            resume_failures,
            relayed,
            relay_failures,
            store_errors,
            resyncs,
            state_link_losses,
            registry,
        }
    }

    /// Counts a refused join (or resume) under the code the client was sent.
    pub fn join_refused(&self, resuming: bool, code: ErrorCode) {
        let family = if resuming {
            &self.resume_failures
        } else {
            &self.join_failures
        };
        family
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts a failed room state operation.
    pub fn store_error(&self, error: &StoreError) {
        self.store_errors
            .get_or_create(&ErrorLabel {
                error: error.metric_label(),
            })
            .inc();
    }

    /// The exposition text, with the connection and readiness gauges as the caller sees them
    /// now (they are read at scrape time rather than kept current on every change).
    pub fn encode(&self, connections: usize, ready: bool) -> Result<String, std::fmt::Error> {
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.ready.set(i64::from(ready));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_with_its_value_and_labels() {
        let metrics = Metrics::default();
        metrics.relayed.inc();
        metrics.relayed.inc();
        metrics.join_refused(false, ErrorCode::RoomFull);
        metrics.join_refused(true, ErrorCode::ResumeFailed);
        metrics
            .relay_failures
            .get_or_create(&ReasonLabel {
                reason: "unknown_participant",
            })
            .inc();
        metrics.store_error(&StoreError::Config("x".to_owned()));
        let text = metrics.encode(3, true).unwrap();
        assert!(
            text.contains("\nswitchboard_signaling_relayed_total 2\n"),
            "{text}"
        );
        assert!(text.contains("\nswitchboard_signaling_connections 3\n"));
        assert!(text.contains("\nswitchboard_signaling_ready 1\n"));
        assert!(
            text.contains("\nswitchboard_signaling_join_failures_total{code=\"room_full\"} 1\n")
        );
        assert!(
            text.contains(
                "\nswitchboard_signaling_resume_failures_total{code=\"resume_failed\"} 1\n"
            )
        );
        assert!(text.contains(
            "\nswitchboard_signaling_relay_failures_total{reason=\"unknown_participant\"} 1\n"
        ));
        assert!(text.contains("\nswitchboard_signaling_store_errors_total{error=\"config\"} 1\n"));
        metrics
            .webhook_dropped
            .get_or_create(&ReasonLabel {
                reason: "queue_full",
            })
            .inc();
        let text = metrics.encode(3, true).unwrap();
        assert!(text.contains(
            "\nswitchboard_signaling_webhook_events_dropped_total{reason=\"queue_full\"} 1\n"
        ));
        assert!(text.contains("\nswitchboard_signaling_webhook_events_delivered_total 0\n"));
        assert_eq!(text.matches("# TYPE").count(), 14, "{text}");
        let not_ready = metrics.encode(0, false).unwrap();
        assert!(not_ready.contains("\nswitchboard_signaling_ready 0\n"));
    }
}

//! Counters for `/metrics`, in the Prometheus text format. Plain atomics: the hot paths only
//! add to them, and a scrape reads them once.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the server counts. Every field is a monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Metrics {
    pub joins: AtomicU64,
    pub join_failures: AtomicU64,
    pub resumes: AtomicU64,
    pub resume_failures: AtomicU64,
    pub relayed: AtomicU64,
    pub relay_failures: AtomicU64,
    pub resyncs: AtomicU64,
    pub state_link_losses: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the connection and readiness gauges given by the caller.
    pub fn render(&self, connections: usize, ready: bool) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "switchboard_signaling_connections",
            "Joined WebSocket connections in this process",
            connections as u64,
        );
        gauge(
            "switchboard_signaling_ready",
            "1 while the room state (and the Kubernetes watch, when used) is reachable",
            u64::from(ready),
        );
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "switchboard_signaling_joins_total",
                "Joins answered with joined (fresh, not resumed)",
                &self.joins,
            ),
            (
                "switchboard_signaling_join_failures_total",
                "Joins refused (room full, not found, placement timeout, state unavailable)",
                &self.join_failures,
            ),
            (
                "switchboard_signaling_resumes_total",
                "Sessions resumed",
                &self.resumes,
            ),
            (
                "switchboard_signaling_resume_failures_total",
                "Resumes refused with resume_failed",
                &self.resume_failures,
            ),
            (
                "switchboard_signaling_relayed_total",
                "Offers, answers and candidates accepted for relay",
                &self.relayed,
            ),
            (
                "switchboard_signaling_relay_failures_total",
                "Relays refused (unknown participant) or failed (state unavailable)",
                &self.relay_failures,
            ),
            (
                "switchboard_signaling_resyncs_total",
                "resync messages sent after the room state link came back",
                &self.resyncs,
            ),
            (
                "switchboard_signaling_state_link_losses_total",
                "Times the room state message link was lost",
                &self.state_link_losses,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once_with_its_value() {
        let metrics = Metrics::default();
        Metrics::add(&metrics.relayed);
        Metrics::add(&metrics.relayed);
        let text = metrics.render(3, true);
        assert!(
            text.contains("\nswitchboard_signaling_relayed_total 2\n"),
            "{text}"
        );
        assert!(text.contains("\nswitchboard_signaling_connections 3\n"));
        assert!(text.contains("\nswitchboard_signaling_ready 1\n"));
        assert_eq!(text.matches("# TYPE").count(), 10);
    }
}

//! Whether an SfuNode is Ready, from its health-check results and heartbeat. Pure: the prober
//! (in `probe.rs`) gathers results; this decides.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use switchboard_crds::{HttpHealthCheck, SfuNode, SfuNodeSpec};

/// Probe timing of the health endpoint a kind derives when the node has no `healthCheck`:
/// a dead SFU is NotReady after about 2 s.
const DERIVED_PERIOD_SECONDS: u32 = 1;
const DERIVED_TIMEOUT_SECONDS: u32 = 1;
const DERIVED_FAILURE_THRESHOLD: u32 = 2;

/// The health check the operator runs for a node: `spec.healthCheck` when set, otherwise the
/// endpoint its kind derives (see [`crate::sfu::health_url`]), otherwise none.
pub fn effective_check(node: &SfuNode) -> Option<HttpHealthCheck> {
    node.spec.health_check.clone().or_else(|| {
        crate::sfu::health_url(node).map(|url| HttpHealthCheck {
            url,
            period_seconds: DERIVED_PERIOD_SECONDS,
            timeout_seconds: DERIVED_TIMEOUT_SECONDS,
            failure_threshold: DERIVED_FAILURE_THRESHOLD,
        })
    })
}

/// The node's spec with its effective health check in place, for [`evaluate`].
pub fn effective_spec(node: &SfuNode) -> SfuNodeSpec {
    let mut spec = node.spec.clone();
    spec.health_check = effective_check(node);
    spec
}

/// What the prober has seen of one node's health check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRecord {
    pub successes: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// What the SFU's own health endpoint said about new sessions (Janus
    /// `accepting-new-sessions`), for kinds that say it.
    pub accepting_new_sessions: Option<bool>,
}

/// The verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// PascalCase condition reason.
    pub reason: &'static str,
    pub message: String,
}

/// Decides readiness. A node with neither a health check nor a heartbeat timeout is Ready as
/// soon as the operator admits it; otherwise every configured signal must pass.
pub fn evaluate(
    spec: &SfuNodeSpec,
    probe: Option<&ProbeRecord>,
    last_heartbeat: Option<Timestamp>,
    now: Timestamp,
) -> Readiness {
    if let Some(check) = &spec.health_check {
        match probe {
            Some(p) if p.consecutive_failures >= check.failure_threshold => {
                return Readiness {
                    ready: false,
                    reason: "HealthCheckFailed",
                    message: format!(
                        "{} consecutive failed probes of {}: {}",
                        p.consecutive_failures,
                        check.url,
                        p.last_error.as_deref().unwrap_or("unknown error")
                    ),
                };
            }
            Some(p) if p.successes > 0 => {}
            _ => {
                return Readiness {
                    ready: false,
                    reason: "AwaitingHealthCheck",
                    message: format!("no successful probe of {} yet", check.url),
                };
            }
        }
    }
    if let Some(timeout) = spec.heartbeat_timeout_seconds {
        let timeout = Duration::from_secs(u64::from(timeout));
        match last_heartbeat {
            None => {
                return Readiness {
                    ready: false,
                    reason: "NoHeartbeat",
                    message: "no heartbeat received yet".into(),
                };
            }
            Some(at) => {
                let age = now.duration_since(at);
                if age.is_negative() || age.unsigned_abs() <= timeout {
                    // A heartbeat from slightly in the future (clock skew) counts as fresh.
                } else {
                    return Readiness {
                        ready: false,
                        reason: "HeartbeatStale",
                        message: format!(
                            "last heartbeat {}s ago, timeout {}s",
                            age.as_secs(),
                            timeout.as_secs()
                        ),
                    };
                }
            }
        }
    }
    let reason = match (
        spec.health_check.is_some(),
        spec.heartbeat_timeout_seconds.is_some(),
    ) {
        (false, false) => "Admitted",
        (true, false) => "HealthCheckPassing",
        (false, true) => "HeartbeatFresh",
        (true, true) => "HealthCheckAndHeartbeatPassing",
    };
    Readiness {
        ready: true,
        reason,
        message: "node is healthy".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> SfuNodeSpec {
        let mut base = json!({"url": "wss://x", "region": "eu", "capacity": {"participants": 10}});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }
    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn no_checks_means_ready_once_admitted() {
        let r = evaluate(&spec(json!({})), None, None, t(100));
        assert!(r.ready);
        assert_eq!(r.reason, "Admitted");
    }

    #[test]
    fn health_check_needs_a_success_and_fails_at_the_threshold() {
        let s = spec(json!({"healthCheck": {"url": "http://h/health", "failureThreshold": 2}}));
        assert_eq!(evaluate(&s, None, None, t(0)).reason, "AwaitingHealthCheck");
        let ok = ProbeRecord {
            successes: 3,
            consecutive_failures: 1,
            last_error: Some("refused".into()),
            accepting_new_sessions: None,
        };
        assert!(evaluate(&s, Some(&ok), None, t(0)).ready);
        let failing = ProbeRecord {
            successes: 3,
            consecutive_failures: 2,
            last_error: Some("refused".into()),
            accepting_new_sessions: None,
        };
        let r = evaluate(&s, Some(&failing), None, t(0));
        assert!(!r.ready);
        assert!(r.message.contains("refused"), "{}", r.message);
    }

    #[test]
    fn heartbeat_goes_stale_after_the_timeout() {
        let s = spec(json!({"heartbeatTimeoutSeconds": 5}));
        assert_eq!(evaluate(&s, None, None, t(100)).reason, "NoHeartbeat");
        assert!(evaluate(&s, None, Some(t(96)), t(100)).ready);
        assert!(
            evaluate(&s, None, Some(t(105)), t(100)).ready,
            "future heartbeat is fresh"
        );
        let r = evaluate(&s, None, Some(t(90)), t(100));
        assert_eq!((r.ready, r.reason), (false, "HeartbeatStale"));
    }
}

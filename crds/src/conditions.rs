//! Pure helpers for status conditions.
//!
//! A condition's `lastTransitionTime` must only move when its status changes; otherwise every
//! reconcile would look like a transition to anyone watching. [`upsert`] is the one place that
//! rule is kept.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `Ready` on an SfuNode: it answers its health check and/or heartbeats in time.
pub const READY: &str = "Ready";
/// `Schedulable` on an SfuNode: Ready and not cordoned.
pub const SCHEDULABLE: &str = "Schedulable";
/// `Placed` on a Room: it has a node; when False, the reason says why not.
pub const PLACED: &str = "Placed";
/// Room condition: the room exists on its node's SFU (true at once for `Opaque` nodes).
pub const PROVISIONED: &str = "Provisioned";

/// A condition status, as Kubernetes spells it.
pub fn status_str(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Returns `conditions` with `new` in place of any condition of the same type.
///
/// `lastTransitionTime` is kept from the old condition when the status did not change, so
/// repeated reconciles with the same outcome leave it alone, while reason, message and
/// observedGeneration always take the new values.
pub fn upsert(conditions: &[Condition], mut new: Condition) -> Vec<Condition> {
    let mut out = Vec::with_capacity(conditions.len() + 1);
    let mut replaced = false;
    for old in conditions {
        if old.type_ == new.type_ {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            if !replaced {
                out.push(new.clone());
                replaced = true;
            }
        } else {
            out.push(old.clone());
        }
    }
    if !replaced {
        out.push(new);
    }
    out
}

/// Builds a condition with the given type, status, reason and message, stamped `now`.
pub fn new_condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status_str(status).to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type exists and is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn same_status_keeps_transition_time_but_takes_new_reason() {
        let old = vec![new_condition(READY, true, "Probed", "ok", Some(1), at(100))];
        let out = upsert(
            &old,
            new_condition(READY, true, "Heartbeat", "fresh", Some(2), at(200)),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].last_transition_time, at(100));
        assert_eq!(out[0].reason, "Heartbeat");
        assert_eq!(out[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let old = vec![new_condition(READY, true, "Probed", "ok", None, at(100))];
        let out = upsert(
            &old,
            new_condition(READY, false, "ProbeFailed", "timeout", None, at(200)),
        );
        assert_eq!(out[0].last_transition_time, at(200));
        assert_eq!(out[0].status, "False");
        assert!(!is_true(&out, READY));
    }

    #[test]
    fn other_types_are_kept_and_new_types_appended() {
        let old = vec![
            new_condition(READY, true, "Probed", "ok", None, at(100)),
            new_condition(SCHEDULABLE, true, "Ready", "ok", None, at(100)),
        ];
        let out = upsert(
            &old,
            new_condition(PLACED, true, "Placed", "x", None, at(300)),
        );
        assert_eq!(out.len(), 3);
        assert!(is_true(&out, READY) && is_true(&out, SCHEDULABLE) && is_true(&out, PLACED));
        assert!(find(&out, "Missing").is_none());
    }
}

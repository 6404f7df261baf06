//! The node-status planner: from one observed SfuNode, its load and its health signals, what
//! the node loop writes (finalizer, conditions, `allocated`) and which rooms it wakes.
//!
//! # Guarantees
//!
//! - The drain finalizer is added to every live node and removed only once the node is being
//!   deleted and no room counts on it any more, so a node never vanishes under its rooms
//!   through the operator.
//! - `Schedulable` is True only when the node is Ready, not cordoned and not being deleted.
//! - The status is written only when it changed, and `lastTransitionTime` moves only when a
//!   condition's status does ([`conditions::upsert`]).
//!
//! # Assumptions
//!
//! - `load` and `has_rooms` come from a ledger built from the same observation as `node`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use switchboard_crds::{ParticipantLoad, SfuNode, conditions};
use switchboard_placement::Health;

use crate::health::{self, ProbeRecord};
use crate::keys::NodeKey;
use crate::ledger::Load;
use crate::views::{SFU_NOT_ACCEPTING, node_health};

/// The finalizer that lets the operator move a node's rooms before the node goes away.
pub const DRAIN_FINALIZER: &str = "switchboard.dev/drain";

/// What one node is planned from.
pub struct NodeInput<'a> {
    pub node: &'a SfuNode,
    /// The node's load in the ledger.
    pub load: Load,
    /// True when any room still counts on the node.
    pub has_rooms: bool,
    /// What the prober has seen of the node's health check.
    pub probe: Option<&'a ProbeRecord>,
    pub now: Timestamp,
    pub failover_grace: Duration,
}

/// What to write for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    pub key: NodeKey,
    /// A change of `metadata.finalizers`, if any.
    pub finalizers: Option<FinalizerWrite>,
    /// The status write, when anything in it changed.
    pub status: Option<NodeStatusWrite>,
    /// The node's load, for the metrics.
    pub load: Load,
    /// Where the node stands after the plan; `None` once it is let go (drained and deleted).
    pub situation: Option<Situation>,
}

/// A finalizer list to write, conditional on the node's resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizerWrite {
    /// True when adding the drain finalizer, false when removing it (the node is drained).
    pub adding: bool,
    pub finalizers: Vec<String>,
    pub resource_version: Option<String>,
}

/// A status write, and the Event to emit once it lands.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatusWrite {
    pub conditions: Vec<Condition>,
    pub allocated: ParticipantLoad,
    pub observed_generation: Option<i64>,
    /// Set when readiness flipped (not on the first evaluation).
    pub readiness_event: Option<ReadinessEvent>,
}

/// `NodeReady` or `NodeNotReady`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessEvent {
    pub object: ObjectReference,
    pub ready: bool,
    /// `NodeReady` or `NodeNotReady`.
    pub reason: &'static str,
    /// The Ready condition's reason (for example `HealthCheckFailed`).
    pub cause: &'static str,
    pub message: String,
}

/// What about a node, when it changes, means rooms must be decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    pub health: Health,
    pub cordoned: bool,
    pub deleting: bool,
    pub capacity: u32,
    pub max_rooms: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub region: String,
    pub allocated: u32,
    pub rooms: u32,
}

/// Which rooms a change of a node's situation sends back to the placer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wake {
    /// The rooms placed on the node: it failed or is being deleted.
    pub its_rooms: bool,
    /// The rooms of the node's namespace waiting for a node: it may take them now.
    pub waiting_rooms: bool,
}

impl FinalizerWrite {
    pub fn patch(&self) -> Value {
        json!({"metadata": {"finalizers": self.finalizers, "resourceVersion": self.resource_version}})
    }
}

impl NodeStatusWrite {
    pub fn patch(&self) -> Value {
        json!({"status": {
            "conditions": self.conditions,
            "allocated": self.allocated,
            "observedGeneration": self.observed_generation,
        }})
    }
}

/// Plans one node. Pure: no client, no clock.
pub fn plan(key: NodeKey, input: &NodeInput<'_>) -> NodePlan {
    let node = input.node;
    let now = input.now;
    let deleting = node.metadata.deletion_timestamp.is_some();
    let has_finalizer = node.finalizers().iter().any(|f| f == DRAIN_FINALIZER);

    if deleting && has_finalizer && !input.has_rooms {
        return NodePlan {
            key,
            finalizers: Some(FinalizerWrite {
                adding: false,
                finalizers: node
                    .finalizers()
                    .iter()
                    .filter(|f| *f != DRAIN_FINALIZER)
                    .cloned()
                    .collect(),
                resource_version: node.resource_version(),
            }),
            status: None,
            load: input.load,
            situation: None,
        };
    }
    let finalizers = (!deleting && !has_finalizer).then(|| {
        let mut finalizers = node.finalizers().to_vec();
        finalizers.push(DRAIN_FINALIZER.to_owned());
        FinalizerWrite {
            adding: true,
            finalizers,
            resource_version: node.resource_version(),
        }
    });

    let status = node.status.clone().unwrap_or_default();
    let heartbeat = status.last_heartbeat_time.as_ref().map(|t| t.0);
    let readiness = health::evaluate(&health::effective_spec(node), input.probe, heartbeat, now);
    let refusing = input.probe.and_then(|p| p.accepting_new_sessions) == Some(false);
    let generation = node.metadata.generation;
    let ready = conditions::new_condition(
        conditions::READY,
        readiness.ready,
        readiness.reason,
        readiness.message.clone(),
        generation,
        Time(now),
    );
    let (schedulable, reason, message) = match (readiness.ready, node.spec.unschedulable, deleting)
    {
        (_, _, true) => (
            false,
            "Deleting",
            "node is being deleted; its rooms are moving",
        ),
        (false, _, _) => (false, "NodeNotReady", "node is not ready"),
        (true, true, _) => (
            false,
            "Cordoned",
            "spec.unschedulable is true; placed rooms stay",
        ),
        (true, false, false) if refusing => (
            false,
            SFU_NOT_ACCEPTING,
            "the SFU refuses new sessions; placed rooms stay",
        ),
        (true, false, false) => (true, "Schedulable", "new rooms may be placed here"),
    };
    let schedulable = conditions::new_condition(
        conditions::SCHEDULABLE,
        schedulable,
        reason,
        message,
        generation,
        Time(now),
    );
    let new_conditions =
        conditions::upsert(&conditions::upsert(&status.conditions, ready), schedulable);
    let allocated = ParticipantLoad {
        rooms: input.load.rooms,
        participants: input.load.participants,
    };
    let changed = new_conditions != status.conditions
        || status.allocated.as_ref() != Some(&allocated)
        || status.observed_generation != generation;
    let status_write = changed.then(|| {
        let was_ready = conditions::is_true(&status.conditions, conditions::READY);
        let flipped = was_ready != readiness.ready
            && conditions::find(&status.conditions, conditions::READY).is_some();
        NodeStatusWrite {
            conditions: new_conditions.clone(),
            allocated,
            observed_generation: generation,
            readiness_event: flipped.then(|| ReadinessEvent {
                object: node.object_ref(&()),
                ready: readiness.ready,
                reason: if readiness.ready {
                    "NodeReady"
                } else {
                    "NodeNotReady"
                },
                cause: readiness.reason,
                message: readiness.message.clone(),
            }),
        }
    });

    // Health as placement will see it once the status is written.
    let mut observed = node.clone();
    observed
        .status
        .get_or_insert_with(Default::default)
        .conditions = new_conditions;
    NodePlan {
        key,
        finalizers,
        status: status_write,
        load: input.load,
        situation: Some(Situation {
            health: node_health(&observed, now, input.failover_grace),
            cordoned: node.spec.unschedulable || refusing,
            deleting,
            capacity: node.spec.capacity.participants,
            max_rooms: node.spec.capacity.rooms,
            labels: node.labels().clone(),
            region: node.spec.region.clone(),
            allocated: input.load.participants,
            rooms: input.load.rooms,
        }),
    }
}

/// Which rooms to decide again after a node's situation went from `before` to `now`.
pub fn wake(before: Option<&Situation>, now: &Situation) -> Wake {
    if before == Some(now) {
        return Wake::default();
    }
    let accepts = now.health == Health::Ready && !now.cordoned && !now.deleting;
    let gained = match before {
        None => true,
        Some(b) => {
            b.health != now.health
                || b.cordoned != now.cordoned
                || now.capacity > b.capacity
                || now.max_rooms != b.max_rooms
                || b.labels != now.labels
                || b.region != now.region
                || now.allocated < b.allocated
                || now.rooms < b.rooms
        }
    };
    Wake {
        its_rooms: now.health == Health::Failed || now.deleting,
        waiting_rooms: accepts && gained,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A node with the given spec additions, metadata additions and status.
    fn node(spec: Value, metadata: Value, status: Value) -> SfuNode {
        let mut base_spec =
            json!({"url": "wss://sfu", "region": "eu", "capacity": {"participants": 10}});
        let mut base_meta = json!({"name": "sfu-a", "namespace": "ns", "generation": 1,
                                   "resourceVersion": "7"});
        if let (Some(b), Some(e)) = (base_spec.as_object_mut(), spec.as_object()) {
            b.extend(e.clone());
        }
        if let (Some(b), Some(e)) = (base_meta.as_object_mut(), metadata.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(
            json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode",
            "metadata": base_meta, "spec": base_spec, "status": status}),
        )
        .unwrap()
    }

    fn input<'a>(node: &'a SfuNode, load: Load, probe: Option<&'a ProbeRecord>) -> NodeInput<'a> {
        NodeInput {
            node,
            load,
            has_rooms: load.rooms > 0,
            probe,
            now: at(1000),
            failover_grace: Duration::from_secs(10),
        }
    }

    fn key() -> NodeKey {
        NodeKey::new("ns", "sfu-a")
    }

    fn condition<'a>(write: &'a NodeStatusWrite, type_: &str) -> &'a Condition {
        conditions::find(&write.conditions, type_).unwrap()
    }

    /// A new node gets the drain finalizer, Ready and Schedulable, and no readiness Event (it
    /// did not flip, it was first evaluated).
    #[test]
    fn a_new_node_is_admitted_and_finalized() {
        let n = node(json!({}), json!({}), json!(null));
        let plan = plan(key(), &input(&n, Load::default(), None));
        let finalizer = plan.finalizers.unwrap();
        assert!(finalizer.adding);
        assert_eq!(finalizer.finalizers, vec![DRAIN_FINALIZER.to_owned()]);
        assert_eq!(finalizer.resource_version.as_deref(), Some("7"));
        let status = plan.status.unwrap();
        assert_eq!(condition(&status, conditions::READY).reason, "Admitted");
        assert_eq!(condition(&status, conditions::SCHEDULABLE).status, "True");
        assert_eq!(status.observed_generation, Some(1));
        assert!(status.readiness_event.is_none());
        assert_eq!(plan.situation.unwrap().health, Health::Ready);
    }

    /// Writing what the node already shows is skipped.
    #[test]
    fn an_unchanged_status_is_not_written() {
        let n = node(
            json!({}),
            json!({"finalizers": [DRAIN_FINALIZER]}),
            json!(null),
        );
        let load = Load {
            rooms: 1,
            participants: 4,
        };
        let first = plan(key(), &input(&n, load, None)).status.unwrap();
        let mut written = n.clone();
        written.status = serde_json::from_value(first.patch()["status"].clone()).unwrap();
        let again = plan(key(), &input(&written, load, None));
        assert_eq!(again.status, None);
        assert_eq!(again.finalizers, None);
        // A change of load is written.
        let more = Load {
            rooms: 2,
            participants: 8,
        };
        let status = plan(key(), &input(&written, more, None)).status.unwrap();
        assert_eq!(status.allocated.participants, 8);
    }

    /// A Ready node whose probes now fail flips to NotReady with an Event naming the cause;
    /// placement sees it Suspect (inside the grace period), not yet Failed.
    #[test]
    fn failing_probes_flip_readiness_with_an_event() {
        let ready_since = json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "HealthCheckPassing", "message": "",
             "lastTransitionTime": at(500).to_string()}]});
        let n = node(
            json!({"healthCheck": {"url": "http://127.0.0.1:1/health", "failureThreshold": 2}}),
            json!({"finalizers": [DRAIN_FINALIZER]}),
            ready_since,
        );
        let probe = ProbeRecord {
            successes: 5,
            consecutive_failures: 2,
            last_error: Some("connection failed".into()),
            accepting_new_sessions: None,
        };
        let plan = plan(key(), &input(&n, Load::default(), Some(&probe)));
        let status = plan.status.unwrap();
        assert_eq!(condition(&status, conditions::READY).status, "False");
        assert_eq!(
            condition(&status, conditions::SCHEDULABLE).reason,
            "NodeNotReady"
        );
        let event = status.readiness_event.unwrap();
        assert_eq!(
            (event.ready, event.reason, event.cause),
            (false, "NodeNotReady", "HealthCheckFailed")
        );
        assert!(
            event.message.contains("connection failed"),
            "{}",
            event.message
        );
        assert_eq!(plan.situation.unwrap().health, Health::Suspect);
    }

    /// A cordoned node stays Ready but not Schedulable.
    #[test]
    fn a_cordoned_node_is_not_schedulable() {
        let n = node(
            json!({"unschedulable": true}),
            json!({"finalizers": [DRAIN_FINALIZER]}),
            json!(null),
        );
        let status = plan(key(), &input(&n, Load::default(), None))
            .status
            .unwrap();
        assert_eq!(condition(&status, conditions::READY).status, "True");
        let schedulable = condition(&status, conditions::SCHEDULABLE);
        assert_eq!(
            (schedulable.status.as_str(), schedulable.reason.as_str()),
            ("False", "Cordoned")
        );
    }

    /// A node being deleted keeps its finalizer while rooms count on it, and loses only that
    /// finalizer once they are gone.
    #[test]
    fn a_deleting_node_is_drained_before_it_goes() {
        let meta = json!({"finalizers": ["example.com/other", DRAIN_FINALIZER],
                          "deletionTimestamp": at(900).to_string()});
        let n = node(json!({}), meta, json!(null));
        let busy = plan(
            key(),
            &input(
                &n,
                Load {
                    rooms: 1,
                    participants: 2,
                },
                None,
            ),
        );
        assert_eq!(busy.finalizers, None);
        let status = busy.status.unwrap();
        assert_eq!(
            condition(&status, conditions::SCHEDULABLE).reason,
            "Deleting"
        );
        assert!(busy.situation.unwrap().deleting);

        let drained = plan(key(), &input(&n, Load::default(), None));
        let finalizer = drained.finalizers.unwrap();
        assert!(!finalizer.adding);
        assert_eq!(finalizer.finalizers, vec!["example.com/other".to_owned()]);
        assert_eq!((drained.status, drained.situation), (None, None));
    }

    /// A Janus node is probed at the info endpoint its kind derives, and a Janus that refuses
    /// new sessions stays Ready but is not Schedulable (placement treats it as cordoned).
    #[test]
    fn a_janus_refusing_sessions_is_ready_but_not_schedulable() {
        let n = node(
            json!({"kind": "JanusVideoRoom",
                   "admin": {"url": "http://127.0.0.1:7088/admin/", "credentialsSecret": "c"}}),
            json!({"finalizers": [DRAIN_FINALIZER]}),
            json!(null),
        );
        let check = health::effective_check(&n).unwrap();
        assert_eq!(check.url, "http://127.0.0.1:7088/admin/info");
        assert_eq!(
            plan(key(), &input(&n, Load::default(), None))
                .situation
                .unwrap()
                .health,
            Health::Suspect,
            "no probe yet: no rooms go there"
        );
        let refusing = ProbeRecord {
            successes: 1,
            consecutive_failures: 0,
            last_error: None,
            accepting_new_sessions: Some(false),
        };
        let plan = plan(key(), &input(&n, Load::default(), Some(&refusing)));
        let status = plan.status.unwrap();
        assert_eq!(
            condition(&status, conditions::READY).reason,
            "HealthCheckPassing"
        );
        let schedulable = condition(&status, conditions::SCHEDULABLE);
        assert_eq!(
            (schedulable.status.as_str(), schedulable.reason.as_str()),
            ("False", SFU_NOT_ACCEPTING)
        );
        assert!(plan.situation.unwrap().cordoned);
    }

    fn situation() -> Situation {
        Situation {
            health: Health::Ready,
            cordoned: false,
            deleting: false,
            capacity: 10,
            max_rooms: None,
            labels: BTreeMap::new(),
            region: "eu".into(),
            allocated: 4,
            rooms: 1,
        }
    }

    /// Rooms are woken exactly when the node's change can matter to them.
    #[test]
    fn wake_follows_what_changed() {
        let s = situation();
        assert_eq!(wake(Some(&s), &s), Wake::default());
        assert_eq!(
            wake(None, &s),
            Wake {
                its_rooms: false,
                waiting_rooms: true
            }
        );
        let freed = Situation {
            allocated: 0,
            rooms: 0,
            ..s.clone()
        };
        assert!(wake(Some(&s), &freed).waiting_rooms);
        let busier = Situation {
            allocated: 8,
            rooms: 2,
            ..s.clone()
        };
        assert_eq!(wake(Some(&s), &busier), Wake::default());
        let failed = Situation {
            health: Health::Failed,
            ..s.clone()
        };
        assert_eq!(
            wake(Some(&s), &failed),
            Wake {
                its_rooms: true,
                waiting_rooms: false
            }
        );
        let deleting = Situation {
            deleting: true,
            ..s.clone()
        };
        assert!(wake(Some(&s), &deleting).its_rooms);
        let cordoned = Situation {
            cordoned: true,
            ..s.clone()
        };
        assert_eq!(wake(Some(&s), &cordoned), Wake::default());
        assert!(wake(Some(&cordoned), &s).waiting_rooms, "uncordon");
    }
}

//! Turns watched objects into the plain structs the placement crate decides on. Pure.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;
use k8s_openapi::jiff::Timestamp;
use switchboard_crds::{Room, SfuNode, conditions};
use switchboard_placement::{
    Health, LabelSelector, NodeView, RegionPolicy, Requirement, RoomRequest, SelectorError,
};

use crate::keys::NodeKey;
use crate::ledger::Ledger;

/// A Room whose spec cannot be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRoom {
    #[error("spec.sfuSelector: {0}")]
    Selector(#[from] SelectorError),
    #[error("the Room has no namespace or uid yet")]
    Incomplete,
}

/// Health as placement needs it: Ready, NotReady within the grace period (Suspect), or
/// NotReady past it (Failed). A node with a health check or heartbeat that has not been
/// evaluated yet is Suspect: no rooms go there, but none leave because of it either.
pub fn node_health(node: &SfuNode, now: Timestamp, grace: Duration) -> Health {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY));
    match ready {
        Some(c) if c.status == "True" => Health::Ready,
        Some(c) if c.status == "False" => {
            let since = now.duration_since(c.last_transition_time.0);
            if !since.is_negative() && since.unsigned_abs() >= grace {
                Health::Failed
            } else {
                Health::Suspect
            }
        }
        // Not evaluated yet. A node with no health signal is Ready once admitted, and seeing
        // it here admits it; waiting for the node loop's first status write would only mark
        // rooms Unschedulable for a moment.
        _ if crate::health::effective_check(node).is_none()
            && node.spec.heartbeat_timeout_seconds.is_none() =>
        {
            Health::Ready
        }
        _ => Health::Suspect,
    }
}

/// The NodeView of one SfuNode, with its load from the ledger.
pub fn node_view(
    node: &SfuNode,
    ledger: &Ledger,
    now: Timestamp,
    grace: Duration,
) -> Option<NodeView> {
    let key = NodeKey::of(node)?;
    let load = ledger.load(&key);
    Some(NodeView {
        name: key.name,
        region: node.spec.region.clone(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        health: node_health(node, now, grace),
        cordoned: node.spec.unschedulable || refuses_sessions(node),
        deleting: node.metadata.deletion_timestamp.is_some(),
        capacity: node.spec.capacity.participants,
        max_rooms: node.spec.capacity.rooms,
        allocated: load.participants,
        rooms: load.rooms,
    })
}

/// True when the node's `Schedulable` condition says its SFU refuses new sessions: placement
/// treats it like a cordon (placed rooms stay, no new ones).
pub fn refuses_sessions(node: &SfuNode) -> bool {
    node.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::SCHEDULABLE))
        .is_some_and(|c| c.status == "False" && c.reason == SFU_NOT_ACCEPTING)
}

/// The `Schedulable` reason of a node whose SFU refuses new sessions.
pub const SFU_NOT_ACCEPTING: &str = "SfuNotAccepting";

fn selector(selector: &KubeSelector) -> Result<LabelSelector, SelectorError> {
    let mut out = LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for expression in selector.match_expressions.iter().flatten() {
        out.match_expressions.push(Requirement::new(
            expression.key.clone(),
            expression.operator.parse()?,
            expression.values.clone().unwrap_or_default(),
        )?);
    }
    Ok(out)
}

/// The placement request of a Room.
pub fn room_request(room: &Room) -> Result<RoomRequest, InvalidRoom> {
    let namespace = room
        .metadata
        .namespace
        .as_deref()
        .ok_or(InvalidRoom::Incomplete)?;
    let name = room
        .metadata
        .name
        .as_deref()
        .ok_or(InvalidRoom::Incomplete)?;
    Ok(RoomRequest {
        key: format!("{namespace}/{name}"),
        participants: room.spec.max_participants,
        region: room.spec.region.clone(),
        region_policy: match room.spec.region_policy.unwrap_or_default() {
            switchboard_crds::RegionPolicy::Preferred => RegionPolicy::Preferred,
            switchboard_crds::RegionPolicy::Required => RegionPolicy::Required,
        },
        selector: room.spec.sfu_selector.as_ref().map(selector).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(extra: serde_json::Value, ready: Option<(&str, i64)>) -> SfuNode {
        let mut spec = json!({"url": "wss://x", "region": "eu", "capacity": {"participants": 10}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let status = ready.map(|(status, at)| {
            json!({"conditions": [{"type": "Ready", "status": status, "reason": "R", "message": "",
                                   "lastTransitionTime": Timestamp::from_second(at).unwrap().to_string()}]})
        });
        serde_json::from_value(
            json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode",
            "metadata": {"name": "n", "namespace": "ns"}, "spec": spec, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn health_follows_the_ready_condition_and_the_grace_period() {
        let now = Timestamp::from_second(1000).unwrap();
        let grace = Duration::from_secs(10);
        assert_eq!(
            node_health(&node(json!({}), Some(("True", 0))), now, grace),
            Health::Ready
        );
        assert_eq!(
            node_health(&node(json!({}), Some(("False", 995))), now, grace),
            Health::Suspect
        );
        assert_eq!(
            node_health(&node(json!({}), Some(("False", 990))), now, grace),
            Health::Failed
        );
        // Never evaluated: ready only when there is nothing to evaluate.
        assert_eq!(
            node_health(&node(json!({}), None), now, grace),
            Health::Ready
        );
        assert_eq!(
            node_health(
                &node(json!({"heartbeatTimeoutSeconds": 5}), None),
                now,
                grace
            ),
            Health::Suspect
        );
    }
}

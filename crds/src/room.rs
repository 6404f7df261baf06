//! `Room`: one call, placed by the operator on one SfuNode.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{
    MEDIA_URL_PATTERN, REGION_MAX_LEN, REGION_PATTERN, ROOM_PARTICIPANTS_MAX, URL_MAX_LEN,
};

/// One call. The operator places it on an SfuNode and writes the placement into its status;
/// signaling tells joining clients where that is.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "Room",
    plural = "rooms",
    category = "switchboard",
    namespaced,
    doc = "Room is one call, placed by the Switchboard operator on one SfuNode. Create one with kubectl, or let signaling create it on first join; `status` shows where it lives.",
    status = "RoomStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"SFU","type":"string","jsonPath":".status.sfuNode"}"#,
    printcolumn = r#"{"name":"Participants","type":"integer","jsonPath":".status.participants"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxParticipants"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = kube::core::Rule::new("!has(self.regionPolicy) || has(self.region)").message("spec.regionPolicy needs spec.region").field_path(".regionPolicy"))]
#[serde(rename_all = "camelCase")]
pub struct RoomSpec {
    /// The participant slots this room reserves on its SFU node while placed there.
    #[schemars(range(min = 1, max = ROOM_PARTICIPANTS_MAX))]
    pub max_participants: u32,

    /// The region to place this room in, usually where its first participant is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = REGION_MAX_LEN), regex(pattern = REGION_PATTERN))]
    pub region: Option<String>,

    /// How strictly `region` binds. `Preferred` (the default) falls back to other regions when
    /// the region has no room left; `Required` leaves the room Unschedulable instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_policy: Option<RegionPolicy>,

    /// Only SfuNodes whose labels match this selector are considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu_selector: Option<LabelSelector>,

    /// When set, the room is deleted after `status.participants` has stayed 0 for this many
    /// seconds. Rooms created by signaling's auto-create always set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub empty_timeout_seconds: Option<u32>,
}

/// How strictly a Room's region binds its placement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RegionPolicy {
    /// Prefer nodes of the region; use others when none there fits.
    #[default]
    Preferred,
    /// Only nodes of the region; otherwise the room stays Unschedulable.
    Required,
}

/// Where a Room stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoomPhase {
    /// Not placed yet.
    #[default]
    Pending,
    /// Placed on `status.sfuNode`.
    Placed,
    /// No node fits; the `Placed` condition says why. Retried when capacity appears.
    Unschedulable,
}

/// The placement of a Room and what signaling observed of it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatus {
    /// Pending, Placed or Unschedulable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RoomPhase>,

    /// The SfuNode this room is placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub sfu_node: Option<String>,

    /// The media URL of that node, copied at placement so clients need not read the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = URL_MAX_LEN), regex(pattern = MEDIA_URL_PATTERN))]
    pub sfu_url: Option<String>,

    /// The room's id on its SFU node, for SFU kinds that hold rooms of their own (for
    /// `JanusVideoRoom`, the VideoRoom's string id). Written when the operator has created the
    /// room there; the `Provisioned` condition says whether it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub sfu_room: Option<String>,

    /// The participant slots reserved on `sfuNode`. Normally `spec.maxParticipants` at the
    /// time of placement; the operator's ledger sums these, so load never drifts from what
    /// the statuses say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_participants: Option<u32>,

    /// When the room was placed on its current node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<Time>,

    /// How many times the room has been placed: 1 after the first placement, incremented on
    /// every failover to another node.
    #[serde(default)]
    pub placement_generation: u32,

    /// Participants connected right now, as counted by signaling (throttled).
    #[serde(default)]
    pub participants: u32,

    /// When `participants` last became 0; the clock for `spec.emptyTimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since: Option<Time>,

    /// `Placed`: whether the room has a node, and if not, why. `Provisioned`: whether the
    /// room exists on that node's SFU (always true for `Opaque` nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

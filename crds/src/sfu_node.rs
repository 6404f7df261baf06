//! `SfuNode`: one SFU media server that Rooms can be placed on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{
    DNS_SUBDOMAIN_MAX_LEN, DNS_SUBDOMAIN_PATTERN, HTTP_URL_PATTERN, ICE_URL_PATTERN, ICE_URLS_MAX,
    MEDIA_URL_PATTERN, NODE_PARTICIPANTS_MAX, REGION_MAX_LEN, REGION_PATTERN, URL_MAX_LEN,
};

/// One SFU media server. The operator places Rooms on SfuNodes: least-loaded, never over
/// capacity, and sticky while the node stays Ready.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "SfuNode",
    plural = "sfunodes",
    shortname = "sfu",
    category = "switchboard",
    namespaced,
    doc = "SfuNode is one SFU media server that the Switchboard operator places Rooms on: least-loaded, never over capacity, and sticky while the node stays Ready.",
    status = "SfuNodeStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Schedulable","type":"string","jsonPath":".status.conditions[?(@.type==\"Schedulable\")].status"}"#,
    printcolumn = r#"{"name":"Rooms","type":"integer","jsonPath":".status.allocated.rooms"}"#,
    printcolumn = r#"{"name":"Participants","type":"integer","jsonPath":".status.allocated.participants"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","jsonPath":".spec.capacity.participants"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.kind == 'Opaque' || has(self.admin)").message("spec.admin is required unless spec.kind is Opaque").field_path(".admin"))]
pub struct SfuNodeSpec {
    /// What kind of SFU this is, which says how Switchboard drives it. `Opaque` (the default):
    /// Switchboard only places rooms here and hands clients `url`; nothing is created on the
    /// SFU. `JanusVideoRoom`: a Janus gateway with the VideoRoom plugin; the operator creates
    /// each room on it, reads its health and load, and signaling hands every participant a
    /// signed Janus token. See docs/sfu.md.
    #[serde(default)]
    pub kind: SfuKind,

    /// Where clients connect for media, as handed to them in `joined` (for example
    /// `wss://sfu-1.example.com/rtc`; for `JanusVideoRoom`, the Janus WebSocket transport).
    /// Scheme `https`, `http`, `wss` or `ws`.
    #[schemars(length(min = 1, max = URL_MAX_LEN), regex(pattern = MEDIA_URL_PATTERN))]
    pub url: String,

    /// How the operator and signaling reach the SFU's server-side API. Required unless `kind`
    /// is `Opaque`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SfuAdmin>,

    /// The region this node serves (for example `eu-west-1`). Rooms with a region prefer, or
    /// require, nodes of the same region. Lowercase letters, digits and '-', at most 63
    /// characters.
    #[schemars(length(min = 1, max = REGION_MAX_LEN), regex(pattern = REGION_PATTERN))]
    pub region: String,

    /// How much this node can carry. Placement never exceeds it.
    pub capacity: SfuCapacity,

    /// The TURN and STUN servers clients of this node should use. When empty, signaling hands
    /// out its global list instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnServers>,

    /// Cordon: when true, no new Room is placed here. Rooms already here stay. Set it back to
    /// false to uncordon.
    #[serde(default)]
    pub unschedulable: bool,

    /// An HTTP endpoint the operator probes to decide whether this node is Ready. A 2xx answer
    /// within the timeout is a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HttpHealthCheck>,

    /// When set, an agent on the SFU patches `status.lastHeartbeatTime`, and the node is
    /// NotReady once the last heartbeat is older than this many seconds. Can be combined with
    /// `healthCheck`; then both must pass. With neither, the node is Ready once admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub heartbeat_timeout_seconds: Option<u32>,
}

/// The kinds of SFU Switchboard can drive. Each kind has one adapter in the operator and one in
/// signaling; docs/sfu.md is the contract a new kind implements.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SfuKind {
    /// Placement only: the URL is handed to clients as is and nothing is created on the SFU.
    #[default]
    Opaque,
    /// Janus with the VideoRoom plugin, token authentication and the admin API.
    JanusVideoRoom,
}

impl SfuKind {
    /// The name used on the wire and in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            SfuKind::Opaque => "Opaque",
            SfuKind::JanusVideoRoom => "JanusVideoRoom",
        }
    }
}

/// The SFU's server-side API and the Secret with its credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SfuAdmin {
    /// The SFU's server-side API. For `JanusVideoRoom`, the admin API of the Janus HTTP
    /// transport, for example `http://janus-1.media.svc:7088/admin`. `http://` or `https://`.
    #[schemars(length(min = 1, max = URL_MAX_LEN), regex(pattern = HTTP_URL_PATTERN))]
    pub url: String,

    /// The name of a Secret in this node's namespace holding the SFU's credentials. Its keys
    /// depend on `kind`; for `JanusVideoRoom`: `tokenSecret` (Janus `token_auth_secret`),
    /// `adminSecret` (Janus `admin_secret`) and `roomAdminKey` (the VideoRoom `admin_key`).
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX_LEN), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub credentials_secret: String,
}

/// The capacity of one SFU node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SfuCapacity {
    /// Participant slots. Each Room reserves `spec.maxParticipants` of them while placed here.
    #[schemars(range(min = 1, max = NODE_PARTICIPANTS_MAX))]
    pub participants: u32,

    /// The most Rooms this node may hold, whatever their size. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = NODE_PARTICIPANTS_MAX))]
    pub rooms: Option<u32>,
}

/// TURN and STUN servers advertised for one SFU node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TurnServers {
    /// TURN/STUN URIs, for example `turn:turn-1.example.com:3478?transport=udp` or
    /// `turns:turn-1.example.com:5349`. Credentials are minted per participant by signaling.
    #[schemars(length(max = ICE_URLS_MAX), inner(length(min = 1, max = URL_MAX_LEN), regex(pattern = ICE_URL_PATTERN)))]
    pub urls: Vec<String>,
}

/// An HTTP health check the operator runs against an SFU node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthCheck {
    /// The URL to GET, `http://` or `https://`.
    #[schemars(length(min = 1, max = URL_MAX_LEN), regex(pattern = HTTP_URL_PATTERN))]
    pub url: String,

    /// Seconds between probes.
    #[serde(default = "default_period_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: u32,

    /// Seconds one probe may take before it counts as a failure.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,

    /// Consecutive failed probes after which the node is NotReady.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

fn default_period_seconds() -> u32 {
    10
}
fn default_timeout_seconds() -> u32 {
    2
}
fn default_failure_threshold() -> u32 {
    3
}

/// What the operator observed of an SFU node, and what it has allocated on it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SfuNodeStatus {
    /// `Ready`: the node answers its health check and/or heartbeats in time.
    /// `Schedulable`: the node is Ready and not cordoned, so new Rooms may be placed on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The last heartbeat from the SFU's agent. Used when `spec.heartbeatTimeoutSeconds` is
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,

    /// What the operator has placed here, recomputed from the Rooms' statuses. This is the
    /// load placement decides on, counted the moment each Room is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<ParticipantLoad>,

    /// Slots the operator has promised to Rooms whose own status may not show it yet. Every
    /// placement is written here first, with this object's resourceVersion as a precondition,
    /// so two operator replicas racing for the last slot cannot both win. Entries expire once
    /// every replica has surely seen the Room's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub reservations: Vec<SlotReservation>,

    /// Load the SFU reports about itself, for information and dashboards. Placement does not
    /// trust it, since a reported load is stale by construction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_load: Option<ReportedLoad>,

    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Rooms and participant slots.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantLoad {
    /// Rooms placed on the node.
    pub rooms: u32,
    /// Participant slots reserved by those Rooms.
    pub participants: u32,
}

/// Slots promised to one Room on one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlotReservation {
    /// The Room's name (Rooms are placed on nodes of their own namespace).
    #[schemars(length(max = 253))]
    pub room: String,
    /// The Room's uid, so a recreated Room of the same name is not mistaken for this one.
    #[schemars(length(max = 64))]
    pub uid: String,
    /// Participant slots reserved.
    pub participants: u32,
    /// When the reservation stops counting on its own.
    pub expires_at: Time,
}

/// Load as reported by the SFU itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReportedLoad {
    /// Participants connected to the SFU right now (for `JanusVideoRoom`, summed over every
    /// VideoRoom's participant list, read by the operator from the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<u32>,
    /// Client sessions open on the SFU right now (for `JanusVideoRoom`, Janus sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// CPU use of the SFU, in percent of what it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub cpu_percent: Option<u32>,
}

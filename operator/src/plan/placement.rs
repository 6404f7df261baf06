//! The placement planner: from what the placer observed, which writes place one batch of rooms.
//!
//! [`plan`] takes every observed Room and SfuNode, the placer's in-flight reservations, the
//! batch, the time and the configuration, and returns a [`PlacementPlan`]: per node, one
//! conditional status write adding slot reservations and then the placement write of each
//! room reserved there; the Unschedulable writes; the rooms that need nothing more; and when
//! rooms waiting for capacity should be decided again. The placer (`crate::placer`) applies it.
//!
//! # Guarantees
//!
//! - **Never over capacity within a batch.** Every room placed by the plan counts against its
//!   node, in the ledger and in the namespace's [`PlacementIndex`], before the next room of
//!   the batch is decided. So the rooms a plan places on a node, plus what the ledger already
//!   counted there, fit the node's capacity and room limit.
//! - **Sticky.** A Placed room gets no write unless its node failed (NotReady past the
//!   failover grace), is being deleted, or is gone ([`switchboard_placement::decide`]).
//! - **Provisioned before Placed.** A room placed on a node whose kind holds rooms
//!   (`JanusVideoRoom`) carries the SFU room to create there; the placer writes `Placed` only
//!   after the SFU confirmed it, with a `Provisioned` condition and `status.sfuRoom`. Such a
//!   room first gets the [`ROOM_FINALIZER`], so its deletion waits until the SFU room is
//!   destroyed ([`Release`]); that write is conditional on the Room's resourceVersion, so a
//!   decision made from a stale view fails before it creates anything on an SFU.
//! - **Conditional writes.** Every write carries the resourceVersion the plan was made from, so
//!   applying a plan made from a stale view fails with 409 instead of overwriting newer state.
//!
//! # Assumptions
//!
//! - The node list is the placer's freshest view: the watch's, except where its own
//!   conditional write is newer (`Placer::node_snapshot`).
//! - In-flight reservations are those the placer made and has not yet seen in a Room status
//!   ([`prune_in_flight`]).
//!
//! # Caveats
//!
//! - A room may count on two nodes for a moment (moving, or a reservation another replica made
//!   that this one has not seen in the room's status): that only errs on the safe side.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use switchboard_crds::{
    ParticipantLoad, Room, RoomPhase, SfuKind, SfuNode, SlotReservation, conditions,
};
use switchboard_placement::{
    CurrentPlacement, Decision, MoveReason, NoFit, NodeView, Placement, PlacementIndex, Strategy,
    decide,
};

use crate::keys::{NodeKey, RoomKey};
use crate::ledger::{Ledger, LocalReservation};
use crate::views::{node_health, node_view, room_request};

/// The finalizer on a Room provisioned on an SFU: the Room is not gone until its room on the
/// SFU is destroyed (or its node is gone or failed, so there is nothing left to destroy).
pub const ROOM_FINALIZER: &str = "switchboard.dev/sfu-room";

/// How rooms are placed.
#[derive(Debug, Clone)]
pub struct PlacerConfig {
    pub strategy: Strategy,
    pub failover_grace: Duration,
    pub reservation_ttl: Duration,
    pub batch_size: usize,
}

/// Everything one batch is planned from.
pub struct PlacementInput<'a> {
    /// Every observed Room.
    pub rooms: &'a [Arc<Room>],
    /// Every observed SfuNode.
    pub nodes: &'a [Arc<SfuNode>],
    /// Reservations this placer made that no Room status shows yet.
    pub in_flight: &'a [LocalReservation],
    /// The rooms to decide, in order.
    pub batch: &'a [RoomKey],
    pub now: Timestamp,
    pub config: &'a PlacerConfig,
}

/// The writes that place one batch.
#[derive(Debug, Default)]
pub struct PlacementPlan {
    /// Per node: reserve slots, then write each room's placement.
    pub nodes: Vec<NodeReservation>,
    /// Rooms to mark Unschedulable: no node fits, or the spec is invalid.
    pub unschedulable: Vec<Unschedulable>,
    /// Rooms that need nothing (they stay, are gone or are being deleted).
    pub finished: Vec<RoomKey>,
    /// When capacity held by unconfirmed reservations frees, so rooms that found no node in
    /// this batch should be decided again then (once, instead of polling).
    pub retry_waiting_at: Option<Timestamp>,
    /// Deleted rooms whose room on the SFU must be destroyed before their finalizer goes.
    pub releases: Vec<Release>,
}

/// A room to create on the chosen SFU before the Room is Placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub kind: SfuKind,
    /// The room's id there (`status.sfuRoom`).
    pub sfu_room: String,
    /// Publishers allowed: the Room's `maxParticipants`.
    pub publishers: u32,
}

/// A room on an SFU that must go: the Room was deleted, or it moved off a node that is still
/// alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub room: RoomKey,
    /// The node holding the SFU room, when it still exists.
    pub node: Option<NodeKey>,
    pub sfu_room: Option<String>,
    /// False when the node failed or is gone: nothing is left to destroy, so a failed destroy
    /// does not hold the finalizer.
    pub node_alive: bool,
    /// The Room's finalizers without [`ROOM_FINALIZER`], and the resourceVersion they were read
    /// at; `None` for a release that is not a deletion (a failover's old copy).
    pub finalizers_after: Option<(Vec<String>, Option<String>)>,
}

/// One conditional status write to an SfuNode adding the batch's reservations, followed by
/// the placement writes of the rooms reserved there.
#[derive(Debug, Clone)]
pub struct NodeReservation {
    pub node: NodeKey,
    /// The node's resourceVersion the plan was made from: the write's precondition.
    pub resource_version: String,
    /// The node's complete reservation list after the write: unexpired entries of other rooms,
    /// and one new entry per room below.
    pub reservations: Vec<SlotReservation>,
    /// The node's load in the ledger once the batch is counted.
    pub allocated: ParticipantLoad,
    /// When the new reservations stop counting on their own.
    pub expires_at: Timestamp,
    pub rooms: Vec<RoomPlacement>,
}

/// One Room's placement write.
#[derive(Debug, Clone)]
pub struct RoomPlacement {
    pub room: RoomKey,
    pub uid: String,
    pub object: ObjectReference,
    pub resource_version: Option<String>,
    pub node: String,
    pub node_url: String,
    pub slots: u32,
    /// Set on a failover: the node left and why.
    pub moved_from: Option<(String, MoveReason)>,
    /// `Placed` or `Failover`: the condition and Event reason.
    pub reason: &'static str,
    /// The condition message and Event note.
    pub note: String,
    pub placement_generation: u32,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub placed_at: Timestamp,
    /// The room to create on the node's SFU first, for kinds that hold rooms.
    pub provision: Option<Provision>,
    /// For a provisioned room: its finalizers with [`ROOM_FINALIZER`] in them, written
    /// conditionally on the Room's resourceVersion before the SFU is touched. Besides adding
    /// the finalizer, this write is the claim: a decision made from a stale view of the Room
    /// fails it with 409 before it can create a copy on another node.
    pub add_finalizer: Option<Vec<String>>,
    /// The copy on the node the room left, to destroy once the new placement is written.
    pub release: Option<Release>,
    /// The room's conditions before this placement, for [`RoomPlacement::provision_failed_patch`].
    pub previous_conditions: Vec<Condition>,
}

/// One Room's Unschedulable write, which also releases any node it had.
#[derive(Debug, Clone)]
pub struct Unschedulable {
    pub room: RoomKey,
    pub object: ObjectReference,
    pub resource_version: Option<String>,
    /// PascalCase: a [`switchboard_placement::NoFitReason`] or `InvalidSpec`.
    pub reason: &'static str,
    pub message: String,
    /// True when the room had to leave its node (a failover that found no new node).
    pub displaced: bool,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    /// False when the room already said exactly this, so no second Event is emitted.
    pub emit_event: bool,
}

impl NodeReservation {
    /// The merge patch for the node's status subresource.
    pub fn patch(&self) -> Value {
        json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": {
                "reservations": self.reservations,
                "allocated": self.allocated,
            }
        })
    }
}

impl RoomPlacement {
    /// The merge patch for the room's status subresource.
    pub fn patch(&self) -> Value {
        json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": {
                "phase": RoomPhase::Placed,
                "sfuNode": self.node,
                "sfuUrl": self.node_url,
                "reservedParticipants": self.slots,
                "placedAt": Time(self.placed_at),
                "placementGeneration": self.placement_generation,
                "observedGeneration": self.observed_generation,
                "sfuRoom": self.provision.as_ref().map(|p| &p.sfu_room),
                "conditions": self.conditions,
            }
        })
    }

    /// The same patch for a resourceVersion changed by adding the finalizer.
    pub fn patch_at(&self, resource_version: Option<String>) -> Value {
        let mut patch = self.patch();
        patch["metadata"]["resourceVersion"] = json!(resource_version);
        patch
    }

    pub fn is_failover(&self) -> bool {
        self.moved_from.is_some()
    }

    /// The status patch that shows why the room could not be created on its SFU:
    /// `Provisioned=False` (`ProvisionFailed`, with the SFU's answer), the rest of the status
    /// as it was, since the placement is not written until the SFU holds the room. `None` when
    /// the room already shows that same failure, so retries do not write it again.
    pub fn provision_failed_patch(
        &self,
        resource_version: Option<String>,
        error: &str,
        now: Timestamp,
    ) -> Option<Value> {
        let message = match &self.provision {
            Some(p) => format!(
                "cannot create room {} on {}: {error}",
                p.sfu_room, self.node
            ),
            None => return None,
        };
        let shown = conditions::find(&self.previous_conditions, conditions::PROVISIONED)
            .is_some_and(|c| c.status == "False" && c.message == message);
        if shown {
            return None;
        }
        let condition = conditions::new_condition(
            conditions::PROVISIONED,
            false,
            "ProvisionFailed",
            message,
            self.observed_generation,
            Time(now),
        );
        Some(json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {"conditions": conditions::upsert(&self.previous_conditions, condition)},
        }))
    }
}

impl Unschedulable {
    /// The merge patch for the room's status subresource.
    pub fn patch(&self) -> Value {
        json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": {
                "phase": RoomPhase::Unschedulable,
                "sfuNode": null, "sfuUrl": null, "reservedParticipants": null, "placedAt": null,
                "sfuRoom": null,
                "observedGeneration": self.observed_generation,
                "conditions": self.conditions,
            }
        })
    }

    /// The Event reason: `InvalidSpec` for a spec placement cannot read, otherwise
    /// `Unschedulable` (the condition carries the finer reason).
    pub fn event_reason(&self) -> &'static str {
        if self.reason == "InvalidSpec" {
            "InvalidSpec"
        } else {
            "Unschedulable"
        }
    }
}

/// Drops in-flight reservations that expired or that the room's own status now shows.
pub fn prune_in_flight(
    in_flight: &mut HashMap<String, LocalReservation>,
    rooms: &[Arc<Room>],
    now: Timestamp,
) {
    let reflected: HashMap<&str, &str> = rooms
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            (status.phase == Some(RoomPhase::Placed)).then_some(())?;
            Some((r.metadata.uid.as_deref()?, status.sfu_node.as_deref()?))
        })
        .collect();
    in_flight.retain(|uid, res| {
        res.expires_at > now && reflected.get(uid.as_str()) != Some(&res.node.name.as_str())
    });
}

/// A room decided onto a node, before the node's write is assembled.
struct Planned {
    room: Arc<Room>,
    key: RoomKey,
    uid: String,
    to: Placement,
    moved_from: Option<(String, MoveReason)>,
}

/// Plans one batch. Pure: no client, no clock, no randomness.
pub fn plan(input: &PlacementInput<'_>) -> PlacementPlan {
    let now = input.now;
    let config = input.config;
    let mut ledger = Ledger::build(
        input.rooms.iter().map(|r| r.as_ref()),
        input.nodes.iter().map(|n| n.as_ref()),
        input.in_flight,
        now,
    );

    // One placement index per namespace, built once per batch from the ledger and kept current
    // as this batch reserves slots.
    let mut by_namespace: HashMap<String, Vec<NodeView>> = HashMap::new();
    for node in input.nodes {
        if let (Some(ns), Some(view)) = (
            &node.metadata.namespace,
            node_view(node, &ledger, now, config.failover_grace),
        ) {
            by_namespace.entry(ns.clone()).or_default().push(view);
        }
    }
    let mut indexes: HashMap<String, PlacementIndex> = by_namespace
        .into_iter()
        .map(|(ns, views)| (ns, PlacementIndex::new(views)))
        .collect();
    let nodes_by_key: HashMap<NodeKey, &Arc<SfuNode>> = input
        .nodes
        .iter()
        .filter_map(|n| Some((NodeKey::of(n)?, n)))
        .collect();
    let rooms_by_key: HashMap<RoomKey, &Arc<Room>> = input
        .rooms
        .iter()
        .filter_map(|r| Some((RoomKey::of(r)?, r)))
        .collect();

    let mut out = PlacementPlan::default();
    let mut per_node: BTreeMap<NodeKey, Vec<Planned>> = BTreeMap::new();
    let mut retry_waiting = false;
    let mut in_flight_expiry: Option<Timestamp> = None;
    for key in input.batch {
        let Some(room) = rooms_by_key.get(key).copied() else {
            out.finished.push(key.clone());
            continue;
        };
        if room.metadata.deletion_timestamp.is_some() {
            if room.finalizers().iter().any(|f| f == ROOM_FINALIZER) {
                out.releases
                    .push(deletion_release(room, key, &nodes_by_key, now, config));
            }
            out.finished.push(key.clone());
            continue;
        }
        let Some(uid) = room.metadata.uid.clone() else {
            continue;
        };
        let request = match room_request(room) {
            Ok(request) => request,
            Err(error) => {
                out.unschedulable.push(unschedulable(
                    room,
                    key,
                    "InvalidSpec",
                    error.to_string(),
                    false,
                    now,
                ));
                continue;
            }
        };
        let status = room.status.clone().unwrap_or_default();
        let current = match (status.phase, &status.sfu_node) {
            (Some(RoomPhase::Placed), Some(node)) => Some(CurrentPlacement { node: node.clone() }),
            _ => None,
        };
        if current.is_none()
            && let Some(written) = input.in_flight.iter().find(|r| r.room_uid == uid)
        {
            // This placer placed the room and the watch has not shown that status yet.
            // Deciding again from the older status would provision a second copy on another
            // node (its status write then fails, but the SFU room stays live). The Room's next
            // event brings it back, and at the latest the reservation's expiry.
            out.finished.push(key.clone());
            in_flight_expiry = Some(
                in_flight_expiry
                    .map_or(written.expires_at, |t: Timestamp| t.min(written.expires_at)),
            );
            continue;
        }
        let decision = match indexes.get(&key.namespace) {
            Some(index) => index.decide(&request, current.as_ref(), config.strategy),
            None => decide(&[], &request, current.as_ref(), config.strategy),
        };
        let (to, moved_from) = match decision {
            Decision::Stay => {
                out.finished.push(key.clone());
                continue;
            }
            Decision::Place(to) => (to, None),
            Decision::Move { from, reason, to } => (to, Some((from, reason))),
            Decision::Unschedulable { no_fit, displaced } => {
                if ledger.next_expiry.is_some() {
                    retry_waiting = true;
                }
                let (reason, message) = unschedulable_message(&no_fit, displaced.as_ref());
                let unchanged = displaced.is_none()
                    && status.phase == Some(RoomPhase::Unschedulable)
                    && conditions::find(&status.conditions, conditions::PLACED).is_some_and(|c| {
                        c.message == message && c.observed_generation == room.metadata.generation
                    });
                if !unchanged {
                    out.unschedulable.push(unschedulable(
                        room,
                        key,
                        reason,
                        message,
                        displaced.is_some(),
                        now,
                    ));
                }
                continue;
            }
        };
        let node_key = key.node(to.node.clone());
        // Older entries of this room elsewhere (the node it leaves, a write that failed, or a
        // placement by another replica this one has not seen yet) keep counting until they
        // expire or the room's status shows where it is: dropping them here could let this
        // batch fill a node that really holds the room.
        if ledger.reserve(node_key.clone(), &uid, room.spec.max_participants)
            && let Some(index) = indexes.get_mut(&key.namespace)
        {
            index.reserve(&to.node, room.spec.max_participants);
        }
        per_node.entry(node_key).or_default().push(Planned {
            room: room.clone(),
            key: key.clone(),
            uid,
            to,
            moved_from,
        });
    }
    let waiting_expiry = ledger.next_expiry.filter(|_| retry_waiting);
    if let Some(at) = [waiting_expiry, in_flight_expiry]
        .into_iter()
        .flatten()
        .min()
    {
        // A little after the expiry, so the reservation surely no longer counts.
        out.retry_waiting_at = at.checked_add(SignedDuration::from_millis(50)).ok();
    }

    let ttl =
        SignedDuration::try_from(config.reservation_ttl).unwrap_or(SignedDuration::from_secs(10));
    let expires_at = now.checked_add(ttl).unwrap_or(now);
    for (key, planned) in per_node {
        let Some(node) = nodes_by_key.get(&key) else {
            continue;
        };
        let planned = planned
            .into_iter()
            .map(|p| {
                let release = p.moved_from.as_ref().and_then(|(from, _)| {
                    old_copy_release(&p.room, &p.key, from, &nodes_by_key, now, config)
                });
                (p, release)
            })
            .collect();
        out.nodes.push(node_reservation(
            node, key, planned, &ledger, now, expires_at,
        ));
    }
    out
}

fn node_reservation(
    node: &SfuNode,
    key: NodeKey,
    planned: Vec<(Planned, Option<Release>)>,
    ledger: &Ledger,
    now: Timestamp,
    expires_at: Timestamp,
) -> NodeReservation {
    let planned_uids: Vec<&str> = planned.iter().map(|(p, _)| p.uid.as_str()).collect();
    let mut reservations: Vec<SlotReservation> = node
        .status
        .as_ref()
        .map(|s| s.reservations.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.expires_at.0 > now && !planned_uids.contains(&r.uid.as_str()))
        .collect();
    for (p, _) in &planned {
        reservations.push(SlotReservation {
            room: p.key.name.clone(),
            uid: p.uid.clone(),
            participants: p.room.spec.max_participants,
            expires_at: Time(expires_at),
        });
    }
    let load = ledger.load(&key);
    let rooms = planned
        .into_iter()
        .map(|(p, release)| room_placement(p, node, release, now))
        .collect();
    NodeReservation {
        resource_version: node.resource_version().unwrap_or_default(),
        node: key,
        reservations,
        allocated: ParticipantLoad {
            rooms: load.rooms,
            participants: load.participants,
        },
        expires_at,
        rooms,
    }
}

fn room_placement(
    planned: Planned,
    node: &SfuNode,
    release: Option<Release>,
    now: Timestamp,
) -> RoomPlacement {
    let node_url = node.spec.url.as_str();
    let kind = node.spec.kind;
    let room = &planned.room;
    let status = room.status.clone().unwrap_or_default();
    let node = planned.to.node;
    let (reason, note) = match &planned.moved_from {
        None => ("Placed", format!("placed on {node}")),
        Some((from, why)) => (
            "Failover",
            format!("moved from {from} ({}) to {node}", why.as_str()),
        ),
    };
    let note = if planned.to.in_requested_region {
        note
    } else {
        format!("{note}; its region had no room, so another region was used")
    };
    let condition = conditions::new_condition(
        conditions::PLACED,
        true,
        reason,
        note.clone(),
        room.metadata.generation,
        Time(now),
    );
    let provision = provision_for(kind, &planned.key, &planned.uid, room);
    let has_finalizer = room.finalizers().iter().any(|f| f == ROOM_FINALIZER);
    let add_finalizer = provision.is_some().then(|| {
        let mut finalizers = room.finalizers().to_vec();
        if !has_finalizer {
            finalizers.push(ROOM_FINALIZER.to_owned());
        }
        finalizers
    });
    let provisioned = match &provision {
        Some(p) => conditions::new_condition(
            conditions::PROVISIONED,
            true,
            "Created",
            format!("room {} exists on {node}", p.sfu_room),
            room.metadata.generation,
            Time(now),
        ),
        None => conditions::new_condition(
            conditions::PROVISIONED,
            true,
            "NothingToProvision",
            format!("{node} is an Opaque node: nothing is created on it"),
            room.metadata.generation,
            Time(now),
        ),
    };
    let conditions = conditions::upsert(
        &conditions::upsert(&status.conditions, condition),
        provisioned,
    );
    RoomPlacement {
        previous_conditions: status.conditions,
        provision,
        add_finalizer,
        release,
        object: room.object_ref(&()),
        resource_version: room.resource_version(),
        uid: planned.uid,
        room: planned.key,
        node,
        node_url: node_url.to_owned(),
        slots: room.spec.max_participants,
        moved_from: planned.moved_from,
        reason,
        note,
        placement_generation: status.placement_generation.saturating_add(1),
        observed_generation: room.metadata.generation,
        conditions,
        placed_at: now,
    }
}

fn unschedulable(
    room: &Room,
    key: &RoomKey,
    reason: &'static str,
    message: String,
    displaced: bool,
    now: Timestamp,
) -> Unschedulable {
    let status = room.status.clone().unwrap_or_default();
    let already = status.phase == Some(RoomPhase::Unschedulable)
        && conditions::find(&status.conditions, conditions::PLACED)
            .is_some_and(|c| c.message == message && c.reason == reason);
    let condition = conditions::new_condition(
        conditions::PLACED,
        false,
        reason,
        message.clone(),
        room.metadata.generation,
        Time(now),
    );
    Unschedulable {
        room: key.clone(),
        object: room.object_ref(&()),
        resource_version: room.resource_version(),
        reason,
        message,
        displaced,
        observed_generation: room.metadata.generation,
        conditions: conditions::upsert(&status.conditions, condition),
        emit_event: !already,
    }
}

/// The condition reason and message of an unplaceable room.
fn unschedulable_message(
    no_fit: &NoFit,
    displaced: Option<&(String, MoveReason)>,
) -> (&'static str, String) {
    let message = match displaced {
        Some((from, why)) => format!("left {from} ({}); {no_fit}", why.as_str()),
        None => no_fit.to_string(),
    };
    (no_fit.reason().as_str(), message)
}

/// The room to create on a node of this kind, if the kind holds rooms.
fn provision_for(kind: SfuKind, key: &RoomKey, uid: &str, room: &Room) -> Option<Provision> {
    match kind {
        SfuKind::Opaque => None,
        SfuKind::JanusVideoRoom => Some(Provision {
            kind,
            sfu_room: switchboard_sfu::janus::room_id(&key.namespace, &key.name, uid),
            publishers: room.spec.max_participants,
        }),
    }
}

/// Whether a node can still be asked to destroy a room: it exists and has not failed.
fn alive(node: Option<&&Arc<SfuNode>>, now: Timestamp, config: &PlacerConfig) -> bool {
    node.is_some_and(|n| {
        node_health(n, now, config.failover_grace) != switchboard_placement::Health::Failed
    })
}

/// The release of a deleted Room's SFU room, on the node its status names.
fn deletion_release(
    room: &Room,
    key: &RoomKey,
    nodes: &HashMap<NodeKey, &Arc<SfuNode>>,
    now: Timestamp,
    config: &PlacerConfig,
) -> Release {
    let status = room.status.clone().unwrap_or_default();
    let node_key = status.sfu_node.as_ref().map(|n| key.node(n.clone()));
    let node = node_key.as_ref().and_then(|k| nodes.get(k));
    Release {
        room: key.clone(),
        node_alive: alive(node, now, config),
        node: node_key,
        sfu_room: status.sfu_room.clone(),
        finalizers_after: Some((
            room.finalizers()
                .iter()
                .filter(|f| *f != ROOM_FINALIZER)
                .cloned()
                .collect(),
            room.resource_version(),
        )),
    }
}

/// The copy a moving room leaves on its old node, when that node is alive to destroy it.
fn old_copy_release(
    room: &Room,
    key: &RoomKey,
    from: &str,
    nodes: &HashMap<NodeKey, &Arc<SfuNode>>,
    now: Timestamp,
    config: &PlacerConfig,
) -> Option<Release> {
    let sfu_room = room.status.as_ref()?.sfu_room.clone()?;
    let node_key = key.node(from);
    let node = nodes.get(&node_key);
    alive(node, now, config).then(|| Release {
        room: key.clone(),
        node: Some(node_key),
        sfu_room: Some(sfu_room),
        node_alive: true,
        finalizers_after: None,
    })
}

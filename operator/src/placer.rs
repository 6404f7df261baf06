//! The placer: the one writer of placements in this replica.
//!
//! It takes batches of rooms from the [`WorkQueue`], rebuilds the [`Ledger`] from what it has
//! observed, decides each room with the pure placement crate, and then writes in two steps:
//!
//! 1. For every node that receives rooms, one status write to the SfuNode adding slot
//!    reservations, conditional on the node's resourceVersion. Two replicas (or one replica
//!    with a stale view) that race for the same node cannot both succeed: the loser gets 409
//!    and decides again from the winner's reservations. This is what keeps every node within
//!    capacity without trusting the leader lease.
//! 2. Each room's status (phase, node, url, reserved slots, generation), conditional on the
//!    room's resourceVersion, so nothing overwrites a change it has not seen.
//!
//! A reservation is held locally from the moment it is decided; it is released when either
//! write fails. A node reservation whose room write failed stops counting when it expires
//! (`--reservation-ttl`). Entries are keyed by room uid, so a room never counts twice on one
//! node; it may count on two nodes for a moment (moving, or a stale view), which only errs on
//! the safe side. Nothing a room is deciding is ever subtracted from the ledger.
//!
//! Guarantees: no node is ever allocated beyond its capacity, as seen by the ledger of any
//! replica; a placed room never moves while its node is Ready. Caveat: capacity freed by a
//! room deleted within the reservation TTL of its placement returns only when that
//! reservation expires (the placer wakes up then, rather than polling).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, SfuNode, SlotReservation, conditions};
use switchboard_placement::{
    CurrentPlacement, Decision, MoveReason, NoFit, NodeView, Placement, PlacementIndex, Strategy,
    decide,
};

use crate::events::EventSink;
use crate::ledger::{Ledger, LocalReservation, NodeKey};
use crate::metrics::Metrics;
use crate::queue::{RoomKey, WorkQueue};
use crate::views::{node_key, node_view, room_request};

/// How long to wait before deciding a room again after a write conflict.
const CONFLICT_RETRY: Duration = Duration::from_millis(25);
/// How long to wait after an unexpected API error.
const ERROR_RETRY: Duration = Duration::from_secs(1);

/// What the placer needs from the rest of the operator.
#[derive(Clone)]
pub struct PlacerConfig {
    pub strategy: Strategy,
    pub failover_grace: Duration,
    pub reservation_ttl: Duration,
    pub batch_size: usize,
}

/// One room to be written onto a node.
struct Planned {
    room: Arc<Room>,
    key: RoomKey,
    node: String,
    moved_from: Option<(String, MoveReason)>,
    in_requested_region: bool,
}

pub struct Placer {
    client: Client,
    rooms: Store<Room>,
    nodes: Store<SfuNode>,
    queue: WorkQueue,
    metrics: Arc<Metrics>,
    events: EventSink,
    config: PlacerConfig,
    /// Reservations decided here but not yet seen in the room's status, by room uid.
    local: HashMap<String, LocalReservation>,
    /// Nodes as returned by our own conditional writes, newer than the watch may show yet:
    /// node -> (resourceVersion the store had when we wrote, the node after our write).
    written_nodes: HashMap<NodeKey, (String, Arc<SfuNode>)>,
}

/// Outcome of one write, for the metrics label.
fn api_result_label(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.code == 409 => "conflict",
        _ => "error",
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

impl Placer {
    pub fn new(
        client: Client,
        rooms: Store<Room>,
        nodes: Store<SfuNode>,
        queue: WorkQueue,
        metrics: Arc<Metrics>,
        events: EventSink,
        config: PlacerConfig,
    ) -> Self {
        Placer {
            client,
            rooms,
            nodes,
            queue,
            metrics,
            events,
            config,
            local: HashMap::new(),
            written_nodes: HashMap::new(),
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        // A new leader decides every room once: rooms that became unschedulable or whose node
        // failed while no replica was leading are caught here.
        self.queue
            .push_many(self.rooms.state().iter().filter_map(|r| room_key(r)));
        loop {
            let batch = self.queue.take(self.config.batch_size).await;
            self.place_batch(batch).await;
        }
    }

    /// The nodes to decide on: the watch's view, except where our own write is newer.
    fn node_snapshot(&mut self) -> Vec<Arc<SfuNode>> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for node in self.nodes.state() {
            let Some(key) = node_key(&node) else { continue };
            let store_rv = node.resource_version().unwrap_or_default();
            match self.written_nodes.get(&key) {
                Some((rv_at_write, ours)) if *rv_at_write == store_rv => out.push(ours.clone()),
                _ => {
                    self.written_nodes.remove(&key);
                    out.push(node);
                }
            }
            seen.push(key);
        }
        self.written_nodes.retain(|k, _| seen.contains(k));
        out
    }

    async fn place_batch(&mut self, batch: Vec<RoomKey>) {
        let now = Timestamp::now();
        let nodes = self.node_snapshot();
        let rooms = self.rooms.state();
        // Local reservations end once the room's own status shows them, or when they expire.
        let reflected: HashMap<&str, &str> = rooms
            .iter()
            .filter_map(|r| {
                let status = r.status.as_ref()?;
                (status.phase == Some(RoomPhase::Placed)).then_some(())?;
                Some((r.metadata.uid.as_deref()?, status.sfu_node.as_deref()?))
            })
            .collect();
        self.local.retain(|uid, res| {
            res.expires_at > now && reflected.get(uid.as_str()) != Some(&res.node.1.as_str())
        });
        let mut ledger = Ledger::build(
            rooms.iter().map(|r| r.as_ref()),
            nodes.iter().map(|n| n.as_ref()),
            self.local.values(),
            now,
        );

        // One placement index per namespace, built once per batch from the ledger and kept
        // current as this batch reserves slots.
        let mut by_namespace: HashMap<String, Vec<NodeView>> = HashMap::new();
        for node in &nodes {
            if let (Some(ns), Some(view)) = (
                &node.metadata.namespace,
                node_view(node, &ledger, now, self.config.failover_grace),
            ) {
                by_namespace.entry(ns.clone()).or_default().push(view);
            }
        }
        let mut indexes: HashMap<String, PlacementIndex> = by_namespace
            .into_iter()
            .map(|(ns, views)| (ns, PlacementIndex::new(views)))
            .collect();

        let mut node_writes: HashMap<NodeKey, Vec<Planned>> = HashMap::new();
        let mut status_writes = Vec::new();
        let mut retry_waiting = false;
        for key in batch {
            let Some(room) = self.rooms.get(&ObjectRef::new(&key.1).within(&key.0)) else {
                self.queue.finish(&key);
                continue;
            };
            if room.metadata.deletion_timestamp.is_some() {
                self.queue.finish(&key);
                continue;
            }
            let Some(uid) = room.metadata.uid.clone() else {
                continue;
            };
            let request = match room_request(&room) {
                Ok(request) => request,
                Err(error) => {
                    status_writes.push(self.condition_write(
                        room.clone(),
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
                (Some(RoomPhase::Placed), Some(node)) => {
                    Some(CurrentPlacement { node: node.clone() })
                }
                _ => None,
            };
            let decision = match indexes.get(&key.0) {
                Some(index) => index.decide(&request, current.as_ref(), self.config.strategy),
                None => decide(&[], &request, current.as_ref(), self.config.strategy),
            };
            match decision {
                Decision::Stay => {
                    self.queue.finish(&key);
                }
                Decision::Place(to) => {
                    self.plan(
                        &mut ledger,
                        &mut indexes,
                        &mut node_writes,
                        room,
                        key,
                        &uid,
                        to,
                        None,
                    );
                }
                Decision::Move { from, reason, to } => {
                    self.plan(
                        &mut ledger,
                        &mut indexes,
                        &mut node_writes,
                        room,
                        key,
                        &uid,
                        to,
                        Some((from, reason)),
                    );
                }
                Decision::Unschedulable { no_fit, displaced } => {
                    if ledger.next_expiry.is_some() {
                        retry_waiting = true;
                    }
                    let (reason, message) = unschedulable_message(&no_fit, displaced.as_ref());
                    let unchanged = displaced.is_none()
                        && status.phase == Some(RoomPhase::Unschedulable)
                        && conditions::find(&status.conditions, conditions::PLACED).is_some_and(
                            |c| {
                                c.message == message
                                    && c.observed_generation == room.metadata.generation
                            },
                        );
                    if !unchanged {
                        status_writes.push(self.condition_write(
                            room.clone(),
                            key,
                            reason,
                            message,
                            displaced.is_some(),
                            now,
                        ));
                    }
                }
            }
        }
        if retry_waiting && let Some(at) = ledger.next_expiry {
            // Capacity held by unconfirmed reservations frees at their expiry: decide the
            // waiting rooms again then, once, instead of polling.
            let wait = at.duration_since(now).unsigned_abs() + Duration::from_millis(50);
            let waiting = waiting_rooms(&self.rooms, None);
            self.queue.push_after(waiting, wait);
        }

        let nodes_by_key: HashMap<NodeKey, Arc<SfuNode>> = nodes
            .iter()
            .filter_map(|n| Some((node_key(n)?, n.clone())))
            .collect();
        let node_futures = node_writes.into_iter().filter_map(|(key, planned)| {
            let node = nodes_by_key.get(&key)?.clone();
            Some(self.write_node_then_rooms(node, key, planned, &ledger, now))
        });
        let results = join_all(node_futures).await;
        for outcome in results {
            self.absorb(outcome, now);
        }
        join_all(status_writes).await;
    }

    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        ledger: &mut Ledger,
        indexes: &mut HashMap<String, PlacementIndex>,
        node_writes: &mut HashMap<NodeKey, Vec<Planned>>,
        room: Arc<Room>,
        key: RoomKey,
        uid: &str,
        to: Placement,
        moved_from: Option<(String, MoveReason)>,
    ) {
        let node_key: NodeKey = (key.0.clone(), to.node.clone());
        // Older entries of this room elsewhere (the node it leaves, a write that failed, or a
        // placement by another replica this one has not seen yet) keep counting until they
        // expire or the room's status shows where it is: dropping them here could let this
        // batch fill a node that really holds the room.
        if ledger.reserve(node_key.clone(), uid, room.spec.max_participants)
            && let Some(index) = indexes.get_mut(&key.0)
        {
            index.reserve(&to.node, room.spec.max_participants);
        }
        node_writes.entry(node_key).or_default().push(Planned {
            room,
            key,
            node: to.node,
            moved_from,
            in_requested_region: to.in_requested_region,
        });
    }

    /// Step 1 and 2 for one node: reserve, then write each room.
    fn write_node_then_rooms(
        &self,
        node: Arc<SfuNode>,
        key: NodeKey,
        planned: Vec<Planned>,
        ledger: &Ledger,
        now: Timestamp,
    ) -> impl std::future::Future<Output = NodeOutcome> + 'static {
        let client = self.client.clone();
        let ttl = SignedDuration::try_from(self.config.reservation_ttl)
            .unwrap_or(SignedDuration::from_secs(10));
        let expires_at = now.checked_add(ttl).unwrap_or(now);
        let load = ledger.load(&key);
        let metrics = self.metrics.clone();
        let events = self.events.clone();
        let queue = self.queue.clone();
        async move {
            let nodes: Api<SfuNode> = Api::namespaced(client.clone(), &key.0);
            let planned_uids: Vec<&str> = planned
                .iter()
                .filter_map(|p| p.room.metadata.uid.as_deref())
                .collect();
            let mut reservations: Vec<SlotReservation> = node
                .status
                .as_ref()
                .map(|s| s.reservations.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.expires_at.0 > now && !planned_uids.contains(&r.uid.as_str()))
                .collect();
            for p in &planned {
                reservations.push(SlotReservation {
                    room: p.key.1.clone(),
                    uid: p.room.metadata.uid.clone().unwrap_or_default(),
                    participants: p.room.spec.max_participants,
                    expires_at: time(expires_at),
                });
            }
            let store_rv = node.resource_version().unwrap_or_default();
            tracing::debug!(
                namespace = %key.0, node = %key.1, resource_version = %store_rv,
                reservations = reservations.len(), new = planned.len(), participants = load.participants,
                "reserving slots"
            );
            let patch = json!({
                "metadata": {"resourceVersion": store_rv},
                "status": {
                    "reservations": reservations,
                    "allocated": {"rooms": load.rooms, "participants": load.participants},
                }
            });
            let written = match nodes
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => written,
                Err(error) => {
                    metrics.placed(api_result_label(&error));
                    let keys: Vec<RoomKey> = planned.into_iter().map(|p| p.key).collect();
                    let refreshed = if is_status(&error, 409) {
                        tracing::debug!(namespace = %key.0, node = %key.1, rooms = keys.len(), "node changed under us; deciding again");
                        queue.push_after(keys, CONFLICT_RETRY);
                        nodes.get(&key.1).await.ok().map(Arc::new)
                    } else {
                        tracing::warn!(namespace = %key.0, node = %key.1, %error, "cannot reserve slots");
                        queue.push_after(keys, ERROR_RETRY);
                        None
                    };
                    return NodeOutcome {
                        key,
                        store_rv,
                        written: refreshed,
                        confirmed: Vec::new(),
                    };
                }
            };
            let node_url = written.spec.url.clone();
            let room_futures = planned.into_iter().map(|p| {
                write_room_placement(
                    client.clone(),
                    p,
                    node_url.clone(),
                    now,
                    metrics.clone(),
                    events.clone(),
                    queue.clone(),
                )
            });
            let confirmed: Vec<LocalReservation> = join_all(room_futures)
                .await
                .into_iter()
                .flatten()
                .map(|(room_uid, participants)| LocalReservation {
                    node: key.clone(),
                    room_uid,
                    participants,
                    expires_at,
                })
                .collect();
            NodeOutcome {
                key,
                store_rv,
                written: Some(Arc::new(written)),
                confirmed,
            }
        }
    }

    fn absorb(&mut self, outcome: NodeOutcome, _now: Timestamp) {
        if let Some(node) = outcome.written {
            self.written_nodes
                .insert(outcome.key.clone(), (outcome.store_rv, node));
        }
        for reservation in outcome.confirmed {
            self.local.insert(reservation.room_uid.clone(), reservation);
        }
    }

    /// Marks a room Unschedulable with the given reason, releasing any node it had.
    fn condition_write(
        &self,
        room: Arc<Room>,
        key: RoomKey,
        reason: &'static str,
        message: String,
        displaced: bool,
        now: Timestamp,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let events = self.events.clone();
        let queue = self.queue.clone();
        async move {
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
                time(now),
            );
            let patch = json!({
                "metadata": {"resourceVersion": room.resource_version()},
                "status": {
                    "phase": RoomPhase::Unschedulable,
                    "sfuNode": null, "sfuUrl": null, "reservedParticipants": null, "placedAt": null,
                    "observedGeneration": room.metadata.generation,
                    "conditions": conditions::upsert(&status.conditions, condition),
                }
            });
            let api: Api<Room> = Api::namespaced(client, &key.0);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    metrics.placed("unschedulable");
                    if displaced {
                        metrics.failovers.inc();
                    }
                    if !already {
                        tracing::info!(namespace = %key.0, room = %key.1, %reason, %message, "room unschedulable");
                        events.emit(
                            room.object_ref(&()),
                            true,
                            if reason == "InvalidSpec" {
                                "InvalidSpec"
                            } else {
                                "Unschedulable"
                            },
                            "Place",
                            message,
                        );
                    }
                }
                Err(error) if is_status(&error, 404) => {}
                Err(error) => {
                    metrics.placed(api_result_label(&error));
                    let delay = if is_status(&error, 409) {
                        CONFLICT_RETRY
                    } else {
                        ERROR_RETRY
                    };
                    queue.push_after(vec![key], delay);
                }
            }
        }
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

struct NodeOutcome {
    key: NodeKey,
    store_rv: String,
    written: Option<Arc<SfuNode>>,
    /// Rooms whose placement was written: (uid, slots).
    confirmed: Vec<LocalReservation>,
}

/// Writes one room's placement. Returns the room uid and slots when it landed.
async fn write_room_placement(
    client: Client,
    planned: Planned,
    node_url: String,
    now: Timestamp,
    metrics: Arc<Metrics>,
    events: EventSink,
    queue: WorkQueue,
) -> Option<(String, u32)> {
    let room = &planned.room;
    let status = room.status.clone().unwrap_or_default();
    let (reason, note) = match &planned.moved_from {
        None => ("Placed", format!("placed on {}", planned.node)),
        Some((from, why)) => (
            "Failover",
            format!("moved from {from} ({}) to {}", why.as_str(), planned.node),
        ),
    };
    let note = if planned.in_requested_region {
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
        time(now),
    );
    let slots = room.spec.max_participants;
    let patch = json!({
        "metadata": {"resourceVersion": room.resource_version()},
        "status": {
            "phase": RoomPhase::Placed,
            "sfuNode": planned.node,
            "sfuUrl": node_url,
            "reservedParticipants": slots,
            "placedAt": time(now),
            "placementGeneration": status.placement_generation.saturating_add(1),
            "observedGeneration": room.metadata.generation,
            "conditions": conditions::upsert(&status.conditions, condition),
        }
    });
    let api: Api<Room> = Api::namespaced(client, &planned.key.0);
    match api
        .patch_status(
            &planned.key.1,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            let failover = planned.moved_from.is_some();
            metrics.placed(if failover { "failover" } else { "placed" });
            if failover {
                metrics.failovers.inc();
            }
            if let Some(waited) = queue.finish(&planned.key) {
                metrics.placement_latency.observe(waited.as_secs_f64());
            }
            tracing::info!(namespace = %planned.key.0, room = %planned.key.1, node = %planned.node, %reason, "room placed");
            events.emit(room.object_ref(&()), failover, reason, "Place", note);
            Some((room.metadata.uid.clone().unwrap_or_default(), slots))
        }
        Err(error) if is_status(&error, 404) => None,
        Err(error) => {
            metrics.placed(api_result_label(&error));
            let delay = if is_status(&error, 409) {
                CONFLICT_RETRY
            } else {
                ERROR_RETRY
            };
            if !is_status(&error, 409) {
                tracing::warn!(namespace = %planned.key.0, room = %planned.key.1, %error, "cannot write placement");
            }
            queue.push_after(vec![planned.key], delay);
            None
        }
    }
}

/// The key of a room.
pub fn room_key(room: &Room) -> Option<RoomKey> {
    Some((
        room.metadata.namespace.clone()?,
        room.metadata.name.clone()?,
    ))
}

/// Rooms without a node (Pending or Unschedulable), optionally in one namespace.
pub fn waiting_rooms(rooms: &Store<Room>, namespace: Option<&str>) -> Vec<RoomKey> {
    rooms
        .state()
        .iter()
        .filter(|r| namespace.is_none_or(|ns| r.metadata.namespace.as_deref() == Some(ns)))
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) != Some(RoomPhase::Placed))
        .filter_map(|r| room_key(r))
        .collect()
}

/// Rooms placed on one node.
pub fn rooms_on_node(rooms: &Store<Room>, node: &NodeKey) -> Vec<RoomKey> {
    rooms
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(node.0.as_str()))
        .filter(|r| r.status.as_ref().and_then(|s| s.sfu_node.as_deref()) == Some(node.1.as_str()))
        .filter_map(|r| room_key(r))
        .collect()
}

//! The placer: the one writer of placements in this replica.
//!
//! It takes batches of rooms from the [`WorkQueue`], hands what it has observed to the pure
//! planner ([`crate::plan::placement::plan`], which rebuilds the ledger and decides each room
//! with the placement crate), and applies the plan in two steps:
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
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use switchboard_crds::{Room, RoomPhase, SfuNode};

use crate::events::EventSink;
use crate::keys::{NodeKey, RoomKey};
use crate::ledger::LocalReservation;
use crate::metrics::Metrics;
use crate::plan::placement::{
    NodeReservation, PlacementInput, Release, RoomPlacement, Unschedulable, plan, prune_in_flight,
};
use crate::queue::WorkQueue;
use crate::sfu::{Adapter, SfuRoom};

pub use crate::plan::placement::PlacerConfig;

/// How long to wait before deciding a room again after a write conflict.
const CONFLICT_RETRY: Duration = Duration::from_millis(25);
/// How long to wait after an unexpected API error.
const ERROR_RETRY: Duration = Duration::from_secs(1);

pub struct Placer {
    client: Client,
    /// For the SFUs' admin APIs (provisioning).
    http: reqwest::Client,
    rooms: Store<Room>,
    nodes: Store<SfuNode>,
    queue: WorkQueue,
    metrics: Arc<Metrics>,
    events: EventSink,
    config: PlacerConfig,
    /// Reservations decided here but not yet seen in the room's status, by room uid.
    in_flight: HashMap<String, LocalReservation>,
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

/// Puts rooms back on the queue after a failed write and counts the outcome: soon after a
/// conflict (another writer got there first, and the next decision starts from its write),
/// later after any other error. Returns true for a conflict.
fn requeue_after(
    queue: &WorkQueue,
    metrics: &Metrics,
    keys: Vec<RoomKey>,
    error: &kube::Error,
) -> bool {
    metrics.placed(api_result_label(error));
    let conflict = is_status(error, 409);
    queue.push_after(
        keys,
        if conflict {
            CONFLICT_RETRY
        } else {
            ERROR_RETRY
        },
    );
    conflict
}

impl Placer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        http: reqwest::Client,
        rooms: Store<Room>,
        nodes: Store<SfuNode>,
        queue: WorkQueue,
        metrics: Arc<Metrics>,
        events: EventSink,
        config: PlacerConfig,
    ) -> Self {
        Placer {
            client,
            http,
            rooms,
            nodes,
            queue,
            metrics,
            events,
            config,
            in_flight: HashMap::new(),
            written_nodes: HashMap::new(),
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        // A new leader decides every room once: rooms that became unschedulable or whose node
        // failed while no replica was leading are caught here.
        self.queue
            .push_many(self.rooms.state().iter().filter_map(|r| RoomKey::of(r)));
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
            let Some(key) = NodeKey::of(&node) else {
                continue;
            };
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

    /// Observe, plan, apply.
    async fn place_batch(&mut self, batch: Vec<RoomKey>) {
        let now = Timestamp::now();
        let nodes = self.node_snapshot();
        let rooms = self.rooms.state();
        prune_in_flight(&mut self.in_flight, &rooms, now);
        let in_flight: Vec<LocalReservation> = self.in_flight.values().cloned().collect();
        let plan = plan(&PlacementInput {
            rooms: &rooms,
            nodes: &nodes,
            in_flight: &in_flight,
            batch: &batch,
            now,
            config: &self.config,
        });

        for key in &plan.finished {
            self.queue.finish(key);
        }
        if let Some(at) = plan.retry_waiting_at {
            let wait = at.duration_since(now).unsigned_abs();
            self.queue
                .push_after(waiting_rooms(&self.rooms, None), wait);
        }
        let sfu = Sfu {
            client: self.client.clone(),
            http: self.http.clone(),
            nodes: nodes.clone(),
        };
        let releases = plan.releases.into_iter().map(|release| {
            apply_release(
                sfu.clone(),
                release,
                self.metrics.clone(),
                self.queue.clone(),
            )
        });
        join_all(releases).await;
        let node_writes = plan.nodes.into_iter().map(|write| {
            write_node_then_rooms(
                sfu.clone(),
                write,
                self.metrics.clone(),
                self.events.clone(),
                self.queue.clone(),
            )
        });
        for outcome in join_all(node_writes).await {
            if let Some(node) = outcome.written {
                self.written_nodes
                    .insert(outcome.key.clone(), (outcome.store_rv, node));
            }
            for reservation in outcome.confirmed {
                self.in_flight
                    .insert(reservation.room_uid.clone(), reservation);
            }
        }
        let room_writes = plan.unschedulable.into_iter().map(|write| {
            write_unschedulable(
                self.client.clone(),
                write,
                self.metrics.clone(),
                self.events.clone(),
                self.queue.clone(),
            )
        });
        join_all(room_writes).await;
    }
}

struct NodeOutcome {
    key: NodeKey,
    store_rv: String,
    written: Option<Arc<SfuNode>>,
    /// Rooms whose placement was written.
    confirmed: Vec<LocalReservation>,
}

/// What applying SFU steps needs: the API client (for credentials Secrets), the HTTP client,
/// and the nodes the plan was made from.
#[derive(Clone)]
struct Sfu {
    client: Client,
    http: reqwest::Client,
    nodes: Vec<Arc<SfuNode>>,
}

impl Sfu {
    fn node(&self, key: &NodeKey) -> Option<&Arc<SfuNode>> {
        self.nodes
            .iter()
            .find(|n| NodeKey::of(n).as_ref() == Some(key))
    }

    /// Destroys a room on a node, if the node is still known.
    async fn destroy(&self, node: &NodeKey, sfu_room: &str) -> Result<(), crate::sfu::SfuError> {
        let Some(node) = self.node(node) else {
            return Ok(());
        };
        Adapter::for_node(&self.client, &self.http, node)
            .await?
            .destroy_room(sfu_room)
            .await
    }
}

/// Destroys a deleted Room's SFU room, then lets the Room go; or a moved room's old copy.
async fn apply_release(sfu: Sfu, release: Release, metrics: Arc<Metrics>, queue: WorkQueue) {
    let key = &release.room;
    if let (Some(node), Some(sfu_room), true) =
        (&release.node, &release.sfu_room, release.node_alive)
        && let Err(error) = sfu.destroy(node, sfu_room).await
    {
        tracing::warn!(namespace = %key.namespace, room = %key.name, node = %node.name, %sfu_room, %error, "cannot destroy the room on its SFU; will retry");
        if release.finalizers_after.is_some() {
            metrics.placed("error");
            queue.push_after(vec![key.clone()], ERROR_RETRY);
        }
        return;
    }
    if let (Some(node), Some(sfu_room)) = (&release.node, &release.sfu_room) {
        tracing::info!(namespace = %key.namespace, room = %key.name, node = %node.name, %sfu_room, alive = release.node_alive, "room released on its SFU");
    }
    let Some((finalizers, resource_version)) = release.finalizers_after else {
        return;
    };
    let api: Api<Room> = Api::namespaced(sfu.client.clone(), &key.namespace);
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}});
    match api
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(error) if is_status(&error, 404) => {}
        Err(error) => {
            requeue_after(&queue, &metrics, vec![key.clone()], &error);
        }
    }
}

/// Step 1 and 2 for one node: reserve, then write each room.
async fn write_node_then_rooms(
    sfu: Sfu,
    write: NodeReservation,
    metrics: Arc<Metrics>,
    events: EventSink,
    queue: WorkQueue,
) -> NodeOutcome {
    let key = write.node.clone();
    let client = sfu.client.clone();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), &key.namespace);
    tracing::debug!(
        namespace = %key.namespace, node = %key.name, resource_version = %write.resource_version,
        reservations = write.reservations.len(), new = write.rooms.len(),
        participants = write.allocated.participants, "reserving slots"
    );
    let written = match nodes
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(&write.patch()),
        )
        .await
    {
        Ok(written) => written,
        Err(error) => {
            let keys: Vec<RoomKey> = write.rooms.into_iter().map(|p| p.room).collect();
            let rooms = keys.len();
            let refreshed = if requeue_after(&queue, &metrics, keys, &error) {
                tracing::debug!(namespace = %key.namespace, node = %key.name, rooms, "node changed under us; deciding again");
                nodes.get(&key.name).await.ok().map(Arc::new)
            } else {
                tracing::warn!(namespace = %key.namespace, node = %key.name, %error, "cannot reserve slots");
                None
            };
            return NodeOutcome {
                key,
                store_rv: write.resource_version,
                written: refreshed,
                confirmed: Vec::new(),
            };
        }
    };
    let expires_at = write.expires_at;
    let written = Arc::new(written);
    let room_writes = write.rooms.into_iter().map(|p| {
        write_room_placement(
            sfu.clone(),
            written.clone(),
            p,
            metrics.clone(),
            events.clone(),
            queue.clone(),
        )
    });
    let confirmed: Vec<LocalReservation> = join_all(room_writes)
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
        store_rv: write.resource_version,
        written: Some(written),
        confirmed,
    }
}

/// Provisions the room on its SFU when the node's kind needs it: first the conditional
/// finalizer write (so the SFU room cannot outlive the Room unnoticed, and so a decision made
/// from a stale view of the Room gets 409 before it creates anything), then the SFU room. Returns the resourceVersion the status write must
/// carry, or `None` when the room went back on the queue.
async fn provision(
    sfu: &Sfu,
    node: &SfuNode,
    write: &RoomPlacement,
    metrics: &Metrics,
    events: &EventSink,
    queue: &WorkQueue,
) -> Option<Option<String>> {
    let key = &write.room;
    let Some(provision) = &write.provision else {
        return Some(write.resource_version.clone());
    };
    let mut resource_version = write.resource_version.clone();
    if let Some(finalizers) = &write.add_finalizer {
        let api: Api<Room> = Api::namespaced(sfu.client.clone(), &key.namespace);
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}});
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(room) => resource_version = room.resource_version(),
            Err(error) if is_status(&error, 404) => return None,
            Err(error) => {
                requeue_after(queue, metrics, vec![key.clone()], &error);
                return None;
            }
        }
    }
    let room = SfuRoom {
        id: provision.sfu_room.clone(),
        publishers: provision.publishers,
    };
    let created = match Adapter::for_node(&sfu.client, &sfu.http, node).await {
        Ok(adapter) => adapter.create_room(&room).await,
        Err(error) => Err(error),
    };
    match created {
        Ok(()) => Some(resource_version),
        Err(error) => {
            tracing::warn!(namespace = %key.namespace, room = %key.name, node = %write.node, sfu_room = %room.id, %error, "cannot create the room on its SFU; will retry");
            // The Room shows it too, not only an Event: `kubectl get room` answers why a room
            // stays unplaced. Conditional on the version the finalizer write returned; a
            // conflict only means the retry below sees a newer Room.
            if let Some(patch) =
                write.provision_failed_patch(resource_version, &error.to_string(), Timestamp::now())
            {
                let api: Api<Room> = Api::namespaced(sfu.client.clone(), &key.namespace);
                if let Err(error) = api
                    .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(namespace = %key.namespace, room = %key.name, %error, "cannot show the provisioning failure");
                }
            }
            events.emit(
                write.object.clone(),
                true,
                "ProvisionFailed",
                "Provision",
                format!("cannot create room {} on {}: {error}", room.id, write.node),
            );
            metrics.placed("error");
            queue.push_after(vec![key.clone()], ERROR_RETRY);
            None
        }
    }
}

/// Provisions (if needed) and writes one room's placement. Returns the room uid and slots when
/// it landed.
async fn write_room_placement(
    sfu: Sfu,
    node: Arc<SfuNode>,
    write: RoomPlacement,
    metrics: Arc<Metrics>,
    events: EventSink,
    queue: WorkQueue,
) -> Option<(String, u32)> {
    let key = &write.room;
    let resource_version = provision(&sfu, &node, &write, &metrics, &events, &queue).await?;
    let api: Api<Room> = Api::namespaced(sfu.client.clone(), &key.namespace);
    let result = api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(&write.patch_at(resource_version)),
        )
        .await;
    if result.is_ok()
        && let Some(release) = &write.release
        && let (Some(old), Some(sfu_room)) = (&release.node, &release.sfu_room)
    {
        // The room now lives on its new node; its copy on the old one must not stay live.
        match sfu.destroy(old, sfu_room).await {
            Ok(()) => {
                tracing::info!(namespace = %key.namespace, room = %key.name, node = %old.name, %sfu_room, "old copy destroyed")
            }
            Err(error) => {
                tracing::warn!(namespace = %key.namespace, room = %key.name, node = %old.name, %sfu_room, %error, "cannot destroy the old copy")
            }
        }
    }
    match result {
        Ok(_) => {
            let failover = write.is_failover();
            metrics.placed(if failover { "failover" } else { "placed" });
            if failover {
                metrics.failovers.inc();
            }
            if let Some(waited) = queue.finish(key) {
                metrics.placement_latency.observe(waited.as_secs_f64());
            }
            tracing::info!(namespace = %key.namespace, room = %key.name, node = %write.node, reason = write.reason, "room placed");
            events.emit(write.object, failover, write.reason, "Place", write.note);
            Some((write.uid, write.slots))
        }
        Err(error) if is_status(&error, 404) => None,
        Err(error) => {
            if !requeue_after(&queue, &metrics, vec![key.clone()], &error) {
                tracing::warn!(namespace = %key.namespace, room = %key.name, %error, "cannot write placement");
            }
            None
        }
    }
}

/// Marks a room Unschedulable, releasing any node it had.
async fn write_unschedulable(
    client: Client,
    write: Unschedulable,
    metrics: Arc<Metrics>,
    events: EventSink,
    queue: WorkQueue,
) {
    let key = &write.room;
    let api: Api<Room> = Api::namespaced(client, &key.namespace);
    match api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(&write.patch()),
        )
        .await
    {
        Ok(_) => {
            metrics.placed("unschedulable");
            if write.displaced {
                metrics.failovers.inc();
            }
            if write.emit_event {
                tracing::info!(namespace = %key.namespace, room = %key.name, reason = write.reason, message = %write.message, "room unschedulable");
                events.emit(
                    write.object.clone(),
                    true,
                    write.event_reason(),
                    "Place",
                    write.message.clone(),
                );
            }
        }
        Err(error) if is_status(&error, 404) => {}
        Err(error) => {
            requeue_after(&queue, &metrics, vec![key.clone()], &error);
        }
    }
}

/// Rooms without a node (Pending or Unschedulable), optionally in one namespace.
pub fn waiting_rooms(rooms: &Store<Room>, namespace: Option<&str>) -> Vec<RoomKey> {
    rooms
        .state()
        .iter()
        .filter(|r| namespace.is_none_or(|ns| r.metadata.namespace.as_deref() == Some(ns)))
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) != Some(RoomPhase::Placed))
        .filter_map(|r| RoomKey::of(r))
        .collect()
}

/// Rooms placed on one node.
pub fn rooms_on_node(rooms: &Store<Room>, node: &NodeKey) -> Vec<RoomKey> {
    rooms
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(node.namespace.as_str()))
        .filter(|r| {
            r.status.as_ref().and_then(|s| s.sfu_node.as_deref()) == Some(node.name.as_str())
        })
        .filter_map(|r| RoomKey::of(r))
        .collect()
}

//! The node loop: keeps each SfuNode's `Ready` and `Schedulable` conditions and `allocated`
//! current, runs the drain finalizer, and wakes the placer when a node's situation changes
//! (fails, recovers, is cordoned or uncordoned, gains capacity, frees slots, goes away).
//!
//! It runs on a short tick and on every SfuNode event. Status is written only when it changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use switchboard_crds::{ParticipantLoad, Room, SfuNode, conditions};
use switchboard_placement::Health;
use tokio::sync::Notify;

use crate::events::EventSink;
use crate::health;
use crate::ledger::{Ledger, NodeKey};
use crate::metrics::{Metrics, NodeLabel};
use crate::placer::{rooms_on_node, waiting_rooms};
use crate::probe::Prober;
use crate::queue::WorkQueue;
use crate::views::{node_health, node_key};

/// The finalizer that lets the operator move a node's rooms before the node goes away.
pub const DRAIN_FINALIZER: &str = "switchboard.dev/drain";

/// What about a node, when it changes, means rooms must be decided again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Situation {
    health: Health,
    cordoned: bool,
    deleting: bool,
    capacity: u32,
    max_rooms: Option<u32>,
    labels: std::collections::BTreeMap<String, String>,
    region: String,
    allocated: u32,
    rooms: u32,
}

pub struct NodeLoop {
    pub client: Client,
    pub rooms: Store<Room>,
    pub nodes: Store<SfuNode>,
    pub queue: WorkQueue,
    pub metrics: Arc<Metrics>,
    pub events: EventSink,
    pub prober: Arc<Prober>,
    pub wake: Arc<Notify>,
    pub interval: Duration,
    pub failover_grace: Duration,
}

impl NodeLoop {
    pub async fn run(self) {
        let mut last: HashMap<NodeKey, Situation> = HashMap::new();
        loop {
            self.tick(&mut last).await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn tick(&self, last: &mut HashMap<NodeKey, Situation>) {
        let now = Timestamp::now();
        let nodes = self.nodes.state();
        let rooms = self.rooms.state();
        self.prober.sync(&nodes);
        let ledger = Ledger::build(
            rooms.iter().map(|r| r.as_ref()),
            nodes.iter().map(|n| n.as_ref()),
            [],
            now,
        );
        let mut present = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let Some(key) = node_key(node) else { continue };
            present.push(key.clone());
            if let Some(situation) = self.reconcile(node, &key, &ledger, now).await {
                let before = last.insert(key.clone(), situation.clone());
                self.wake_placer(&key, before.as_ref(), &situation);
            }
        }
        // Nodes that vanished without our finalizer (it was removed by hand): their rooms move.
        let gone: Vec<NodeKey> = last
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            last.remove(&key);
            self.metrics.node_rooms.remove(&NodeLabel {
                namespace: key.0.clone(),
                node: key.1.clone(),
            });
            self.metrics.node_participants.remove(&NodeLabel {
                namespace: key.0.clone(),
                node: key.1.clone(),
            });
            self.queue.push_many(rooms_on_node(&self.rooms, &key));
        }
    }

    fn wake_placer(&self, key: &NodeKey, before: Option<&Situation>, now: &Situation) {
        if before == Some(now) {
            return;
        }
        if now.health == Health::Failed || now.deleting {
            self.queue.push_many(rooms_on_node(&self.rooms, key));
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
        if accepts && gained {
            self.queue
                .push_many(waiting_rooms(&self.rooms, Some(&key.0)));
        }
    }

    /// Brings one node's status and finalizer up to date. Returns its situation.
    async fn reconcile(
        &self,
        node: &SfuNode,
        key: &NodeKey,
        ledger: &Ledger,
        now: Timestamp,
    ) -> Option<Situation> {
        let api: Api<SfuNode> = Api::namespaced(self.client.clone(), &key.0);
        let deleting = node.metadata.deletion_timestamp.is_some();
        let has_finalizer = node.finalizers().iter().any(|f| f == DRAIN_FINALIZER);
        let load = ledger.load(key);

        if !deleting && !has_finalizer {
            let mut finalizers = node.finalizers().to_vec();
            finalizers.push(DRAIN_FINALIZER.to_owned());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
            if let Err(error) = api
                .patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(namespace = %key.0, node = %key.1, %error, "cannot add finalizer yet");
            }
        }
        if deleting && has_finalizer && !ledger.has_rooms(key) {
            let finalizers: Vec<String> = node
                .finalizers()
                .iter()
                .filter(|f| *f != DRAIN_FINALIZER)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
            match api
                .patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %key.0, node = %key.1, "node drained; letting it go");
                }
                Err(error) => {
                    tracing::debug!(namespace = %key.0, node = %key.1, %error, "cannot remove finalizer yet")
                }
            }
            return None;
        }

        let status = node.status.clone().unwrap_or_default();
        let heartbeat = status.last_heartbeat_time.as_ref().map(|t| t.0);
        let readiness =
            health::evaluate(&node.spec, self.prober.record(key).as_ref(), heartbeat, now);
        let generation = node.metadata.generation;
        let ready = conditions::new_condition(
            conditions::READY,
            readiness.ready,
            readiness.reason,
            readiness.message.clone(),
            generation,
            Time(now),
        );
        let (schedulable, reason, message) =
            match (readiness.ready, node.spec.unschedulable, deleting) {
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
            rooms: load.rooms,
            participants: load.participants,
        };
        let changed = new_conditions != status.conditions
            || status.allocated.as_ref() != Some(&allocated)
            || status.observed_generation != generation;
        if changed {
            let was_ready = conditions::is_true(&status.conditions, conditions::READY);
            let patch = json!({"status": {"conditions": new_conditions, "allocated": allocated, "observedGeneration": generation}});
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if was_ready != readiness.ready
                        && conditions::find(&status.conditions, conditions::READY).is_some()
                    {
                        tracing::info!(namespace = %key.0, node = %key.1, ready = readiness.ready, reason = readiness.reason, "node readiness changed");
                        self.events.emit(
                            node.object_ref(&()),
                            !readiness.ready,
                            if readiness.ready {
                                "NodeReady"
                            } else {
                                "NodeNotReady"
                            },
                            "Probe",
                            readiness.message.clone(),
                        );
                    }
                }
                Err(error) => {
                    tracing::debug!(namespace = %key.0, node = %key.1, %error, "cannot update node status")
                }
            }
        }

        let label = NodeLabel {
            namespace: key.0.clone(),
            node: key.1.clone(),
        };
        self.metrics
            .node_rooms
            .get_or_create(&label)
            .set(i64::from(load.rooms));
        self.metrics
            .node_participants
            .get_or_create(&label)
            .set(i64::from(load.participants));

        let mut observed = node.clone();
        observed
            .status
            .get_or_insert_with(Default::default)
            .conditions = new_conditions;
        Some(Situation {
            health: node_health(&observed, now, self.failover_grace),
            cordoned: node.spec.unschedulable,
            deleting,
            capacity: node.spec.capacity.participants,
            max_rooms: node.spec.capacity.rooms,
            labels: node.labels().clone(),
            region: node.spec.region.clone(),
            allocated: load.participants,
            rooms: load.rooms,
        })
    }
}

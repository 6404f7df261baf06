//! The node loop: keeps each SfuNode's `Ready` and `Schedulable` conditions and `allocated`
//! current, runs the drain finalizer, and wakes the placer when a node's situation changes
//! (fails, recovers, is cordoned or uncordoned, gains capacity, frees slots, goes away).
//!
//! It runs on a short tick and on every SfuNode event. Each tick observes the nodes, the rooms
//! and the probe results, asks the pure planner ([`crate::plan::node::plan`]) what each node
//! needs, and applies it. Status is written only when it changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use switchboard_crds::{Room, SfuNode};
use tokio::sync::Notify;

use crate::events::EventSink;
use crate::keys::NodeKey;
use crate::ledger::Ledger;
use crate::metrics::{Metrics, NodeLabel};
use crate::placer::{rooms_on_node, waiting_rooms};
use crate::plan::node::{NodeInput, NodePlan, Situation, plan, wake};
use crate::probe::Prober;
use crate::queue::WorkQueue;
use crate::sfu::Adapter;

pub use crate::plan::node::DRAIN_FINALIZER;

/// How long after a node's status write the placer looks at the woken rooms again: well past
/// the delay of a watch event on a healthy apiserver (milliseconds), small next to a failover.
const WATCH_CATCH_UP: Duration = Duration::from_secs(1);

pub struct NodeLoop {
    pub client: Client,
    pub rooms: Store<Room>,
    pub nodes: Store<SfuNode>,
    pub queue: WorkQueue,
    pub metrics: Arc<Metrics>,
    pub events: EventSink,
    pub prober: Arc<Prober>,
    /// For the SFUs' admin APIs (stopping new sessions on a node being drained).
    pub http: reqwest::Client,
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
            let Some(key) = NodeKey::of(node) else {
                continue;
            };
            present.push(key.clone());
            let probe = self.prober.record(&key);
            let plan = plan(
                key.clone(),
                &NodeInput {
                    node,
                    load: ledger.load(&key),
                    has_rooms: ledger.has_rooms(&key),
                    probe: probe.as_ref(),
                    now,
                    failover_grace: self.failover_grace,
                },
            );
            if let Some(situation) = self.apply(plan).await {
                let before = last.insert(key.clone(), situation.clone());
                if situation.deleting && before.as_ref().is_none_or(|b| !b.deleting) {
                    self.stop_new_sessions(node, &key).await;
                }
                let wake = wake(before.as_ref(), &situation);
                let mut woken = Vec::new();
                if wake.its_rooms {
                    woken.extend(rooms_on_node(&self.rooms, &key));
                }
                if wake.waiting_rooms {
                    woken.extend(waiting_rooms(&self.rooms, Some(&key.namespace)));
                }
                self.queue.push_many(woken.iter().cloned());
                // The placer decides from its own watch of the nodes, which may not show the
                // status written just now: woken at once, it can decide from the older view
                // (a failed node still Ready) and nothing would wake it again. A second look
                // once the watch has surely caught up makes the change count.
                self.queue.push_after(woken, WATCH_CATCH_UP);
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
            let label = NodeLabel {
                namespace: key.namespace.clone(),
                node: key.name.clone(),
            };
            self.metrics.node_rooms.remove(&label);
            self.metrics.node_participants.remove(&label);
            self.queue.push_many(rooms_on_node(&self.rooms, &key));
        }
    }

    /// A node being deleted is drained: its SFU takes no new sessions, so no participant joins
    /// a room there that is about to move.
    async fn stop_new_sessions(&self, node: &SfuNode, key: &NodeKey) {
        let result = match Adapter::for_node(&self.client, &self.http, node).await {
            Ok(adapter) => adapter.stop_new_sessions().await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                tracing::info!(namespace = %key.namespace, node = %key.name, "draining: the SFU takes no new sessions")
            }
            Err(error) => {
                tracing::warn!(namespace = %key.namespace, node = %key.name, %error, "cannot stop new sessions on the SFU")
            }
        }
    }

    /// Applies one node's plan. Returns its situation, or `None` once the node is let go.
    async fn apply(&self, plan: NodePlan) -> Option<Situation> {
        let key = &plan.key;
        let api: Api<SfuNode> = Api::namespaced(self.client.clone(), &key.namespace);
        if let Some(write) = &plan.finalizers {
            match api
                .patch(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&write.patch()),
                )
                .await
            {
                Ok(_) if !write.adding => {
                    tracing::info!(namespace = %key.namespace, node = %key.name, "node drained; letting it go");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(namespace = %key.namespace, node = %key.name, adding = write.adding, %error, "cannot update the drain finalizer yet");
                }
            }
        }
        plan.situation.as_ref()?;
        if let Some(write) = &plan.status {
            match api
                .patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Merge(&write.patch()),
                )
                .await
            {
                Ok(_) => {
                    if let Some(event) = &write.readiness_event {
                        tracing::info!(namespace = %key.namespace, node = %key.name, ready = event.ready, reason = event.cause, "node readiness changed");
                        self.events.emit(
                            event.object.clone(),
                            !event.ready,
                            event.reason,
                            "Probe",
                            event.message.clone(),
                        );
                    }
                }
                Err(error) => {
                    tracing::debug!(namespace = %key.namespace, node = %key.name, %error, "cannot update node status")
                }
            }
        }
        let label = NodeLabel {
            namespace: key.namespace.clone(),
            node: key.name.clone(),
        };
        self.metrics
            .node_rooms
            .get_or_create(&label)
            .set(i64::from(plan.load.rooms));
        self.metrics
            .node_participants
            .get_or_create(&label)
            .set(i64::from(plan.load.participants));
        plan.situation
    }
}

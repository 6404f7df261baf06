//! Reads each SFU's own view of its load into `SfuNode.status.reportedLoad`, for dashboards and
//! `kubectl get -o yaml`. Placement never reads it: a reported load is stale by construction,
//! so the ledger (what the operator itself placed) stays the only input to placement.
//!
//! Only Ready nodes of kinds with an admin API are read, at most once per period each, and a
//! status is written only when the reading changed, so an idle cluster causes no writes.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use switchboard_crds::{SfuKind, SfuNode, conditions};

use super::{Adapter, SfuLoad};

/// Reads and records the load of every readable node every `period`, until the task is dropped.
pub async fn run(client: Client, http: reqwest::Client, nodes: Store<SfuNode>, period: Duration) {
    loop {
        for node in nodes.state() {
            if let Some(load) = read(&client, &http, &node).await {
                record(&client, &node, load).await;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// The node's load, or `None` when the node has none to report or cannot be read now.
async fn read(client: &Client, http: &reqwest::Client, node: &SfuNode) -> Option<SfuLoad> {
    let ready = node
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
    if node.spec.kind == SfuKind::Opaque || !ready {
        return None;
    }
    let adapter = match Adapter::for_node(client, http, node).await {
        Ok(adapter) => adapter,
        Err(error) => {
            tracing::debug!(node = %node.name_any(), %error, "cannot read the SFU's load");
            return None;
        }
    };
    match adapter.load().await {
        Ok(load) => load,
        Err(error) => {
            tracing::debug!(node = %node.name_any(), %error, "cannot read the SFU's load");
            None
        }
    }
}

/// Writes the load into the node's status when it differs from what is there.
async fn record(client: &Client, node: &SfuNode, load: SfuLoad) {
    let reported = node.status.as_ref().and_then(|s| s.reported_load.as_ref());
    if reported.is_some_and(|r| {
        r.participants == Some(load.participants) && r.sessions == Some(load.sessions)
    }) {
        return;
    }
    let Some(namespace) = node.namespace() else {
        return;
    };
    let api: Api<SfuNode> = Api::namespaced(client.clone(), &namespace);
    // A merge patch of this one field: it never conflicts with the node loop's own writes.
    let patch = json!({"status": {"reportedLoad": {
        "participants": load.participants,
        "sessions": load.sessions,
    }}});
    if let Err(error) = api
        .patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(node = %node.name_any(), %error, "cannot record the SFU's reported load");
    }
}

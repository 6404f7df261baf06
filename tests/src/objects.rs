//! Builders for test SfuNodes and Rooms, and a polling helper to wait on the apiserver.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::Api;
use serde_json::{Value, json};
use switchboard_crds::{Room, RoomPhase, SfuNode, conditions};

/// An SfuNode with the given capacity; `extra` is merged into its spec.
pub fn sfu_node(name: &str, region: &str, participants: u32, extra: Value) -> SfuNode {
    let mut spec = json!({
        "url": format!("wss://{name}.example.com/rtc"),
        "region": region,
        "capacity": {"participants": participants},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    let value = json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode", "metadata": {"name": name}, "spec": spec});
    serde_json::from_value(value).unwrap_or_else(|e| unreachable_test_object("SfuNode", e))
}

/// A Room reserving `participants` slots; `extra` is merged into its spec.
pub fn room(name: &str, participants: u32, extra: Value) -> Room {
    let mut spec = json!({"maxParticipants": participants});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    let value = json!({"apiVersion": "switchboard.dev/v1alpha1", "kind": "Room", "metadata": {"name": name}, "spec": spec});
    serde_json::from_value(value).unwrap_or_else(|e| unreachable_test_object("Room", e))
}

#[allow(clippy::panic)]
fn unreachable_test_object<T>(kind: &str, error: serde_json::Error) -> T {
    panic!("test {kind} does not deserialize: {error}")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last description
/// `check` gave of what it saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() > deadline => {
                return Err(format!(
                    "timed out after {}s waiting for {what}; last seen: {seen}",
                    timeout.as_secs()
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until Room `name` is Placed on `node` and its room exists there (`Provisioned`);
/// returns it.
pub async fn placed_on(
    rooms: &Api<Room>,
    name: &str,
    node: &str,
    timeout: Duration,
) -> Result<Room, String> {
    wait_for(
        &format!("{name} placed and provisioned on {node}"),
        timeout,
        || async {
            let r = rooms.get(name).await.map_err(|e| e.to_string())?;
            let status = r.status.clone().unwrap_or_default();
            if status.phase == Some(RoomPhase::Placed)
                && status.sfu_node.as_deref() == Some(node)
                && conditions::is_true(&status.conditions, conditions::PROVISIONED)
            {
                Ok(r)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await
}

/// Waits until SfuNode `node`'s `Ready` condition has `status` ("True" or "False"); returns
/// its reason.
pub async fn node_ready(
    nodes: &Api<SfuNode>,
    node: &str,
    status: &str,
    timeout: Duration,
) -> Result<String, String> {
    wait_for(&format!("{node} Ready={status}"), timeout, || async {
        let n = nodes.get(node).await.map_err(|e| e.to_string())?;
        let conditions = n.status.map(|s| s.conditions).unwrap_or_default();
        match conditions::find(&conditions, conditions::READY) {
            Some(c) if c.status == status => Ok(c.reason.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// The HTTP status of a refused API request; `None` when it succeeded or failed otherwise.
pub fn api_status<T>(result: Result<T, kube::Error>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

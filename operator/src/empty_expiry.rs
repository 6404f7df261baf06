//! Empty-room expiry: a Room with `spec.emptyTimeoutSeconds` is deleted once `status.participants`
//! (kept by signaling) has stayed 0 that long. `status.emptySince` holds the clock, so the
//! countdown survives operator restarts.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use serde_json::json;
use switchboard_crds::Room;

use crate::events::EventSink;

/// What to do about one room's emptiness. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum EmptyAction {
    Nothing,
    StartClock,
    StopClock,
    Delete,
}

pub fn empty_action(room: &Room, now: Timestamp) -> EmptyAction {
    let Some(timeout) = room.spec.empty_timeout_seconds else {
        return EmptyAction::Nothing;
    };
    if room.metadata.deletion_timestamp.is_some() {
        return EmptyAction::Nothing;
    }
    let status = room.status.clone().unwrap_or_default();
    match (status.participants, status.empty_since) {
        (0, None) => EmptyAction::StartClock,
        (0, Some(since)) => {
            let empty_for = now.duration_since(since.0);
            if !empty_for.is_negative()
                && empty_for.unsigned_abs() >= Duration::from_secs(u64::from(timeout))
            {
                EmptyAction::Delete
            } else {
                EmptyAction::Nothing
            }
        }
        (_, Some(_)) => EmptyAction::StopClock,
        (_, None) => EmptyAction::Nothing,
    }
}

pub async fn run(client: Client, rooms: Store<Room>, events: EventSink, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let now = Timestamp::now();
        for room in rooms.state() {
            let (Some(namespace), Some(name)) =
                (room.metadata.namespace.clone(), room.metadata.name.clone())
            else {
                continue;
            };
            let api: Api<Room> = Api::namespaced(client.clone(), &namespace);
            let result = match empty_action(&room, now) {
                EmptyAction::Nothing => continue,
                EmptyAction::StartClock => api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"emptySince": Time(now)}})),
                    )
                    .await
                    .map(|_| ()),
                EmptyAction::StopClock => api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"emptySince": null}})),
                    )
                    .await
                    .map(|_| ()),
                EmptyAction::Delete => {
                    tracing::info!(%namespace, room = %name, "deleting room empty past its timeout");
                    events.emit(
                        room.object_ref(&()),
                        false,
                        "EmptyTimeout",
                        "Delete",
                        "room stayed empty past spec.emptyTimeoutSeconds".into(),
                    );
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: room.metadata.uid.clone(),
                            resource_version: room.metadata.resource_version.clone(),
                        }),
                        ..DeleteParams::default()
                    };
                    api.delete(&name, &params).await.map(|_| ())
                }
            };
            if let Err(error) = result {
                tracing::debug!(%namespace, room = %name, %error, "empty-room expiry update failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn room(timeout: Option<u32>, participants: u32, since: Option<i64>) -> Room {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "Room",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"maxParticipants": 4, "emptyTimeoutSeconds": timeout},
            "status": {"participants": participants, "emptySince": since.map(|s| Time(Timestamp::from_second(s).unwrap()))}
        }))
        .unwrap()
    }

    #[test]
    fn empty_rooms_are_deleted_after_the_timeout_only() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(
            empty_action(&room(None, 0, None), now),
            EmptyAction::Nothing
        );
        assert_eq!(
            empty_action(&room(Some(60), 0, None), now),
            EmptyAction::StartClock
        );
        assert_eq!(
            empty_action(&room(Some(60), 0, Some(950)), now),
            EmptyAction::Nothing
        );
        assert_eq!(
            empty_action(&room(Some(60), 0, Some(940)), now),
            EmptyAction::Delete
        );
        assert_eq!(
            empty_action(&room(Some(60), 3, Some(940)), now),
            EmptyAction::StopClock
        );
        assert_eq!(
            empty_action(&room(Some(60), 3, None), now),
            EmptyAction::Nothing
        );
    }
}

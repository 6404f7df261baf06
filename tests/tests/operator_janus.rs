//! The operator drives real Janus VideoRoom nodes (Debian `janus` 1.1.2) through a real
//! kube-apiserver: health comes from Janus's own info endpoint, a placed Room exists on its
//! node with the derived pin before it is Placed, a killed Janus moves the room to the other
//! node where it is created again, a deleted Room is destroyed on its SFU, and a Janus that
//! refuses new sessions takes no new rooms.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, SfuNode, conditions};
use switchboard_sfu::janus::{VIDEOROOM_PLUGIN, mint_token, room_id, room_pin};
use switchboard_tests::objects::{self, room, wait_for};
use switchboard_tests::{ControlPlane, Janus, JanusOptions, OperatorProcess, fast_args};

const NS: &str = "calls";
/// The VideoRoom plugin's answer to a wrong pin.
const WRONG_PIN: i64 = 433;
const WAIT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Janus on loopback: this suite needs the admin and HTTP APIs only, no media.
fn start_janus(name: &str, rtp: std::ops::RangeInclusive<u16>) -> Janus {
    Janus::start(JanusOptions::new(name, Ipv4Addr::LOCALHOST, rtp)).unwrap()
}

async fn node_condition(nodes: &Api<SfuNode>, node: &str, type_: &str) -> Option<(String, String)> {
    let n = nodes.get(node).await.ok()?;
    let c = conditions::find(&n.status?.conditions, type_)?.clone();
    Some((c.status, c.reason))
}

/// Waits until both nodes are Ready from Janus's own info endpoint, so placement is decided
/// by load alone.
async fn both_ready(nodes: &Api<SfuNode>) {
    for node in ["sfu-a", "sfu-b"] {
        wait_for(
            &format!("{node} Ready from Janus's info endpoint"),
            WAIT,
            || async {
                match node_condition(nodes, node, conditions::READY).await {
                    Some((s, r)) if s == "True" && r == "HealthCheckPassing" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
        .unwrap();
    }
}

/// Waits until the room is Placed on `node` and Provisioned; returns it.
async fn placed_on(rooms: &Api<Room>, name: &str, node: &str) -> Room {
    objects::placed_on(rooms, name, node, WAIT).await.unwrap()
}

/// The whole life of a room on Janus: provisioned with its pin on A, moved to B when A is
/// killed (created there, never live on two nodes), destroyed when deleted; and a Janus that
/// refuses new sessions is not Schedulable.
#[tokio::test(flavor = "multi_thread")]
async fn rooms_live_on_exactly_their_janus_node() {
    switchboard_tests::require!(ControlPlane, Janus);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let mut a = start_janus("sfu-a", 20000..=20099);
    let b = start_janus("sfu-b", 20100..=20199);
    // A has more capacity, so least-loaded places the first room there.
    a.register(&client, NS, 10).await.unwrap();
    b.register(&client, NS, 5).await.unwrap();
    let _operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    both_ready(&nodes).await;

    // Placed on A only after A holds the room, with the pin signaling will derive.
    let created = rooms
        .create(&PostParams::default(), &room("standup", 4, json!({})))
        .await
        .unwrap();
    let on_a = placed_on(&rooms, "standup", "sfu-a").await;
    let uid = created.metadata.uid.clone().unwrap();
    let id = room_id(NS, "standup", &uid);
    assert_eq!(
        on_a.status.as_ref().unwrap().sfu_room.as_deref(),
        Some(id.as_str())
    );
    assert!(a.list_rooms().unwrap().contains(&id), "A lists {id}");
    assert!(
        !b.list_rooms().unwrap().contains(&id),
        "B must not hold {id}"
    );
    let listed = a.videoroom(json!({"request": "list"})).unwrap();
    let entry = listed["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["pin_required"], true, "{entry}");
    assert_eq!(entry["max_publishers"], 4, "{entry}");
    assert!(
        on_a.finalizers()
            .contains(&"switchboard.dev/sfu-room".to_owned())
    );
    let token = mint_token(
        a.options().token_secret.as_bytes(),
        now() + 60,
        &[VIDEOROOM_PLUGIN],
    );
    let pin = room_pin(&a.options().room_admin_key, &id);
    let session = a.create_session(Some(&token)).unwrap().unwrap();
    let handle = a.attach(session, &token).unwrap().unwrap();
    let refusal = a
        .join_as_publisher(session, handle, &token, &id, "0000", "mallory")
        .unwrap()
        .unwrap_err();
    assert_eq!(refusal.code, WRONG_PIN, "{refusal:?}");
    a.join_as_publisher(session, handle, &token, &id, &pin, "alice")
        .unwrap()
        .unwrap();

    // A's own view of its load reaches the node's status: one session, one participant.
    wait_for("sfu-a's reported load", WAIT, || async {
        let node = nodes.get("sfu-a").await.map_err(|e| e.to_string())?;
        let reported = node.status.and_then(|s| s.reported_load);
        match &reported {
            Some(r) if r.sessions == Some(1) && r.participants == Some(1) => Ok(()),
            _ => Err(format!("{reported:?}")),
        }
    })
    .await
    .unwrap();

    // Janus A dies: NotReady, and the room is created on B and placed there.
    a.kill();
    wait_for("sfu-a NotReady", WAIT, || async {
        match node_condition(&nodes, "sfu-a", conditions::READY).await {
            Some((s, _)) if s == "False" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let on_b = placed_on(&rooms, "standup", "sfu-b").await;
    let status = on_b.status.clone().unwrap();
    assert_eq!(status.placement_generation, 2);
    assert_eq!(status.sfu_room.as_deref(), Some(id.as_str()));
    assert!(b.list_rooms().unwrap().contains(&id), "B lists {id}");

    // Deleted: destroyed on B before the Room is gone.
    rooms
        .delete("standup", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Room gone after its finalizer", WAIT, || async {
        match rooms.get_opt("standup").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(r) => Err(format!("still there: {:?}", r.metadata.finalizers)),
        }
    })
    .await
    .unwrap();
    assert!(!b.list_rooms().unwrap().contains(&id), "B still holds {id}");

    // B refuses new sessions: not Schedulable, and a new room finds no node.
    b.admin(json!({"janus": "accept_new_sessions", "accept": false}))
        .unwrap();
    wait_for("sfu-b not Schedulable", WAIT, || async {
        match node_condition(&nodes, "sfu-b", conditions::SCHEDULABLE).await {
            Some((s, r)) if s == "False" && r == "SfuNotAccepting" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    rooms
        .create(&PostParams::default(), &room("later", 2, json!({})))
        .await
        .unwrap();
    wait_for("later Unschedulable", WAIT, || async {
        let r = rooms.get("later").await.map_err(|e| e.to_string())?;
        match r.status.and_then(|s| s.phase) {
            Some(RoomPhase::Unschedulable) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}

/// Deleting a Janus node drains it: Janus stops taking new sessions, the room is created on
/// the other node and destroyed on the old one (which is still alive), so it is never live on
/// two nodes once the move is written; then the node goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_janus_node_is_drained_without_leaving_a_copy() {
    switchboard_tests::require!(ControlPlane, Janus);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let a = start_janus("sfu-a", 20200..=20299);
    let b = start_janus("sfu-b", 20300..=20399);
    a.register(&client, NS, 10).await.unwrap();
    b.register(&client, NS, 5).await.unwrap();
    let operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    both_ready(&nodes).await;
    let created = rooms
        .create(&PostParams::default(), &room("standup", 4, json!({})))
        .await
        .unwrap();
    let id = room_id(NS, "standup", created.metadata.uid.as_deref().unwrap());
    placed_on(&rooms, "standup", "sfu-a").await;
    assert!(a.list_rooms().unwrap().contains(&id));

    nodes
        .delete("sfu-a", &DeleteParams::default())
        .await
        .unwrap();
    let on_b = placed_on(&rooms, "standup", "sfu-b").await;
    assert_eq!(on_b.status.unwrap().placement_generation, 2);
    assert!(b.list_rooms().unwrap().contains(&id), "B lists {id}");
    wait_for("the old copy destroyed on A", WAIT, || async {
        let on_a = a.list_rooms().map_err(|e| e.to_string())?;
        if on_a.contains(&id) {
            Err(format!("{on_a:?}"))
        } else {
            Ok(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_tail(80)));
    assert_eq!(
        a.info().unwrap()["accepting-new-sessions"],
        false,
        "A drained"
    );
    wait_for("sfu-a gone once drained", WAIT, || async {
        match nodes.get_opt("sfu-a").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(n) => Err(format!("{:?}", n.metadata.finalizers)),
        }
    })
    .await
    .unwrap();
}

/// A Janus that refuses to create the room (here: its credentials Secret holds the wrong room
/// admin key) leaves the Room unplaced with `Provisioned=False` (`ProvisionFailed`, naming the
/// room, the node and Janus's answer), not only an Event; once the Secret is right, the retry
/// places and provisions it.
#[tokio::test(flavor = "multi_thread")]
async fn a_room_janus_refuses_shows_provisioned_false_until_it_can_be_created() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    switchboard_tests::require!(ControlPlane, Janus);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let a = start_janus("sfu-a", 20400..=20499);
    a.register(&client, NS, 10).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let set_room_admin_key = |key: String| {
        let secrets = secrets.clone();
        async move {
            let patch = json!({"stringData": {"roomAdminKey": key}});
            secrets
                .patch(
                    "sfu-a-credentials",
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
    };
    set_room_admin_key("not-the-key-janus-has".to_owned()).await;
    let _operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    wait_for("sfu-a Ready", WAIT, || async {
        match node_condition(&nodes, "sfu-a", conditions::READY).await {
            Some((s, _)) if s == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let created = rooms
        .create(&PostParams::default(), &room("standup", 4, json!({})))
        .await
        .unwrap();
    let id = room_id(NS, "standup", created.metadata.uid.as_deref().unwrap());
    let refused = wait_for("Provisioned=False on the Room", WAIT, || async {
        let status = rooms
            .get("standup")
            .await
            .map_err(|e| e.to_string())?
            .status;
        let status = status.ok_or("no status")?;
        match conditions::find(&status.conditions, conditions::PROVISIONED) {
            Some(c) if c.status == "False" => Ok((c.clone(), status.sfu_node.clone())),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let (condition, node) = refused;
    assert_eq!(condition.reason, "ProvisionFailed");
    assert!(
        condition.message.contains(&id) && condition.message.contains("sfu-a"),
        "names the room and the node: {}",
        condition.message
    );
    assert_eq!(node, None, "not placed while the SFU lacks the room");
    assert!(a.list_rooms().unwrap().is_empty(), "nothing created on A");

    set_room_admin_key(a.options().room_admin_key.clone()).await;
    let placed = placed_on(&rooms, "standup", "sfu-a").await;
    let provisioned =
        conditions::find(&placed.status.unwrap().conditions, conditions::PROVISIONED).cloned();
    assert_eq!(
        provisioned.map(|c| (c.status, c.reason)),
        Some(("True".to_owned(), "Created".to_owned()))
    );
    assert_eq!(a.list_rooms().unwrap(), [id.as_str()]);
}

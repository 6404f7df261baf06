//! Signaling with the operator on a real apiserver: a first join creates the Room and waits
//! for its placement, `joined` carries the SFU, participant counts reach `Room.status`, and
//! clients hear `sfuReassigned` when the operator moves their room.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use switchboard_crds::{Room, SfuNode};
use switchboard_tests::objects::{sfu_node, wait_for};
use switchboard_tests::signaling::{Client, SignalingProcess, token, token_in_region};
use switchboard_tests::{ControlPlane, OperatorProcess, fast_args};

const NS: &str = "calls";
const HOUR: Duration = Duration::from_secs(3600);

/// Proves auto-create waits for the operator's placement, `joined` carries the SFU, counts are
/// reported, and a move reaches the clients as `sfuReassigned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_follow_the_operators_placement() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    nodes
        .create(
            &PostParams::default(),
            &sfu_node(
                "sfu-a",
                "eu-west-1",
                100,
                json!({"turn": {"urls": ["turn:turn-a.example.com:3478"]}}),
            ),
        )
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let server = SignalingProcess::start_with_env(
        &[
            "--namespace=calls",
            "--auto-create",
            "--auto-create-max-participants=8",
            "--placement-wait=10s",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .unwrap();
    let url = server.ws_url();

    let (mut alice, joined) = Client::join(
        &url,
        &token_in_region("alice", "standup", Some("eu-west-1"), HOUR),
    )
    .await
    .unwrap();
    assert_eq!(
        joined["sfu"],
        json!({"node": "sfu-a", "url": "wss://sfu-a.example.com/rtc", "kind": "Opaque",
               "generation": 1}),
        "{joined}"
    );
    assert_eq!(
        joined["iceServers"][0]["urls"],
        json!(["turn:turn-a.example.com:3478"]),
        "the node's TURN URLs"
    );
    let room = rooms.get("standup").await.unwrap();
    assert_eq!(room.spec.max_participants, 8);
    assert_eq!(
        room.spec.region.as_deref(),
        Some("eu-west-1"),
        "the first joiner's region"
    );
    assert!(room.spec.empty_timeout_seconds.is_some());
    let (mut bob, joined_b) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    assert_eq!(joined_b["sfu"]["node"], "sfu-a");
    wait_for("participants reported", Duration::from_secs(10), || async {
        let n = rooms
            .get("standup")
            .await
            .map_err(|e| e.to_string())?
            .status
            .map(|s| s.participants)
            .unwrap_or(0);
        if n == 2 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await
    .unwrap();

    // The operator moves the room: both clients are told where the media goes now.
    nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu-b", "eu-west-1", 100, json!({})),
        )
        .await
        .unwrap();
    nodes
        .delete("sfu-a", &DeleteParams::default())
        .await
        .unwrap();
    for client in [&mut alice, &mut bob] {
        let moved = client
            .recv_type("sfuReassigned")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail(20)));
        assert_eq!(moved["sfu"]["node"], "sfu-b");
        assert_eq!(
            moved["sfu"]["generation"], 2,
            "a move is the next generation"
        );
        assert_eq!(moved["sfu"]["kind"], "Opaque");
    }
}

/// Proves a join to a missing Room is `room_not_found` without auto-create, and
/// `placement_timeout` when the Room cannot be placed in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unplaceable_rooms_get_clear_errors() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let strict = SignalingProcess::start_with_env(&["--namespace=calls"], &env).unwrap();
    let mut client = Client::connect(&strict.ws_url(), &token("alice", "nowhere", HOUR))
        .await
        .unwrap();
    client
        .send_json(&json!({"type": "join", "v": 1, "ref": "j"}))
        .await
        .unwrap();
    let error = client.recv_type("error").await.unwrap();
    assert_eq!(
        (error["code"].clone(), error["ref"].clone()),
        (json!("room_not_found"), json!("j"))
    );

    // No SfuNode exists, so an auto-created room cannot be placed.
    let _operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let eager = SignalingProcess::start_with_env(
        &["--namespace=calls", "--auto-create", "--placement-wait=1s"],
        &env,
    )
    .unwrap();
    let mut client = Client::connect(&eager.ws_url(), &token("alice", "no-sfu", HOUR))
        .await
        .unwrap();
    client
        .send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    assert_eq!(
        client.recv_type("error").await.unwrap()["code"],
        "placement_timeout"
    );
}

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

/// Freezes a process (SIGSTOP) until dropped (SIGCONT), so a failing test never leaves the
/// apiserver stopped.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        signal(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Proves the apiserver stopped for 30 s and back is survived without restarts: while it is
/// stopped (SIGSTOP: connections hang, as in a partition), a room that is already placed keeps
/// taking new joins and relaying, from the watch cache; once it is back, the watches resume
/// by themselves, so a new room is created by a join, placed by the same operator process
/// and joined, and both processes are still the ones started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_stopped_for_30s_and_back() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu-a", "eu-west-1", 100, json!({})),
        )
        .await
        .unwrap();
    let mut operator = OperatorProcess::start(&cp, &fast_args(NS)).unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let mut server = SignalingProcess::start_with_env(
        &["--namespace=calls", "--auto-create", "--placement-wait=10s"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .unwrap();
    let url = server.ws_url();
    let (mut alice, joined) = Client::join(&url, &token("alice", "placed", HOUR))
        .await
        .unwrap();
    assert_eq!(joined["sfu"]["node"], "sfu-a", "{joined}");

    let stopped_at = std::time::Instant::now();
    let frozen = Frozen::new(cp.pids()[1]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Throughout the 30 s, new joins to the placed room work and relay.
    let mut joins = 0;
    while stopped_at.elapsed() < Duration::from_secs(28) {
        let user = format!("late{joins}");
        let (mut late, joined) = tokio::time::timeout(
            Duration::from_secs(5),
            Client::join(&url, &token(&user, "placed", HOUR)),
        )
        .await
        .unwrap_or_else(|_| panic!("join {joins} hung\n{}", server.log_tail(20)))
        .unwrap();
        assert_eq!(joined["sfu"]["node"], "sfu-a", "{joined}");
        late.send_json(
            &json!({"type": "offer", "to": joined["participants"][0]["id"], "sdp": "v=0"}),
        )
        .await
        .unwrap();
        let target = joined["participants"][0]["user"]
            .as_str()
            .unwrap()
            .to_owned();
        if target == "alice" {
            alice.recv_type("offer").await.unwrap();
        }
        late.send_json(&json!({"type": "leave"})).await.unwrap();
        joins += 1;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    while stopped_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(frozen);
    assert!(
        joins >= 5,
        "only {joins} joins while the apiserver was stopped"
    );

    // Back: a new room goes through the apiserver and the operator again.
    let (_bob, joined) = wait_for("a new room placed", Duration::from_secs(60), || async {
        match Client::join(&url, &token("bob", "fresh", HOUR)).await {
            Ok((client, joined)) if joined["sfu"]["node"] == "sfu-a" => Ok((client, joined)),
            Ok((_, joined)) => Err(joined.to_string()),
            Err(error) => Err(error),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", server.log_tail(20), operator.log_tail(20)));
    assert_eq!(joined["room"], "fresh");
    server.check_running().unwrap();
    operator.check_running().unwrap();
}

//! Signaling hands out SFU credentials on a real apiserver: for a Room on a `JanusVideoRoom`
//! SfuNode, `joined` waits for the room to exist on Janus and carries a token that verifies
//! with the node's credentials Secret, the pin, the room id and the placement generation; a
//! move to another node reaches every client as `sfuReassigned` with generation + 1 and the
//! new node's token; `sfuRefresh` arrives before the token expires.
//!
//! The Room statuses are written here, as the operator would after provisioning: what is
//! under test is signaling's side of the contract, not Janus.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha1::Sha1;
use switchboard_crds::{Room, SfuNode};
use switchboard_tests::ControlPlane;
use switchboard_tests::objects::{room, sfu_node};
use switchboard_tests::signaling::{Client, SignalingProcess, token};

const NS: &str = "calls";
const HOUR: Duration = Duration::from_secs(3600);
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// A Janus node and its credentials Secret.
async fn janus_node(client: &kube::Client, name: &str, host: &str, token_secret: &str) {
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret_name = format!("{name}-credentials");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": secret_name},
        "stringData": {
            "tokenSecret": token_secret,
            "adminSecret": format!("{name}-admin"),
            "roomAdminKey": format!("{name}-room-key"),
        }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut node = sfu_node(
        name,
        "local",
        100,
        json!({
            "kind": "JanusVideoRoom",
            "admin": {"url": format!("http://{host}:7088/admin"), "credentialsSecret": secret_name},
        }),
    );
    node.spec.url = format!("ws://{host}:8188");
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

/// Writes the Room's status as the operator does once the room is placed (and, with
/// `sfu_room`, provisioned).
async fn set_status(
    rooms: &Api<Room>,
    name: &str,
    node: &str,
    generation: u32,
    sfu_room: Option<&str>,
) {
    let patch = json!({"status": {
        "phase": "Placed",
        "sfuNode": node,
        "sfuUrl": format!("ws://{}:8188", if node == "sfu-a" { "127.0.0.2" } else { "127.0.0.3" }),
        "reservedParticipants": 4,
        "placementGeneration": generation,
        "sfuRoom": sfu_room,
    }});
    rooms
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Checks a Janus signed token the way Janus does (upstream `src/auth.c`): HMAC-SHA1 of the
/// part before the colon, standard base64 with padding; and that it names the VideoRoom
/// plugin and expires at `expires_at`.
fn assert_janus_token(token: &str, secret: &str, expires_at: u64) {
    let (signed, signature) = token.split_once(':').unwrap_or_else(|| panic!("{token}"));
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, expected, "signed with {secret}: {token}");
    let parts: Vec<&str> = signed.split(',').collect();
    assert_eq!(
        parts,
        [expires_at.to_string().as_str(), "janus", VIDEOROOM],
        "{token}"
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks the `sfu` object against the node, room, generation and secret it must carry.
fn assert_sfu(sfu: &Value, node: &str, room: &str, generation: u64, secret: &str, ttl: u64) {
    assert_eq!(sfu["node"], node, "{sfu}");
    assert_eq!(sfu["kind"], "JanusVideoRoom", "{sfu}");
    assert_eq!(sfu["generation"], generation, "{sfu}");
    assert_eq!(sfu["room"], room, "{sfu}");
    let room_key = format!("{node}-room-key");
    assert_eq!(
        sfu["pin"].as_str(),
        Some(switchboard_sfu::janus::room_pin(&room_key, room).as_str()),
        "the pin the operator sets at create: {sfu}"
    );
    let expires_at = sfu["tokenExpiresAt"]
        .as_u64()
        .unwrap_or_else(|| panic!("{sfu}"));
    let now = unix_now();
    assert!(
        expires_at >= now + ttl - 3 && expires_at <= now + ttl + 1,
        "expires {expires_at}, now {now}, ttl {ttl}: {sfu}"
    );
    assert_janus_token(sfu["token"].as_str().unwrap(), secret, expires_at);
}

/// Proves `joined` waits for provisioning and then carries a verifiable Janus token, the pin,
/// the room and the generation; a move gives `sfuReassigned` with generation + 1 and the new
/// node's token; `sfuRefresh` comes before the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janus_rooms_get_tokens_moves_and_refreshes() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    janus_node(&client, "sfu-a", "127.0.0.2", "secret-of-a").await;
    janus_node(&client, "sfu-b", "127.0.0.3", "secret-of-b").await;
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    rooms
        .create(&PostParams::default(), &room("standup", 4, json!({})))
        .await
        .unwrap();
    // Placed on A, not on Janus yet.
    set_status(&rooms, "standup", "sfu-a", 1, None).await;
    let kubeconfig = cp.kubeconfig().display().to_string();
    let ttl = 6u64;
    let server = SignalingProcess::start_with_env(
        &[
            "--namespace=calls",
            "--placement-wait=20s",
            &format!("--sfu-token-ttl={ttl}s"),
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .unwrap();
    let url = server.ws_url();

    // No `joined` while the room does not exist on Janus.
    let mut alice = Client::connect(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    alice
        .send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    assert!(
        alice.quiet_for(Duration::from_millis(1500)).await,
        "joined before the room was provisioned\n{}",
        server.log_tail(20)
    );
    let room_a = "calls.standup.a1";
    set_status(&rooms, "standup", "sfu-a", 1, Some(room_a)).await;
    let joined = alice.recv_type("joined").await.unwrap();
    assert_sfu(&joined["sfu"], "sfu-a", room_a, 1, "secret-of-a", ttl);
    let (mut bob, joined_b) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    assert_sfu(&joined_b["sfu"], "sfu-a", room_a, 1, "secret-of-a", ttl);

    // The room moves to B: told once B has it, with the next generation and B's token.
    let room_b = "calls.standup.b2";
    set_status(&rooms, "standup", "sfu-b", 2, None).await;
    set_status(&rooms, "standup", "sfu-b", 2, Some(room_b)).await;
    let mut bob_expiry = 0;
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let moved = client
            .recv_type("sfuReassigned")
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}\n{}", server.log_tail(20)));
        assert_sfu(&moved["sfu"], "sfu-b", room_b, 2, "secret-of-b", ttl);
        assert_eq!(moved["sfu"]["url"], "ws://127.0.0.3:8188");
        bob_expiry = moved["sfu"]["tokenExpiresAt"].as_u64().unwrap();
    }

    // A refresh before bob's newest token ends, for the room where it is now.
    let refresh = bob.recv_type("sfuRefresh").await.unwrap();
    let now = unix_now();
    assert!(
        now < bob_expiry,
        "refresh at {now}, token expired at {bob_expiry}"
    );
    assert_sfu(&refresh["sfu"], "sfu-b", room_b, 2, "secret-of-b", ttl);
    assert!(
        refresh["sfu"]["tokenExpiresAt"].as_u64().unwrap() > bob_expiry,
        "the refreshed token outlives the one it replaces: {refresh}"
    );
}

/// Proves a Janus room that never gets provisioned is refused with `placement_timeout`, and
/// that credentials that cannot be read give `internal` with no Secret name in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprovisioned_rooms_and_missing_credentials_are_refused() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    janus_node(&client, "sfu-a", "127.0.0.2", "secret-of-a").await;
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let mut orphan = sfu_node(
        "sfu-c",
        "local",
        100,
        json!({"kind": "JanusVideoRoom",
               "admin": {"url": "http://127.0.0.4:7088/admin", "credentialsSecret": "nowhere"}}),
    );
    orphan.spec.url = "ws://127.0.0.4:8188".to_owned();
    nodes.create(&PostParams::default(), &orphan).await.unwrap();
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    for name in ["waiting", "orphaned"] {
        rooms
            .create(&PostParams::default(), &room(name, 4, json!({})))
            .await
            .unwrap();
    }
    set_status(&rooms, "waiting", "sfu-a", 1, None).await;
    set_status(&rooms, "orphaned", "sfu-c", 1, Some("calls.orphaned.c1")).await;
    let kubeconfig = cp.kubeconfig().display().to_string();
    let server = SignalingProcess::start_with_env(
        &["--namespace=calls", "--placement-wait=1s"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .unwrap();
    let url = server.ws_url();
    let mut waiting = Client::connect(&url, &token("alice", "waiting", HOUR))
        .await
        .unwrap();
    waiting
        .send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    let refused = waiting.recv_type("error").await.unwrap();
    assert_eq!(refused["code"], "placement_timeout", "{refused}");
    let mut orphaned = Client::connect(&url, &token("alice", "orphaned", HOUR))
        .await
        .unwrap();
    orphaned
        .send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    let refused = orphaned.recv_type("error").await.unwrap();
    assert_eq!(refused["code"], "internal", "{refused}");
    assert!(
        !refused["message"].as_str().unwrap().contains("nowhere"),
        "no Secret name for clients: {refused}"
    );
}

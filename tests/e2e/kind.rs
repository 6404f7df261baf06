//! The end-to-end test binary `tests/e2e/kind.sh` runs against a kind cluster where the chart
//! is installed from the real images: SfuNodes and a Room applied, the Room placed by the
//! operator pods, two clients joined through the signaling Service exchanging offer and answer,
//! and the chart's RBAC refusing what it must, checked by impersonating its ServiceAccounts.
//!
//! Without `SWITCHBOARD_E2E_KUBECONFIG` (set by kind.sh) it prints why and does nothing: no
//! kind cluster can run on the project's machines (no registry for the node image).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use switchboard_crds::{Room, SfuNode};
use switchboard_tests::objects::{api_status, room, sfu_node, wait_for};
use switchboard_tests::signaling::{Client as WsClient, token_with_keys};

struct Cluster {
    kubeconfig: String,
    namespace: String,
    release: String,
    url: String,
    hs256: String,
}

fn cluster() -> Option<Cluster> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(kubeconfig) = var("SWITCHBOARD_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: SWITCHBOARD_E2E_KUBECONFIG is not set; tests/e2e/kind.sh runs this against a kind cluster"
        );
        return None;
    };
    Some(Cluster {
        kubeconfig,
        namespace: var("SWITCHBOARD_E2E_NAMESPACE").unwrap_or_else(|| "switchboard".into()),
        release: var("SWITCHBOARD_E2E_RELEASE").unwrap_or_else(|| "sb".into()),
        url: var("SWITCHBOARD_E2E_SIGNALING_URL").expect("SWITCHBOARD_E2E_SIGNALING_URL"),
        hs256: var("SWITCHBOARD_E2E_JWT_HS256").expect("SWITCHBOARD_E2E_JWT_HS256"),
    })
}

async fn client(cluster: &Cluster, impersonate: Option<String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = impersonate;
    Client::try_from(config).unwrap()
}

/// Proves the installed chart places a Room, relays offer and answer between two clients
/// through the signaling Service, and that its RBAC refuses what it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_on_kind_places_and_relays() {
    let Some(cluster) = cluster() else { return };
    let ns = cluster.namespace.as_str();
    let admin = client(&cluster, None).await;
    let nodes: Api<SfuNode> = Api::namespaced(admin.clone(), ns);
    let rooms: Api<Room> = Api::namespaced(admin.clone(), ns);
    for name in ["e2e-sfu-a", "e2e-sfu-b"] {
        let _ = nodes.delete(name, &DeleteParams::default()).await;
    }
    let _ = rooms.delete("e2e-room", &DeleteParams::default()).await;
    for name in ["e2e-sfu-a", "e2e-sfu-b"] {
        wait_for("old objects gone", Duration::from_secs(60), || async {
            match nodes.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err(format!("{name} still there")),
            }
        })
        .await
        .unwrap();
        nodes
            .create(
                &PostParams::default(),
                &sfu_node(name, "eu-west-1", 100, json!({})),
            )
            .await
            .unwrap();
    }
    rooms
        .create(&PostParams::default(), &room("e2e-room", 8, json!({})))
        .await
        .unwrap();
    let node = wait_for("the Room to be placed", Duration::from_secs(60), || async {
        rooms
            .get("e2e-room")
            .await
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.sfu_node)
            .ok_or_else(|| "not placed".to_owned())
    })
    .await
    .unwrap();

    let operator = format!("{}-switchboard-operator", cluster.release);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), ns);
    let holder = leases
        .get(&operator)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.starts_with(&operator), "lease holder {holder:?}");

    let (mut alice, joined_a) = WsClient::join(
        &cluster.url,
        &token_with_keys(&cluster.hs256, "alice", "e2e-room").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(joined_a["sfu"]["node"], node.as_str(), "{joined_a}");
    let (mut bob, joined_b) = WsClient::join(
        &cluster.url,
        &token_with_keys(&cluster.hs256, "bob", "e2e-room").unwrap(),
    )
    .await
    .unwrap();
    alice
        .send_json(&json!({"type": "offer", "to": joined_b["participantId"], "sdp": "v=0 offer"}))
        .await
        .unwrap();
    assert_eq!(bob.recv_type("offer").await.unwrap()["sdp"], "v=0 offer");
    bob.send_json(&json!({"type": "answer", "to": joined_a["participantId"], "sdp": "v=0 answer"}))
        .await
        .unwrap();
    assert_eq!(
        alice.recv_type("answer").await.unwrap()["sdp"],
        "v=0 answer"
    );

    let signaling_sa = format!(
        "system:serviceaccount:{ns}:{}-switchboard-signaling",
        cluster.release
    );
    let operator_sa = format!("system:serviceaccount:{ns}:{operator}");
    let as_signaling: Api<Room> = Api::namespaced(client(&cluster, Some(signaling_sa)).await, ns);
    assert_eq!(
        api_status(
            as_signaling
                .delete("e2e-room", &DeleteParams::default())
                .await
        ),
        Some(403)
    );
    let as_operator: Api<Secret> = Api::namespaced(client(&cluster, Some(operator_sa)).await, ns);
    assert_eq!(
        api_status(
            as_operator
                .get(&format!("{}-switchboard-config", cluster.release))
                .await
        ),
        Some(403)
    );
}

//! TURN credentials handed out by signaling work on a real coturn, and a secret rotated by the
//! operator is used for new credentials within 2 s.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use switchboard_tests::coturn::{Coturn, Outcome};
use switchboard_tests::objects::wait_for;
use switchboard_tests::signaling::{Client, SignalingProcess, token};
use switchboard_tests::{ControlPlane, OperatorProcess, RedisServer, fast_args};

const NS: &str = "calls";
const SECRET: &str = "turn-shared-secret";
const REALM: &str = "switchboard.test";
const HOUR: Duration = Duration::from_secs(3600);

async fn current_secret(secrets: &Api<Secret>) -> Result<Vec<u8>, String> {
    let secret = secrets.get(SECRET).await.map_err(|e| e.to_string())?;
    secret
        .data
        .and_then(|d| d.get("current").map(|b| b.0.clone()))
        .ok_or_else(|| "no current key yet".to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Proves `joined` credentials allocate on coturn, and that after a forced rotation new joins
/// get credentials from the new secret within 2 s, which allocate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_credentials_allocate_and_follow_rotation() {
    switchboard_tests::require!(ControlPlane, Redis, Coturn);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let redis = RedisServer::start().unwrap();
    let coturn = Coturn::start(&redis, REALM).unwrap();
    let mut args = fast_args(NS);
    args.extend([
        format!("--turn-secret-name={SECRET}"),
        format!("--turn-realm={REALM}"),
        "--turn-rotation-interval=1h".to_owned(),
        "--turn-credential-ttl=60s".to_owned(),
        "--turn-propagation-margin=1s".to_owned(),
        format!("--turn-redis-url={}", redis.url()),
    ]);
    let _operator = tokio::task::block_in_place(|| OperatorProcess::start(&cp, &args)).unwrap();
    let secrets: Api<Secret> = Api::namespaced(cp.client().await.unwrap(), NS);
    let first = wait_for(
        "the operator's TURN secret",
        Duration::from_secs(20),
        || current_secret(&secrets),
    )
    .await
    .unwrap();

    let nodes: Api<switchboard_crds::SfuNode> = Api::namespaced(cp.client().await.unwrap(), NS);
    nodes
        .create(
            &kube::api::PostParams::default(),
            &switchboard_tests::objects::sfu_node("sfu-a", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let ice_urls = format!("--ice-urls=turn:127.0.0.1:{}?transport=udp", coturn.port());
    let secret_name = format!("--turn-secret-name={SECRET}");
    let server = tokio::task::block_in_place(|| {
        SignalingProcess::start_with_env(
            &[
                "--namespace=calls",
                "--auto-create",
                &secret_name,
                &ice_urls,
                "--turn-credential-ttl=60s",
            ],
            &[("KUBECONFIG", kubeconfig.as_str())],
        )
    })
    .unwrap();
    let url = server.ws_url();

    let credential = |joined: &serde_json::Value| -> (String, String) {
        let ice = &joined["iceServers"][0];
        assert_eq!(
            ice["urls"][0],
            format!("turn:127.0.0.1:{}?transport=udp", coturn.port())
        );
        (
            ice["username"].as_str().unwrap().to_owned(),
            ice["credential"].as_str().unwrap().to_owned(),
        )
    };
    let (_alice, joined) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (user, pass) = credential(&joined);
    assert!(user.ends_with(":alice"), "{user}");
    switchboard_turn::credentials::verify(&[&first], &user, &pass, now())
        .expect("minted with the current secret");
    let allocation = coturn.allocate(&user, &pass).await;
    assert_eq!(
        allocation.outcome,
        Outcome::Allocated,
        "{}",
        allocation.output
    );

    // Force a rotation and time how long until new joins use the new secret.
    secrets
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"switchboard.dev/rotate": "1"}}})),
        )
        .await
        .unwrap();
    let rotated = wait_for("the secret to rotate", Duration::from_secs(30), || async {
        let current = current_secret(&secrets).await?;
        if current != first {
            Ok(current)
        } else {
            Err("not yet".into())
        }
    })
    .await
    .unwrap();
    let seen = Instant::now();
    let mut n = 0;
    let (user, pass) = loop {
        n += 1;
        let (_bob, joined) = Client::join(&url, &token(&format!("bob{n}"), "standup", HOUR))
            .await
            .unwrap();
        let (user, pass) = credential(&joined);
        if switchboard_turn::credentials::verify(&[&rotated], &user, &pass, now()).is_ok() {
            break (user, pass);
        }
        assert!(
            seen.elapsed() < Duration::from_secs(2),
            "still minting with the old secret {:?} after the rotation",
            seen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "new secret in use {:?} after the Secret changed",
        seen.elapsed()
    );
    let allocation = coturn.allocate(&user, &pass).await;
    assert_eq!(
        allocation.outcome,
        Outcome::Allocated,
        "{}",
        allocation.output
    );
}

//! The chart installed with `helm install` into a real apiserver and exercised for real: the
//! operator and signaling binaries run locally with the exact arguments and environment of the
//! rendered Deployments and with tokens of the chart's own ServiceAccounts, so the chart's RBAC
//! is what lets them work, and what refuses them the rest.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use switchboard_crds::Room;
use switchboard_tests::binaries::workspace_binary;
use switchboard_tests::chart::{
    ChartPod, ContainerCommand, Helm, chart_dir, of_kind, parse_manifests, token_kubeconfig,
};
use switchboard_tests::objects::{api_status, room, sfu_node, wait_for};
use switchboard_tests::signaling::{Client, token_with_keys};
use switchboard_tests::{ControlPlane, RedisServer};

const NS: &str = "switchboard";
const RELEASE: &str = "sb";
const OPERATOR: &str = "sb-switchboard-operator";
const SIGNALING: &str = "sb-switchboard-signaling";
/// SFU credentials the chart's values name, and some they do not.
const SFU_SECRET: &str = "sfu-a-credentials";
const OTHER_SFU_SECRET: &str = "sfu-b-credentials";
const TURN_SECRET: &str = "sb-switchboard-turn";
const CONFIG_SECRET: &str = "sb-switchboard-config";

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn service_account_token(cp: &ControlPlane, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(cp.client().await.unwrap(), NS);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap()
}

fn write_kubeconfig(cp: &ControlPlane, dir: &Path, name: &str, token: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, token_kubeconfig(cp.url(), cp.ca_pem(), token, NS)).unwrap();
    path
}

/// Proves `helm install` is accepted whole by a real apiserver (RBAC on, Pod Security
/// `restricted` enforced), and that with the chart's own ServiceAccounts, Roles, Secrets and
/// environment the operator (two replicas, leader election) places a Room, fills the TURN
/// Secret, signaling admits two clients (one on each replica) who exchange offer and answer
/// with TURN credentials, and the requests the RBAC must deny are refused with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_with_the_charts_own_rbac() {
    switchboard_tests::require!(ChartTools, ControlPlane, Redis);
    let started = Instant::now();
    // The chart installs the CRDs itself.
    let cp = ControlPlane::start_without_crds().await.unwrap();
    let admin = cp.client().await.unwrap();
    let output = cp.kubectl(["create", "namespace", NS]).unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let output = cp
        .kubectl([
            "label",
            "namespace",
            NS,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // There is no controller-manager here to create the namespace's `default` ServiceAccount,
    // which the helm test Pod runs as.
    let output = cp
        .kubectl(["create", "serviceaccount", "default", "-n", NS])
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "redis: {{url: {url:?}}}\nturn: {{iceUrls: [\"turn:turn.example.com:3478\"]}}\nsfu: {{credentialSecrets: [{SFU_SECRET}]}}\n",
            url = redis.url()
        ),
    )
    .unwrap();

    // helm install: every object accepted.
    let helm = Helm::new().unwrap().with_kubeconfig(cp.kubeconfig());
    let chart = chart_dir().display().to_string();
    let values_arg = values.display().to_string();
    let install_started = Instant::now();
    let output = helm
        .run([
            "install",
            RELEASE,
            chart.as_str(),
            "--namespace",
            NS,
            "-f",
            "charts/switchboard/ci/test-values.yaml",
            "-f",
            values_arg.as_str(),
        ])
        .unwrap();
    assert!(output.status.success(), "helm install: {}", text(&output));
    assert!(
        text(&output).contains("switchboard-signaling token --room"),
        "the notes say how to mint a token: {}",
        text(&output)
    );
    eprintln!("helm install took {:?}", install_started.elapsed());
    let manifest = helm
        .run(["get", "manifest", RELEASE, "--namespace", NS])
        .unwrap();
    assert!(manifest.status.success(), "{}", text(&manifest));
    let manifest_text = String::from_utf8_lossy(&manifest.stdout).into_owned();
    let objects = parse_manifests(&manifest_text).unwrap();
    assert_eq!(
        objects.len(),
        18,
        "objects in the release (the test hook aside)"
    );
    let manifest_file = dir.path().join("manifest.yaml");
    std::fs::write(&manifest_file, &manifest_text).unwrap();
    let get = cp
        .kubectl(["get", "-f", manifest_file.to_str().unwrap(), "-o", "name"])
        .unwrap();
    assert!(
        get.status.success(),
        "not every object exists: {}",
        text(&get)
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).lines().count(),
        objects.len()
    );

    // The pods the Deployments (and the helm test hook) would create pass Pod Security
    // `restricted`: a server-side dry run of each in the enforcing namespace.
    let hooks = helm
        .run(["get", "hooks", RELEASE, "--namespace", NS])
        .unwrap();
    let hooks = parse_manifests(&String::from_utf8_lossy(&hooks.stdout)).unwrap();
    let mut pods: Vec<Value> = of_kind(&objects, "Deployment")
        .into_iter()
        .map(|d| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{}-dry-run", d["metadata"]["name"].as_str().unwrap())},
                   "spec": d["spec"]["template"]["spec"]})
        })
        .collect();
    pods.extend(of_kind(&hooks, "Pod").into_iter().cloned());
    assert_eq!(pods.len(), 3, "two Deployments and the helm test Pod");
    let mut insecure = pods[0].clone();
    insecure["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    for (pod, allowed) in pods.iter().map(|p| (p, true)).chain([(&insecure, false)]) {
        let file = dir.path().join("pod.json");
        std::fs::write(&file, pod.to_string()).unwrap();
        let output = cp
            .kubectl([
                "create",
                "--dry-run=server",
                "-n",
                NS,
                "-f",
                file.to_str().unwrap(),
            ])
            .unwrap();
        assert_eq!(
            output.status.success(),
            allowed,
            "{}: {}",
            pod["metadata"]["name"],
            text(&output)
        );
        if !allowed {
            assert!(
                text(&output).contains("violates PodSecurity"),
                "{}",
                text(&output)
            );
        }
    }

    eprintln!("installed and checked at {:?}", started.elapsed());
    // The chart's ServiceAccounts, through TokenRequest.
    let operator_token = service_account_token(&cp, OPERATOR).await;
    let signaling_token = service_account_token(&cp, SIGNALING).await;
    let operator_kubeconfig = write_kubeconfig(&cp, dir.path(), "operator", &operator_token);
    let signaling_kubeconfig = write_kubeconfig(&cp, dir.path(), "signaling", &signaling_token);

    // Two replicas of each Deployment, with the rendered args and env.
    let operator_bin = workspace_binary("switchboard-operator", "switchboard-operator").unwrap();
    let signaling_bin = workspace_binary("switchboard-signaling", "switchboard-signaling").unwrap();
    let mut operators = Vec::new();
    for i in 0..2 {
        let name = format!("{OPERATOR}-{i}");
        eprintln!("starting {name} at {:?}", started.elapsed());
        let command = ContainerCommand::of(&objects, OPERATOR, &name).unwrap();
        assert!(command.args.is_empty(), "{:?}", command.args);
        operators.push(
            ChartPod::start(
                &operator_bin,
                &name,
                &command,
                "SWITCHBOARD_OPERATOR_LISTEN",
                &operator_kubeconfig,
            )
            .unwrap(),
        );
    }
    let mut signalings = Vec::new();
    let mut hs256 = String::new();
    for i in 0..2 {
        let name = format!("{SIGNALING}-{i}");
        eprintln!("starting {name} at {:?}", started.elapsed());
        let command = ContainerCommand::of(&objects, SIGNALING, &name).unwrap();
        assert_eq!(command.args, ["serve"]);
        assert_eq!(
            command.env["SWITCHBOARD_REDIS_URL"],
            redis.url(),
            "from the Secret"
        );
        hs256 = command.env["SWITCHBOARD_JWT_HS256"].clone();
        signalings.push(
            ChartPod::start(
                &signaling_bin,
                &name,
                &command,
                "SWITCHBOARD_LISTEN",
                &signaling_kubeconfig,
            )
            .unwrap(),
        );
    }

    eprintln!("pods ready at {:?}", started.elapsed());
    // One operator holds the chart's Lease.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NS);
    let holder = wait_for("the Lease to be held", Duration::from_secs(30), || async {
        let lease = leases.get(OPERATOR).await.map_err(|e| e.to_string())?;
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| h.starts_with(OPERATOR))
            .ok_or_else(|| "no holder".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operators[0].log_tail(30)));
    eprintln!("lease held by {holder} at {:?}", started.elapsed());

    // The leader fills the chart's empty TURN Secret.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    wait_for("the TURN secret", Duration::from_secs(30), || async {
        let secret = secrets.get(TURN_SECRET).await.map_err(|e| e.to_string())?;
        let has_current = secret.data.is_some_and(|d| d.contains_key("current"));
        if has_current {
            Ok(())
        } else {
            Err("no current key".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operators[0].log_tail(30)));

    // kubectl apply SfuNodes and a Room; the Room is placed.
    let resources = dir.path().join("resources.yaml");
    let docs = [
        serde_json::to_value(sfu_node("sfu-a", "eu-west-1", 100, json!({}))).unwrap(),
        serde_json::to_value(sfu_node("sfu-b", "eu-west-1", 100, json!({}))).unwrap(),
        serde_json::to_value(room("standup", 8, json!({"region": "eu-west-1"}))).unwrap(),
    ];
    let yaml: Vec<String> = docs
        .iter()
        .map(|d| serde_norway::to_string(d).unwrap())
        .collect();
    std::fs::write(&resources, yaml.join("---\n")).unwrap();
    let output = cp
        .kubectl(["apply", "-n", NS, "-f", resources.to_str().unwrap()])
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let rooms: Api<Room> = Api::namespaced(admin.clone(), NS);
    let node = wait_for("the Room to be placed", Duration::from_secs(30), || async {
        let room = rooms.get("standup").await.map_err(|e| e.to_string())?;
        room.status
            .and_then(|s| s.sfu_node)
            .ok_or_else(|| "not placed".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operators[0].log_tail(30)));

    eprintln!("room placed on {node} at {:?}", started.elapsed());
    // The leader may publish Events: the Room's `Placed`.
    wait_for("a Placed Event", Duration::from_secs(10), || async {
        let output = cp
            .kubectl(["get", "events.events.k8s.io", "-n", NS, "-o", "json"])
            .map_err(|e| e.to_string())?;
        let events: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
        let placed = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Placed" && e["regarding"]["name"] == "standup");
        if placed {
            Ok(())
        } else {
            Err(events["items"].to_string())
        }
    })
    .await
    .unwrap();

    // Two clients join through signaling, with the SFU and TURN credentials, and exchange an
    // offer and an answer.
    let url = format!("ws://127.0.0.1:{}/v1/ws", signalings[0].port());
    let (mut alice, joined_a) = wait_for(
        "a join with TURN credentials",
        Duration::from_secs(15),
        || {
            let (url, token) = (
                url.clone(),
                token_with_keys(&hs256, "alice", "standup").unwrap(),
            );
            async move {
                let (client, joined) = Client::join(&url, &token).await?;
                if joined["iceServers"][0]["credential"].is_string() {
                    Ok((client, joined))
                } else {
                    Err(format!("no TURN credential yet: {joined}"))
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", signalings[0].log_tail(30)));
    assert_eq!(joined_a["sfu"]["node"], node.as_str(), "{joined_a}");
    assert_eq!(
        joined_a["iceServers"][0]["urls"],
        json!(["turn:turn.example.com:3478"])
    );
    // Bob's token is minted the way the install notes say: the key from the chart's Secret,
    // then `switchboard-signaling token`.
    let key = cp
        .kubectl([
            "-n",
            NS,
            "get",
            "secret",
            CONFIG_SECRET,
            "-o",
            "jsonpath={.data.jwt-hs256}",
        ])
        .unwrap();
    assert!(key.status.success(), "{}", text(&key));
    let key = BASE64.decode(key.stdout.trim_ascii()).unwrap();
    let minted = std::process::Command::new(&signaling_bin)
        .args(["token", "--room", "standup", "--user", "bob", "--ttl", "5m"])
        .env("SWITCHBOARD_JWT_HS256", String::from_utf8(key).unwrap())
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", text(&minted));
    let bob_token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    // Bob is on the other signaling replica: offer and answer cross pods through the Redis
    // whose URL came from the chart's Secret.
    let other = format!("ws://127.0.0.1:{}/v1/ws", signalings[1].port());
    let (mut bob, joined_b) = Client::join(&other, &bob_token).await.unwrap();
    alice
        .send_json(&json!({"type": "offer", "to": joined_b["participantId"], "sdp": "v=0 offer"}))
        .await
        .unwrap();
    let offer = bob.recv_type("offer").await.unwrap();
    assert_eq!(
        (offer["from"].clone(), offer["sdp"].clone()),
        (joined_a["participantId"].clone(), json!("v=0 offer"))
    );
    bob.send_json(&json!({"type": "answer", "to": joined_a["participantId"], "sdp": "v=0 answer"}))
        .await
        .unwrap();
    let answer = alice.recv_type("answer").await.unwrap();
    assert_eq!(answer["from"], joined_b["participantId"]);
    assert_eq!(answer["sdp"], "v=0 answer");
    eprintln!("offer and answer exchanged at {:?}", started.elapsed());
    // Both replicas share the room state.
    let (_carol, joined_c) = Client::join(
        &other,
        &token_with_keys(&hs256, "carol", "standup").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        joined_c["participants"].as_array().map(Vec::len),
        Some(3),
        "{joined_c}"
    );

    // Nothing the binaries did was refused (Events, finalizers, status writes, the Lease).
    for pod in operators.iter().chain(&signalings) {
        let log = pod.log_tail(10_000);
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "a request was refused:\n{log}"
        );
    }

    // What the RBAC must deny, with the same credentials the binaries use.
    let as_signaling = cp.client_with_token(&signaling_token).unwrap();
    let as_operator = cp.client_with_token(&operator_token).unwrap();
    let signaling_rooms: Api<Room> = Api::namespaced(as_signaling.clone(), NS);
    assert_eq!(
        api_status(
            signaling_rooms
                .delete("standup", &DeleteParams::default())
                .await
        ),
        Some(403),
        "signaling deleting a Room"
    );
    assert_eq!(
        api_status(
            signaling_rooms
                .create(&PostParams::default(), &room("uninvited", 2, json!({})))
                .await
        ),
        Some(403),
        "signaling creating a Room without auto-create"
    );
    let signaling_secrets: Api<Secret> = Api::namespaced(as_signaling, NS);
    assert!(
        signaling_secrets.get(TURN_SECRET).await.is_ok(),
        "signaling reads the TURN Secret"
    );
    assert_eq!(
        api_status(signaling_secrets.get(CONFIG_SECRET).await),
        Some(403)
    );
    // The SFU credential Secrets the values name, read one by one, and nothing more.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    for name in [SFU_SECRET, OTHER_SFU_SECRET] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"tokenSecret": "t", "adminSecret": "a", "roomAdminKey": "k"}
        }))
        .unwrap();
        admin_secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    assert!(
        signaling_secrets.get(SFU_SECRET).await.is_ok(),
        "signaling reads the SFU credentials the values name"
    );
    assert_eq!(
        api_status(signaling_secrets.get(OTHER_SFU_SECRET).await),
        Some(403),
        "signaling reading SFU credentials the values do not name"
    );
    assert_eq!(
        api_status(signaling_secrets.list(&ListParams::default()).await),
        Some(403),
        "signaling listing Secrets"
    );
    assert_eq!(
        api_status(
            signaling_secrets
                .delete(SFU_SECRET, &DeleteParams::default())
                .await
        ),
        Some(403),
        "signaling deleting SFU credentials"
    );
    let operator_secrets: Api<Secret> = Api::namespaced(as_operator.clone(), NS);
    assert!(
        operator_secrets.get(TURN_SECRET).await.is_ok(),
        "the operator reads its Secret"
    );
    assert_eq!(
        api_status(operator_secrets.get(CONFIG_SECRET).await),
        Some(403),
        "the operator reading another Secret"
    );
    assert_eq!(
        api_status(operator_secrets.list(&ListParams::default()).await),
        Some(403)
    );
    // The operator reads the SFU credential Secrets the values name (to drive the SFUs' admin
    // APIs), one by one, and no other.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    for name in [SFU_SECRET, OTHER_SFU_SECRET] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"tokenSecret": "t", "adminSecret": "a", "roomAdminKey": "k"}
        }))
        .unwrap();
        let created = admin_secrets.create(&PostParams::default(), &secret).await;
        assert!(
            created.is_ok() || api_status(created) == Some(409),
            "create {name}"
        );
    }
    assert!(
        operator_secrets.get(SFU_SECRET).await.is_ok(),
        "the operator reads the SFU credentials the values name"
    );
    assert_eq!(
        api_status(operator_secrets.get(OTHER_SFU_SECRET).await),
        Some(403),
        "the operator reading SFU credentials the values do not name"
    );
    assert_eq!(
        api_status(
            operator_secrets
                .delete(SFU_SECRET, &DeleteParams::default())
                .await
        ),
        Some(403),
        "the operator deleting SFU credentials"
    );
    let operator_leases: Api<Lease> = Api::namespaced(as_operator.clone(), NS);
    assert_eq!(
        api_status(operator_leases.get("someone-elses-lease").await),
        Some(403)
    );
    let elsewhere: Api<Room> = Api::namespaced(as_operator, "default");
    assert_eq!(
        api_status(elsewhere.list(&ListParams::default()).await),
        Some(403),
        "the operator outside its namespace"
    );

    // Uninstall keeps the CRDs, and so the Rooms.
    drop((alice, bob));
    drop((signalings, operators));
    let output = helm.run(["uninstall", RELEASE, "--namespace", NS]).unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let crds = cp.kubectl(["get", "crd", "rooms.switchboard.dev"]).unwrap();
    assert!(
        crds.status.success(),
        "CRD removed on uninstall: {}",
        text(&crds)
    );
    assert!(rooms.get("standup").await.is_ok());
    eprintln!("chart install test took {:?}", started.elapsed());
}

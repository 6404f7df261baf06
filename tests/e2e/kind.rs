//! The end-to-end tests `tests/e2e/kind.sh` runs against a kind cluster where the chart is
//! installed from the real images, as a user installs it: pods Ready under the restricted Pod
//! Security level; a Room applied with `kubectl apply` placed by the operator pods; two clients
//! on different signaling pods exchanging offer, answer and candidates and getting TURN
//! credentials; the chart's RBAC refusing what it must; and lifecycle faults on real pods
//! (`kubectl rollout restart` during relay, a force-deleted signaling pod, a deleted operator
//! leader), each proving nothing is lost.
//!
//! Every test is `#[ignore]`d: `cargo test` elsewhere counts them as skipped, and kind.sh runs
//! them with `--ignored` (one at a time: they share the cluster). Run that way without a cluster
//! they fail, saying which variable is missing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use switchboard_crds::Room;
use switchboard_tests::free_port;
use switchboard_tests::objects::{api_status, wait_for};
use switchboard_tests::signaling::{Client as WsClient, token_with_keys};

/// `--participant-ttl`, the resume window, as the chart sets it by default.
const PARTICIPANT_TTL: Duration = Duration::from_secs(10);
/// The chart's default `operator.leaderElection.leaseDurationSeconds`.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How soon leadership moves when the leader pod is deleted: its SIGTERM handler releases the
/// Lease (milliseconds after the kubelet signals it) and a standby reads the Lease each second.
/// Without the release it would take the whole [`LEASE_DURATION`].
const HANDOVER_BOUND: Duration = Duration::from_secs(6);

struct Cluster {
    kubeconfig: String,
    namespace: String,
    release: String,
    /// The signaling Service (its ClusterIP, routed through the node by kind.sh).
    url: String,
    hs256: String,
}

fn cluster() -> Cluster {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("{name} is not set: tests/e2e/kind.sh runs these tests"))
    };
    Cluster {
        kubeconfig: var("SWITCHBOARD_E2E_KUBECONFIG"),
        namespace: var("SWITCHBOARD_E2E_NAMESPACE"),
        release: var("SWITCHBOARD_E2E_RELEASE"),
        url: var("SWITCHBOARD_E2E_SIGNALING_URL"),
        hs256: var("SWITCHBOARD_E2E_JWT_HS256"),
    }
}

impl Cluster {
    async fn client(&self, impersonate: Option<String>) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        config.auth_info.impersonate = impersonate;
        Client::try_from(config).unwrap()
    }

    /// Runs kubectl as a user would, in the release's namespace; `stdin` is piped in.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn token(&self, user: &str, room: &str) -> String {
        token_with_keys(&self.hs256, user, room).unwrap()
    }

    fn component(&self, component: &str) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.release
        )
    }

    /// Waits (at most 3 minutes) until exactly `count` pods of a component are Ready: an
    /// earlier test may have deleted or restarted some.
    async fn wait_ready(&self, component: &str, count: usize) -> Vec<String> {
        wait_for(
            &format!("{count} Ready {component} pods"),
            Duration::from_secs(180),
            || async {
                let pods = self.ready_pods(component).await;
                if pods.len() == count {
                    Ok(pods)
                } else {
                    Err(format!("{pods:?}"))
                }
            },
        )
        .await
        .unwrap()
    }

    /// The Ready pods of a component, by name.
    async fn ready_pods(&self, component: &str) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client(None).await, &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.component(component)))
            .await
            .unwrap();
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }
}

/// Prints how long a test took when it ends, for the suite's stage timings.
struct Timed(&'static str, Instant);

impl Timed {
    fn start(name: &'static str) -> Timed {
        Timed(name, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!(
            "kind check {}: {:.1}s",
            self.0,
            self.1.elapsed().as_secs_f64()
        );
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `kubectl port-forward pod/NAME` to one signaling pod, as a user reaches one pod; stopped on
/// drop.
struct PortForward(Child, u16);

impl PortForward {
    fn pod(cluster: &Cluster, pod: &str) -> PortForward {
        let port = free_port().unwrap();
        let child = Command::new("kubectl")
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(["--namespace", &cluster.namespace, "port-forward"])
            .arg(format!("pod/{pod}"))
            .arg(format!("{port}:8443"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port-forward to {pod} not up");
            std::thread::sleep(Duration::from_millis(100));
        }
        PortForward(child, port)
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.1)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sfu_and_room_yaml(room: &str) -> String {
    format!(
        "apiVersion: switchboard.dev/v1alpha1
kind: SfuNode
metadata: {{name: e2e-sfu-a}}
spec:
  url: wss://sfu-a.example.com/rtc
  region: eu-west-1
  capacity: {{participants: 100}}
---
apiVersion: switchboard.dev/v1alpha1
kind: SfuNode
metadata: {{name: e2e-sfu-b}}
spec:
  url: wss://sfu-b.example.com/rtc
  region: eu-west-1
  capacity: {{participants: 100}}
---
apiVersion: switchboard.dev/v1alpha1
kind: Room
metadata: {{name: {room}}}
spec:
  maxParticipants: 16
"
    )
}

/// Applies two SfuNodes and `room` with kubectl and waits until the operator placed it.
async fn placed_room(cluster: &Cluster, room: &str, within: Duration) -> String {
    cluster.kubectl(&["apply", "-f", "-"], Some(&sfu_and_room_yaml(room)));
    let rooms: Api<Room> = Api::namespaced(cluster.client(None).await, &cluster.namespace);
    wait_for("the Room to be placed", within, || async {
        rooms
            .get(room)
            .await
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.sfu_node)
            .ok_or_else(|| "not placed".to_owned())
    })
    .await
    .unwrap()
}

/// Proves the chart's pods run and become Ready in a namespace that enforces the restricted
/// Pod Security level (the admission refuses any pod that breaks it), as non-root with a
/// read-only root filesystem and no capabilities.
#[ignore = "needs the kind cluster of tests/e2e/kind.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_ready_under_restricted_pod_security() {
    let _timed = Timed::start("pods_ready_under_restricted_pod_security");
    let cluster = cluster();
    let client = cluster.client(None).await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&cluster.namespace)
        .await
        .unwrap();
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    cluster.wait_ready("operator", 2).await;
    cluster.wait_ready("signaling", 2).await;
    let pods: Api<Pod> = Api::namespaced(client, &cluster.namespace);
    let selector = format!("app.kubernetes.io/instance={}", cluster.release);
    for pod in pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name.ends_with("-test") {
            continue; // the `helm test` pod, already finished
        }
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.security_context.and_then(|s| s.run_as_non_root),
            Some(true),
            "{name}"
        );
        for container in spec.containers {
            let sc = container.security_context.unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_owned()]),
                "{name}"
            );
        }
    }
}

/// Proves a Room applied with kubectl is placed by the operator pods, and two clients on
/// different signaling pods get the SfuNode and TURN credentials and exchange offer, answer
/// and candidates; and that the chart's RBAC refuses what it must.
#[ignore = "needs the kind cluster of tests/e2e/kind.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_room_is_placed_and_clients_on_two_pods_relay() {
    let _timed = Timed::start("applied_room_is_placed_and_clients_on_two_pods_relay");
    let cluster = cluster();
    let node = placed_room(&cluster, "e2e-room", Duration::from_secs(60)).await;
    let pods = cluster.wait_ready("signaling", 2).await;
    let (to_a, to_b) = (
        PortForward::pod(&cluster, &pods[0]),
        PortForward::pod(&cluster, &pods[1]),
    );
    let (mut alice, joined_a) = WsClient::join(&to_a.url(), &cluster.token("alice", "e2e-room"))
        .await
        .unwrap();
    let (mut bob, joined_b) = WsClient::join(&to_b.url(), &cluster.token("bob", "e2e-room"))
        .await
        .unwrap();
    for joined in [&joined_a, &joined_b] {
        assert_eq!(joined["sfu"]["node"], node.as_str(), "{joined}");
        // TURN credentials from the operator's Secret: time-limited username and a password.
        let turn = joined["iceServers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["urls"].to_string().contains("turn:turn.example.com:3478"))
            .unwrap_or_else(|| panic!("no TURN server in {joined}"));
        assert!(
            turn["username"].as_str().is_some_and(|u| !u.is_empty()),
            "{turn}"
        );
        assert!(
            turn["credential"].as_str().is_some_and(|c| !c.is_empty()),
            "{turn}"
        );
    }
    let (a, b) = (&joined_a["participantId"], &joined_b["participantId"]);
    alice
        .send_json(&json!({"type": "offer", "to": b, "sdp": "v=0 offer"}))
        .await
        .unwrap();
    assert_eq!(bob.recv_type("offer").await.unwrap()["sdp"], "v=0 offer");
    bob.send_json(&json!({"type": "answer", "to": a, "sdp": "v=0 answer"}))
        .await
        .unwrap();
    assert_eq!(
        alice.recv_type("answer").await.unwrap()["sdp"],
        "v=0 answer"
    );
    let candidate = "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host";
    alice
        .send_json(&json!({"type": "candidate", "to": b, "candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}))
        .await
        .unwrap();
    assert_eq!(
        bob.recv_type("candidate").await.unwrap()["candidate"],
        candidate
    );

    let ns = cluster.namespace.as_str();
    let signaling_sa = format!(
        "system:serviceaccount:{ns}:{}-switchboard-signaling",
        cluster.release
    );
    let operator_sa = format!(
        "system:serviceaccount:{ns}:{}-switchboard-operator",
        cluster.release
    );
    let as_signaling: Api<Room> = Api::namespaced(cluster.client(Some(signaling_sa)).await, ns);
    assert_eq!(
        api_status(as_signaling.delete("e2e-room", &Default::default()).await),
        Some(403)
    );
    let as_operator: Api<Secret> = Api::namespaced(cluster.client(Some(operator_sa)).await, ns);
    assert_eq!(
        api_status(
            as_operator
                .get(&format!("{}-switchboard-config", cluster.release))
                .await
        ),
        Some(403)
    );
}

/// One participant that resumes on any pod whenever its connection ends or a pod asks it to
/// reconnect, and checks everything relayed to it: consecutive `seq`s (no gap, no repeat) and,
/// per sender, the numbers the test put in the messages.
struct Peer {
    user: String,
    token: String,
    url: String,
    client: Option<WsClient>,
    id: Value,
    resume_token: String,
    last_seq: u64,
    /// Numbers received, per sender id.
    got: BTreeMap<String, Vec<u32>>,
    resumes: u32,
    /// Presence changes seen: (participant id, reason).
    left: Vec<(String, String)>,
}

impl Peer {
    /// Joins; returns the peer and its `joined` message.
    async fn join(url: &str, token: String, user: &str) -> (Peer, Value) {
        let (client, joined) = WsClient::join(url, &token).await.unwrap();
        let peer = Peer {
            user: user.to_owned(),
            token,
            url: url.to_owned(),
            client: Some(client),
            id: joined["participantId"].clone(),
            resume_token: joined["resumeToken"].as_str().unwrap().to_owned(),
            last_seq: joined["seq"].as_u64().unwrap(),
            got: BTreeMap::new(),
            resumes: 0,
            left: Vec::new(),
        };
        (peer, joined)
    }

    /// Resumes through `self.url`, retrying while no pod answers (at most 60 s).
    async fn resume(&mut self) {
        self.client = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match WsClient::resume(&self.url, &self.token, &self.resume_token, self.last_seq).await
            {
                Ok((client, answer)) => {
                    assert_eq!(answer["type"], "joined", "{}: {answer}", self.user);
                    assert_eq!(answer["resumed"], true, "{}: {answer}", self.user);
                    assert_eq!(answer["participantId"], self.id, "{}: same id", self.user);
                    self.resume_token = answer["resumeToken"].as_str().unwrap().to_owned();
                    self.client = Some(client);
                    self.resumes += 1;
                    return;
                }
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "{}: no resume within 60s: {error}",
                        self.user
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    /// Sends relayed message number `n` to `to`; resumes and sends again if the socket is gone
    /// (a failed write reached no server).
    async fn send(&mut self, to: &Value, n: u32) {
        let message = json!({"type": "offer", "to": to, "sdp": format!("n={n}")});
        loop {
            if self.client.is_none() {
                self.resume().await;
            }
            match self.client.as_mut().unwrap().send_json(&message).await {
                Ok(()) => return,
                Err(_) => self.client = None,
            }
        }
    }

    /// Reads for up to `wait`, handling relays, presence, `reconnect` and dropped connections.
    /// After a resume it reads for `wait` more, so what the resume replays is read.
    async fn pump(&mut self, wait: Duration) {
        let mut deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if self.client.is_none() {
                self.resume().await;
                deadline = Instant::now() + wait;
                continue;
            }
            match self.client.as_mut().unwrap().recv_within(left).await {
                Ok(None) => return,
                Ok(Some(message)) => match message["type"].as_str().unwrap_or_default() {
                    "offer" | "answer" | "candidate" => {
                        let seq = message["seq"].as_u64().unwrap();
                        assert_eq!(
                            seq,
                            self.last_seq + 1,
                            "{}: relayed seq out of order: {message}",
                            self.user
                        );
                        self.last_seq = seq;
                        let n = message["sdp"]
                            .as_str()
                            .and_then(|s| s.strip_prefix("n="))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("{}: {message}", self.user));
                        let from = message["from"].as_str().unwrap().to_owned();
                        self.got.entry(from).or_default().push(n);
                    }
                    "reconnect" => {
                        self.resume_token = message["resumeToken"].as_str().unwrap().to_owned();
                        self.client = None;
                    }
                    "participantLeft" => self.left.push((
                        message["id"].as_str().unwrap_or_default().to_owned(),
                        message["reason"].as_str().unwrap_or_default().to_owned(),
                    )),
                    _ => {}
                },
                Err(_) => self.client = None,
            }
        }
    }

    fn received_from(&self, sender: &Value) -> &[u32] {
        self.got
            .get(sender.as_str().unwrap())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Proves `kubectl rollout restart` of signaling while clients relay continuously loses
/// nothing: every client resumes on the new pods with its participant id, nobody is seen
/// leaving, and every message a server took arrives exactly once and in order.
#[ignore = "needs the kind cluster of tests/e2e/kind.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_during_relay_loses_nothing() {
    let _timed = Timed::start("rollout_restart_during_relay_loses_nothing");
    let cluster = cluster();
    placed_room(&cluster, "e2e-rollout", Duration::from_secs(60)).await;
    let users = ["u0", "u1", "u2", "u3"];
    let mut peers = Vec::new();
    for user in users {
        peers.push(
            Peer::join(&cluster.url, cluster.token(user, "e2e-rollout"), user)
                .await
                .0,
        );
    }
    let ids: Vec<Value> = peers.iter().map(|p| p.id.clone()).collect();
    let old_pods = cluster.wait_ready("signaling", 2).await;
    let deployment = format!("deployment/{}-switchboard-signaling", cluster.release);
    cluster.kubectl(&["rollout", "restart", &deployment], None);
    let kubeconfig = cluster.kubeconfig.clone();
    let namespace = cluster.namespace.clone();
    let status = std::thread::spawn(move || {
        Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["--namespace", &namespace, "rollout", "status"])
            .arg(&deployment)
            .arg("--timeout=240s")
            .status()
            .unwrap()
    });
    // Each round every peer sends one numbered message to the next; the round ends when each
    // has received it. Rounds go on through the rollout and 10 more after it. A message written
    // into a socket that its pod closes before reading it never reached a server: when the
    // receiver does not have it 5 s after the sender resumed, the sender sends it again.
    //
    // That resend is a second message. If the first did reach a server and was only late (the
    // receiver was moving too), both arrive, each with its own seq, so the receiver sees that
    // round twice. The checks tell this apart from a server fault: `pump` requires every
    // relayed message's seq to be the previous one plus one (a message delivered twice would
    // repeat a seq), and below, a round may arrive more than once only as often as it was sent.
    let n = peers.len();
    // How many times each sender sent each round: (sender index, round) -> sends.
    let mut sends: BTreeMap<(usize, u32), u32> = BTreeMap::new();
    let mut round = 0u32;
    let mut after = 0;
    while after < 10 {
        round += 1;
        let mut sent_on = Vec::new();
        for i in 0..n {
            let to = ids[(i + 1) % n].clone();
            peers[i].send(&to, round).await;
            sends.insert((i, round), 1);
            sent_on.push((peers[i].resumes, Instant::now()));
        }
        for i in 0..n {
            let sender = (i + n - 1) % n;
            let from = ids[sender].clone();
            let started = Instant::now();
            while peers[i].received_from(&from).last() != Some(&round) {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "{}: round {round} not delivered; got {:?}",
                    peers[i].user,
                    peers[i].received_from(&from)
                );
                peers[i].pump(Duration::from_millis(300)).await;
                peers[sender].pump(Duration::from_millis(50)).await;
                let (resumes, at) = sent_on[sender];
                if peers[sender].resumes > resumes && at.elapsed() > Duration::from_secs(5) {
                    let to = ids[i].clone();
                    peers[sender].send(&to, round).await;
                    *sends.entry((sender, round)).or_default() += 1;
                    sent_on[sender] = (peers[sender].resumes, Instant::now());
                }
            }
        }
        if status.is_finished() {
            after += 1;
        }
    }
    assert!(status.join().unwrap().success(), "rollout status failed");
    let new_pods = cluster.ready_pods("signaling").await;
    assert!(
        new_pods.iter().all(|p| !old_pods.contains(p)),
        "old {old_pods:?}, new {new_pods:?}"
    );
    for (i, peer) in peers.iter().enumerate() {
        let sender = (i + ids.len() - 1) % ids.len();
        let from = &ids[sender];
        let got = peer.received_from(from);
        let mut distinct = got.to_vec();
        distinct.dedup();
        let expected: Vec<u32> = (1..=round).collect();
        assert_eq!(
            distinct, expected,
            "{}: every round, in order: {got:?}",
            peer.user
        );
        for r in 1..=round {
            let arrived = got.iter().filter(|&&g| g == r).count();
            let sent = sends.get(&(sender, r)).copied().unwrap_or(0) as usize;
            assert!(
                arrived <= sent,
                "{}: round {r} arrived {arrived} times but was sent {sent}: {got:?}",
                peer.user
            );
        }
        assert!(peer.resumes >= 1, "{} never moved to a new pod", peer.user);
        assert!(peer.left.is_empty(), "{} saw {:?}", peer.user, peer.left);
    }
}

/// Proves a signaling pod deleted with `--grace-period=0 --force` loses nothing: the
/// participants on the other pod see the ones that never come back leave with
/// `connection_lost` within 4/3 of the resume window, and a client that comes back through the
/// Service resumes with its id and gets what was sent to it in the gap.
#[ignore = "needs the kind cluster of tests/e2e/kind.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_deleted_pod_loses_nothing() {
    let _timed = Timed::start("force_deleted_pod_loses_nothing");
    let cluster = cluster();
    placed_room(&cluster, "e2e-force", Duration::from_secs(60)).await;
    let pods = cluster.wait_ready("signaling", 2).await;
    let (victim, other) = (
        PortForward::pod(&cluster, &pods[0]),
        PortForward::pod(&cluster, &pods[1]),
    );
    let (mut alice, _) =
        Peer::join(&victim.url(), cluster.token("alice", "e2e-force"), "alice").await;
    let (mut carol, _) = WsClient::join(&victim.url(), &cluster.token("carol", "e2e-force"))
        .await
        .unwrap();
    let (mut bob, joined) =
        Peer::join(&other.url(), cluster.token("bob", "e2e-force"), "bob").await;
    let carol_id = joined["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"] == "carol")
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no carol in {joined}"));
    bob.send(&alice.id.clone(), 1).await;
    alice.pump(Duration::from_secs(2)).await;
    assert_eq!(alice.received_from(&bob.id), [1]);

    cluster.kubectl(
        &["delete", "pod", &pods[0], "--grace-period=0", "--force"],
        None,
    );
    let dropped = async {
        let _ = carol.until_closed().await;
        Instant::now()
    };
    // Carol's socket ends when the pod dies (or its port-forward with it).
    let carol_gone = tokio::time::timeout(Duration::from_secs(30), dropped)
        .await
        .expect("carol's connection outlived the pod");
    drop(victim);
    bob.send(&alice.id.clone(), 2).await;
    // Alice comes back through the Service, to whichever pod answers.
    alice.url = cluster.url.clone();
    alice.client = None;
    alice.pump(Duration::from_secs(3)).await;
    assert_eq!(alice.received_from(&bob.id), [1, 2], "alice: nothing lost");
    assert!(alice.resumes >= 1);

    let bound = PARTICIPANT_TTL * 4 / 3 + Duration::from_secs(1);
    while !bob.left.iter().any(|(id, _)| *id == carol_id) {
        assert!(
            carol_gone.elapsed() < bound + Duration::from_secs(5),
            "bob never saw carol leave: {:?}",
            bob.left
        );
        bob.pump(Duration::from_millis(200)).await;
    }
    let seen_after = carol_gone.elapsed();
    assert!(
        seen_after <= bound,
        "connection_lost after {seen_after:?} (documented: within 4/3 of {PARTICIPANT_TTL:?})"
    );
    assert_eq!(
        bob.left,
        vec![(carol_id, "connection_lost".to_owned())],
        "only carol left, and alice was never seen leaving"
    );
}

/// Proves deleting the operator's leader pod hands leadership to the other replica at once:
/// it releases the Lease on SIGTERM, and a Room applied right after is placed within the Lease
/// duration.
#[ignore = "needs the kind cluster of tests/e2e/kind.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_operator_leader_hands_over() {
    let _timed = Timed::start("deleting_the_operator_leader_hands_over");
    let cluster = cluster();
    placed_room(&cluster, "e2e-before-takeover", Duration::from_secs(60)).await;
    let pods = cluster.wait_ready("operator", 2).await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(None).await, &cluster.namespace);
    let lease = format!("{}-switchboard-operator", cluster.release);
    let holder = leases
        .get(&lease)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap();
    assert!(pods.contains(&holder), "holder {holder} not in {pods:?}");
    let deleted = Instant::now();
    cluster.kubectl(&["delete", "pod", &holder, "--wait=false"], None);
    // The deleted leader releases the Lease on SIGTERM and a standby polls it each second, so
    // leadership moves within a few seconds, not after the Lease expires. Whichever live
    // replica wins may be the standby or the Deployment's replacement for the deleted pod.
    let (new_holder, took_over) = wait_for(
        "another operator pod to hold the Lease",
        LEASE_DURATION,
        || async {
            let current = leases
                .get(&lease)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            if current.is_empty() || current == holder {
                Err(format!("holder {current:?}"))
            } else {
                Ok((current, deleted.elapsed()))
            }
        },
    )
    .await
    .unwrap();
    let operator_pods: Vec<String> =
        Api::<Pod>::namespaced(cluster.client(None).await, &cluster.namespace)
            .list(&ListParams::default().labels(&cluster.component("operator")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect();
    assert!(
        operator_pods.contains(&new_holder),
        "the Lease went to {new_holder}, which is not an operator pod ({operator_pods:?})"
    );
    eprintln!(
        "kind check: the Lease moved from {holder} to {new_holder} ({}) after {took_over:?}",
        if pods.contains(&new_holder) {
            "the standby"
        } else {
            "the replacement pod"
        }
    );
    assert!(
        took_over < HANDOVER_BOUND,
        "the Lease moved only after {took_over:?}: the deleted leader did not release it"
    );
    placed_room(&cluster, "e2e-after-takeover", LEASE_DURATION).await;
    let placed_after = deleted.elapsed();
    assert!(
        placed_after < LEASE_DURATION,
        "placed after {placed_after:?}"
    );
}

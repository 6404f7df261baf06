//! Room state faults with real processes: three `switchboard-signaling` pods on one real
//! Redis, clients spread over them, and Redis restarted empty again and again, paused (slow
//! but alive), or cut off from one pod by a network partition. After each fault nothing is
//! lost: every relay is either delivered exactly once with consecutive `seq`s or refused with
//! `unavailable`, every client's view of the room ends up with everyone still connected,
//! `resync.seq` is the last `seq` before it, and `/readyz` and `/metrics` answer at once
//! throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_tests::RedisServer;
use switchboard_tests::http::request;
use switchboard_tests::netns::NetNamespace;
use switchboard_tests::signaling::{Client, SignalingProcess, token};

const HOUR: Duration = Duration::from_secs(3600);
/// Restarts in one run: the failures this guards against were timing-dependent.
const RESTARTS: usize = 10;
/// How long `/readyz` and `/metrics` may take, whatever Redis is doing (half the operation
/// timeout; they typically take a few milliseconds, the slack is for a loaded machine).
const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// How long a relay refused during an outage may take to be refused (it used to wait out the
/// 2 s operation timeout).
const FAIL_FAST: Duration = Duration::from_secs(1);
/// The slowest probe and the slowest refusal seen, in microseconds, for the report.
static SLOWEST_PROBE: AtomicU64 = AtomicU64::new(0);
static SLOWEST_REFUSAL: AtomicU64 = AtomicU64::new(0);

fn pod(redis_url: &str, name: &str) -> SignalingProcess {
    SignalingProcess::start(&[
        &format!("--redis-url={redis_url}"),
        &format!("--pod-name={name}"),
        "--rate-per-second=10000",
        "--rate-burst=10000",
    ])
    .unwrap()
}

/// One connected participant and what it has seen.
struct Peer {
    client: Client,
    user: String,
    id: String,
    pod: usize,
    /// The highest relayed `seq` received.
    seq: u64,
    /// The room as this client sees it: `joined`, then presence and `resync`.
    view: BTreeSet<String>,
    /// `resync`s received, with whether each listed everyone on its own.
    resyncs: Vec<bool>,
    /// Message numbers received, per sender.
    got: BTreeSet<u64>,
}

/// What the test sent and what came back, by message number.
#[derive(Default)]
struct Ledger {
    next: u64,
    /// number -> (sender index, target index)
    sent: BTreeMap<u64, (usize, usize)>,
    /// number -> error code the sender got
    refused: BTreeMap<u64, String>,
}

struct Room {
    peers: Vec<Peer>,
    ledger: Ledger,
    everyone: BTreeSet<String>,
}

impl Room {
    async fn join(pods: &[SignalingProcess], room: &str, per_pod: usize) -> Room {
        let mut peers = Vec::new();
        for (p, server) in pods.iter().enumerate() {
            for k in 0..per_pod {
                let user = format!("u{p}{k}");
                let (client, joined) = Client::join(&server.ws_url(), &token(&user, room, HOUR))
                    .await
                    .unwrap();
                peers.push(Peer {
                    client,
                    user,
                    id: joined["participantId"].as_str().unwrap().to_owned(),
                    pod: p,
                    seq: 0,
                    view: ids(&joined["participants"]),
                    resyncs: Vec::new(),
                    got: BTreeSet::new(),
                });
            }
        }
        let everyone = peers.iter().map(|p| p.id.clone()).collect();
        let mut room = Room {
            peers,
            ledger: Ledger::default(),
            everyone,
        };
        room.drain(Duration::from_millis(300)).await;
        room
    }

    /// Sends one offer from `from` to `to`, numbered, with the number as its `ref`.
    async fn send(&mut self, from: usize, to: usize) -> u64 {
        self.ledger.next += 1;
        let n = self.ledger.next;
        let message = json!({
            "type": "offer", "to": self.peers[to].id,
            "sdp": format!("v=0 n={n}"), "ref": format!("n{n}"),
        });
        self.peers[from].client.send_json(&message).await.unwrap();
        self.ledger.sent.insert(n, (from, to));
        n
    }

    /// Every peer sends one offer to every other.
    async fn all_pairs(&mut self) {
        for from in 0..self.peers.len() {
            for to in 0..self.peers.len() {
                if from != to {
                    self.send(from, to).await;
                }
            }
        }
    }

    /// Reads every peer's messages until each has been quiet for `quiet`, checking each
    /// message as it comes.
    async fn drain(&mut self, quiet: Duration) {
        for i in 0..self.peers.len() {
            while let Some(message) = self.peers[i].client.recv_within(quiet).await.unwrap() {
                self.take(i, &message);
            }
        }
    }

    /// Reads until each peer has had as many resyncs as `resyncs` says, then drains;
    /// bounded.
    async fn until_resynced(&mut self, resyncs: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        for (i, expected) in resyncs.iter().enumerate() {
            while self.peers[i].resyncs.len() < *expected {
                assert!(
                    Instant::now() < deadline,
                    "{} got no resync within {within:?}",
                    self.peers[i].user
                );
                if let Some(message) = self.peers[i]
                    .client
                    .recv_within(Duration::from_millis(200))
                    .await
                    .unwrap()
                {
                    self.take(i, &message);
                }
            }
        }
        self.drain(Duration::from_millis(300)).await;
    }

    fn take(&mut self, i: usize, message: &Value) {
        let everyone = self.everyone.clone();
        let peer = &mut self.peers[i];
        let user = peer.user.clone();
        match message["type"].as_str().unwrap() {
            "offer" => {
                let seq = message["seq"].as_u64().unwrap();
                assert_eq!(
                    seq,
                    peer.seq + 1,
                    "{user}: seq must have no gaps or repeats: {message}"
                );
                peer.seq = seq;
                let sdp = message["sdp"].as_str().unwrap();
                let n: u64 = sdp.rsplit("n=").next().unwrap().parse().unwrap();
                assert!(peer.got.insert(n), "{user}: message {n} delivered twice");
            }
            "resync" => {
                assert_eq!(
                    message["seq"].as_u64().unwrap(),
                    peer.seq,
                    "{user}: resync.seq is the last seq before it: {message}"
                );
                peer.view = ids(&message["participants"]);
                // The docs promise a complete list: every pod has put its participants back
                // before any pod sends `resync`.
                assert_eq!(
                    peer.view, everyone,
                    "{user}: resync leaves someone out: {message}"
                );
                peer.resyncs.push(peer.view == everyone);
            }
            "participantJoined" => {
                peer.view
                    .insert(message["participant"]["id"].as_str().unwrap().to_owned());
            }
            "participantLeft" => {
                let id = message["id"].as_str().unwrap();
                assert!(
                    !everyone.contains(id),
                    "{user}: told that {id}, still connected, left: {message}"
                );
                peer.view.remove(id);
            }
            "error" => {
                let code = message["code"].as_str().unwrap().to_owned();
                let n: u64 = message["ref"].as_str().unwrap()[1..].parse().unwrap();
                assert_eq!(
                    code, "unavailable",
                    "{user}: the only refusal a connected target may get: {message}"
                );
                self.ledger.refused.insert(n, code);
            }
            _ => {}
        }
    }

    /// Every message sent so far was delivered exactly once or refused, never both, never
    /// neither; every view holds everyone.
    fn check(&self, when: &str) {
        for (n, (from, to)) in &self.ledger.sent {
            let delivered = self.peers[*to].got.contains(n);
            let refused = self.ledger.refused.contains_key(n);
            assert!(
                delivered != refused,
                "{when}: message {n} from {} to {}: delivered {delivered}, refused {refused}",
                self.peers[*from].user,
                self.peers[*to].user
            );
        }
        for peer in &self.peers {
            assert_eq!(peer.view, self.everyone, "{when}: {}'s view", peer.user);
        }
    }

    /// Sends from each peer to the next until `stop` returns true, pausing between rounds.
    async fn traffic_until(&mut self, mut stop: impl FnMut() -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        while !stop() {
            assert!(Instant::now() < deadline, "not settled within {within:?}");
            let count = self.peers.len();
            for from in 0..count {
                self.send(from, (from + 1) % count).await;
            }
            for i in 0..count {
                while let Some(message) = self.peers[i]
                    .client
                    .recv_within(Duration::from_millis(5))
                    .await
                    .unwrap()
                {
                    self.take(i, &message);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A probe's status, checked to answer within [`PROBE_BUDGET`].
fn quick_status(pod: &SignalingProcess, path: &str) -> u16 {
    let start = Instant::now();
    let code = request(pod.ip(), pod.port(), "GET", path, None)
        .map(|(code, _)| code)
        .unwrap_or(0);
    let took = start.elapsed();
    SLOWEST_PROBE.fetch_max(micros(took), Ordering::Relaxed);
    assert!(
        took < PROBE_BUDGET,
        "{path} on {} took {took:?} (answered {code})",
        pod.http_url()
    );
    code
}

fn all_ready(pods: &[SignalingProcess]) -> bool {
    pods.iter().all(|pod| quick_status(pod, "/readyz") == 200)
}

/// Waits (bounded) until every pod in `pods` reports not ready, checking the probes answer
/// at once meanwhile.
async fn all_not_ready(pods: &[&SignalingProcess], within: Duration) {
    for pod in pods {
        eventually(within, "/readyz 503", || {
            quick_status(pod, "/readyz") == 503
        })
        .await;
        assert_eq!(quick_status(pod, "/metrics"), 200);
        assert_eq!(quick_status(pod, "/healthz"), 200);
    }
}

async fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relay from `from` during an outage is refused with `unavailable` at once.
async fn refused_fast(room: &mut Room, from: usize, to: usize) {
    let n = room.send(from, to).await;
    let start = Instant::now();
    let answer = room.peers[from]
        .client
        .recv_within(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an answer to a relay during the outage");
    let took = start.elapsed();
    SLOWEST_REFUSAL.fetch_max(micros(took), Ordering::Relaxed);
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert_eq!(answer["ref"], format!("n{n}"));
    assert!(took < FAIL_FAST, "refused after {took:?}");
    room.take(from, &answer);
}

/// Proves recovery from a Redis restart is exact, ten times over with three pods: during
/// the outage probes answer at once (503) and relays are refused with `unavailable` at
/// once; after it, every client gets one `resync` whose `seq` is its last one and whose
/// view (with the presence that follows) holds everyone still connected, no relay sent
/// around the return is lost or refused with anything but `unavailable`, and once every pod
/// is ready every relay is delivered.
#[tokio::test]
async fn recovery_from_repeated_redis_restarts_is_exact() {
    switchboard_tests::require!(Redis);
    let mut redis = Some(RedisServer::start().unwrap());
    let port = redis.as_ref().unwrap().port();
    let url = redis.as_ref().unwrap().url();
    let pods: Vec<SignalingProcess> = ["one", "two", "three"]
        .iter()
        .map(|name| pod(&url, name))
        .collect();
    let mut room = Room::join(&pods, "restarts", 2).await;
    room.all_pairs().await;
    room.drain(Duration::from_millis(300)).await;
    room.check("before any restart");

    let mut complete = 0;
    for restart in 1..=RESTARTS {
        let when = format!("restart {restart}");
        drop(redis.take());
        all_not_ready(&pods.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
        refused_fast(&mut room, restart % 6, (restart + 1) % 6).await;

        redis = Some(RedisServer::start_on(port).unwrap());
        // Relays keep coming while the pods find Redis again and rebuild the room.
        room.traffic_until(|| all_ready(&pods), Duration::from_secs(15))
            .await;
        room.until_resynced(&[restart; 6], Duration::from_secs(15))
            .await;
        room.all_pairs().await;
        room.drain(Duration::from_millis(300)).await;
        room.check(&when);
        for peer in &room.peers {
            assert_eq!(peer.resyncs.len(), restart, "{when}: {}", peer.user);
        }
        assert!(room.peers.iter().all(|p| p.pod < pods.len()));
        // Once every pod is ready, nothing is refused any more.
        let refused_before = room.ledger.refused.len();
        room.all_pairs().await;
        room.drain(Duration::from_millis(300)).await;
        assert_eq!(room.ledger.refused.len(), refused_before, "{when}");
        room.check(&when);
    }
    for peer in &room.peers {
        complete += peer.resyncs.iter().filter(|c| **c).count();
    }
    let total = room.peers.len() * RESTARTS;
    eprintln!(
        "{RESTARTS} restarts: {complete} of {total} resyncs listed everyone on their own; {} relays sent, {} refused with unavailable",
        room.ledger.sent.len(),
        room.ledger.refused.len()
    );
    eprintln!(
        "slowest probe {} us, slowest refusal during an outage {} us",
        SLOWEST_PROBE.load(Ordering::Relaxed),
        SLOWEST_REFUSAL.load(Ordering::Relaxed)
    );
}

/// Proves what a resume token issued before Redis lost everything is worth: a session that
/// stayed connected through the loss was put back with its token, so it resumes, exactly
/// (what it missed after the loss is replayed; asking for what only the lost mailbox held is
/// refused with `resume_failed`); a session whose connection was gone when the state was
/// lost cannot be resumed (`resume_failed`), since no pod could put it back.
#[tokio::test]
async fn resume_tokens_after_redis_lost_everything() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let pods = [pod(&redis.url(), "one"), pod(&redis.url(), "two")];
    let room = "resume-after-loss";
    let (mut bob, jb) = Client::join(&pods[1].ws_url(), &token("bob", room, HOUR))
        .await
        .unwrap();
    let mut joined = HashMap::new();
    let mut clients = HashMap::new();
    for user in ["alice", "carol", "dave"] {
        let (client, j) = Client::join(&pods[0].ws_url(), &token(user, room, HOUR))
            .await
            .unwrap();
        clients.insert(user, client);
        joined.insert(user, j);
    }
    let offer =
        |to: &Value, n: u32| json!({"type": "offer", "to": to, "sdp": format!("v=0 n={n}")});
    for user in ["alice", "carol", "dave"] {
        bob.send_json(&offer(&joined[user]["participantId"], 1))
            .await
            .unwrap();
        let got = clients
            .get_mut(user)
            .unwrap()
            .recv_type("offer")
            .await
            .unwrap();
        assert_eq!(got["seq"], 1, "{user}");
    }

    drop(redis);
    all_not_ready(&[&pods[0], &pods[1]], Duration::from_secs(5)).await;
    // dave's connection ends while the state is gone: nobody can put him back.
    drop(clients.remove("dave"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _redis = RedisServer::start_on(port).unwrap();
    eventually(Duration::from_secs(10), "every pod ready", || {
        all_ready(&pods)
    })
    .await;
    for user in ["alice", "carol"] {
        let resync = clients
            .get_mut(user)
            .unwrap()
            .recv_type("resync")
            .await
            .unwrap();
        assert_eq!(resync["seq"], 1, "{user}: {resync}");
    }
    bob.recv_type("resync").await.unwrap();

    // After the loss alice gets seq 2, then drops; seq 3 is sent while she is away.
    bob.send_json(&offer(&joined["alice"]["participantId"], 2))
        .await
        .unwrap();
    let got = clients
        .get_mut("alice")
        .unwrap()
        .recv_type("offer")
        .await
        .unwrap();
    assert_eq!(got["seq"], 2);
    drop(clients.remove("alice"));
    bob.send_json(&offer(&joined["alice"]["participantId"], 3))
        .await
        .unwrap();
    drop(clients.remove("carol"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut alice, resumed) = Client::resume(
        &pods[1].ws_url(),
        &token("alice", room, HOUR),
        joined["alice"]["resumeToken"].as_str().unwrap(),
        2,
    )
    .await
    .unwrap();
    assert_eq!(resumed["type"], "joined", "{resumed}");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["participantId"], joined["alice"]["participantId"]);
    assert_eq!(resumed["seq"], 3);
    let replayed = alice.recv_type("offer").await.unwrap();
    assert_eq!(
        (replayed["seq"].as_u64(), replayed["sdp"].as_str()),
        (Some(3), Some("v=0 n=3"))
    );

    // carol asks for seq 1 again, which only the lost mailbox held.
    let (_, refused) = Client::resume(
        &pods[1].ws_url(),
        &token("carol", room, HOUR),
        joined["carol"]["resumeToken"].as_str().unwrap(),
        0,
    )
    .await
    .unwrap();
    assert_eq!(refused["code"], "resume_failed", "{refused}");
    let (_, refused) = Client::resume(
        &pods[1].ws_url(),
        &token("dave", room, HOUR),
        joined["dave"]["resumeToken"].as_str().unwrap(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(refused["code"], "resume_failed", "{refused}");
    let _ = jb;
}

/// Sends one inline command to the Redis on `port` and returns its first reply line.
fn redis_command(port: u16, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// After a fault is over: relays flow while the pods come back, every client gets its
/// `resync`, and then everything sent is accounted for and every relay is delivered.
async fn after_fault(room: &mut Room, pods: &[SignalingProcess], resyncs: &[usize], when: &str) {
    room.traffic_until(|| all_ready(pods), Duration::from_secs(20))
        .await;
    room.until_resynced(resyncs, Duration::from_secs(15)).await;
    for (peer, expected) in room.peers.iter().zip(resyncs) {
        assert_eq!(
            peer.resyncs.len(),
            *expected,
            "{when}: {}'s resyncs",
            peer.user
        );
    }
    room.all_pairs().await;
    room.drain(Duration::from_millis(300)).await;
    room.check(when);
    let refused_before = room.ledger.refused.len();
    room.all_pairs().await;
    room.drain(Duration::from_millis(300)).await;
    assert_eq!(room.ledger.refused.len(), refused_before, "{when}");
    room.check(when);
}

/// Proves a slow but alive Redis (`CLIENT PAUSE` for 5 s) loses nothing: probes answer at
/// once and turn 503, relays during the pause are refused at once with `unavailable`, and
/// afterwards every client is resynced with nothing skipped and every relay is delivered.
#[tokio::test]
async fn a_paused_redis_loses_nothing() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let pods: Vec<SignalingProcess> = ["one", "two", "three"]
        .iter()
        .map(|name| pod(&redis.url(), name))
        .collect();
    let mut room = Room::join(&pods, "paused", 2).await;
    room.all_pairs().await;
    room.drain(Duration::from_millis(300)).await;
    room.check("before the pause");

    let paused_at = Instant::now();
    assert_eq!(redis_command(redis.port(), "CLIENT PAUSE 5000 ALL"), "+OK");
    all_not_ready(&pods.iter().collect::<Vec<_>>(), Duration::from_secs(4)).await;
    assert!(
        paused_at.elapsed() < Duration::from_secs(4),
        "the pause was over before it could be checked; the machine is too slow for this test"
    );
    refused_fast(&mut room, 0, 3).await;
    refused_fast(&mut room, 4, 1).await;
    after_fault(&mut room, &pods, &[1; 6], "after the pause").await;
}

/// Proves a network partition between one pod and Redis, with Redis running on, loses
/// nothing. The pod runs in a network namespace whose packets to Redis are dropped (no reset:
/// Redis just goes silent) for 4 s, less than the participant TTL. The cut pod notices within
/// seconds and turns not ready while the others stay ready; its clients' relays are refused
/// at once; relays to its clients are kept in their mailboxes. When the link heals, its
/// clients get what was relayed to them meanwhile, then a `resync`, with nothing skipped;
/// the other pods' clients notice nothing.
#[tokio::test]
async fn a_partition_between_one_pod_and_redis_loses_nothing() {
    switchboard_tests::require!(Redis, NetworkNamespace);
    let ns = NetNamespace::create().unwrap();
    let redis =
        RedisServer::start_bound(switchboard_tests::free_port().unwrap(), &[ns.outer()]).unwrap();
    let cut_url = format!("redis://{}:{}/", ns.outer(), redis.port());
    let pods = vec![
        pod(&redis.url(), "one"),
        pod(&redis.url(), "two"),
        SignalingProcess::start_in(
            &ns,
            &[
                &format!("--redis-url={cut_url}"),
                "--pod-name=cut",
                "--rate-per-second=10000",
                "--rate-burst=10000",
            ],
        )
        .unwrap(),
    ];
    let mut room = Room::join(&pods, "partition", 2).await;
    room.all_pairs().await;
    room.drain(Duration::from_millis(300)).await;
    room.check("before the partition");

    let cut_at = Instant::now();
    ns.cut(redis.port()).unwrap();
    all_not_ready(&[&pods[2]], Duration::from_secs(5)).await;
    assert!(all_ready(&pods[..2]), "the other pods are not affected");
    refused_fast(&mut room, 4, 0).await;
    // Relays to the cut pod's clients are accepted and kept for them, not yet delivered.
    let mut kept = Vec::new();
    for from in 0..4 {
        kept.push((4, room.send(from, 4).await));
        kept.push((5, room.send(from, 5).await));
    }
    room.drain(Duration::from_millis(300)).await;
    assert!(
        cut_at.elapsed() < Duration::from_secs(4),
        "the machine is too slow for this test"
    );
    for (to, n) in &kept {
        assert!(
            !room.peers[*to].got.contains(n),
            "message {n} crossed the partition"
        );
        assert!(
            !room.ledger.refused.contains_key(n),
            "message {n} was refused"
        );
    }
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed())).await;
    ns.heal().unwrap();
    let resyncs: Vec<usize> = room.peers.iter().map(|p| usize::from(p.pod == 2)).collect();
    after_fault(&mut room, &pods, &resyncs, "after the partition").await;
}

//! The whole of Switchboard carrying a call through a real SFU: in one network namespace (with
//! the SFU veth), two Debian Janus nodes, the test apiserver, the operator and signaling
//! (`serve --demo`), and two demo pages in headless Chromium. The operator places and
//! provisions the Room on Janus A; the pages get credentials from signaling and send their
//! video through A. Janus A is SIGKILLed: the operator sees it fail (its health period is 1 s
//! and its threshold 2, the defaults it derives for Janus), places and provisions the room on
//! B, signaling tells both pages (`sfuReassigned`), and the video flows through B under the
//! same participant ids. Deleting the Room destroys it on B.
//!
//! `SWITCHBOARD_SFU_FAILOVER_RUNS=N` (default 1, at most 10) chains N failovers in one run
//! (A to B, B to C, ...), one more Janus per run, and prints one `failover-run` line of
//! timings per failover; `tests/bench/sfu-failover.sh` reads them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use switchboard_crds::{Room, SfuNode, conditions};
use switchboard_sfu::janus::room_id;
use switchboard_tests::browser::{Browser, NetworkNamespace, run_sfu_call};
use switchboard_tests::objects::{node_ready, placed_on, room, wait_for};
use switchboard_tests::signaling::{SignalingProcess, token};
use switchboard_tests::{ControlPlane, Janus, JanusOptions, OperatorProcess};

const NS: &str = "calls";
const ROOM: &str = "standup";
const WAIT: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);
/// Node names, in the order the room moves through them.
const NODES: [&str; 11] = [
    "sfu-a", "sfu-b", "sfu-c", "sfu-d", "sfu-e", "sfu-f", "sfu-g", "sfu-h", "sfu-i", "sfu-j",
    "sfu-k",
];

fn failover_runs() -> usize {
    match std::env::var("SWITCHBOARD_SFU_FAILOVER_RUNS") {
        Err(_) => 1,
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if (1..NODES.len()).contains(&n) => n,
            _ => panic!(
                "SWITCHBOARD_SFU_FAILOVER_RUNS must be 1 to {}, not {text:?}",
                NODES.len() - 1
            ),
        },
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Where the README's picture of the call goes.
fn screenshot_path() -> PathBuf {
    switchboard_tests::repo_root().join("docs/images/sfu-call.png")
}

/// The operator as the benchmark describes it: rooms move as soon as their node is NotReady
/// (the node's own health check, 1 s period and threshold 2, already absorbs a blip).
fn operator_args() -> Vec<String> {
    [
        format!("--namespace={NS}"),
        "--failover-grace=0s".to_owned(),
        "--health-interval=100ms".to_owned(),
        "--reservation-ttl=5s".to_owned(),
        "--leader-election=false".to_owned(),
    ]
    .into()
}

/// Checks the room lives on exactly `holder` among the nodes still running.
fn assert_only_on(nodes: &[Janus], alive: &[bool], holder: usize, id: &str) {
    for (i, janus) in nodes.iter().enumerate().filter(|(i, _)| alive[*i]) {
        let rooms = janus.list_rooms().unwrap();
        assert_eq!(
            rooms.iter().any(|r| r == id),
            i == holder,
            "{} lists {rooms:?}; the room {id} must be on {} only",
            janus.name(),
            nodes[holder].name()
        );
    }
}

/// Watches the SfuNodes and returns, for each of `names`, when (Unix ms) it was first seen
/// NotReady with reason `HealthCheckFailed`. A watch, not polling: the figure feeds the
/// benchmark, and signaling reacts to the Room's move within milliseconds.
async fn not_ready_times(nodes: &Api<SfuNode>, names: &[String]) -> Vec<u64> {
    let mut seen: Vec<Option<u64>> = vec![None; names.len()];
    let mut events =
        std::pin::pin!(watcher(nodes.clone(), watcher::Config::default()).applied_objects());
    while let Some(node) = events.try_next().await.unwrap() {
        let at = now_ms();
        let Some(i) = names
            .iter()
            .position(|n| Some(n.as_str()) == node.metadata.name.as_deref())
        else {
            continue;
        };
        let conditions = node.status.map(|s| s.conditions).unwrap_or_default();
        if let Some(c) = conditions::find(&conditions, conditions::READY)
            && c.status == "False"
            && seen[i].is_none()
        {
            assert_eq!(c.reason, "HealthCheckFailed", "{}: {c:?}", names[i]);
            seen[i] = Some(at);
        }
        if seen.iter().all(Option::is_some) {
            break;
        }
    }
    seen.into_iter().map(|t| t.unwrap()).collect()
}

/// Proves a call's media goes through the SFU Switchboard placed its Room on, and follows the
/// Room to another SFU when the first one dies, with no step done by hand.
#[test]
fn a_call_goes_through_janus_and_survives_its_death() {
    switchboard_tests::require!(ControlPlane, Janus, Chromium, NetworkNamespace);
    let runs = failover_runs();
    let browser = Browser::prepare().unwrap();
    let namespace = NetworkNamespace::create().unwrap();
    let ip = namespace.add_sfu_address().unwrap();
    namespace
        .run(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(scenario(browser, ip, runs));
        })
        .unwrap();
}

async fn scenario(browser: Browser, ip: Ipv4Addr, runs: usize) {
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let mut janus = Vec::new();
    for (i, name) in NODES.iter().take(runs + 1).enumerate() {
        let first = 20000 + 100 * u16::try_from(i).unwrap();
        let node = Janus::start(JanusOptions::new(name, ip, first..=first + 99)).unwrap();
        // Falling capacities: least-loaded placement picks A first, then B, and so on.
        node.register(&client, NS, 10 - u32::try_from(i).unwrap())
            .await
            .unwrap();
        janus.push(node);
    }
    let mut alive = vec![true; janus.len()];
    let _operator = OperatorProcess::start(&cp, &operator_args()).unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let signaling = SignalingProcess::start_with_env(
        &[
            &format!("--namespace={NS}"),
            "--demo",
            "--placement-wait=20s",
        ],
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .unwrap();
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), NS);
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    for j in &janus {
        node_ready(&nodes, j.name(), "True", WAIT).await.unwrap();
    }

    // Placed on A only once A holds the room.
    let created = rooms
        .create(&PostParams::default(), &room(ROOM, 4, json!({})))
        .await
        .unwrap();
    let id = room_id(NS, ROOM, created.metadata.uid.as_deref().unwrap());
    let on_a = placed_on(&rooms, ROOM, "sfu-a", WAIT).await.unwrap();
    assert_eq!(on_a.status.unwrap().sfu_room.as_deref(), Some(id.as_str()));
    assert_only_on(&janus, &alive, 0, &id);

    let page = |user: &str| {
        format!(
            "{}/?room={ROOM}&user={user}&name={user}&media=canvas&token={}",
            signaling.http_url(),
            token(user, ROOM, HOUR)
        )
    };
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    let failovers: Vec<Value> = (0..runs)
        .map(|i| json!({"killPid": janus[i].pid(), "to": janus[i + 1].name()}))
        .collect();
    let config = json!({
        "pages": [page("alice"), page("bob")],
        "node": "sfu-a",
        "screenshot": shot,
        "failovers": failovers,
    });
    let scenario = tokio::task::spawn_blocking(move || run_sfu_call(&browser, &config));

    // Meanwhile, when the operator marks each killed node NotReady, as a watch sees it.
    let killed: Vec<String> = janus[..runs].iter().map(|j| j.name().to_owned()).collect();
    let not_ready_at =
        tokio::time::timeout(Duration::from_secs(120), not_ready_times(&nodes, &killed))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not every killed node went NotReady\n{}",
                    signaling.log_tail(20)
                )
            });
    alive[..runs].fill(false);
    let report = scenario.await.unwrap().unwrap();
    assert_eq!(
        report["ok"],
        true,
        "browser scenario failed: {report:#}\nsignaling:\n{}",
        signaling.log_tail(30)
    );
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    assert_eq!(report["modes"], json!(["sfu", "sfu"]), "{report:#}");
    let ids: Vec<String> = serde_json::from_value(report["participantIds"].clone()).unwrap();
    assert_eq!(
        report["participantIdsAfter"], report["participantIds"],
        "the same participants after every move: {report:#}"
    );
    assert_eq!(
        report["errorsBeforeKill"],
        json!([[], []]),
        "no SFU error while A was up: {report:#}"
    );
    support::assert_media_through(&report["first"], &ids, &janus[0], &report);

    for (i, run) in report["runs"].as_array().unwrap().iter().enumerate() {
        let to = &janus[i + 1];
        assert_eq!(run["to"], to.name());
        support::assert_media_through(run, &ids, to, &report);
        let killed = run["killedAt"].as_u64().unwrap();
        let mut told = 0;
        for r in run["reassigned"].as_array().unwrap() {
            assert_eq!(r["node"], to.name(), "{report:#}");
            assert_eq!(r["generation"], i + 2, "{report:#}");
            told = told.max(r["at"].as_u64().unwrap());
        }
        let first_frame = run["firstFrameAt"].as_u64().unwrap();
        let not_ready = not_ready_at[i];
        assert!(
            killed <= not_ready && not_ready <= told && told <= first_frame,
            "killed {killed}, NotReady {not_ready}, told {told}, first frame {first_frame}"
        );
        println!(
            "failover-run n={} from={} to={} detection_ms={} reassigned_ms={} rejoin_ms={} total_ms={}",
            i + 1,
            janus[i].name(),
            to.name(),
            not_ready - killed,
            told - not_ready,
            first_frame - told,
            first_frame - killed
        );
    }

    // The room is on the last node only; the nodes it left are dead, not holding a copy.
    let last = runs;
    let holder = janus[last].name();
    let on_last = placed_on(&rooms, ROOM, holder, WAIT).await.unwrap();
    let status = on_last.status.unwrap();
    assert_eq!(status.sfu_node.as_deref(), Some(holder));
    assert_eq!(status.sfu_room.as_deref(), Some(id.as_str()));
    assert_eq!(
        status.placement_generation,
        u32::try_from(runs).unwrap() + 1
    );
    for dead in &janus[..last] {
        assert!(
            dead.info().is_err(),
            "{} answers after SIGKILL",
            dead.name()
        );
    }
    assert_only_on(&janus, &alive, last, &id);

    // Deleted: destroyed on its node before the Room is gone.
    rooms.delete(ROOM, &DeleteParams::default()).await.unwrap();
    wait_for("the Room gone after its finalizer", WAIT, || async {
        match rooms.get_opt(ROOM).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(r) => Err(format!("still there: {:?}", r.metadata.finalizers)),
        }
    })
    .await
    .unwrap();
    assert!(
        !janus[last].list_rooms().unwrap().contains(&id),
        "{holder} still holds {id}"
    );
}

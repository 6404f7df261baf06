//! The operator against a real kube-apiserver: bursts stay within capacity, placements are
//! sticky across restarts, failed and deleted nodes are drained, cordons are honoured, two
//! replicas never over-allocate, and bad specs get a clear condition.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, SfuNode, conditions};
use switchboard_tests::objects::{room, sfu_node, wait_for};
use switchboard_tests::{ControlPlane, OperatorProcess, fast_args};

const NS: &str = "calls";

struct Env {
    cp: ControlPlane,
    rooms: Api<Room>,
    nodes: Api<SfuNode>,
    events: Api<Event>,
}

async fn env() -> Env {
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    Env {
        rooms: Api::namespaced(client.clone(), NS),
        nodes: Api::namespaced(client.clone(), NS),
        events: Api::namespaced(client, NS),
        cp,
    }
}

fn phase(room: &Room) -> Option<RoomPhase> {
    room.status.as_ref().and_then(|s| s.phase)
}

fn node_of(room: &Room) -> Option<String> {
    room.status
        .as_ref()
        .filter(|s| s.phase == Some(RoomPhase::Placed))
        .and_then(|s| s.sfu_node.clone())
}

/// Slots per node, summed from Room statuses (the ground truth the test checks against).
fn load_from_statuses(rooms: &[Room]) -> HashMap<String, u32> {
    let mut load = HashMap::new();
    for r in rooms {
        if let Some(node) = node_of(r) {
            *load.entry(node).or_default() += r
                .status
                .as_ref()
                .and_then(|s| s.reserved_participants)
                .unwrap_or(0);
        }
    }
    load
}

async fn create_rooms(api: &Api<Room>, rooms: Vec<Room>, concurrency: usize) {
    stream::iter(rooms)
        .for_each_concurrent(concurrency, |r| async move {
            api.create(&PostParams::default(), &r).await.unwrap();
        })
        .await;
}

/// Waits until every room is decided (Placed or Unschedulable) and returns them.
async fn all_decided(api: &Api<Room>, expected: usize, timeout: Duration) -> Vec<Room> {
    wait_for("every room decided", timeout, || async {
        let rooms = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let pending = rooms
            .iter()
            .filter(|r| !matches!(phase(r), Some(RoomPhase::Placed | RoomPhase::Unschedulable)))
            .count();
        if rooms.len() == expected && pending == 0 {
            Ok(rooms)
        } else {
            Err(format!("{} rooms, {pending} pending", rooms.len()))
        }
    })
    .await
    .unwrap()
}

/// Waits until `placed` rooms are Placed, checking at every look that no node is over
/// `capacity`. Slots held by reservations that were not confirmed (a write that lost a race)
/// return when the reservation expires, so the final count may take a few seconds.
async fn eventually_placed(
    api: &Api<Room>,
    placed: usize,
    capacity: u32,
    timeout: Duration,
) -> Vec<Room> {
    wait_for("the expected number of rooms placed", timeout, || async {
        let rooms = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let load = load_from_statuses(&rooms);
        for (node, slots) in &load {
            assert!(
                *slots <= capacity,
                "{node} over capacity: {slots} > {capacity}"
            );
        }
        let n = rooms
            .iter()
            .filter(|r| phase(r) == Some(RoomPhase::Placed))
            .count();
        if n == placed {
            Ok(rooms)
        } else {
            Err(format!("{n} placed: {load:?}"))
        }
    })
    .await
    .unwrap()
}

/// Waits until every SfuNode is Schedulable, as a user would before sending traffic.
async fn nodes_schedulable(api: &Api<SfuNode>, expected: usize) {
    wait_for(
        "every node Schedulable",
        Duration::from_secs(20),
        || async {
            let nodes = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let ready = nodes
                .iter()
                .filter(|n| {
                    n.status.as_ref().is_some_and(|s| {
                        conditions::is_true(&s.conditions, conditions::SCHEDULABLE)
                    })
                })
                .count();
            if ready == expected {
                Ok(())
            } else {
                Err(format!("{ready}/{expected}"))
            }
        },
    )
    .await
    .unwrap()
}

async fn room_events(events: &Api<Event>, room: &str) -> Vec<(String, String)> {
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(room))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Proves 200 rooms created at once on 10 tight nodes never over-allocate, the rest are
/// Unschedulable with a clear condition, and they are placed once capacity is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_rooms_never_exceeds_capacity_and_waits_for_new_capacity() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    for i in 0..10 {
        env.nodes
            .create(
                &PostParams::default(),
                &sfu_node(&format!("sfu-{i}"), "eu", 20, json!({})),
            )
            .await
            .unwrap();
    }
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 10).await;
    // 200 rooms of 2 slots on 200 slots: exactly 100 fit.
    let rooms: Vec<Room> = (0..200)
        .map(|i| room(&format!("room-{i:03}"), 2, json!({})))
        .collect();
    create_rooms(&env.rooms, rooms, 32).await;
    let decided = all_decided(&env.rooms, 200, Duration::from_secs(60)).await;

    let load = load_from_statuses(&decided);
    for (node, slots) in &load {
        assert!(*slots <= 20, "{node} over capacity: {slots} > 20");
    }
    let placed = decided
        .iter()
        .filter(|r| phase(r) == Some(RoomPhase::Placed))
        .count();
    assert_eq!(placed, 100, "every slot should be used: {load:?}");
    for r in decided
        .iter()
        .filter(|r| phase(r) == Some(RoomPhase::Unschedulable))
    {
        let c = conditions::find(&r.status.as_ref().unwrap().conditions, conditions::PLACED)
            .expect("Placed condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientCapacity")
        );
        assert!(
            c.message.contains("0/10 nodes fit") && c.message.contains("lack free slots"),
            "{}",
            c.message
        );
    }
    // SfuNode.status.allocated shows the ledger.
    wait_for(
        "node allocation to match room statuses",
        Duration::from_secs(10),
        || async {
            for node in env
                .nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
            {
                let name = node.metadata.name.clone().unwrap_or_default();
                let shown = node
                    .status
                    .and_then(|s| s.allocated)
                    .map(|a| a.participants)
                    .unwrap_or(0);
                if shown != load.get(&name).copied().unwrap_or(0) {
                    return Err(format!("{name} shows {shown}"));
                }
            }
            Ok(())
        },
    )
    .await
    .unwrap();

    // Freed slots: deleting placed rooms lets waiting rooms in, without a poll.
    let victims: Vec<String> = decided
        .iter()
        .filter(|r| phase(r) == Some(RoomPhase::Placed))
        .take(5)
        .map(|r| r.metadata.name.clone().unwrap())
        .collect();
    for name in &victims {
        env.rooms
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_for(
        "waiting rooms placed into freed slots",
        Duration::from_secs(30),
        || async {
            let rooms = env
                .rooms
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let placed = rooms
                .iter()
                .filter(|r| phase(r) == Some(RoomPhase::Placed))
                .count();
            if rooms.len() == 195 && placed == 100 {
                Ok(())
            } else {
                Err(format!("{} rooms, {placed} placed", rooms.len()))
            }
        },
    )
    .await
    .unwrap();

    // New capacity: the waiting rooms get placed without anyone touching them.
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu-big", "eu", 200, json!({})),
        )
        .await
        .unwrap();
    let rooms = wait_for(
        "waiting rooms placed on the new node",
        Duration::from_secs(30),
        || async {
            let rooms = env
                .rooms
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let placed = rooms
                .iter()
                .filter(|r| phase(r) == Some(RoomPhase::Placed))
                .count();
            if placed == 195 {
                Ok(rooms)
            } else {
                Err(format!("{placed} placed"))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(load_from_statuses(&rooms).get("sfu-big"), Some(&190));
    for node in 0..10 {
        assert!(
            load_from_statuses(&rooms)
                .get(&format!("sfu-{node}"))
                .copied()
                .unwrap_or(0)
                <= 20
        );
    }
}

/// Proves a restarted operator (killed with -9) moves no room and rewrites no placement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_moves_no_room() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    for i in 0..3 {
        env.nodes
            .create(
                &PostParams::default(),
                &sfu_node(&format!("sfu-{i}"), "eu", 100, json!({})),
            )
            .await
            .unwrap();
    }
    let mut operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 3).await;
    create_rooms(
        &env.rooms,
        (0..30)
            .map(|i| room(&format!("r-{i}"), 3, json!({})))
            .collect(),
        8,
    )
    .await;
    let before = all_decided(&env.rooms, 30, Duration::from_secs(30)).await;
    operator.kill();
    // Load changes while the operator is down must not move anything either.
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu-empty", "eu", 1000, json!({})),
        )
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = env.rooms.list(&ListParams::default()).await.unwrap().items;
    let placement = |rooms: &[Room]| -> HashMap<String, (Option<String>, u32, Option<String>)> {
        rooms
            .iter()
            .map(|r| {
                let s = r.status.clone().unwrap_or_default();
                (
                    r.metadata.name.clone().unwrap(),
                    (
                        s.sfu_node,
                        s.placement_generation,
                        r.metadata.resource_version.clone(),
                    ),
                )
            })
            .collect()
    };
    let (b, a) = (placement(&before), placement(&after));
    for (name, (node, generation, _)) in &b {
        let (node_after, generation_after, _) = &a[name];
        assert_eq!(
            (node, generation),
            (node_after, generation_after),
            "{name} moved after restart"
        );
    }
}

/// Proves rooms leave a node whose health check fails, with Failover Events, and that a
/// stale heartbeat does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_nodes_are_drained_by_health_check_and_by_heartbeat() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    let endpoint = switchboard_tests::http::HealthEndpoint::start().unwrap();
    let probed = json!({"healthCheck": {"url": endpoint.url(), "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}});
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("probed", "eu", 100, probed),
        )
        .await
        .unwrap();
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("beating", "eu", 100, json!({"heartbeatTimeoutSeconds": 2})),
        )
        .await
        .unwrap();
    // The spare only admits rooms once the others are full of them: cordoned until then.
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("spare", "eu", 100, json!({"unschedulable": true})),
        )
        .await
        .unwrap();
    let beat = |nodes: Api<SfuNode>| async move {
        let patch = json!({"status": {"lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}});
        nodes
            .patch_status("beating", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    };
    beat(env.nodes.clone()).await;
    let heart = {
        let nodes = env.nodes.clone();
        tokio::spawn(async move {
            loop {
                beat(nodes.clone()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    wait_for("both nodes Ready", Duration::from_secs(20), || async {
        let ready = |n: SfuNode| {
            n.status
                .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY))
        };
        let (p, b) = (
            env.nodes.get("probed").await.map_err(|e| e.to_string())?,
            env.nodes.get("beating").await.map_err(|e| e.to_string())?,
        );
        if ready(p) && ready(b) {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .await
    .unwrap();
    create_rooms(
        &env.rooms,
        (0..10)
            .map(|i| room(&format!("r-{i}"), 5, json!({})))
            .collect(),
        4,
    )
    .await;
    let decided = all_decided(&env.rooms, 10, Duration::from_secs(20)).await;
    let load = load_from_statuses(&decided);
    assert_eq!(
        load.get("probed"),
        Some(&25),
        "least-loaded spreads evenly: {load:?}"
    );
    assert_eq!(load.get("beating"), Some(&25), "{load:?}");
    env.nodes
        .patch(
            "spare",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();

    // Health check fails: its rooms move to the spare (the only schedulable node left).
    endpoint.set_status(503);
    let moved = wait_for(
        "rooms moved off the probed node",
        Duration::from_secs(20),
        || async {
            let rooms = env
                .rooms
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let load = load_from_statuses(&rooms);
            if !load.contains_key("probed") && load.get("spare") == Some(&25) {
                Ok(rooms)
            } else {
                Err(format!("{load:?}"))
            }
        },
    )
    .await
    .unwrap();
    let probed_node = env.nodes.get("probed").await.unwrap();
    let ready = conditions::find(&probed_node.status.unwrap().conditions, conditions::READY)
        .cloned()
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "HealthCheckFailed")
    );
    let failed_over = moved
        .iter()
        .find(|r| node_of(r).as_deref() == Some("spare"))
        .unwrap();
    assert_eq!(failed_over.status.as_ref().unwrap().placement_generation, 2);
    let name = failed_over.metadata.name.clone().unwrap();
    let events = wait_for("a Failover event", Duration::from_secs(10), || async {
        let events = room_events(&env.events, &name).await;
        if events.iter().any(|(reason, _)| reason == "Failover") {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await
    .unwrap();
    assert!(
        events
            .iter()
            .any(|(r, note)| r == "Failover" && note.contains("from probed (NodeFailed) to spare")),
        "{events:?}"
    );

    // Heartbeats stop: those rooms move too.
    heart.abort();
    wait_for(
        "rooms moved off the silent node",
        Duration::from_secs(20),
        || async {
            let load = load_from_statuses(
                &env.rooms
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items,
            );
            if !load.contains_key("beating") && load.get("spare") == Some(&50) {
                Ok(())
            } else {
                Err(format!("{load:?}"))
            }
        },
    )
    .await
    .unwrap();
    let beating = env.nodes.get("beating").await.unwrap();
    assert_eq!(
        conditions::find(&beating.status.unwrap().conditions, conditions::READY)
            .unwrap()
            .reason,
        "HeartbeatStale"
    );
}

/// Proves a cordon keeps new rooms off a node without moving its rooms, and an uncordon
/// makes it usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    env.nodes
        .create(&PostParams::default(), &sfu_node("a", "eu", 100, json!({})))
        .await
        .unwrap();
    env.nodes
        .create(&PostParams::default(), &sfu_node("b", "eu", 100, json!({})))
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 2).await;
    create_rooms(&env.rooms, vec![room("first", 10, json!({}))], 1).await;
    let first = all_decided(&env.rooms, 1, Duration::from_secs(20)).await;
    let home = node_of(&first[0]).unwrap();
    let other = if home == "a" { "b" } else { "a" };

    env.nodes
        .patch(
            &home,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    wait_for(
        "Schedulable=False on the cordoned node",
        Duration::from_secs(10),
        || async {
            let n = env.nodes.get(&home).await.map_err(|e| e.to_string())?;
            let c = n
                .status
                .and_then(|s| conditions::find(&s.conditions, conditions::SCHEDULABLE).cloned());
            match c {
                Some(c) if c.status == "False" && c.reason == "Cordoned" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap();
    create_rooms(
        &env.rooms,
        (0..6)
            .map(|i| room(&format!("while-cordoned-{i}"), 10, json!({})))
            .collect(),
        3,
    )
    .await;
    let rooms = all_decided(&env.rooms, 7, Duration::from_secs(20)).await;
    let load = load_from_statuses(&rooms);
    assert_eq!(
        load.get(&home),
        Some(&10),
        "the cordoned node kept only its room: {load:?}"
    );
    assert_eq!(load.get(other), Some(&60), "{load:?}");

    env.nodes
        .patch(
            &home,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    wait_for(
        "Schedulable=True again",
        Duration::from_secs(10),
        || async {
            let n = env.nodes.get(&home).await.map_err(|e| e.to_string())?;
            if n.status
                .is_some_and(|s| conditions::is_true(&s.conditions, conditions::SCHEDULABLE))
            {
                Ok(())
            } else {
                Err("cordoned".into())
            }
        },
    )
    .await
    .unwrap();
    create_rooms(&env.rooms, vec![room("after-uncordon", 10, json!({}))], 1).await;
    let rooms = all_decided(&env.rooms, 8, Duration::from_secs(20)).await;
    let last = rooms
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("after-uncordon"))
        .unwrap();
    assert_eq!(
        node_of(last).as_deref(),
        Some(home.as_str()),
        "the uncordoned, less-loaded node is used again"
    );
}

/// Proves a deleted SfuNode's rooms are moved before the node disappears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_node_is_drained_before_it_goes() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("leaving", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 1).await;
    wait_for("the drain finalizer", Duration::from_secs(10), || async {
        let n = env.nodes.get("leaving").await.map_err(|e| e.to_string())?;
        if n.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "switchboard.dev/drain")
        {
            Ok(())
        } else {
            Err("none".into())
        }
    })
    .await
    .unwrap();
    create_rooms(
        &env.rooms,
        (0..8)
            .map(|i| room(&format!("r-{i}"), 4, json!({})))
            .collect(),
        4,
    )
    .await;
    all_decided(&env.rooms, 8, Duration::from_secs(20)).await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("staying", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    env.nodes
        .delete("leaving", &DeleteParams::default())
        .await
        .unwrap();

    // Watch until the node is gone; at that moment no room may still point at it.
    wait_for("the node to disappear", Duration::from_secs(30), || async {
        let gone =
            matches!(env.nodes.get("leaving").await, Err(kube::Error::Api(s)) if s.code == 404);
        let rooms = env
            .rooms
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let on_leaving = rooms
            .iter()
            .filter(|r| node_of(r).as_deref() == Some("leaving"))
            .count();
        if gone {
            assert_eq!(
                on_leaving, 0,
                "the node went away while rooms were still on it"
            );
            let on_staying = rooms
                .iter()
                .filter(|r| node_of(r).as_deref() == Some("staying"))
                .count();
            assert_eq!(on_staying, 8);
            Ok(())
        } else {
            Err(format!("{on_leaving} rooms still on it"))
        }
    })
    .await
    .unwrap();
    let events = room_events(&env.events, "r-0").await;
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "Failover" && n.contains("NodeDeleting")),
        "{events:?}"
    );
}

/// Proves two operator replicas acting at once never over-allocate a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_active_replicas_never_over_allocate() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    for i in 0..4 {
        env.nodes
            .create(
                &PostParams::default(),
                &sfu_node(&format!("sfu-{i}"), "eu", 30, json!({})),
            )
            .await
            .unwrap();
    }
    // Both replicas skip the lease and write at the same time.
    let _a = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    let _b = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 4).await;
    // 120 slots, 100 rooms of 3: 40 fit.
    create_rooms(
        &env.rooms,
        (0..100)
            .map(|i| room(&format!("r-{i:03}"), 3, json!({})))
            .collect(),
        32,
    )
    .await;
    all_decided(&env.rooms, 100, Duration::from_secs(60)).await;
    let decided = eventually_placed(&env.rooms, 40, 30, Duration::from_secs(30)).await;
    let load = load_from_statuses(&decided);
    // Stay stable for a while: no late double placement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = load_from_statuses(&env.rooms.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(later, load);
}

/// Proves leader election: one of two replicas leads; when it is killed with -9 the other
/// takes over and keeps placing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_is_killed() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let args = |id: &str| {
        let mut a: Vec<String> = fast_args(NS)
            .into_iter()
            .filter(|a| !a.starts_with("--leader-election"))
            .collect();
        a.extend([
            format!("--identity={id}"),
            "--lease-duration-seconds=3".into(),
        ]);
        a
    };
    let mut one = OperatorProcess::start(&env.cp, &args("one")).unwrap();
    let mut two = OperatorProcess::start(&env.cp, &args("two")).unwrap();
    nodes_schedulable(&env.nodes, 1).await;
    let leaders = |a: &OperatorProcess, b: &OperatorProcess| {
        let lead = |p: &OperatorProcess| {
            p.metrics()
                .unwrap_or_default()
                .lines()
                .any(|l| l == "switchboard_operator_is_leader 1")
        };
        (lead(a), lead(b))
    };
    let first = wait_for("exactly one leader", Duration::from_secs(20), || async {
        match leaders(&one, &two) {
            (true, false) => Ok(1),
            (false, true) => Ok(2),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    create_rooms(&env.rooms, vec![room("before", 2, json!({}))], 1).await;
    all_decided(&env.rooms, 1, Duration::from_secs(20)).await;

    let survivor = if first == 1 {
        one.kill();
        &two
    } else {
        two.kill();
        &one
    };
    create_rooms(&env.rooms, vec![room("after", 2, json!({}))], 1).await;
    let rooms = all_decided(&env.rooms, 2, Duration::from_secs(30)).await;
    assert!(rooms.iter().all(|r| node_of(r).as_deref() == Some("sfu")));
    assert!(
        survivor
            .metrics()
            .unwrap()
            .lines()
            .any(|l| l == "switchboard_operator_is_leader 1")
    );
}

/// Proves a SIGTERMed leader exits at once, cleanly, releasing its Lease: the standby leads and
/// places a new Room long before the Lease (30 s) could have expired. The leader is stopped in
/// the middle of a burst of Rooms: it places nothing once its Lease is released (a write already
/// in flight when the signal came may still land before that), and the standby places the rest
/// of the burst, every Room once, without over-allocating the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let env = env().await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let args = |id: &str| {
        let mut a: Vec<String> = fast_args(NS)
            .into_iter()
            .filter(|a| !a.starts_with("--leader-election"))
            .collect();
        a.extend([
            format!("--identity={id}"),
            "--lease-duration-seconds=30".into(),
        ]);
        a
    };
    let mut one = OperatorProcess::start(&env.cp, &args("one")).unwrap();
    let mut two = OperatorProcess::start(&env.cp, &args("two")).unwrap();
    nodes_schedulable(&env.nodes, 1).await;
    let lead = |p: &OperatorProcess| {
        p.metrics()
            .unwrap_or_default()
            .lines()
            .any(|l| l == "switchboard_operator_is_leader 1")
    };
    let first = wait_for("exactly one leader", Duration::from_secs(40), || async {
        match (lead(&one), lead(&two)) {
            (true, false) => Ok("one"),
            (false, true) => Ok("two"),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    create_rooms(&env.rooms, vec![room("before", 2, json!({}))], 1).await;
    all_decided(&env.rooms, 1, Duration::from_secs(20)).await;

    let (leader, survivor) = if first == "one" {
        (&mut one, &two)
    } else {
        (&mut two, &one)
    };
    const BURST: usize = 30;
    let burst = tokio::spawn({
        let rooms = env.rooms.clone();
        async move {
            let burst = (0..BURST).map(|i| room(&format!("burst-{i}"), 2, json!({})));
            create_rooms(&rooms, burst.collect(), 2).await;
        }
    });
    wait_for(
        "the leader busy with the burst",
        Duration::from_secs(20),
        || async {
            let placed = env
                .rooms
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|r| r.name_any().starts_with("burst-") && node_of(r).is_some())
                .count();
            if placed >= 3 {
                Ok(())
            } else {
                Err(format!("{placed} placed"))
            }
        },
    )
    .await
    .unwrap();
    let signalled = Instant::now();
    let status = leader.terminate(Duration::from_secs(10)).unwrap();
    let exit_after = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        leader.log_tail(20)
    );
    assert!(
        exit_after < Duration::from_secs(6),
        "exited after {exit_after:?}"
    );
    let log = std::fs::read_to_string(leader.log_path()).unwrap();
    assert!(log.contains("lease released"), "{}", leader.log_tail(20));
    let stopping = log
        .lines()
        .position(|l| l.contains("stopping") && l.contains("SIGTERM"))
        .expect("the leader logged that it is stopping");
    assert!(
        log.lines()
            .take(stopping)
            .any(|l| l.contains("room placed")),
        "the leader logs its placements, so their absence below means something"
    );
    // Writes in flight when SIGTERM came may land while the writers stop; none may land
    // after the release, when the standby may already lead.
    let released = log
        .lines()
        .position(|l| l.contains("lease released"))
        .expect("the leader logged the release");
    assert!(released > stopping, "{}", leader.log_tail(20));
    let placed_after: Vec<&str> = log
        .lines()
        .skip(released)
        .filter(|l| l.contains("room placed"))
        .collect();
    assert!(
        placed_after.is_empty(),
        "placed after the lease was released: {placed_after:?}"
    );
    let leases: Api<Lease> = Api::namespaced(env.cp.client().await.unwrap(), NS);
    let holder = leases
        .get("switchboard-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        holder.as_deref(),
        Some(first),
        "the stopped replica still holds the lease"
    );

    create_rooms(&env.rooms, vec![room("after", 2, json!({}))], 1).await;
    wait_for("the new Room placed", Duration::from_secs(30), || async {
        let after = env.rooms.get("after").await.map_err(|e| e.to_string())?;
        node_of(&after).ok_or_else(|| format!("{:?}", after.status))
    })
    .await
    .unwrap();
    let takeover = signalled.elapsed();
    burst.await.unwrap();
    let rooms = all_decided(&env.rooms, 2 + BURST, Duration::from_secs(30)).await;
    assert!(rooms.iter().all(|r| node_of(r).as_deref() == Some("sfu")));
    let load = load_from_statuses(&rooms);
    assert_eq!(
        load.get("sfu").copied(),
        Some(2 * (2 + BURST as u32)),
        "every room holds its slots once: {load:?}"
    );
    assert!(
        takeover < Duration::from_secs(10),
        "the new Room waited {takeover:?} for the standby (lease duration 30 s)"
    );
    assert!(lead(survivor));
}

/// Proves an invalid spec gets a clear condition and Event, and the queue keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_gets_a_condition_and_does_not_stall_the_queue() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 1).await;
    let bad = room(
        "bad",
        2,
        json!({"sfuSelector": {"matchExpressions": [{"key": "tier", "operator": "Sometimes", "values": ["x"]}]}}),
    );
    let too_big = room("too-big", 5000, json!({}));
    create_rooms(
        &env.rooms,
        vec![bad, too_big, room("good", 2, json!({}))],
        1,
    )
    .await;
    let rooms = all_decided(&env.rooms, 3, Duration::from_secs(20)).await;
    let get = |n: &str| {
        rooms
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
            .unwrap()
            .clone()
    };
    let placed_condition = |r: Room| {
        conditions::find(&r.status.unwrap().conditions, conditions::PLACED)
            .cloned()
            .unwrap()
    };
    let c = placed_condition(get("bad"));
    assert_eq!(c.reason, "InvalidSpec");
    assert!(
        c.message.contains("spec.sfuSelector") && c.message.contains("Sometimes"),
        "{}",
        c.message
    );
    let c = placed_condition(get("too-big"));
    assert_eq!(c.reason, "RoomTooLarge", "{}", c.message);
    assert_eq!(node_of(&get("good")).as_deref(), Some("sfu"));
}

/// Proves a room that stays empty past emptyTimeoutSeconds is deleted, and an occupied one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_rooms_expire() {
    switchboard_tests::require!(ControlPlane);
    let env = env().await;
    env.nodes
        .create(
            &PostParams::default(),
            &sfu_node("sfu", "eu", 100, json!({})),
        )
        .await
        .unwrap();
    let _operator = OperatorProcess::start(&env.cp, &fast_args(NS)).unwrap();
    nodes_schedulable(&env.nodes, 1).await;
    create_rooms(
        &env.rooms,
        vec![
            room("empty", 2, json!({"emptyTimeoutSeconds": 2})),
            room("busy", 2, json!({"emptyTimeoutSeconds": 2})),
        ],
        2,
    )
    .await;
    all_decided(&env.rooms, 2, Duration::from_secs(20)).await;
    env.rooms
        .patch_status(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"participants": 3}})),
        )
        .await
        .unwrap();
    wait_for(
        "the empty room deleted",
        Duration::from_secs(15),
        || async {
            match env.rooms.get("empty").await {
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => Err(format!("{:?}", other.map(|r| r.status))),
            }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        env.rooms.get("busy").await.is_ok(),
        "an occupied room was deleted"
    );
}

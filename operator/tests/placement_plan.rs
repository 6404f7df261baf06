//! Property tests of the placement planner over random Rooms, SfuNodes and reservations: the
//! core guarantees hold for every plan, whatever the cluster looks like.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;
use switchboard_crds::{Room, SfuNode};
use switchboard_operator::keys::{NodeKey, RoomKey};
use switchboard_operator::ledger::{Ledger, LocalReservation};
use switchboard_operator::plan::placement::{PlacementInput, PlacementPlan, PlacerConfig, plan};
use switchboard_placement::{MoveReason, Strategy as Placer};

const NOW: i64 = 1_000_000;
const GRACE: u64 = 10;

#[derive(Debug, Clone, Copy)]
enum NodeHealth {
    Ready,
    /// NotReady inside the grace period.
    Suspect,
    /// NotReady past the grace period.
    Failed,
}

#[derive(Debug, Clone)]
struct NodeSpec {
    health: NodeHealth,
    cordoned: bool,
    deleting: bool,
    capacity: u32,
    max_rooms: Option<u32>,
    /// Reservations of rooms this test does not otherwise know: (participants, expired).
    foreign: Vec<(u32, bool)>,
}

#[derive(Debug, Clone)]
struct RoomSpec {
    participants: u32,
    /// Index of the node it is Placed on (may point past the last node: a vanished node).
    placed_on: Option<usize>,
    /// Index of a node this placer reserved it on, not yet reflected.
    in_flight_on: Option<usize>,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        prop_oneof![4 => Just(NodeHealth::Ready), 1 => Just(NodeHealth::Suspect), 1 => Just(NodeHealth::Failed)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        1u32..60,
        prop::option::weighted(0.3, 1u32..6),
        prop::collection::vec((1u32..20, any::<bool>()), 0..3),
    )
        .prop_map(|(health, cordoned, deleting, capacity, max_rooms, foreign)| NodeSpec {
            health,
            cordoned,
            deleting,
            capacity,
            max_rooms,
            foreign,
        })
}

fn room_spec() -> impl Strategy<Value = RoomSpec> {
    (
        1u32..25,
        prop::option::weighted(0.4, 0usize..8),
        prop::option::weighted(0.15, 0usize..7),
    )
        .prop_map(|(participants, placed_on, in_flight_on)| RoomSpec {
            participants,
            placed_on,
            in_flight_on,
        })
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn sfu_node(i: usize, spec: &NodeSpec) -> SfuNode {
    let ready = match spec.health {
        NodeHealth::Ready => json!({"type": "Ready", "status": "True", "reason": "Admitted",
                                    "message": "", "lastTransitionTime": at(NOW - 100).to_string()}),
        NodeHealth::Suspect => {
            json!({"type": "Ready", "status": "False", "reason": "HealthCheckFailed",
                                      "message": "", "lastTransitionTime": at(NOW - 1).to_string()})
        }
        NodeHealth::Failed => {
            json!({"type": "Ready", "status": "False", "reason": "HealthCheckFailed",
                                     "message": "", "lastTransitionTime": at(NOW - 100).to_string()})
        }
    };
    let reservations: Vec<_> = spec
        .foreign
        .iter()
        .enumerate()
        .map(|(j, (participants, expired))| {
            json!({"room": format!("foreign-{i}-{j}"), "uid": format!("foreign-uid-{i}-{j}"),
                   "participants": participants,
                   "expiresAt": at(if *expired { NOW - 1 } else { NOW + 5 }).to_string()})
        })
        .collect();
    let mut metadata = json!({"name": format!("sfu-{i}"), "namespace": "ns",
                              "resourceVersion": format!("{}", 100 + i)});
    if spec.deleting {
        metadata["deletionTimestamp"] = json!(at(NOW - 2).to_string());
        metadata["finalizers"] = json!(["switchboard.dev/drain"]);
    }
    let mut capacity = json!({"participants": spec.capacity});
    if let Some(rooms) = spec.max_rooms {
        capacity["rooms"] = json!(rooms);
    }
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode", "metadata": metadata,
        "spec": {"url": format!("wss://sfu-{i}"), "region": "eu", "capacity": capacity,
                 "healthCheck": {"url": format!("http://sfu-{i}/health")},
                 "unschedulable": spec.cordoned},
        "status": {"conditions": [ready], "reservations": reservations}
    }))
    .unwrap()
}

fn room(i: usize, spec: &RoomSpec) -> Room {
    let status = spec.placed_on.map(|n| {
        json!({"phase": "Placed", "sfuNode": format!("sfu-{n}"), "reservedParticipants": spec.participants,
               "placementGeneration": 1})
    });
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "Room",
        "metadata": {"name": format!("room-{i}"), "namespace": "ns", "uid": format!("uid-{i}"),
                     "resourceVersion": format!("{}", 500 + i), "generation": 1},
        "spec": {"maxParticipants": spec.participants},
        "status": status
    }))
    .unwrap()
}

struct Cluster {
    nodes: Vec<Arc<SfuNode>>,
    rooms: Vec<Arc<Room>>,
    in_flight: Vec<LocalReservation>,
    specs: Vec<NodeSpec>,
}

fn cluster(nodes: &[NodeSpec], rooms: &[RoomSpec]) -> Cluster {
    Cluster {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(sfu_node(i, s)))
            .collect(),
        rooms: rooms
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(room(i, s)))
            .collect(),
        in_flight: rooms
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let n = s.in_flight_on.filter(|n| *n < nodes.len())?;
                Some(LocalReservation {
                    node: NodeKey::new("ns", format!("sfu-{n}")),
                    room_uid: format!("uid-{i}"),
                    participants: s.participants,
                    expires_at: at(NOW + 5),
                })
            })
            .collect(),
        specs: nodes.to_vec(),
    }
}

fn config(strategy: Placer) -> PlacerConfig {
    PlacerConfig {
        strategy,
        failover_grace: Duration::from_secs(GRACE),
        reservation_ttl: Duration::from_secs(10),
        batch_size: 256,
    }
}

fn run(c: &Cluster, batch: &[RoomKey], strategy: Placer) -> PlacementPlan {
    plan(&PlacementInput {
        rooms: &c.rooms,
        nodes: &c.nodes,
        in_flight: &c.in_flight,
        batch,
        now: at(NOW),
        config: &config(strategy),
    })
}

fn strategy() -> impl Strategy<Value = Placer> {
    prop_oneof![Just(Placer::LeastLoaded), Just(Placer::Packed)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Never over capacity within a batch: every node that receives rooms ends the batch within
    /// its capacity and room limit, counting everything the ledger already held there; the
    /// write's reservations list each new room once and keep only unexpired older entries.
    #[test]
    fn a_batch_never_fills_a_node_past_capacity(
        nodes in prop::collection::vec(node_spec(), 0..7),
        rooms in prop::collection::vec(room_spec(), 1..40),
        strategy in strategy(),
        seed in any::<u64>(),
    ) {
        let c = cluster(&nodes, &rooms);
        let mut batch: Vec<RoomKey> = (0..rooms.len()).map(|i| RoomKey::new("ns", format!("room-{i}"))).collect();
        // Any order: the queue's order is arrival order.
        let mut s = seed;
        for i in (1..batch.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            batch.swap(i, (s >> 33) as usize % (i + 1));
        }
        let ledger = Ledger::build(c.rooms.iter().map(|r| r.as_ref()), c.nodes.iter().map(|n| n.as_ref()), &c.in_flight, at(NOW));
        let out = run(&c, &batch, strategy);
        for write in &out.nodes {
            let i: usize = write.node.name.trim_start_matches("sfu-").parse().unwrap();
            let spec = &c.specs[i];
            prop_assert!(matches!(spec.health, NodeHealth::Ready) && !spec.cordoned && !spec.deleting,
                "rooms placed on a node that takes none: {spec:?}");
            // What the ledger held there, plus each new room not already counted there.
            let before = ledger.load(&write.node);
            let mut participants = before.participants;
            let mut count = before.rooms;
            for placement in &write.rooms {
                if ledger.load_excluding(&write.node, Some(&placement.uid)) == before {
                    participants += placement.slots;
                    count += 1;
                }
            }
            prop_assert!(participants <= spec.capacity, "{} holds {participants} > {}", write.node, spec.capacity);
            prop_assert!(spec.max_rooms.is_none_or(|m| count <= m), "{} holds {count} rooms", write.node);
            prop_assert_eq!(write.allocated.participants, participants);
            prop_assert_eq!(write.allocated.rooms, count);
            let uids: Vec<&str> = write.reservations.iter().map(|r| r.uid.as_str()).collect();
            let unique: HashSet<&str> = uids.iter().copied().collect();
            prop_assert_eq!(uids.len(), unique.len(), "a room reserved twice");
            prop_assert!(write.reservations.iter().all(|r| r.expires_at.0 > at(NOW)));
            for placement in &write.rooms {
                prop_assert!(uids.contains(&placement.uid.as_str()));
                prop_assert_eq!(&placement.node, &write.node.name);
            }
        }
        // Each room gets at most one write.
        let mut written: HashMap<&RoomKey, usize> = HashMap::new();
        for key in out.nodes.iter().flat_map(|n| n.rooms.iter().map(|r| &r.room)).chain(out.unschedulable.iter().map(|u| &u.room)).chain(out.finished.iter()) {
            *written.entry(key).or_default() += 1;
        }
        prop_assert!(written.values().all(|n| *n == 1), "{written:?}");
    }

    /// Sticky unless the node failed, is being deleted or is gone: a Placed room on any other
    /// node gets no write; a room on a failed, deleting or missing node moves to another node
    /// or is Unschedulable naming the node it left.
    #[test]
    fn placed_rooms_stay_unless_their_node_failed_is_deleting_or_gone(
        nodes in prop::collection::vec(node_spec(), 0..7),
        rooms in prop::collection::vec(room_spec(), 1..30),
        strategy in strategy(),
    ) {
        let c = cluster(&nodes, &rooms);
        let batch: Vec<RoomKey> = (0..rooms.len()).map(|i| RoomKey::new("ns", format!("room-{i}"))).collect();
        let out = run(&c, &batch, strategy);
        let placed: BTreeMap<&RoomKey, _> = out.nodes.iter().flat_map(|n| n.rooms.iter().map(|r| (&r.room, r))).collect();
        let refused: BTreeMap<&RoomKey, _> = out.unschedulable.iter().map(|u| (&u.room, u)).collect();
        for (i, spec) in rooms.iter().enumerate() {
            let key = &batch[i];
            let Some(home) = spec.placed_on else {
                prop_assert!(placed.get(key).is_none_or(|p| p.moved_from.is_none()));
                continue;
            };
            let displaced = match nodes.get(home) {
                None => Some(MoveReason::NodeGone),
                Some(n) if n.deleting => Some(MoveReason::NodeDeleting),
                Some(n) if matches!(n.health, NodeHealth::Failed) => Some(MoveReason::NodeFailed),
                Some(_) => None,
            };
            let home_name = format!("sfu-{home}");
            match displaced {
                None => {
                    prop_assert!(out.finished.contains(key), "{key} should stay on {home_name}");
                    prop_assert!(!placed.contains_key(key) && !refused.contains_key(key));
                }
                Some(reason) => match (placed.get(key), refused.get(key)) {
                    (Some(p), None) => {
                        prop_assert_eq!(p.moved_from.clone(), Some((home_name.clone(), reason)));
                        prop_assert_ne!(&p.node, &home_name);
                        prop_assert_eq!(p.reason, "Failover");
                        prop_assert_eq!(p.placement_generation, 2);
                    }
                    (None, Some(u)) => {
                        prop_assert!(u.displaced);
                        prop_assert!(u.message.starts_with(&format!("left {home_name} ({})", reason.as_str())), "{}", u.message);
                    }
                    other => prop_assert!(false, "{key} left {home_name} but got {other:?}"),
                },
            }
        }
    }
}

/// A room with no node fits is marked Unschedulable once; deciding it again from the status
/// that write produced plans no second write.
#[test]
fn an_unschedulable_room_is_written_once() {
    let nodes = [NodeSpec {
        health: NodeHealth::Ready,
        cordoned: false,
        deleting: false,
        capacity: 4,
        max_rooms: None,
        foreign: vec![],
    }];
    let rooms = [RoomSpec {
        participants: 5,
        placed_on: None,
        in_flight_on: None,
    }];
    let mut c = cluster(&nodes, &rooms);
    let batch = [RoomKey::new("ns", "room-0")];
    let first = run(&c, &batch, Placer::LeastLoaded);
    assert_eq!(first.unschedulable.len(), 1);
    let write = &first.unschedulable[0];
    assert_eq!(write.reason, "RoomTooLarge");
    assert!(write.emit_event);
    let mut room = (*c.rooms[0]).clone();
    room.status = serde_json::from_value(write.patch()["status"].clone()).unwrap();
    c.rooms[0] = Arc::new(room);
    let again = run(&c, &batch, Placer::LeastLoaded);
    assert!(again.unschedulable.is_empty() && again.nodes.is_empty());
}

/// Reservations still held elsewhere keep the placer from re-deciding blindly: the plan asks
/// to decide waiting rooms again just after the earliest one expires.
#[test]
fn capacity_held_by_reservations_schedules_a_retry_at_their_expiry() {
    let nodes = [NodeSpec {
        health: NodeHealth::Ready,
        cordoned: false,
        deleting: false,
        capacity: 10,
        max_rooms: None,
        foreign: vec![(8, false)],
    }];
    let rooms = [RoomSpec {
        participants: 5,
        placed_on: None,
        in_flight_on: None,
    }];
    let c = cluster(&nodes, &rooms);
    let out = run(&c, &[RoomKey::new("ns", "room-0")], Placer::LeastLoaded);
    assert_eq!(out.unschedulable[0].reason, "InsufficientCapacity");
    let retry = out.retry_waiting_at.unwrap();
    assert!(retry > at(NOW + 5) && retry <= at(NOW + 6), "{retry}");
}

/// A room this placer just placed, decided again before the watch shows its Placed status
/// (the Room's own finalizer write requeues it), gets no second placement: that would
/// provision a second live copy on another node. Without the in-flight entry the same view
/// does place it.
#[test]
fn a_room_placed_but_not_yet_seen_placed_is_not_placed_again() {
    let ready = NodeSpec {
        health: NodeHealth::Ready,
        cordoned: false,
        deleting: false,
        capacity: 10,
        max_rooms: None,
        foreign: vec![],
    };
    let nodes = [ready.clone(), ready];
    let written = [RoomSpec {
        participants: 4,
        placed_on: None,
        in_flight_on: Some(0),
    }];
    let batch = [RoomKey::new("ns", "room-0")];
    let out = run(&cluster(&nodes, &written), &batch, Placer::LeastLoaded);
    assert!(out.nodes.is_empty(), "placed again: {:?}", out.nodes);
    assert!(out.unschedulable.is_empty());
    assert_eq!(out.finished, batch);
    assert_eq!(
        out.retry_waiting_at,
        Some(
            at(NOW + 5)
                .checked_add(SignedDuration::from_millis(50))
                .unwrap()
        ),
        "decided again once the reservation expires, if no event came first"
    );
    let unseen = [RoomSpec {
        in_flight_on: None,
        ..written[0].clone()
    }];
    let out = run(&cluster(&nodes, &unseen), &batch, Placer::LeastLoaded);
    assert_eq!(out.nodes.len(), 1, "a new room is placed");
}

/// A placement write carries the preconditions and the whole status a Placed room shows.
#[test]
fn a_placement_write_is_conditional_and_complete() {
    let nodes = [NodeSpec {
        health: NodeHealth::Ready,
        cordoned: false,
        deleting: false,
        capacity: 10,
        max_rooms: None,
        foreign: vec![(2, false), (3, true)],
    }];
    let rooms = [RoomSpec {
        participants: 4,
        placed_on: None,
        in_flight_on: None,
    }];
    let c = cluster(&nodes, &rooms);
    let out = run(&c, &[RoomKey::new("ns", "room-0")], Placer::LeastLoaded);
    let node = &out.nodes[0];
    let patch = node.patch();
    assert_eq!(patch["metadata"]["resourceVersion"], "100");
    let uids: Vec<&str> = node.reservations.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(
        uids,
        ["foreign-uid-0-0", "uid-0"],
        "the expired entry is dropped"
    );
    assert_eq!(
        patch["status"]["allocated"],
        json!({"rooms": 2, "participants": 6})
    );
    let room = node.rooms[0].patch();
    assert_eq!(room["metadata"]["resourceVersion"], "500");
    let status = &room["status"];
    assert_eq!(status["phase"], "Placed");
    assert_eq!(status["sfuNode"], "sfu-0");
    assert_eq!(status["sfuUrl"], "wss://sfu-0");
    assert_eq!(status["reservedParticipants"], 4);
    assert_eq!(status["placementGeneration"], 1);
    assert_eq!(status["conditions"][0]["reason"], "Placed");
    assert_eq!(status["conditions"][0]["message"], "placed on sfu-0");
}

/// A Janus node: the plan creates the room there (id from the Room, publishers = its size)
/// and adds the Room's finalizer before the placement; an Opaque node needs neither.
#[test]
fn rooms_on_janus_nodes_are_provisioned_and_finalized() {
    let nodes = [NodeSpec {
        health: NodeHealth::Ready,
        cordoned: false,
        deleting: false,
        capacity: 10,
        max_rooms: None,
        foreign: vec![],
    }];
    let rooms = [RoomSpec {
        participants: 4,
        placed_on: None,
        in_flight_on: None,
    }];
    let mut c = cluster(&nodes, &rooms);
    let opaque = run(&c, &[RoomKey::new("ns", "room-0")], Placer::LeastLoaded);
    let placement = &opaque.nodes[0].rooms[0];
    assert_eq!(
        (&placement.provision, &placement.add_finalizer),
        (&None, &None)
    );
    assert_eq!(
        placement.patch()["status"]["sfuRoom"],
        serde_json::Value::Null
    );

    let mut janus = (*c.nodes[0]).clone();
    janus.spec.kind = switchboard_crds::SfuKind::JanusVideoRoom;
    janus.spec.admin = Some(switchboard_crds::SfuAdmin {
        url: "http://127.0.0.1:7088/admin".into(),
        credentials_secret: "sfu-0-credentials".into(),
    });
    c.nodes[0] = Arc::new(janus);
    let out = run(&c, &[RoomKey::new("ns", "room-0")], Placer::LeastLoaded);
    let placement = &out.nodes[0].rooms[0];
    let provision = placement.provision.clone().unwrap();
    assert_eq!(
        provision.sfu_room,
        switchboard_sfu::janus::room_id("ns", "room-0", "uid-0")
    );
    assert_eq!(provision.publishers, 4);
    assert_eq!(
        placement.add_finalizer,
        Some(vec![
            switchboard_operator::plan::placement::ROOM_FINALIZER.to_owned()
        ])
    );
    let status = &placement.patch_at(Some("501".into()))["status"];
    assert_eq!(status["sfuRoom"], provision.sfu_room.as_str());
    let provisioned = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Provisioned")
        .unwrap();
    assert_eq!(provisioned["status"], "True");

    // When Janus refuses: Provisioned=False with its answer, nothing else in the status moves,
    // and the same failure is not written twice.
    assert_eq!(
        opaque.nodes[0].rooms[0].provision_failed_patch(None, "x", at(NOW)),
        None
    );
    let failed = placement
        .provision_failed_patch(Some("502".into()), "403 unauthorized", at(NOW))
        .unwrap();
    assert_eq!(failed["metadata"]["resourceVersion"], "502");
    let status = failed["status"].as_object().unwrap();
    assert_eq!(status.keys().collect::<Vec<_>>(), ["conditions"]);
    let condition = &status["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"]
        ),
        (
            &"Provisioned".into(),
            &"False".into(),
            &"ProvisionFailed".into()
        )
    );
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains(&provision.sfu_room) && message.ends_with("403 unauthorized"));
    let mut shown = placement.clone();
    shown.previous_conditions =
        serde_json::from_value(failed["status"]["conditions"].clone()).unwrap();
    assert_eq!(
        shown.provision_failed_patch(None, "403 unauthorized", at(NOW)),
        None
    );
    assert!(
        shown
            .provision_failed_patch(None, "timed out", at(NOW))
            .is_some()
    );
}

/// A deleted Room holding the finalizer is released on the node its status names; the node
/// counts as alive only while it exists and has not failed.
#[test]
fn deleted_rooms_are_released_on_their_node() {
    let nodes = [
        NodeSpec {
            health: NodeHealth::Ready,
            cordoned: false,
            deleting: false,
            capacity: 10,
            max_rooms: None,
            foreign: vec![],
        },
        NodeSpec {
            health: NodeHealth::Failed,
            cordoned: false,
            deleting: false,
            capacity: 10,
            max_rooms: None,
            foreign: vec![],
        },
    ];
    let rooms = [
        RoomSpec {
            participants: 2,
            placed_on: Some(0),
            in_flight_on: None,
        },
        RoomSpec {
            participants: 2,
            placed_on: Some(1),
            in_flight_on: None,
        },
        RoomSpec {
            participants: 2,
            placed_on: Some(0),
            in_flight_on: None,
        },
    ];
    let mut c = cluster(&nodes, &rooms);
    for i in 0..2 {
        let mut r = (*c.rooms[i]).clone();
        r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            at(NOW - 1),
        ));
        r.metadata.finalizers = Some(vec![
            "example.com/keep".into(),
            switchboard_operator::plan::placement::ROOM_FINALIZER.into(),
        ]);
        r.status.as_mut().unwrap().sfu_room = Some(format!("ns.room-{i}.x"));
        c.rooms[i] = Arc::new(r);
    }
    // room-2 is deleting without the finalizer: nothing to release.
    let mut r = (*c.rooms[2]).clone();
    r.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
        NOW - 1,
    )));
    c.rooms[2] = Arc::new(r);
    let batch: Vec<RoomKey> = (0..3)
        .map(|i| RoomKey::new("ns", format!("room-{i}")))
        .collect();
    let out = run(&c, &batch, Placer::LeastLoaded);
    assert_eq!(out.releases.len(), 2);
    let alive = &out.releases[0];
    assert_eq!(alive.node, Some(NodeKey::new("ns", "sfu-0")));
    assert!(alive.node_alive);
    assert_eq!(alive.sfu_room.as_deref(), Some("ns.room-0.x"));
    let (finalizers, rv) = alive.finalizers_after.clone().unwrap();
    assert_eq!(
        (finalizers, rv.as_deref()),
        (vec!["example.com/keep".to_owned()], Some("500"))
    );
    assert!(!out.releases[1].node_alive, "a failed node is not asked");
    assert_eq!(out.finished.len(), 3);
    assert!(out.nodes.is_empty() && out.unschedulable.is_empty());
}

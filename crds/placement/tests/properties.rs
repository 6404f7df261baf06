//! Property tests of the placement rules, each checked against a brute-force reading of the
//! rule over random clusters.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchboard_placement::{
    CurrentPlacement, Decision, Health, LabelSelector, MoveReason, NoFitReason, NodeView,
    PlacementIndex, RegionPolicy, RoomRequest, Strategy as Placer, decide, place,
};

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

fn node_strategy() -> impl Strategy<Value = NodeView> {
    (
        0usize..3,
        prop_oneof![Just("gold"), Just("silver")],
        prop_oneof![4 => Just(Health::Ready), 1 => Just(Health::Suspect), 1 => Just(Health::Failed)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        1u32..200,
        prop::option::weighted(0.3, 1u32..10),
        0u32..220,
        0u32..12,
    )
        .prop_map(|(region, tier, health, cordoned, deleting, capacity, max_rooms, allocated, rooms)| NodeView {
            name: String::new(),
            region: REGIONS[region].to_owned(),
            labels: BTreeMap::from([("tier".to_owned(), tier.to_owned())]),
            health,
            cordoned,
            deleting,
            capacity,
            max_rooms,
            allocated,
            rooms,
        })
}

fn cluster() -> impl Strategy<Value = Vec<NodeView>> {
    prop::collection::vec(node_strategy(), 0..12).prop_map(|mut nodes| {
        for (i, n) in nodes.iter_mut().enumerate() {
            n.name = format!("sfu-{i}");
        }
        nodes
    })
}

fn room_strategy() -> impl Strategy<Value = RoomRequest> {
    (
        "[a-z]{1,8}",
        1u32..60,
        prop::option::of(0usize..3),
        prop_oneof![Just(RegionPolicy::Preferred), Just(RegionPolicy::Required)],
        prop::option::weighted(0.3, prop_oneof![Just("gold"), Just("silver")]),
    )
        .prop_map(
            |(key, participants, region, region_policy, tier)| RoomRequest {
                key,
                participants,
                region: region.map(|r| REGIONS[r].to_owned()),
                region_policy,
                selector: tier.map(|t| LabelSelector {
                    match_labels: BTreeMap::from([("tier".to_owned(), t.to_owned())]),
                    ..Default::default()
                }),
            },
        )
}

fn strategy_strategy() -> impl Strategy<Value = Placer> {
    prop_oneof![Just(Placer::LeastLoaded), Just(Placer::Packed)]
}

/// A node the rules allow for this room, ignoring region preference.
fn eligible(node: &NodeView, room: &RoomRequest) -> bool {
    let selector_ok = room
        .selector
        .as_ref()
        .is_none_or(|s| s.matches(&node.labels));
    let region_ok = match (&room.region, room.region_policy) {
        (Some(r), RegionPolicy::Required) => &node.region == r,
        _ => true,
    };
    selector_ok && region_ok && node.accepts_new_rooms() && node.fits(room.participants)
}

/// Utilization after placement as an exact fraction (numerator, denominator).
fn util(node: &NodeView, room: &RoomRequest) -> (u128, u128) {
    (
        u128::from(node.allocated + room.participants),
        u128::from(node.capacity),
    )
}
fn less(a: (u128, u128), b: (u128, u128)) -> bool {
    a.0 * b.1 < b.0 * a.1
}

/// The candidate set the rules choose from: the requested region's eligible nodes when there
/// are any, otherwise every eligible node.
fn candidates<'a>(nodes: &'a [NodeView], room: &RoomRequest) -> Vec<&'a NodeView> {
    let all: Vec<&NodeView> = nodes.iter().filter(|n| eligible(n, room)).collect();
    let in_region: Vec<&NodeView> = all
        .iter()
        .copied()
        .filter(|n| room.region.as_deref() == Some(n.region.as_str()))
        .collect();
    if in_region.is_empty() { all } else { in_region }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Never over capacity: the chosen node fits; and when nothing is chosen, nothing fits.
    #[test]
    fn never_over_capacity_and_no_false_refusals(nodes in cluster(), room in room_strategy(), strategy in strategy_strategy()) {
        match place(&nodes, &room, strategy) {
            Ok(p) => {
                let node = nodes.iter().find(|n| n.name == p.node).unwrap();
                prop_assert!(eligible(node, &room), "chose an ineligible node {node:?}");
            }
            Err(no_fit) => {
                prop_assert!(nodes.iter().all(|n| !eligible(n, &room)), "refused although a node fits: {no_fit}");
                prop_assert!(!no_fit.to_string().is_empty());
            }
        }
    }

    /// Filling a cluster room by room never pushes any node past its capacity or room limit.
    #[test]
    fn sequential_fill_never_exceeds_capacity(mut nodes in cluster(), rooms in prop::collection::vec(room_strategy(), 1..80), strategy in strategy_strategy()) {
        for n in &mut nodes { n.allocated = 0; n.rooms = 0; }
        for room in rooms {
            if let Ok(p) = place(&nodes, &room, strategy) {
                let node = nodes.iter_mut().find(|n| n.name == p.node).unwrap();
                node.allocated += room.participants;
                node.rooms += 1;
                prop_assert!(node.allocated <= node.capacity);
                prop_assert!(node.max_rooms.is_none_or(|m| node.rooms <= m));
            }
        }
    }

    /// LeastLoaded picks a node of minimal utilization after placement among the candidates.
    #[test]
    fn least_loaded_picks_minimal_utilization(nodes in cluster(), room in room_strategy()) {
        if let Ok(p) = place(&nodes, &room, Placer::LeastLoaded) {
            let chosen = nodes.iter().find(|n| n.name == p.node).unwrap();
            for other in candidates(&nodes, &room) {
                prop_assert!(!less(util(other, &room), util(chosen, &room)), "{} is less loaded than {}", other.name, chosen.name);
            }
        }
    }

    /// Packed picks the fullest node that still fits among the candidates.
    #[test]
    fn packed_picks_the_fullest_fitting_node(nodes in cluster(), room in room_strategy()) {
        if let Ok(p) = place(&nodes, &room, Placer::Packed) {
            let chosen = nodes.iter().find(|n| n.name == p.node).unwrap();
            for other in candidates(&nodes, &room) {
                prop_assert!(!less(util(chosen, &room), util(other, &room)), "{} is fuller than {}", other.name, chosen.name);
            }
        }
    }

    /// The same input gives the same answer, in any node order.
    #[test]
    fn deterministic_and_order_independent(nodes in cluster(), room in room_strategy(), strategy in strategy_strategy(), seed in any::<u64>()) {
        let first = place(&nodes, &room, strategy);
        prop_assert_eq!(&first, &place(&nodes, &room, strategy));
        let mut shuffled = nodes.clone();
        let len = shuffled.len();
        if len > 1 {
            let mut s = seed;
            for i in (1..len).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
        }
        prop_assert_eq!(first.map(|p| p.node), place(&shuffled, &room, strategy).map(|p| p.node));
    }

    /// Region and selector are respected: Required never leaves the region, Preferred only when
    /// the region has no fitting node, and the selector always holds.
    #[test]
    fn region_and_selector_are_respected(nodes in cluster(), room in room_strategy(), strategy in strategy_strategy()) {
        if let Ok(p) = place(&nodes, &room, strategy) {
            let chosen = nodes.iter().find(|n| n.name == p.node).unwrap();
            if let Some(sel) = &room.selector { prop_assert!(sel.matches(&chosen.labels)); }
            if let Some(region) = &room.region {
                match room.region_policy {
                    RegionPolicy::Required => prop_assert_eq!(&chosen.region, region),
                    RegionPolicy::Preferred => {
                        let region_fits = nodes.iter().any(|n| &n.region == region && eligible(n, &room));
                        prop_assert_eq!(&chosen.region == region, region_fits);
                        prop_assert_eq!(p.in_requested_region, region_fits);
                    }
                }
            }
        }
    }

    /// A placed room is never moved by load changes alone: whatever the allocations, cordons
    /// or short NotReady spells, a room on an existing, non-failed, non-deleting node stays.
    #[test]
    fn placed_room_is_not_moved_by_load(mut nodes in cluster(), room in room_strategy(), strategy in strategy_strategy(), pick in any::<prop::sample::Index>(), loads in prop::collection::vec((0u32..1000, 0u32..50), 12)) {
        prop_assume!(!nodes.is_empty());
        let home = pick.index(nodes.len());
        nodes[home].deleting = false;
        if nodes[home].health == Health::Failed { nodes[home].health = Health::Suspect; }
        for (n, (allocated, rooms)) in nodes.iter_mut().zip(loads) { n.allocated = allocated; n.rooms = rooms; }
        let current = CurrentPlacement { node: nodes[home].name.clone() };
        prop_assert_eq!(decide(&nodes, &room, Some(&current), strategy), Decision::Stay);
    }

    /// A room on a failed, deleting or vanished node is moved to an eligible other node, or
    /// reported unschedulable with the node it left.
    #[test]
    fn displaced_room_moves_elsewhere(mut nodes in cluster(), room in room_strategy(), strategy in strategy_strategy(), pick in any::<prop::sample::Index>(), how in 0u8..3) {
        prop_assume!(!nodes.is_empty());
        let home = pick.index(nodes.len());
        let home_name = nodes[home].name.clone();
        let expected = match how {
            0 => {
                nodes[home].health = Health::Failed;
                nodes[home].deleting = false;
                MoveReason::NodeFailed
            }
            1 => { nodes[home].deleting = true; MoveReason::NodeDeleting }
            _ => { nodes.remove(home); MoveReason::NodeGone }
        };
        let current = CurrentPlacement { node: home_name.clone() };
        match decide(&nodes, &room, Some(&current), strategy) {
            Decision::Move { from, reason, to } => {
                prop_assert_eq!(from, home_name.clone());
                prop_assert_eq!(reason, expected);
                prop_assert_ne!(&to.node, &home_name);
                prop_assert!(eligible(nodes.iter().find(|n| n.name == to.node).unwrap(), &room));
            }
            Decision::Unschedulable { displaced, .. } => {
                prop_assert_eq!(displaced, Some((home_name, expected)));
                prop_assert!(nodes.iter().all(|n| !eligible(n, &room)));
            }
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The index answers exactly as the full scan, also after reservations made through it.
    #[test]
    fn index_matches_full_scan(nodes in cluster(), rooms in prop::collection::vec(room_strategy(), 1..40), strategy in strategy_strategy()) {
        let mut index = PlacementIndex::new(nodes);
        for room in rooms {
            let fast = index.place(&room, strategy);
            let slow = place(index.nodes(), &room, strategy);
            prop_assert_eq!(&fast, &slow);
            if let Ok(p) = fast {
                index.reserve(&p.node, room.participants);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// A batch as the operator's planner decides it: each room through the index, with every
    /// placement reserved before the next room. No node ends over its capacity or room limit
    /// (counting what it held before), and a room whose node exists, is not deleting and has
    /// not failed stays where it is.
    #[test]
    fn a_batch_through_the_index_stays_within_capacity_and_sticky(
        nodes in cluster(),
        rooms in prop::collection::vec((room_strategy(), prop::option::weighted(0.3, 0usize..14)), 1..60),
        strategy in strategy_strategy(),
    ) {
        let start: Vec<(u32, u32)> = nodes.iter().map(|n| (n.allocated, n.rooms)).collect();
        let mut index = PlacementIndex::new(nodes.clone());
        for (room, home) in &rooms {
            let current = home.map(|h| CurrentPlacement { node: format!("sfu-{h}") });
            let decision = index.decide(room, current.as_ref(), strategy);
            let home_node = current.as_ref().and_then(|c| nodes.iter().find(|n| n.name == c.node));
            let must_stay = home_node.is_some_and(|n| !n.deleting && n.health != Health::Failed);
            prop_assert_eq!(must_stay, decision == Decision::Stay, "{:?} for {:?}", decision, home_node);
            let to = match decision {
                Decision::Place(to) | Decision::Move { to, .. } => to,
                _ => continue,
            };
            index.reserve(&to.node, room.participants);
        }
        for (i, (n, (allocated, count))) in index.nodes().iter().zip(start).enumerate() {
            let grew = n.allocated > allocated || n.rooms > count;
            if grew {
                prop_assert!(n.allocated <= n.capacity, "sfu-{i}: {} > {}", n.allocated, n.capacity);
                prop_assert!(n.max_rooms.is_none_or(|m| n.rooms <= m), "sfu-{i}: {} rooms", n.rooms);
                prop_assert!(nodes[i].accepts_new_rooms());
            }
        }
    }
}

/// Ties spread: equal empty nodes receive a burst of equal rooms evenly, not all on one.
#[test]
fn ties_spread_a_burst_across_equal_nodes() {
    let mut nodes: Vec<NodeView> = (0..10)
        .map(|i| NodeView {
            name: format!("sfu-{i}"),
            region: "eu".into(),
            labels: BTreeMap::new(),
            health: Health::Ready,
            cordoned: false,
            deleting: false,
            capacity: 100,
            max_rooms: None,
            allocated: 0,
            rooms: 0,
        })
        .collect();
    for i in 0..100 {
        let room = RoomRequest {
            key: format!("ns/room-{i}"),
            participants: 10,
            region: None,
            region_policy: RegionPolicy::Preferred,
            selector: None,
        };
        let p = place(&nodes, &room, Placer::LeastLoaded).unwrap();
        let n = nodes.iter_mut().find(|n| n.name == p.node).unwrap();
        n.allocated += 10;
        n.rooms += 1;
    }
    assert!(
        nodes.iter().all(|n| n.allocated == 100),
        "{:?}",
        nodes.iter().map(|n| n.allocated).collect::<Vec<_>>()
    );
}

/// The refusal message counts each cause and names the reason code.
#[test]
fn no_fit_explains_itself() {
    let node = |name: &str, health, cordoned, allocated| NodeView {
        name: name.into(),
        region: "eu".into(),
        labels: BTreeMap::new(),
        health,
        cordoned,
        deleting: false,
        capacity: 10,
        max_rooms: None,
        allocated,
        rooms: 1,
    };
    let nodes = vec![
        node("a", Health::Failed, false, 0),
        node("b", Health::Ready, true, 0),
        node("c", Health::Ready, false, 8),
    ];
    let room = RoomRequest {
        key: "r".into(),
        participants: 4,
        region: None,
        region_policy: RegionPolicy::Preferred,
        selector: None,
    };
    let no_fit = place(&nodes, &room, Placer::LeastLoaded).unwrap_err();
    assert_eq!(no_fit.reason(), NoFitReason::InsufficientCapacity);
    assert_eq!(
        no_fit.to_string(),
        "0/3 nodes fit: 1 are not ready, 1 are cordoned, 1 lack free slots (room needs 4 slots; most free on a ready node: 2)"
    );
    let big = RoomRequest {
        participants: 11,
        ..room.clone()
    };
    assert_eq!(
        place(&nodes, &big, Placer::Packed).unwrap_err().reason(),
        NoFitReason::RoomTooLarge
    );
    assert_eq!(
        place(&[], &room, Placer::Packed).unwrap_err().reason(),
        NoFitReason::NoSfuNodes
    );
}

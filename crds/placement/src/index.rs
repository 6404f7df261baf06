//! A placement index for deciding many rooms against the same nodes, as the operator does in
//! each batch. It gives exactly the answers of [`crate::place`] (a property test holds it to
//! that), only faster: nodes that cannot take new rooms are left out once, the rest are kept
//! in compact arrays grouped by region, and a room with a region scans only its region first.
//! Rooms with a label selector, and every refusal (to build its explanation), fall back to the
//! full scan.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::decide::{CurrentPlacement, Decision, decide_with};
use crate::select::{NoFit, Placement, Standing, compare, place};
use crate::{NodeView, RegionPolicy, RoomRequest, Strategy};

/// The numbers one candidate comparison needs, without the strings.
#[derive(Clone, Copy, Debug)]
struct Slot {
    node: usize,
    capacity: u32,
    allocated: u32,
    rooms: u32,
    max_rooms: Option<u32>,
}

impl Slot {
    fn fits(&self, participants: u32) -> bool {
        u64::from(self.allocated) + u64::from(participants) <= u64::from(self.capacity)
            && self.max_rooms.is_none_or(|max| self.rooms < max)
    }
}

/// Nodes prepared for many decisions. [`PlacementIndex::reserve`] keeps it current as rooms
/// are placed within a batch.
#[derive(Debug, Clone)]
pub struct PlacementIndex {
    nodes: Vec<NodeView>,
    /// Nodes that accept new rooms.
    slots: Vec<Slot>,
    /// Region -> the range of `slots` holding its nodes (slots are grouped by region).
    regions: HashMap<String, std::ops::Range<usize>>,
    /// Node name -> position in `nodes` and, if it accepts rooms, in `slots`.
    by_name: HashMap<String, (usize, Option<usize>)>,
}

impl PlacementIndex {
    pub fn new(nodes: Vec<NodeView>) -> Self {
        let mut accepting: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].accepts_new_rooms())
            .collect();
        accepting.sort_by(|&a, &b| nodes[a].region.cmp(&nodes[b].region));
        let mut slots = Vec::with_capacity(accepting.len());
        let mut regions: HashMap<String, std::ops::Range<usize>> = HashMap::new();
        let mut by_name: HashMap<String, (usize, Option<usize>)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), (i, None)))
            .collect();
        for i in accepting {
            let node = &nodes[i];
            let position = slots.len();
            slots.push(Slot {
                node: i,
                capacity: node.capacity,
                allocated: node.allocated,
                rooms: node.rooms,
                max_rooms: node.max_rooms,
            });
            regions
                .entry(node.region.clone())
                .or_insert(position..position)
                .end = position + 1;
            if let Some(entry) = by_name.get_mut(&node.name) {
                entry.1 = Some(position);
            }
        }
        PlacementIndex {
            nodes,
            slots,
            regions,
            by_name,
        }
    }

    /// The nodes, with every reservation made so far.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Counts `participants` more slots and one more room on `node`. Unknown names are ignored.
    pub fn reserve(&mut self, node: &str, participants: u32) {
        let Some(&(i, slot)) = self.by_name.get(node) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(i) {
            n.allocated = n.allocated.saturating_add(participants);
            n.rooms = n.rooms.saturating_add(1);
        }
        if let Some(s) = slot.and_then(|s| self.slots.get_mut(s)) {
            s.allocated = s.allocated.saturating_add(participants);
            s.rooms = s.rooms.saturating_add(1);
        }
    }

    fn standing(&self, slot: &Slot) -> Standing<'_> {
        Standing {
            allocated: slot.allocated,
            capacity: slot.capacity,
            rooms: slot.rooms,
            name: self.nodes.get(slot.node).map_or("", |n| n.name.as_str()),
        }
    }

    fn best<'s>(
        &self,
        room: &RoomRequest,
        strategy: Strategy,
        candidates: &'s [Slot],
    ) -> Option<&'s Slot> {
        let request = u128::from(room.participants);
        let mut best: Option<&Slot> = None;
        for slot in candidates {
            if !slot.fits(room.participants) {
                continue;
            }
            let Some(b) = best else {
                best = Some(slot);
                continue;
            };
            // The numeric part of `compare`, inline: utilization after placement as exact
            // fractions, then room counts. Only an exact tie needs the names.
            let b_load = (u128::from(b.allocated) + request) * u128::from(slot.capacity);
            let s_load = (u128::from(slot.allocated) + request) * u128::from(b.capacity);
            let order = match strategy {
                Strategy::LeastLoaded => s_load.cmp(&b_load).then(slot.rooms.cmp(&b.rooms)),
                Strategy::Packed => b_load.cmp(&s_load).then(b.rooms.cmp(&slot.rooms)),
            };
            let better = match order {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    compare(strategy, room, self.standing(slot), self.standing(b)) == Ordering::Less
                }
            };
            if better {
                best = Some(slot);
            }
        }
        best
    }

    fn name_of(&self, slot: &Slot) -> String {
        self.nodes
            .get(slot.node)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// Same answer as [`crate::place`] over [`PlacementIndex::nodes`].
    pub fn place(&self, room: &RoomRequest, strategy: Strategy) -> Result<Placement, NoFit> {
        if room.selector.is_some() {
            return place(&self.nodes, room, strategy);
        }
        let found = match &room.region {
            Some(region) => {
                let in_region = self
                    .regions
                    .get(region)
                    .and_then(|range| self.slots.get(range.clone()))
                    .and_then(|slots| self.best(room, strategy, slots));
                match (in_region, room.region_policy) {
                    (Some(slot), _) => Some((slot, true)),
                    (None, RegionPolicy::Required) => None,
                    (None, RegionPolicy::Preferred) => {
                        self.best(room, strategy, &self.slots).map(|s| (s, false))
                    }
                }
            }
            None => self.best(room, strategy, &self.slots).map(|s| (s, true)),
        };
        match found {
            Some((slot, in_requested_region)) => Ok(Placement {
                node: self.name_of(slot),
                in_requested_region,
            }),
            None => place(&self.nodes, room, strategy),
        }
    }

    /// Same answer as [`crate::decide`] over [`PlacementIndex::nodes`].
    pub fn decide(
        &self,
        room: &RoomRequest,
        current: Option<&CurrentPlacement>,
        strategy: Strategy,
    ) -> Decision {
        decide_with(&self.nodes, current, || self.place(room, strategy))
    }
}

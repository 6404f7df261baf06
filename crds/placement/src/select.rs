//! Choosing a node for a room that has none.

use std::cmp::Ordering;
use std::fmt;

use crate::{NodeView, RegionPolicy, RoomRequest, Strategy};

/// Where a room goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// False when a `Preferred` region had no fitting node and another region was used.
    pub in_requested_region: bool,
}

/// Why no node fits, as one of a few stable codes (used as condition and Event reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoFitReason {
    /// There are no SfuNodes at all.
    NoSfuNodes,
    /// No node matches the selector and region.
    NoMatchingNodes,
    /// Matching nodes exist, but none is Ready and uncordoned.
    NoReadyNodes,
    /// The room asks for more slots than any matching node has in total.
    RoomTooLarge,
    /// Matching ready nodes exist, but none has enough free slots or room count left.
    InsufficientCapacity,
}

impl NoFitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NoFitReason::NoSfuNodes => "NoSfuNodes",
            NoFitReason::NoMatchingNodes => "NoMatchingNodes",
            NoFitReason::NoReadyNodes => "NoReadyNodes",
            NoFitReason::RoomTooLarge => "RoomTooLarge",
            NoFitReason::InsufficientCapacity => "InsufficientCapacity",
        }
    }
}

/// Why a room could not be placed, with a count of nodes per cause so the message tells an
/// operator what to fix (`0/10 nodes fit: 3 not ready, 7 lack free slots (room needs 8)`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NoFit {
    pub total: usize,
    pub selector_mismatch: usize,
    pub other_region: usize,
    pub not_ready: usize,
    pub deleting: usize,
    pub cordoned: usize,
    pub room_limit: usize,
    pub lacking_slots: usize,
    /// The most free slots on any matching ready node.
    pub largest_free: u32,
    /// The largest capacity of any matching node.
    pub largest_capacity: u32,
    pub requested: u32,
}

impl NoFit {
    pub fn reason(&self) -> NoFitReason {
        let matching = self.total - self.selector_mismatch - self.other_region;
        if self.total == 0 {
            NoFitReason::NoSfuNodes
        } else if matching == 0 {
            NoFitReason::NoMatchingNodes
        } else if self.requested > self.largest_capacity {
            NoFitReason::RoomTooLarge
        } else if self.room_limit + self.lacking_slots == 0 {
            NoFitReason::NoReadyNodes
        } else {
            NoFitReason::InsufficientCapacity
        }
    }
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total == 0 {
            return write!(f, "no SfuNodes exist");
        }
        write!(f, "0/{} nodes fit", self.total)?;
        let parts = [
            (self.selector_mismatch, "do not match the selector"),
            (self.other_region, "are in another region (region required)"),
            (self.not_ready, "are not ready"),
            (self.deleting, "are being deleted"),
            (self.cordoned, "are cordoned"),
            (self.room_limit, "reached their room limit"),
            (self.lacking_slots, "lack free slots"),
        ];
        let mut first = true;
        for (count, text) in parts {
            if count > 0 {
                write!(f, "{} {count} {text}", if first { ":" } else { "," })?;
                first = false;
            }
        }
        write!(
            f,
            " (room needs {} slots; most free on a ready node: {})",
            self.requested, self.largest_free
        )
    }
}

/// A stable 64-bit FNV-1a hash. The tie-break must not change between runs or Rust versions
/// (std's hasher promises neither), or two operator builds would disagree.
fn stable_hash(room: &str, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes().chain([0u8]).chain(node.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What the ordering of candidates looks at, so the full scan ([`place`]) and the index
/// ([`crate::PlacementIndex`]) share one definition of "better".
#[derive(Clone, Copy)]
pub(crate) struct Standing<'a> {
    pub allocated: u32,
    pub capacity: u32,
    pub rooms: u32,
    pub name: &'a str,
}

impl<'a> From<&'a NodeView> for Standing<'a> {
    fn from(n: &'a NodeView) -> Self {
        Standing {
            allocated: n.allocated,
            capacity: n.capacity,
            rooms: n.rooms,
            name: &n.name,
        }
    }
}

/// Compares utilization after placement exactly, as fractions, so no float rounding can make
/// the choice differ between machines.
fn utilization_after(a: Standing<'_>, b: Standing<'_>, request: u32) -> Ordering {
    let a_used = u128::from(a.allocated) + u128::from(request);
    let b_used = u128::from(b.allocated) + u128::from(request);
    (a_used * u128::from(b.capacity)).cmp(&(b_used * u128::from(a.capacity)))
}

/// `Less` when `a` is the better choice for this room.
pub(crate) fn compare(
    strategy: Strategy,
    room: &RoomRequest,
    a: Standing<'_>,
    b: Standing<'_>,
) -> Ordering {
    let load = match strategy {
        Strategy::LeastLoaded => utilization_after(a, b, room.participants),
        Strategy::Packed => utilization_after(b, a, room.participants),
    };
    let rooms = match strategy {
        Strategy::LeastLoaded => a.rooms.cmp(&b.rooms),
        Strategy::Packed => b.rooms.cmp(&a.rooms),
    };
    load.then(rooms)
        .then_with(|| stable_hash(&room.key, a.name).cmp(&stable_hash(&room.key, b.name)))
        .then_with(|| a.name.cmp(b.name))
}

fn better(strategy: Strategy, room: &RoomRequest, a: &NodeView, b: &NodeView) -> Ordering {
    compare(strategy, room, a.into(), b.into())
}

fn pick_better<'a>(
    strategy: Strategy,
    room: &RoomRequest,
    current: Option<&'a NodeView>,
    candidate: &'a NodeView,
) -> &'a NodeView {
    match current {
        Some(c) if better(strategy, room, c, candidate) != Ordering::Greater => c,
        _ => candidate,
    }
}

/// Picks a node for a room that has none, or says why none fits.
///
/// Only nodes that are Ready, uncordoned, not being deleted, match the selector, and fit the
/// request are candidates. A `Preferred` region narrows the candidates to that region when any
/// there fits; `Required` always does.
pub fn place(
    nodes: &[NodeView],
    room: &RoomRequest,
    strategy: Strategy,
) -> Result<Placement, NoFit> {
    let mut no_fit = NoFit {
        total: nodes.len(),
        requested: room.participants,
        ..NoFit::default()
    };
    let required_region = match (&room.region, room.region_policy) {
        (Some(region), RegionPolicy::Required) => Some(region.as_str()),
        _ => None,
    };
    let mut best: Option<&NodeView> = None;
    let mut best_in_region: Option<&NodeView> = None;
    for node in nodes {
        if room
            .selector
            .as_ref()
            .is_some_and(|s| !s.matches(&node.labels))
        {
            no_fit.selector_mismatch += 1;
            continue;
        }
        if required_region.is_some_and(|r| r != node.region) {
            no_fit.other_region += 1;
            continue;
        }
        no_fit.largest_capacity = no_fit.largest_capacity.max(node.capacity);
        if node.health != crate::Health::Ready {
            no_fit.not_ready += 1;
            continue;
        }
        if node.deleting {
            no_fit.deleting += 1;
            continue;
        }
        if node.cordoned {
            no_fit.cordoned += 1;
            continue;
        }
        no_fit.largest_free = no_fit.largest_free.max(node.free());
        if node.max_rooms.is_some_and(|max| node.rooms >= max) {
            no_fit.room_limit += 1;
            continue;
        }
        if !node.fits(room.participants) {
            no_fit.lacking_slots += 1;
            continue;
        }
        best = Some(pick_better(strategy, room, best, node));
        if room.region.as_deref() == Some(node.region.as_str()) {
            best_in_region = Some(pick_better(strategy, room, best_in_region, node));
        }
    }
    match (best_in_region, best) {
        (Some(node), _) => Ok(Placement {
            node: node.name.clone(),
            in_requested_region: true,
        }),
        (None, Some(node)) => Ok(Placement {
            node: node.name.clone(),
            in_requested_region: room.region.is_none(),
        }),
        (None, None) => Err(no_fit),
    }
}

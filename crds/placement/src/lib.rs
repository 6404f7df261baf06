//! Switchboard's placement algorithm: which SfuNode a Room goes to, and when a placed Room must
//! move. Plain structs in, a decision or a typed reason out.
//!
//! This crate must stay pure: no Kubernetes types, no I/O, no clocks, no async. The operator
//! turns its watched objects into [`NodeView`]s and [`RoomRequest`]s; signaling's dev mode does
//! the same from a static node list. Both therefore place exactly alike, and every rule here is
//! covered by property tests.
//!
//! The rules:
//! - **Never over capacity.** A node fits a room only when its free participant slots cover
//!   the room's request, and its room limit (if any) is not reached.
//! - **Sticky.** A placed room stays on its node while the node is not failed and not being
//!   deleted, whatever the load does ([`decide`]).
//! - **Least-loaded** by default: the node with the lowest utilization after placement, ties
//!   broken by fewer rooms, then by a stable per-room hash so equal nodes share a burst.
//! - **Packed** on request: the fullest node that still fits, to use fewer SFUs.
//! - **Region**: `Preferred` tries the room's region first and falls back to every region;
//!   `Required` never leaves it. A label selector filters nodes first.

mod decide;
mod index;
mod select;
mod selector;

pub use decide::{CurrentPlacement, Decision, MoveReason, decide};
pub use index::PlacementIndex;
pub use select::{NoFit, NoFitReason, Placement, place};
pub use selector::{LabelSelector, Requirement, SelectorError, SelectorOperator};

use std::collections::BTreeMap;

/// How to choose among the nodes that fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Strategy {
    /// The lowest utilization after placement, to spread load.
    #[default]
    LeastLoaded,
    /// The highest utilization after placement that still fits, to use fewer nodes.
    Packed,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "LeastLoaded" | "least-loaded" => Ok(Strategy::LeastLoaded),
            "Packed" | "packed" => Ok(Strategy::Packed),
            other => Err(format!(
                "unknown strategy {other:?}; expected LeastLoaded or Packed"
            )),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::LeastLoaded => "LeastLoaded",
            Strategy::Packed => "Packed",
        })
    }
}

/// How strictly a room's region binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum RegionPolicy {
    #[default]
    Preferred,
    Required,
}

/// The health of a node as placement needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Health {
    /// Ready: new rooms may go here (unless cordoned) and placed rooms stay.
    #[default]
    Ready,
    /// NotReady, but still inside the failover grace period: no new rooms, placed rooms stay.
    Suspect,
    /// NotReady past the grace period: placed rooms move away.
    Failed,
}

/// One SFU node, as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Unique among the nodes passed in.
    pub name: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    /// Cordoned (`spec.unschedulable`): placed rooms stay, no new ones.
    pub cordoned: bool,
    /// Being deleted: placed rooms move away, no new ones.
    pub deleting: bool,
    /// Participant slots.
    pub capacity: u32,
    /// Room limit, if any.
    pub max_rooms: Option<u32>,
    /// Participant slots already allocated, from the ledger.
    pub allocated: u32,
    /// Rooms already allocated, from the ledger.
    pub rooms: u32,
}

impl NodeView {
    /// True when new rooms may be placed here at all (before capacity).
    pub fn accepts_new_rooms(&self) -> bool {
        self.health == Health::Ready && !self.cordoned && !self.deleting
    }

    /// Free participant slots (0 when already over capacity).
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.allocated)
    }

    /// True when `participants` more slots and one more room fit.
    pub fn fits(&self, participants: u32) -> bool {
        let slots_fit =
            u64::from(self.allocated) + u64::from(participants) <= u64::from(self.capacity);
        let rooms_fit = self.max_rooms.is_none_or(|max| self.rooms < max);
        slots_fit && rooms_fit
    }
}

/// One room's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRequest {
    /// A stable identity (for example `namespace/name`); it seeds the tie-break hash, so the
    /// same room always prefers the same node among equals, and different rooms spread.
    pub key: String,
    pub participants: u32,
    pub region: Option<String>,
    pub region_policy: RegionPolicy,
    pub selector: Option<LabelSelector>,
}

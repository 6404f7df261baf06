//! Whether a room keeps its node, gets one, or must move: stickiness lives here.

use crate::select::{NoFit, Placement, place};
use crate::{Health, NodeView, RoomRequest, Strategy};

/// Where a room is placed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentPlacement {
    pub node: String,
}

/// Why a placed room leaves its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoveReason {
    /// The node has been NotReady past the grace period.
    NodeFailed,
    /// The node is being deleted.
    NodeDeleting,
    /// The node no longer exists.
    NodeGone,
}

impl MoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::NodeFailed => "NodeFailed",
            MoveReason::NodeDeleting => "NodeDeleting",
            MoveReason::NodeGone => "NodeGone",
        }
    }
}

/// What to do with one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep the current node. Load, cordon or a short NotReady never cause a move.
    Stay,
    /// First placement.
    Place(Placement),
    /// Leave a failed, deleting or missing node for another.
    Move {
        from: String,
        reason: MoveReason,
        to: Placement,
    },
    /// No node fits. `displaced` says which node the room had to leave, if any.
    Unschedulable {
        no_fit: NoFit,
        displaced: Option<(String, MoveReason)>,
    },
}

/// Decides for one room, given every node and the room's current placement.
///
/// Sticky by construction: a room whose node exists, is not being deleted and has not failed
/// gets [`Decision::Stay`] before any node is even compared.
pub fn decide(
    nodes: &[NodeView],
    room: &RoomRequest,
    current: Option<&CurrentPlacement>,
    strategy: Strategy,
) -> Decision {
    decide_with(nodes, current, || place(nodes, room, strategy))
}

/// The stickiness rules around any way of placing (the full scan or the index).
pub(crate) fn decide_with(
    nodes: &[NodeView],
    current: Option<&CurrentPlacement>,
    place: impl FnOnce() -> Result<Placement, NoFit>,
) -> Decision {
    let displaced = match current {
        None => None,
        Some(current) => match nodes.iter().find(|n| n.name == current.node) {
            None => Some((current.node.clone(), MoveReason::NodeGone)),
            Some(node) if node.deleting => Some((current.node.clone(), MoveReason::NodeDeleting)),
            Some(node) if node.health == Health::Failed => {
                Some((current.node.clone(), MoveReason::NodeFailed))
            }
            Some(_) => return Decision::Stay,
        },
    };
    match (place(), displaced) {
        (Ok(to), None) => Decision::Place(to),
        (Ok(to), Some((from, reason))) => Decision::Move { from, reason, to },
        (Err(no_fit), displaced) => Decision::Unschedulable { no_fit, displaced },
    }
}

//! The identities the operator keys its work by: a Room's and an SfuNode's namespace and name.
//!
//! Named types rather than `(String, String)`, so a room can never be looked up as a node (or a
//! name passed where a namespace belongs) without the compiler noticing. Pure.

use std::fmt;

use switchboard_crds::{Room, SfuNode};

/// A Room's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    pub namespace: String,
    pub name: String,
}

/// An SfuNode's namespace and name. Rooms are only placed on nodes of their own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    pub namespace: String,
    pub name: String,
}

impl RoomKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RoomKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Room; `None` for an object the apiserver has not completed yet.
    pub fn of(room: &Room) -> Option<Self> {
        Some(RoomKey::new(
            room.metadata.namespace.clone()?,
            room.metadata.name.clone()?,
        ))
    }

    /// The node of this room's namespace with the given name.
    pub fn node(&self, name: impl Into<String>) -> NodeKey {
        NodeKey::new(self.namespace.clone(), name)
    }
}

impl NodeKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NodeKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an SfuNode; `None` for an object the apiserver has not completed yet.
    pub fn of(node: &SfuNode) -> Option<Self> {
        Some(NodeKey::new(
            node.metadata.namespace.clone()?,
            node.metadata.name.clone()?,
        ))
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

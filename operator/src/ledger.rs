//! The placement ledger: how many participant slots and rooms each SfuNode carries.
//!
//! It is level-based. Every time placement decides, the ledger is rebuilt from three sources,
//! never kept as a running counter that could drift:
//! 1. Room statuses: a Placed room counts on its `status.sfuNode` with its
//!    `status.reservedParticipants`.
//! 2. Unexpired `status.reservations` on each SfuNode: slots promised (by this or another
//!    replica) to rooms whose own status this replica may not have seen yet.
//! 3. This replica's in-flight reservations, written to neither place yet.
//!
//! A room is counted at most once per node (entries are keyed by the room's uid), so the three
//! sources overlap safely. Pure: no I/O, no clock (the caller passes `now`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::jiff::Timestamp;
use switchboard_crds::{Room, RoomPhase, SfuNode};

use crate::keys::NodeKey;

/// One slot reservation this replica holds but has not seen reflected yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReservation {
    pub node: NodeKey,
    pub room_uid: String,
    pub participants: u32,
    pub expires_at: Timestamp,
}

/// Room uid -> slots, per node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    books: HashMap<NodeKey, BTreeMap<String, u32>>,
    /// The earliest expiry among reservations that still count, to know when capacity frees.
    pub next_expiry: Option<Timestamp>,
}

/// Totals for one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub participants: u32,
    pub rooms: u32,
}

impl Ledger {
    /// Rebuilds the ledger from the three sources.
    pub fn build<'a>(
        rooms: impl IntoIterator<Item = &'a Room>,
        nodes: impl IntoIterator<Item = &'a SfuNode>,
        local: impl IntoIterator<Item = &'a LocalReservation>,
        now: Timestamp,
    ) -> Self {
        let mut ledger = Ledger::default();
        for room in rooms {
            let (Some(namespace), Some(uid), Some(status)) = (
                room.metadata.namespace.as_ref(),
                room.metadata.uid.as_ref(),
                room.status.as_ref(),
            ) else {
                continue;
            };
            if status.phase != Some(RoomPhase::Placed) {
                continue;
            }
            if let Some(node) = &status.sfu_node {
                let slots = status
                    .reserved_participants
                    .unwrap_or(room.spec.max_participants);
                ledger
                    .books
                    .entry(NodeKey::new(namespace.clone(), node.clone()))
                    .or_default()
                    .insert(uid.clone(), slots);
            }
        }
        for node in nodes {
            let (Some(namespace), Some(name)) = (
                node.metadata.namespace.as_ref(),
                node.metadata.name.as_ref(),
            ) else {
                continue;
            };
            let Some(status) = node.status.as_ref() else {
                continue;
            };
            for reservation in &status.reservations {
                if reservation.expires_at.0 > now {
                    ledger.add_if_absent(
                        NodeKey::new(namespace.clone(), name.clone()),
                        &reservation.uid,
                        reservation.participants,
                        reservation.expires_at.0,
                    );
                }
            }
        }
        for reservation in local {
            if reservation.expires_at > now {
                ledger.add_if_absent(
                    reservation.node.clone(),
                    &reservation.room_uid,
                    reservation.participants,
                    reservation.expires_at,
                );
            }
        }
        ledger
    }

    fn add_if_absent(
        &mut self,
        node: NodeKey,
        uid: &str,
        participants: u32,
        expires_at: Timestamp,
    ) {
        let book = self.books.entry(node).or_default();
        if !book.contains_key(uid) {
            book.insert(uid.to_owned(), participants);
            self.next_expiry = Some(self.next_expiry.map_or(expires_at, |t| t.min(expires_at)));
        }
    }

    /// The load on a node, leaving out one room (the room being decided must not count
    /// against itself).
    pub fn load_excluding(&self, node: &NodeKey, room_uid: Option<&str>) -> Load {
        let Some(book) = self.books.get(node) else {
            return Load::default();
        };
        let mut load = Load::default();
        for (uid, slots) in book {
            if Some(uid.as_str()) != room_uid {
                load.participants = load.participants.saturating_add(*slots);
                load.rooms += 1;
            }
        }
        load
    }

    /// The load on a node.
    pub fn load(&self, node: &NodeKey) -> Load {
        self.load_excluding(node, None)
    }

    /// Records a new reservation made during a batch, so later rooms in the same batch see it.
    /// Returns false when the room already counted on that node (so its load did not grow).
    pub fn reserve(&mut self, node: NodeKey, room_uid: &str, participants: u32) -> bool {
        self.books
            .entry(node)
            .or_default()
            .insert(room_uid.to_owned(), participants)
            .is_none()
    }

    /// True when any room still counts on the node.
    pub fn has_rooms(&self, node: &NodeKey) -> bool {
        self.books.get(node).is_some_and(|b| !b.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn room(uid: &str, node: Option<&str>, reserved: u32) -> Room {
        serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "Room",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"maxParticipants": reserved},
            "status": node.map(|n| json!({"phase": "Placed", "sfuNode": n, "reservedParticipants": reserved}))
        }))
        .unwrap()
    }

    fn node(name: &str, reservations: &[(&str, u32, i64)]) -> SfuNode {
        let mut n: SfuNode = serde_json::from_value(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"url": "wss://x", "region": "eu", "capacity": {"participants": 100}}
        }))
        .unwrap();
        let mut status = switchboard_crds::SfuNodeStatus::default();
        for (uid, p, exp) in reservations {
            status.reservations.push(switchboard_crds::SlotReservation {
                room: uid.to_string(),
                uid: uid.to_string(),
                participants: *p,
                expires_at: Time(Timestamp::from_second(*exp).unwrap()),
            });
        }
        n.status = Some(status);
        n
    }

    fn key(n: &str) -> NodeKey {
        NodeKey::new("ns", n)
    }

    #[test]
    fn counts_each_room_once_across_sources() {
        let now = Timestamp::from_second(1000).unwrap();
        let rooms = [room("a", Some("n1"), 5), room("b", None, 7)];
        // "a" is both placed and reserved on n1; "b" is only reserved (status not seen yet);
        // "c" has an expired reservation; "d" is a local in-flight reservation.
        let nodes = [node("n1", &[("a", 5, 2000), ("b", 7, 2000), ("c", 9, 900)])];
        let local = [LocalReservation {
            node: key("n1"),
            room_uid: "d".into(),
            participants: 3,
            expires_at: Timestamp::from_second(2000).unwrap(),
        }];
        let ledger = Ledger::build(&rooms, &nodes, &local, now);
        assert_eq!(
            ledger.load(&key("n1")),
            Load {
                participants: 15,
                rooms: 3
            }
        );
        assert_eq!(
            ledger.load_excluding(&key("n1"), Some("b")),
            Load {
                participants: 8,
                rooms: 2
            }
        );
        assert_eq!(ledger.load(&key("n2")), Load::default());
    }

    #[test]
    fn unplaced_rooms_do_not_count() {
        let now = Timestamp::from_second(1000).unwrap();
        let ledger = Ledger::build(&[room("a", None, 5)], &[], &[], now);
        assert!(!ledger.has_rooms(&key("n1")));
    }
}

//! A fixed list of SFU nodes, placed in this process (dev mode): the nodes come from `--sfu`
//! flags or SfuNode YAML files, and rooms are placed on them by the same placement module as
//! the operator's ([`switchboard_placement`]), sticky and never over capacity, for as long as
//! the process runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use serde::Deserialize;
use switchboard_crds::SfuNode;
use switchboard_placement::{NodeView, RegionPolicy, RoomRequest, Strategy, place};

use super::{ResolveError, RoomInfo, RoomSource};
use crate::ids::{Region, RoomId};
use crate::protocol::SfuInfo;

/// Why the fixed node list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixedError {
    #[error("--sfu {0:?}: expected NAME=URL")]
    BadSfuFlag(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index} is not an SfuNode: {source}")]
    NotAnSfuNode {
        path: String,
        index: usize,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path}: document {index} is an SfuNode without metadata.name")]
    Unnamed { path: String, index: usize },
    #[error("two SFU nodes are named {0:?}")]
    Duplicate(String),
}

/// One SFU node of the fixed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedNode {
    pub name: String,
    pub url: String,
    pub region: String,
    pub capacity: u32,
    pub max_rooms: Option<u32>,
    pub turn_urls: Vec<String>,
}

impl FixedNode {
    /// `NAME=URL` from `--sfu`, in region `local` with room for 1,000 participants.
    pub fn from_flag(flag: &str) -> Result<Self, FixedError> {
        let (name, url) = flag
            .split_once('=')
            .filter(|(name, url)| !name.is_empty() && !url.is_empty())
            .ok_or_else(|| FixedError::BadSfuFlag(flag.to_owned()))?;
        Ok(FixedNode {
            name: name.to_owned(),
            url: url.to_owned(),
            region: "local".to_owned(),
            capacity: 1000,
            max_rooms: None,
            turn_urls: Vec::new(),
        })
    }

    /// The SfuNode objects of a YAML file (several documents allowed), as for `kubectl apply`.
    pub fn from_yaml_file(path: &Path) -> Result<Vec<Self>, FixedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixedError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut nodes = Vec::new();
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_norway::Value::deserialize(document).map_err(|source| {
                FixedError::NotAnSfuNode {
                    path: shown.clone(),
                    index,
                    source,
                }
            })?;
            if value.is_null() {
                continue;
            }
            let node: SfuNode =
                serde_norway::from_value(value).map_err(|source| FixedError::NotAnSfuNode {
                    path: shown.clone(),
                    index,
                    source,
                })?;
            let name = node.metadata.name.clone().ok_or(FixedError::Unnamed {
                path: shown.clone(),
                index,
            })?;
            nodes.push(FixedNode {
                name,
                url: node.spec.url.clone(),
                region: node.spec.region.clone(),
                capacity: node.spec.capacity.participants,
                max_rooms: node.spec.capacity.rooms,
                turn_urls: node
                    .spec
                    .turn
                    .as_ref()
                    .map(|t| t.urls.clone())
                    .unwrap_or_default(),
            });
        }
        Ok(nodes)
    }
}

/// Sticky, least-loaded placement of rooms on a fixed list of nodes, as the operator does it:
/// each room reserves its `max_participants` on its node for as long as the process runs.
#[derive(Debug)]
pub struct FixedPlacement {
    nodes: Vec<FixedNode>,
    max_participants: u32,
    placed: Mutex<HashMap<RoomId, String>>,
}

impl FixedPlacement {
    pub fn new(nodes: Vec<FixedNode>, max_participants: u32) -> Result<Self, FixedError> {
        let mut seen = std::collections::HashSet::new();
        for node in &nodes {
            if !seen.insert(node.name.clone()) {
                return Err(FixedError::Duplicate(node.name.clone()));
            }
        }
        Ok(FixedPlacement {
            nodes,
            max_participants,
            placed: Mutex::new(HashMap::new()),
        })
    }

    pub fn nodes(&self) -> &[FixedNode] {
        &self.nodes
    }

    /// The room's node, placing it on first use. Without nodes, rooms are peer-to-peer only
    /// (no SFU in `joined`).
    pub fn place_room(
        &self,
        room: &RoomId,
        region: Option<&Region>,
    ) -> Result<RoomInfo, ResolveError> {
        let info = |node: &FixedNode| RoomInfo {
            max_participants: self.max_participants,
            sfu: Some(SfuInfo {
                node: node.name.clone(),
                url: node.url.clone(),
            }),
            turn_urls: node.turn_urls.clone(),
        };
        if self.nodes.is_empty() {
            return Ok(RoomInfo {
                max_participants: self.max_participants,
                sfu: None,
                turn_urls: Vec::new(),
            });
        }
        let mut placed = self.placed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = placed
            .get(room)
            .and_then(|name| self.nodes.iter().find(|n| &n.name == name))
        {
            return Ok(info(node));
        }
        let views: Vec<NodeView> = self
            .nodes
            .iter()
            .map(|node| {
                let rooms = placed.values().filter(|n| **n == node.name).count() as u32;
                NodeView {
                    name: node.name.clone(),
                    region: node.region.clone(),
                    labels: Default::default(),
                    health: switchboard_placement::Health::Ready,
                    cordoned: false,
                    deleting: false,
                    capacity: node.capacity,
                    max_rooms: node.max_rooms,
                    allocated: rooms.saturating_mul(self.max_participants),
                    rooms,
                }
            })
            .collect();
        let request = RoomRequest {
            key: room.as_str().to_owned(),
            participants: self.max_participants,
            region: region.map(|r| r.as_str().to_owned()),
            region_policy: RegionPolicy::Preferred,
            selector: None,
        };
        let chosen = place(&views, &request, Strategy::LeastLoaded)
            .map_err(|no_fit| ResolveError::NoFit(format!("{no_fit}")))?;
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == chosen.node)
            .ok_or_else(|| ResolveError::NoFit(format!("unknown node {}", chosen.node)))?;
        tracing::info!(room = %room.as_str(), node = %node.name, "placed room");
        placed.insert(room.clone(), node.name.clone());
        Ok(info(node))
    }
}

impl RoomSource for FixedPlacement {
    fn resolve<'a>(
        &'a self,
        room: &'a RoomId,
        region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>> {
        Box::pin(std::future::ready(self.place_room(room, region)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, capacity: u32) -> FixedNode {
        FixedNode {
            capacity,
            ..FixedNode::from_flag(&format!("{name}=https://{name}.test")).unwrap()
        }
    }

    #[test]
    fn rooms_spread_stick_and_never_overfill() {
        let placement = FixedPlacement::new(vec![node("a", 20), node("b", 20)], 10).unwrap();
        let room = |n: usize| RoomId::parse(&format!("r{n}")).unwrap();
        let first = placement
            .place_room(&room(0), None)
            .unwrap()
            .sfu
            .unwrap()
            .node;
        let second = placement
            .place_room(&room(1), None)
            .unwrap()
            .sfu
            .unwrap()
            .node;
        assert_ne!(first, second, "least loaded spreads rooms");
        assert_eq!(
            placement
                .place_room(&room(0), None)
                .unwrap()
                .sfu
                .unwrap()
                .node,
            first,
            "sticky"
        );
        placement.place_room(&room(2), None).unwrap();
        placement.place_room(&room(3), None).unwrap();
        let full = placement.place_room(&room(4), None).unwrap_err();
        assert!(matches!(full, ResolveError::NoFit(_)), "{full}");
    }

    #[test]
    fn sfu_flags_and_yaml_files_are_read() {
        assert!(FixedNode::from_flag("nourl").is_err());
        assert!(FixedNode::from_flag("=x").is_err());
        let dir = tempfile_dir();
        let path = dir.join("nodes.yaml");
        std::fs::write(
            &path,
            "apiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {name: eu-1}\nspec:\n  url: https://eu-1.test\n  region: eu\n  capacity: {participants: 100, rooms: 5}\n  turn: {urls: ['turn:eu.test:3478']}\n---\napiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {name: us-1}\nspec: {url: 'https://us-1.test', region: us, capacity: {participants: 50}}\n",
        )
        .unwrap();
        let nodes = FixedNode::from_yaml_file(&path).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].turn_urls, ["turn:eu.test:3478"]);
        assert_eq!(nodes[1].region, "us");
        std::fs::write(&path, "kind: SfuNode\nspec: {}\n").unwrap();
        let error = FixedNode::from_yaml_file(&path).unwrap_err();
        assert!(error.to_string().contains("document 0"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-fixed-test-{}",
            getrandom::u64().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

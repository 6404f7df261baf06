//! A fixed list of SFU nodes, placed in this process (dev mode): the nodes come from `--sfu`
//! flags or SfuNode YAML files, and rooms are placed on them by the same placement module as
//! the operator's ([`switchboard_placement`]), sticky and never over capacity, for as long as
//! the process runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use switchboard_crds::SfuNode;
use switchboard_placement::{NodeView, RegionPolicy, RoomRequest, Strategy, place};
use switchboard_sfu::SfuKind;
use switchboard_sfu::janus::{self, JanusCredentials};

use super::{JanusRoom, ResolveError, RoomInfo, RoomSource, SfuRoute};
use crate::ids::{Region, RoomId};

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
    #[error("{path}: document {index} is a Secret that cannot be read: {message}")]
    BadSecret {
        path: String,
        index: usize,
        message: String,
    },
    #[error(
        "SFU node {node}: kind {kind} needs spec.admin (the admin API URL and credentials Secret)"
    )]
    NoAdmin { node: String, kind: &'static str },
    #[error(
        "SFU node {node}: its credentials Secret {secret:?} is not in the --sfu-file files (add it as a Secret document)"
    )]
    NoCredentials { node: String, secret: String },
    #[error("SFU node {node}: Secret {secret}: {source}")]
    Credentials {
        node: String,
        secret: String,
        #[source]
        source: switchboard_sfu::SfuError,
    },
    #[error("cannot make the HTTP client for SFU admin APIs: {0}")]
    HttpClient(String),
    #[error("SFU node {node}: admin URL {url:?} must be http:// (dev mode talks to local SFUs)")]
    AdminUrl { node: String, url: String },
}

/// A Janus node of the fixed list: dev mode creates rooms on it itself, as the operator does.
#[derive(Clone, PartialEq, Eq)]
pub struct FixedJanus {
    /// The admin API (`message_plugin` creates rooms without a Janus session).
    pub admin_url: String,
    pub credentials: JanusCredentials,
}

impl std::fmt::Debug for FixedJanus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedJanus")
            .field("admin_url", &self.admin_url)
            .finish_non_exhaustive()
    }
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
    /// Set for `JanusVideoRoom` nodes.
    pub janus: Option<FixedJanus>,
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
            janus: None,
        })
    }

    /// The SfuNode objects of a YAML file (several documents allowed), as for `kubectl apply`.
    /// `JanusVideoRoom` nodes find their credentials in Secret documents of the same file.
    pub fn from_yaml_file(path: &Path) -> Result<Vec<Self>, FixedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixedError::Read {
            path: shown.clone(),
            source,
        })?;
        let not_a_node = |index, source| FixedError::NotAnSfuNode {
            path: shown.clone(),
            index,
            source,
        };
        let mut found = Vec::new();
        let mut secrets: HashMap<String, BTreeMap<String, Vec<u8>>> = HashMap::new();
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value =
                serde_norway::Value::deserialize(document).map_err(|e| not_a_node(index, e))?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(|k| k.as_str()) == Some("Secret") {
                let (name, data) =
                    secret_data(&value).map_err(|message| FixedError::BadSecret {
                        path: shown.clone(),
                        index,
                        message,
                    })?;
                secrets.insert(name, data);
                continue;
            }
            let node: SfuNode =
                serde_norway::from_value(value).map_err(|e| not_a_node(index, e))?;
            let name = node.metadata.name.clone().ok_or(FixedError::Unnamed {
                path: shown.clone(),
                index,
            })?;
            found.push((name, node));
        }
        let mut nodes = Vec::new();
        for (name, node) in found {
            let janus = match node.spec.kind {
                SfuKind::Opaque => None,
                SfuKind::JanusVideoRoom => Some(janus_of(&name, &node, &secrets)?),
            };
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
                janus,
            });
        }
        Ok(nodes)
    }
}

/// A Secret document's name and data (`data` in base64, `stringData` as text, as the API
/// server would merge them).
fn secret_data(value: &serde_norway::Value) -> Result<(String, BTreeMap<String, Vec<u8>>), String> {
    let secret: Secret = serde_norway::from_value(value.clone()).map_err(|e| e.to_string())?;
    let name = secret
        .metadata
        .name
        .ok_or_else(|| "it has no metadata.name".to_owned())?;
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    for (key, value) in secret.string_data.unwrap_or_default() {
        data.insert(key, value.into_bytes());
    }
    Ok((name, data))
}

/// A Janus node's admin URL and credentials, from the Secrets of the same files.
fn janus_of(
    name: &str,
    node: &SfuNode,
    secrets: &HashMap<String, BTreeMap<String, Vec<u8>>>,
) -> Result<FixedJanus, FixedError> {
    let admin = node
        .spec
        .admin
        .as_ref()
        .ok_or_else(|| FixedError::NoAdmin {
            node: name.to_owned(),
            kind: node.spec.kind.as_str(),
        })?;
    if !admin.url.starts_with("http://") {
        return Err(FixedError::AdminUrl {
            node: name.to_owned(),
            url: admin.url.clone(),
        });
    }
    let data = secrets
        .get(&admin.credentials_secret)
        .ok_or_else(|| FixedError::NoCredentials {
            node: name.to_owned(),
            secret: admin.credentials_secret.clone(),
        })?;
    let credentials =
        JanusCredentials::from_secret_data(data).map_err(|source| FixedError::Credentials {
            node: name.to_owned(),
            secret: admin.credentials_secret.clone(),
            source,
        })?;
    Ok(FixedJanus {
        admin_url: admin.url.clone(),
        credentials,
    })
}

/// Sticky, least-loaded placement of rooms on a fixed list of nodes, as the operator does it:
/// each room reserves its `max_participants` on its node for as long as the process runs.
#[derive(Debug)]
pub struct FixedPlacement {
    nodes: Vec<FixedNode>,
    max_participants: u32,
    placed: Mutex<HashMap<RoomId, String>>,
    /// Rooms created on their Janus node by this process.
    provisioned: tokio::sync::Mutex<HashSet<RoomId>>,
    http: reqwest::Client,
}

impl FixedPlacement {
    pub fn new(nodes: Vec<FixedNode>, max_participants: u32) -> Result<Self, FixedError> {
        let mut seen = HashSet::new();
        for node in &nodes {
            if !seen.insert(node.name.clone()) {
                return Err(FixedError::Duplicate(node.name.clone()));
            }
        }
        Ok(FixedPlacement {
            nodes,
            max_participants,
            placed: Mutex::new(HashMap::new()),
            provisioned: tokio::sync::Mutex::new(HashSet::new()),
            http: admin_client()?,
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
            sfu: Some(route_of(node, room)),
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

/// The HTTP client for SFU admin APIs. reqwest's rustls has no built-in crypto provider
/// (feature `rustls-no-provider`, shared with the operator): install ring's, as kube uses.
fn admin_client() -> Result<reqwest::Client, FixedError> {
    if rustls::crypto::CryptoProvider::get_default().is_none()
        && rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        && rustls::crypto::CryptoProvider::get_default().is_none()
    {
        return Err(FixedError::HttpClient("no TLS crypto provider".to_owned()));
    }
    reqwest::Client::builder()
        .timeout(JANUS_ADMIN_TIMEOUT)
        .build()
        .map_err(|error| FixedError::HttpClient(error.to_string()))
}

/// How long dev mode waits for a Janus admin API answer.
const JANUS_ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The room's id on Janus in dev mode: no namespace or uid, so `dev` and the room id stand in.
fn dev_janus_room(room: &RoomId) -> String {
    janus::room_id("dev", room.as_str(), "dev")
}

/// The route to a room on `node`; for Janus, with its room id, pin and token secret.
fn route_of(node: &FixedNode, room: &RoomId) -> SfuRoute {
    let mut route = SfuRoute::opaque(node.name.clone(), node.url.clone(), 0);
    if let Some(janus) = &node.janus {
        let sfu_room = dev_janus_room(room);
        route.kind = SfuKind::JanusVideoRoom.as_str().to_owned();
        route.janus = Some(JanusRoom {
            pin: janus::room_pin(&janus.credentials.room_admin_key, &sfu_room),
            room: sfu_room,
            token_secret: janus.credentials.token_secret.clone(),
        });
    }
    route
}

/// Creates the room on Janus through the admin API's `message_plugin` (no Janus session
/// needed), with its pin and publisher limit; a room that exists already (427) is fine.
async fn create_janus_room(
    http: &reqwest::Client,
    node: &FixedNode,
    janus: &FixedJanus,
    room: &JanusRoom,
    publishers: u32,
) -> Result<(), ResolveError> {
    let failed = |message: String| ResolveError::Provision {
        node: node.name.clone(),
        message,
    };
    let body = serde_json::json!({
        "janus": "message_plugin",
        "transaction": format!("sb-{}", room.room),
        "admin_secret": janus.credentials.admin_secret,
        "plugin": janus::VIDEOROOM_PLUGIN,
        "request": {
            "request": "create",
            "room": room.room,
            "admin_key": janus.credentials.room_admin_key,
            "pin": room.pin,
            "publishers": publishers,
            "permanent": false,
        },
    });
    let response = http
        .post(&janus.admin_url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| failed(format!("admin API {}: {e}", janus.admin_url)))?;
    let text = response
        .text()
        .await
        .map_err(|e| failed(format!("admin API answer: {e}")))?;
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| failed(format!("admin API answer {text:?}: {e}")))?;
    let plugin = &answer["response"];
    let created = answer["janus"] == "success"
        && (plugin["videoroom"] == "created" || plugin["error_code"] == ROOM_EXISTS);
    if !created {
        return Err(failed(format!("cannot create room {}: {text}", room.room)));
    }
    tracing::info!(node = %node.name, sfu_room = %room.room, "created the room on Janus");
    Ok(())
}

/// The VideoRoom plugin's "room already exists" error code.
const ROOM_EXISTS: u32 = 427;

impl RoomSource for FixedPlacement {
    fn resolve<'a>(
        &'a self,
        room: &'a RoomId,
        region: Option<&'a Region>,
    ) -> BoxFuture<'a, Result<RoomInfo, ResolveError>> {
        Box::pin(async move {
            let info = self.place_room(room, region)?;
            if let Some(route) = &info.sfu
                && let Some(node) = self.nodes.iter().find(|n| n.name == route.node)
                && let (Some(janus), Some(janus_room)) = (&node.janus, &route.janus)
            {
                // Under one lock: two first joins must not both create the room.
                let mut provisioned = self.provisioned.lock().await;
                if !provisioned.contains(room) {
                    create_janus_room(&self.http, node, janus, janus_room, self.max_participants)
                        .await?;
                    provisioned.insert(room.clone());
                }
            }
            Ok(info)
        })
    }

    fn current_sfu<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Option<SfuRoute>> {
        let placed = self.placed.lock().unwrap_or_else(PoisonError::into_inner);
        let route = placed
            .get(room)
            .and_then(|name| self.nodes.iter().find(|n| &n.name == name))
            .map(|node| route_of(node, room));
        Box::pin(std::future::ready(route))
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

    /// Janus nodes find their credentials in the same file; a missing Secret, admin block or
    /// key is refused with the node and what is missing named.
    #[test]
    fn janus_nodes_take_their_credentials_from_secret_documents() {
        let dir = tempfile_dir();
        let path = dir.join("janus.yaml");
        let node = "apiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {name: janus-a}\nspec:\n  url: ws://127.0.0.1:8188\n  region: local\n  capacity: {participants: 10}\n  kind: JanusVideoRoom\n  admin: {url: 'http://127.0.0.1:7088/admin', credentialsSecret: janus-a-credentials}\n";
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: janus-a-credentials}\nstringData: {tokenSecret: tok, adminSecret: adm}\ndata: {roomAdminKey: a2V5}\n";
        std::fs::write(&path, format!("{node}{secret}")).unwrap();
        let nodes = FixedNode::from_yaml_file(&path).unwrap();
        assert_eq!(nodes.len(), 1, "the Secret is not a node");
        let janus = nodes[0].janus.as_ref().unwrap();
        assert_eq!(janus.admin_url, "http://127.0.0.1:7088/admin");
        assert_eq!(janus.credentials.token_secret, b"tok");
        assert_eq!(janus.credentials.room_admin_key, "key", "data is base64");
        let room = RoomId::parse("standup").unwrap();
        let route = route_of(&nodes[0], &room);
        assert_eq!(route.kind, "JanusVideoRoom");
        let on_janus = route.janus.as_ref().unwrap();
        assert_eq!(on_janus.room, janus::room_id("dev", "standup", "dev"));
        assert_eq!(on_janus.pin, janus::room_pin("key", &on_janus.room));
        let sfu = route.for_participant(1_000, Duration::from_secs(60));
        assert_eq!(sfu.token_expires_at, Some(1_060));
        assert_eq!(
            sfu.token.as_deref(),
            Some(janus::mint_token(b"tok", 1_060, &[janus::VIDEOROOM_PLUGIN]).as_str())
        );

        std::fs::write(&path, node).unwrap();
        let error = FixedNode::from_yaml_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("janus-a-credentials") && error.contains("not in the --sfu-file"),
            "{error}"
        );
        std::fs::write(
            &path,
            format!(
                "{node}{}",
                secret.replace("data: {roomAdminKey: a2V5}\n", "")
            ),
        )
        .unwrap();
        let error = FixedNode::from_yaml_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("janus-a") && error.contains("roomAdminKey"),
            "{error}"
        );
        std::fs::write(&path, node.replace("  admin: {url: 'http://127.0.0.1:7088/admin', credentialsSecret: janus-a-credentials}\n", "")).unwrap();
        let error = FixedNode::from_yaml_file(&path).unwrap_err().to_string();
        assert!(error.contains("needs spec.admin"), "{error}");
        std::fs::write(
            &path,
            format!("{}{secret}", node.replace("http://", "https://")),
        )
        .unwrap();
        let error = FixedNode::from_yaml_file(&path).unwrap_err().to_string();
        assert!(error.contains("must be http://"), "{error}");
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

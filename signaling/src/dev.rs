//! Dev mode (`switchboard-signaling dev`): the whole system in one process, with no
//! Kubernetes and no Redis. Rooms are placed on a static list of SFU nodes by the same
//! placement module as the operator's ([`switchboard_placement`]), room state is in memory,
//! join tokens are signed with a key generated at start, and the demo page and its
//! JavaScript client are served from `/`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use switchboard_crds::SfuNode;
use switchboard_placement::{NodeView, RegionPolicy, RoomRequest, Strategy, place};

use crate::auth::{Hs256Signer, MintClaims};
use crate::config::{AuthArgs, DevArgs, KubeArgs, ServeArgs, StateArgs};
use crate::ids::{DisplayName, Region, RoomId, UserId};
use crate::protocol::SfuInfo;
use crate::rooms::{ResolveError, RoomInfo};
use crate::server::ServerError;

/// Why the static node list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
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
    #[error("cannot make the dev signing key: {0}")]
    Key(String),
}

/// What dev mode adds to the server: in-process placement and the token endpoint.
pub struct DevMode {
    pub placement: Arc<StaticPlacement>,
    pub signer: Hs256Signer,
}

/// The demo page and its scripts, served by dev mode. The client module is the one app
/// developers use (`docs/protocol.md`).
const DEMO_HTML: &str = include_str!("../web/index.html");
const DEMO_JS: &str = include_str!("../web/demo.js");
const CLIENT_JS: &str = include_str!("../web/switchboard.js");

/// Runs dev mode until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), ServerError> {
    let mut nodes = Vec::new();
    for flag in &args.sfu {
        nodes.push(StaticNode::from_flag(flag)?);
    }
    for path in &args.sfu_files {
        nodes.extend(StaticNode::from_yaml_file(path)?);
    }
    let placement = Arc::new(StaticPlacement::new(
        nodes,
        args.limits.default_max_participants,
    )?);
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| DevError::Key(e.to_string()))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let signer = Hs256Signer::new(Some("dev"), secret.as_bytes())
        .map_err(|e| DevError::Key(e.to_string()))?;
    let serve = ServeArgs {
        listen: args.listen,
        auth: AuthArgs {
            hs256: vec![format!("dev={secret}")],
            public_keys: Vec::new(),
            audience: None,
            issuer: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            leeway: Duration::from_secs(30),
        },
        turn: args.turn,
        limits: args.limits,
        kube: KubeArgs {
            namespace: None,
            auto_create: false,
            auto_create_max_participants: 50,
            auto_create_empty_timeout: Duration::from_secs(300),
            placement_wait: Duration::from_secs(5),
        },
        state: StateArgs {
            redis_url: None,
            redis_cluster: false,
            participant_ttl: args.participant_ttl,
            mailbox_len: crate::store::DEFAULT_MAILBOX_LEN,
            pod_name: Some("dev".to_owned()),
        },
        log_format: args.log_format,
        demo: true,
    };
    for node in placement.nodes() {
        tracing::info!(node = %node.name, url = %node.url, region = %node.region, "SFU node");
    }
    crate::server::serve_with(serve, Some(DevMode { placement, signer })).await
}

/// The demo page and its scripts (dev mode, and `serve --demo`). Without `/dev/token` the page
/// needs a `?token=` minted by the app's backend (or `switchboard-signaling token`).
pub fn demo_routes() -> Router {
    Router::new()
        .route("/", get(|| async { html(DEMO_HTML) }))
        .route("/demo.js", get(|| async { javascript(DEMO_JS) }))
        .route("/switchboard.js", get(|| async { javascript(CLIENT_JS) }))
}

/// Dev mode's `/dev/token`, signed with the generated key.
pub fn token_route(signer: Arc<Hs256Signer>) -> Router {
    Router::new()
        .route("/dev/token", get(mint_token))
        .with_state(signer)
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn javascript(body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    room: String,
    user: String,
    name: Option<String>,
}

/// `GET /dev/token?room=R&user=U[&name=N]`: a 10-minute join token, so the demo page can
/// join without a backend. Dev mode only: anyone who can reach it can join any room.
async fn mint_token(
    State(signer): State<Arc<Hs256Signer>>,
    Query(query): Query<TokenQuery>,
) -> Response {
    let bad = |what: &str, error: &dyn std::fmt::Display| {
        let body =
            serde_json::json!({"error": "bad_request", "message": format!("{what}: {error}")});
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let room = match RoomId::parse(&query.room) {
        Ok(room) => room,
        Err(error) => return bad("room", &error),
    };
    let user = match UserId::parse(&query.user) {
        Ok(user) => user,
        Err(error) => return bad("user", &error),
    };
    let mut claims = MintClaims::new(user, room, SystemTime::now(), Duration::from_secs(600));
    if let Some(name) = &query.name {
        match DisplayName::parse(name) {
            Ok(name) => claims.name = Some(name),
            Err(error) => return bad("name", &error),
        }
    }
    match signer.mint(&claims) {
        Ok(token) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "token": token }).to_string(),
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

/// One SFU node of the static list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    pub name: String,
    pub url: String,
    pub region: String,
    pub capacity: u32,
    pub max_rooms: Option<u32>,
    pub turn_urls: Vec<String>,
}

impl StaticNode {
    /// `NAME=URL` from `--sfu`, in region `local` with room for 1,000 participants.
    pub fn from_flag(flag: &str) -> Result<Self, DevError> {
        let (name, url) = flag
            .split_once('=')
            .filter(|(name, url)| !name.is_empty() && !url.is_empty())
            .ok_or_else(|| DevError::BadSfuFlag(flag.to_owned()))?;
        Ok(StaticNode {
            name: name.to_owned(),
            url: url.to_owned(),
            region: "local".to_owned(),
            capacity: 1000,
            max_rooms: None,
            turn_urls: Vec::new(),
        })
    }

    /// The SfuNode objects of a YAML file (several documents allowed), as for `kubectl apply`.
    pub fn from_yaml_file(path: &Path) -> Result<Vec<Self>, DevError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DevError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut nodes = Vec::new();
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_norway::Value::deserialize(document).map_err(|source| {
                DevError::NotAnSfuNode {
                    path: shown.clone(),
                    index,
                    source,
                }
            })?;
            if value.is_null() {
                continue;
            }
            let node: SfuNode =
                serde_norway::from_value(value).map_err(|source| DevError::NotAnSfuNode {
                    path: shown.clone(),
                    index,
                    source,
                })?;
            let name = node.metadata.name.clone().ok_or(DevError::Unnamed {
                path: shown.clone(),
                index,
            })?;
            nodes.push(StaticNode {
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
pub struct StaticPlacement {
    nodes: Vec<StaticNode>,
    max_participants: u32,
    placed: Mutex<HashMap<RoomId, String>>,
}

impl StaticPlacement {
    pub fn new(nodes: Vec<StaticNode>, max_participants: u32) -> Result<Self, DevError> {
        let mut seen = std::collections::HashSet::new();
        for node in &nodes {
            if !seen.insert(node.name.clone()) {
                return Err(DevError::Duplicate(node.name.clone()));
            }
        }
        Ok(StaticPlacement {
            nodes,
            max_participants,
            placed: Mutex::new(HashMap::new()),
        })
    }

    pub fn nodes(&self) -> &[StaticNode] {
        &self.nodes
    }

    /// The room's node, placing it on first use. Without nodes, rooms are peer-to-peer only
    /// (no SFU in `joined`).
    pub fn resolve(
        &self,
        room: &RoomId,
        region: Option<&Region>,
    ) -> Result<RoomInfo, ResolveError> {
        let info = |node: &StaticNode| RoomInfo {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, capacity: u32) -> StaticNode {
        StaticNode {
            capacity,
            ..StaticNode::from_flag(&format!("{name}=https://{name}.test")).unwrap()
        }
    }

    #[test]
    fn rooms_spread_stick_and_never_overfill() {
        let placement = StaticPlacement::new(vec![node("a", 20), node("b", 20)], 10).unwrap();
        let room = |n: usize| RoomId::parse(&format!("r{n}")).unwrap();
        let first = placement.resolve(&room(0), None).unwrap().sfu.unwrap().node;
        let second = placement.resolve(&room(1), None).unwrap().sfu.unwrap().node;
        assert_ne!(first, second, "least loaded spreads rooms");
        assert_eq!(
            placement.resolve(&room(0), None).unwrap().sfu.unwrap().node,
            first,
            "sticky"
        );
        placement.resolve(&room(2), None).unwrap();
        placement.resolve(&room(3), None).unwrap();
        let full = placement.resolve(&room(4), None).unwrap_err();
        assert!(matches!(full, ResolveError::NoFit(_)), "{full}");
    }

    #[test]
    fn sfu_flags_and_yaml_files_are_read() {
        assert!(StaticNode::from_flag("nourl").is_err());
        assert!(StaticNode::from_flag("=x").is_err());
        let dir = tempfile_dir();
        let path = dir.join("nodes.yaml");
        std::fs::write(
            &path,
            "apiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {name: eu-1}\nspec:\n  url: https://eu-1.test\n  region: eu\n  capacity: {participants: 100, rooms: 5}\n  turn: {urls: ['turn:eu.test:3478']}\n---\napiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {name: us-1}\nspec: {url: 'https://us-1.test', region: us, capacity: {participants: 50}}\n",
        )
        .unwrap();
        let nodes = StaticNode::from_yaml_file(&path).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].turn_urls, ["turn:eu.test:3478"]);
        assert_eq!(nodes[1].region, "us");
        std::fs::write(&path, "kind: SfuNode\nspec: {}\n").unwrap();
        let error = StaticNode::from_yaml_file(&path).unwrap_err();
        assert!(error.to_string().contains("document 0"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-dev-test-{}",
            getrandom::u64().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

//! SFU adapters: how the operator drives each `SfuNode.spec.kind`.
//!
//! One variant of [`Adapter`] per kind, each in its own file. The pure half of every kind (ids,
//! pins, tokens, reading the credentials Secret) is in `switchboard-sfu`, shared with
//! signaling; this folder is the I/O half. docs/sfu.md is the contract a new kind implements:
//! `Opaque` does nothing, `JanusVideoRoom` talks to the Janus admin API (`janus.rs`). Adding a
//! kind is one file here, one variant in [`Adapter`] and one arm in [`Adapter::for_node`].
//!
//! Every operation is idempotent, so the operator may repeat any of them after a restart or a
//! failed write: creating a room that exists (with our id) succeeds, destroying one that does not
//! exist succeeds.

pub mod janus;
pub mod load;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use switchboard_crds::{SfuKind, SfuNode};

/// What went wrong driving an SFU.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("SfuNode {node} has kind {kind} but no spec.admin")]
    NoAdmin { node: String, kind: &'static str },
    #[error("cannot read credentials Secret {secret}: {source}")]
    Secret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("credentials Secret {secret}: {source}")]
    Credentials {
        secret: String,
        #[source]
        source: switchboard_sfu::SfuError,
    },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{what} refused: {code} {reason}")]
    Refused {
        what: &'static str,
        code: i64,
        reason: String,
    },
    #[error("{what}: unexpected answer from the SFU: {detail}")]
    BadAnswer { what: &'static str, detail: String },
}

impl SfuError {
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SfuError::NoAdmin { .. } => "no_admin",
            SfuError::Secret { .. } | SfuError::Credentials { .. } => "credentials",
            SfuError::Unreachable { .. } | SfuError::HttpStatus { .. } => "unreachable",
            SfuError::Refused { .. } => "refused",
            SfuError::BadAnswer { .. } => "bad_answer",
        }
    }
}

/// A room as the operator creates it on an SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuRoom {
    /// The room's id on the SFU (`Room.status.sfuRoom`).
    pub id: String,
    /// The most publishers (`Room.spec.maxParticipants`).
    pub publishers: u32,
}

/// What the SFU reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SfuLoad {
    pub sessions: u32,
    pub participants: u32,
}

/// The driver of one node.
pub enum Adapter {
    /// Nothing to create, read or destroy.
    Opaque,
    JanusVideoRoom(janus::JanusNode),
}

/// How long one admin request may take. Provisioning sits on the placement path, so a hung SFU
/// must fail fast and be retried, not stall the batch.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl Adapter {
    /// The adapter of a node: for kinds with an admin API, reads the node's credentials Secret.
    pub async fn for_node(
        client: &Client,
        http: &reqwest::Client,
        node: &SfuNode,
    ) -> Result<Adapter, SfuError> {
        match node.spec.kind {
            SfuKind::Opaque => Ok(Adapter::Opaque),
            SfuKind::JanusVideoRoom => {
                let admin = node.spec.admin.as_ref().ok_or_else(|| SfuError::NoAdmin {
                    node: node.metadata.name.clone().unwrap_or_default(),
                    kind: SfuKind::JanusVideoRoom.as_str(),
                })?;
                let namespace = node.metadata.namespace.clone().unwrap_or_default();
                let data = secret_data(client, &namespace, &admin.credentials_secret).await?;
                let credentials = switchboard_sfu::janus::JanusCredentials::from_secret_data(&data)
                    .map_err(|source| SfuError::Credentials {
                        secret: admin.credentials_secret.clone(),
                        source,
                    })?;
                Ok(Adapter::JanusVideoRoom(janus::JanusNode::new(
                    http.clone(),
                    admin.url.clone(),
                    credentials,
                )))
            }
        }
    }

    /// Creates the room, or confirms that our room of that id already exists.
    pub async fn create_room(&self, room: &SfuRoom) -> Result<(), SfuError> {
        match self {
            Adapter::Opaque => Ok(()),
            Adapter::JanusVideoRoom(node) => node.create_room(room).await,
        }
    }

    /// Destroys the room; a room that does not exist is already destroyed.
    pub async fn destroy_room(&self, id: &str) -> Result<(), SfuError> {
        match self {
            Adapter::Opaque => Ok(()),
            Adapter::JanusVideoRoom(node) => node.destroy_room(id).await,
        }
    }

    /// The ids of the rooms the SFU holds.
    pub async fn list_rooms(&self) -> Result<Vec<String>, SfuError> {
        match self {
            Adapter::Opaque => Ok(Vec::new()),
            Adapter::JanusVideoRoom(node) => node.list_rooms().await,
        }
    }

    /// Sessions and participants, as the SFU counts them. `None` for kinds that cannot say.
    pub async fn load(&self) -> Result<Option<SfuLoad>, SfuError> {
        match self {
            Adapter::Opaque => Ok(None),
            Adapter::JanusVideoRoom(node) => node.load().await.map(Some),
        }
    }

    /// Makes the SFU refuse new sessions (a node being drained).
    pub async fn stop_new_sessions(&self) -> Result<(), SfuError> {
        match self {
            Adapter::Opaque => Ok(()),
            Adapter::JanusVideoRoom(node) => node.accept_new_sessions(false).await,
        }
    }
}

/// The health endpoint of a kind, derived from the node's spec: `None` for `Opaque` (which
/// uses `spec.healthCheck` and/or heartbeats, if any). For `JanusVideoRoom`, `GET <admin url>/info`:
/// Janus answers it without the admin secret, with its `accepting-new-sessions` flag.
pub fn health_url(node: &SfuNode) -> Option<String> {
    match node.spec.kind {
        SfuKind::Opaque => None,
        SfuKind::JanusVideoRoom => node
            .spec
            .admin
            .as_ref()
            .map(|a| format!("{}/info", a.url.trim_end_matches('/'))),
    }
}

async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, SfuError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|source| SfuError::Secret {
        secret: name.to_owned(),
        source,
    })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

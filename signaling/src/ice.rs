//! The ICE servers handed to clients (`joined.iceServers`, `iceServersRefresh`), with TURN
//! credentials minted per participant with `switchboard_turn::credentials` (TURN REST API).
//!
//! The shared secret comes from the `current` key of the operator's Secret, watched so a
//! rotated secret is used as soon as the watch delivers it (well within 2 s), or from a
//! mounted file for setups without the Kubernetes API.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::protocol::IceServer;

/// The key of the operator's Secret that holds the secret to mint with.
pub const CURRENT_KEY: &str = "current";

/// The TURN shared secret to mint with.
#[derive(Clone, Default)]
pub enum SecretSource {
    /// No TURN: `iceServers` carry the URLs without credentials (STUN only).
    #[default]
    None,
    /// A file, re-read at every mint so a rotated mounted Secret is picked up.
    File(PathBuf),
    /// The operator's Secret, kept current by a watch.
    Watched(Arc<RwLock<Option<Vec<u8>>>>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        match self {
            SecretSource::None => f.write_str("None"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            SecretSource::Watched(_) => f.write_str("Watched(..)"),
        }
    }
}

impl SecretSource {
    /// Starts watching Secret `name` in `namespace`.
    pub fn watch(client: Client, namespace: &str, name: &str) -> Self {
        let slot: Arc<RwLock<Option<Vec<u8>>>> = Arc::default();
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(api, config).default_backoff().applied_objects();
        let writer = slot.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(secret) => {
                        let current = secret
                            .data
                            .as_ref()
                            .and_then(|d| d.get(CURRENT_KEY))
                            .map(|b| b.0.clone());
                        if let Ok(mut slot) = writer.write() {
                            *slot = current;
                        }
                        tracing::debug!(secret = %name, "TURN secret updated");
                    }
                    Err(error) => tracing::warn!(secret = %name, %error, "TURN secret watch error"),
                }
            }
        });
        SecretSource::Watched(slot)
    }

    fn current(&self) -> Option<Vec<u8>> {
        match self {
            SecretSource::None => None,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .ok()
                .map(|s| s.trim().as_bytes().to_vec()),
            SecretSource::Watched(slot) => slot.read().ok().and_then(|s| s.clone()),
        }
    }
}

/// What `joined` and `iceServersRefresh` hand out.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub urls: Vec<String>,
    pub secret: SecretSource,
    pub credential_ttl: Duration,
}

impl IceConfig {
    /// ICE servers with fresh credentials for `user`; without a secret, the bare URLs.
    /// `node_urls` (the room's SfuNode `spec.turn.urls`) take precedence over the global list.
    pub fn servers_for(&self, user: &str, node_urls: &[String]) -> Vec<IceServer> {
        let urls = if node_urls.is_empty() {
            &self.urls
        } else {
            node_urls
        };
        if urls.is_empty() {
            return Vec::new();
        }
        let credential = self.secret.current().and_then(|secret| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
            switchboard_turn::credentials::mint(&secret, user, now, self.credential_ttl.as_secs())
                .ok()
        });
        vec![IceServer {
            urls: urls.to_vec(),
            username: credential.as_ref().map(|c| c.username.clone()),
            credential: credential.map(|c| c.password),
        }]
    }
}

//! Wiring for `serve`: turns the command line into the room store, the room source, the
//! join-token verifier and the ICE servers, builds the [`AppState`], and serves it over HTTP
//! until SIGTERM. Dev mode reuses [`run_with`] with its own room source.

use std::sync::Arc;

use crate::auth::{AuthConfig, KeyAlgorithm};
use crate::config::{AuthArgs, ServeArgs, StateArgs};
use crate::hub::Hub;
use crate::ice::{IceConfig, SecretSource};
use crate::metrics::Metrics;
use crate::rooms::{AutoCreate, DirectoryOptions, RoomDirectory, RoomSource, Standalone};
use crate::state::AppState;
use crate::store::{MemoryStore, RedisStore, RoomStore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--jwt-hs256 entry {0:?}: expected KID=SECRET")]
    BadHs256(String),
    #[error("--jwt-public-key entry {0:?}: expected KID=ALG=PATH with ALG RS256, ES256 or EdDSA")]
    BadPublicKey(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("join-token keys: {0}")]
    Keys(#[from] crate::auth::KeyError),
    #[error("no join-token key configured: set --jwt-hs256 or --jwt-public-key")]
    NoKeys,
    #[error("room state: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("--turn-secret-name needs --namespace (the Secret is read from the Kubernetes API)")]
    SecretNeedsNamespace,
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[source] kube::Error),
    #[error("webhooks: {0}")]
    Webhooks(#[from] crate::webhook::WebhookError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the token verifier from the command line.
pub fn auth_config(args: &AuthArgs) -> Result<AuthConfig, ServeError> {
    if args.hs256.is_empty() && args.public_keys.is_empty() {
        return Err(ServeError::NoKeys);
    }
    let mut builder = AuthConfig::builder()
        .max_lifetime(args.max_lifetime)
        .leeway(args.leeway);
    for entry in &args.hs256 {
        let (kid, secret) = entry
            .split_once('=')
            .ok_or_else(|| ServeError::BadHs256(entry.clone()))?;
        builder = builder.hs256_secret(kid, secret.as_bytes())?;
    }
    for entry in &args.public_keys {
        let mut parts = entry.splitn(3, '=');
        let (Some(kid), Some(alg), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ServeError::BadPublicKey(entry.clone()));
        };
        let alg = match alg {
            "RS256" => KeyAlgorithm::Rs256,
            "ES256" => KeyAlgorithm::Es256,
            "EdDSA" => KeyAlgorithm::EdDsa,
            _ => return Err(ServeError::BadPublicKey(entry.clone())),
        };
        let pem = std::fs::read(path).map_err(|source| ServeError::Read {
            path: path.to_owned(),
            source,
        })?;
        builder = builder.public_key_pem(kid, alg, &pem)?;
    }
    if let Some(aud) = &args.audience {
        builder = builder.audience(aud.clone());
    }
    if let Some(iss) = &args.issuer {
        builder = builder.issuer(iss.clone());
    }
    Ok(builder.build()?)
}

/// Builds the admin-token verifier: the join-token keys, requiring the admin audience.
pub fn admin_auth_config(
    args: &AuthArgs,
    admin: &crate::config::AdminArgs,
) -> Result<AuthConfig, ServeError> {
    let admin_only = AuthArgs {
        audience: Some(admin.admin_audience.clone()),
        ..args.clone()
    };
    auth_config(&admin_only)
}

/// The room store `--redis-url` asks for: Redis, Redis Cluster, or this process's memory.
async fn room_store(args: &StateArgs) -> Result<Arc<dyn RoomStore>, ServeError> {
    Ok(match &args.redis_url {
        Some(nodes) if args.redis_cluster => {
            let nodes: Vec<String> = nodes.split(',').map(|n| n.trim().to_owned()).collect();
            Arc::new(
                RedisStore::connect_cluster(
                    &nodes,
                    args.participant_ttl,
                    crate::store::DEFAULT_TIMEOUT,
                )
                .await?
                .with_mailbox_len(args.mailbox_len)?,
            )
        }
        Some(url) => Arc::new(
            RedisStore::connect(url, args.participant_ttl)
                .await?
                .with_mailbox_len(args.mailbox_len)?,
        ),
        None => {
            Arc::new(MemoryStore::new(args.participant_ttl)?.with_mailbox_len(args.mailbox_len)?)
        }
    })
}

/// What dev mode brings instead of Kubernetes.
pub struct DevWiring {
    /// Where rooms are placed.
    pub rooms: Arc<dyn RoomSource>,
    /// Signs `/dev/token` tokens; `serve`'s verifier trusts its key.
    pub signer: crate::auth::Hs256Signer,
}

/// Serves until SIGTERM or Ctrl-C, then tells every client to reconnect elsewhere and closes.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    run_with(args, None).await
}

/// [`run`], with dev mode's room source and token endpoint when `dev` is given.
pub async fn run_with(args: ServeArgs, dev: Option<DevWiring>) -> Result<(), ServeError> {
    let auth = auth_config(&args.auth)?;
    let admin_auth = match args.admin.admin_addr {
        Some(_) => Some(admin_auth_config(&args.auth, &args.admin)?),
        None => None,
    };
    let hub = Hub::default();
    let store = room_store(&args.state).await?;
    let mut kube_client = None;
    let (rooms, dev_signer): (Arc<dyn RoomSource>, _) = match (dev, &args.kube.namespace) {
        (Some(dev), _) => (dev.rooms, Some(Arc::new(dev.signer))),
        (None, None) => (
            Arc::new(Standalone {
                max_participants: args.limits.default_max_participants,
            }),
            None,
        ),
        (None, Some(namespace)) => {
            let client = kube::Client::try_default()
                .await
                .map_err(ServeError::Kube)?;
            kube_client = Some(client.clone());
            let auto_create = args.kube.auto_create.then(|| AutoCreate {
                max_participants: args.kube.auto_create_max_participants,
                empty_timeout_seconds: u32::try_from(args.kube.auto_create_empty_timeout.as_secs())
                    .unwrap_or(u32::MAX)
                    .max(1),
            });
            let options = DirectoryOptions {
                auto_create,
                placement_wait: args.kube.placement_wait,
                sfu_token_ttl: args.sfu_tokens.sfu_token_ttl,
            };
            let directory =
                RoomDirectory::start(client, namespace, options, hub.clone(), store.clone()).await;
            directory.wait_ready().await;
            (directory, None)
        }
    };
    let secret = match (
        &args.turn.secret_name,
        &args.kube.namespace,
        &args.turn.secret_file,
    ) {
        (Some(name), Some(namespace), _) => {
            let client = match kube_client {
                Some(client) => client,
                None => kube::Client::try_default()
                    .await
                    .map_err(ServeError::Kube)?,
            };
            SecretSource::watch(client, namespace, name)
        }
        (Some(_), None, _) => return Err(ServeError::SecretNeedsNamespace),
        (None, _, Some(path)) => SecretSource::File(path.clone()),
        (None, _, None) => SecretSource::None,
    };
    let ice = IceConfig {
        urls: args.turn.ice_urls.clone(),
        secret,
        credential_ttl: args.turn.credential_ttl,
    };
    let pod = args
        .state
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("signaling-{}", std::process::id()));
    let state = Arc::new(AppState {
        hub,
        store,
        pod,
        rooms,
        auth,
        ice,
        limits: args.limits.clone(),
        sfu_token_ttl: args.sfu_tokens.sfu_token_ttl,
        metrics: Metrics::default(),
        health: crate::state::Health::default(),
    });
    state.start_tasks();
    if !args.webhooks.webhook_urls.is_empty() {
        let config = crate::webhook::WebhookConfig {
            urls: args.webhooks.webhook_urls.clone(),
            key: args.webhooks.webhook_key.clone().unwrap_or_default(),
            queue: args.webhooks.webhook_queue,
            retry_for: args.webhooks.webhook_retry_for,
            timeout: args.webhooks.webhook_timeout,
        };
        crate::webhook::Webhooks::start(&config, state.store.clone(), &state.metrics)?;
        tracing::info!(urls = config.urls.len(), "posting webhooks");
    }
    if let (Some(addr), Some(auth)) = (args.admin.admin_addr, admin_auth) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!(%addr, "serving the server API");
        let admin = crate::http::admin::router(Arc::new(crate::http::admin::AdminState {
            app: state.clone(),
            auth,
        }));
        let header_timeout = args.limits.header_read_timeout;
        // No WebSockets here: it stops with the process, and a call in flight at SIGTERM is
        // the backend's to retry.
        tokio::spawn(crate::http::serve(
            listener,
            admin,
            crate::hub::Hub::default(),
            header_timeout,
            std::time::Duration::ZERO,
            std::future::pending(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, "serving signaling");
    let dev_mode = dev_signer.is_some();
    let app = crate::http::router(
        state.clone(),
        crate::http::Extras {
            demo: args.demo,
            dev_signer,
        },
    );
    if dev_mode {
        let local = listener.local_addr().unwrap_or(args.listen);
        println!(
            "Switchboard dev mode is up. Open http://{local}/?room=demo in two browser tabs (same room) to make a call."
        );
    }
    crate::http::serve(
        listener,
        app,
        state.hub.clone(),
        args.limits.header_read_timeout,
        args.limits.shutdown_grace,
        crate::http::shutdown_signal(),
    )
    .await;
    Ok(())
}

//! The HTTP side: `/v1/ws` (join tokens checked before the upgrade), probes, metrics, and
//! graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{AuthConfig, AuthError, KeyAlgorithm};
use crate::config::{AuthArgs, LimitArgs, ServeArgs};
use crate::hub::Hub;
use crate::ids::RoomId;
use crate::protocol::{Participant, ServerMessage};
use crate::session;
use crate::store::StoreEvent;

/// Everything a connection needs.
pub struct AppState {
    pub hub: Hub,
    /// Room membership shared by every pod (Redis), or this process's own (memory).
    pub store: Arc<dyn crate::store::RoomStore>,
    /// This process's name in the store.
    pub pod: String,
    /// Rooms and placement from Kubernetes, when `--namespace` is set.
    pub rooms: Option<crate::rooms::RoomSource>,
    pub auth: AuthConfig,
    pub ice: crate::turn::IceConfig,
    pub limits: LimitArgs,
    pub metrics: crate::metrics::Metrics,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
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
    #[error("dev mode: {0}")]
    Dev(#[from] crate::dev::DevError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the token verifier from the command line.
pub fn auth_config(args: &AuthArgs) -> Result<AuthConfig, ServerError> {
    if args.hs256.is_empty() && args.public_keys.is_empty() {
        return Err(ServerError::NoKeys);
    }
    let mut builder = AuthConfig::builder()
        .max_lifetime(args.max_lifetime)
        .leeway(args.leeway);
    for entry in &args.hs256 {
        let (kid, secret) = entry
            .split_once('=')
            .ok_or_else(|| ServerError::BadHs256(entry.clone()))?;
        builder = builder.hs256_secret(kid, secret.as_bytes())?;
    }
    for entry in &args.public_keys {
        let mut parts = entry.splitn(3, '=');
        let (Some(kid), Some(alg), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ServerError::BadPublicKey(entry.clone()));
        };
        let alg = match alg {
            "RS256" => KeyAlgorithm::Rs256,
            "ES256" => KeyAlgorithm::Es256,
            "EdDSA" => KeyAlgorithm::EdDsa,
            _ => return Err(ServerError::BadPublicKey(entry.clone())),
        };
        let pem = std::fs::read(path).map_err(|source| ServerError::Read {
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

fn unauthorized(error: &AuthError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error.to_json_body(),
    )
        .into_response()
}

/// `GET /v1/ws`: verify the join token, then upgrade. A refused token gets its 401 before any
/// WebSocket exists.
async fn websocket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = bearer
        .or(query.get("access_token").map(String::as_str))
        .unwrap_or("");
    let requested_room = match query.get("room").map(|r| RoomId::parse(r)) {
        None => None,
        Some(Ok(room)) => Some(room),
        Some(Err(error)) => {
            let body =
                serde_json::json!({"error": "bad_request", "message": format!("room: {error}")})
                    .to_string();
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    let claims = match state
        .auth
        .verify(token, requested_room.as_ref(), SystemTime::now())
    {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(code = error.code(), "join token refused");
            return unauthorized(&error);
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = state.limits.max_message_bytes;
    upgrade
        // Small buffers: most signaling messages are a few hundred bytes, and the library's
        // 128 KiB default per connection would dominate memory at high connection counts.
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session::run(socket, state, claims))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Why the pod is not ready, or `None` when it is.
async fn not_ready(state: &AppState) -> Option<String> {
    if let Err(error) = state.store.ping().await {
        return Some(format!("room state: {error}"));
    }
    if let Some(rooms) = &state.rooms
        && !rooms.is_healthy()
    {
        return Some("the Kubernetes watch of Rooms and SfuNodes is failing".to_owned());
    }
    None
}

/// Ready while the room state answers and the Kubernetes watch works; liveness (`/healthz`)
/// depends on neither, so a Redis outage takes pods out of rotation instead of restarting
/// them all.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match not_ready(&state).await {
        None => (StatusCode::OK, "ok").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> String {
    let ready = not_ready(&state).await.is_none();
    state.metrics.render(state.hub.connections(), ready)
}

/// Delivers what the store sends to this process's connections, and rebuilds the room state
/// from them when the store's link comes back after an outage.
async fn dispatch_store_events(state: Arc<AppState>) {
    let Some(mut events) = state.store.events() else {
        return;
    };
    while let Some(event) = events.recv().await {
        match event {
            StoreEvent::Restored => {
                tokio::spawn(restore_after_outage(state.clone()));
            }
            StoreEvent::Lost => {
                crate::metrics::Metrics::add(&state.metrics.state_link_losses);
            }
            event => state.hub.on_event(event),
        }
    }
}

/// After the message link was down, messages may be lost and Redis may have restarted empty:
/// put every participant connected here back, then tell each client the room as it is now
/// (`resync`), so it renegotiates instead of waiting for messages that will never come.
async fn restore_after_outage(state: Arc<AppState>) {
    let sessions = state.hub.snapshot();
    for session in &sessions {
        if let Err(error) = state
            .store
            .restore(&session.room, session.entry.clone(), session.delivered)
            .await
        {
            tracing::warn!(%error, room = %session.room.as_str(), "cannot restore participant");
        }
    }
    let mut rooms: HashMap<RoomId, Vec<Participant>> = HashMap::new();
    for session in sessions {
        if !rooms.contains_key(&session.room) {
            match state.store.participants(&session.room).await {
                Ok(entries) => {
                    let list = entries
                        .into_iter()
                        .map(|e| Participant {
                            id: e.id,
                            user: e.user,
                            name: e.name,
                        })
                        .collect();
                    rooms.insert(session.room.clone(), list);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list participants for resync");
                    continue;
                }
            }
        }
        let participants = rooms.get(&session.room).cloned().unwrap_or_default();
        let seq = state
            .hub
            .delivered(&session.room, &session.entry.id)
            .unwrap_or(session.delivered);
        state.hub.send(
            &session.room,
            &session.entry.id,
            &ServerMessage::Resync { participants, seq },
        );
        crate::metrics::Metrics::add(&state.metrics.resyncs);
    }
    tracing::info!(
        rooms = rooms.len(),
        "room state restored after the outage; clients told to resync"
    );
}

/// Renews this pod's liveness key every second.
async fn heartbeat(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = state.store.heartbeat(&state.pod, POD_LIVENESS_TTL).await {
            tracing::debug!(%error, "cannot renew the pod liveness key");
        }
    }
}

/// How long a pod's liveness key outlives its last renewal.
const POD_LIVENESS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Accepts connections until `shutdown` completes. axum's own `serve` has no header-read
/// timeout, so connections are served through hyper directly, with one.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    futures::pin_mut!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    // Plain HTTP requests in flight finish; upgraded WebSockets were told to move already.
    graceful.shutdown().await;
}

/// Serves until SIGTERM or Ctrl-C, then tells every client to reconnect elsewhere and closes.
pub async fn serve(args: ServeArgs) -> Result<(), ServerError> {
    serve_with(args, None).await
}

/// [`serve`], plus dev mode's in-process placement and demo routes when `dev` is given.
pub async fn serve_with(
    args: ServeArgs,
    dev: Option<crate::dev::DevMode>,
) -> Result<(), ServerError> {
    let auth = auth_config(&args.auth)?;
    let hub = Hub::default();
    let store: Arc<dyn crate::store::RoomStore> = match &args.state.redis_url {
        Some(nodes) if args.state.redis_cluster => {
            let nodes: Vec<String> = nodes.split(',').map(|n| n.trim().to_owned()).collect();
            Arc::new(
                crate::store::RedisStore::connect_cluster(
                    &nodes,
                    args.state.participant_ttl,
                    crate::store::DEFAULT_TIMEOUT,
                )
                .await?
                .with_mailbox_len(args.state.mailbox_len)?,
            )
        }
        Some(url) => Arc::new(
            crate::store::RedisStore::connect(url, args.state.participant_ttl)
                .await?
                .with_mailbox_len(args.state.mailbox_len)?,
        ),
        None => Arc::new(
            crate::store::MemoryStore::new(args.state.participant_ttl)?
                .with_mailbox_len(args.state.mailbox_len)?,
        ),
    };
    let (static_rooms, dev_signer) = match dev {
        Some(dev) => (Some(dev.placement), Some(Arc::new(dev.signer))),
        None => (None, None),
    };
    let rooms = match &args.kube.namespace {
        None => static_rooms.map(crate::rooms::RoomSource::Static),
        Some(namespace) => {
            let client = kube::Client::try_default()
                .await
                .map_err(ServerError::Kube)?;
            let auto_create = args.kube.auto_create.then(|| crate::rooms::AutoCreate {
                max_participants: args.kube.auto_create_max_participants,
                empty_timeout_seconds: u32::try_from(args.kube.auto_create_empty_timeout.as_secs())
                    .unwrap_or(u32::MAX)
                    .max(1),
                placement_wait: args.kube.placement_wait,
            });
            let directory = crate::rooms::RoomDirectory::start(
                client,
                namespace,
                auto_create,
                hub.clone(),
                store.clone(),
            )
            .await;
            directory.wait_ready().await;
            Some(crate::rooms::RoomSource::Kube(directory))
        }
    };
    let secret = match (
        &args.turn.secret_name,
        &args.kube.namespace,
        &args.turn.secret_file,
    ) {
        (Some(name), Some(namespace), _) => {
            let client = kube::Client::try_default()
                .await
                .map_err(ServerError::Kube)?;
            crate::turn::SecretSource::watch(client, namespace, name)
        }
        (Some(_), None, _) => return Err(ServerError::SecretNeedsNamespace),
        (None, _, Some(path)) => crate::turn::SecretSource::File(path.clone()),
        (None, _, None) => crate::turn::SecretSource::None,
    };
    let ice = crate::turn::IceConfig {
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
        metrics: crate::metrics::Metrics::default(),
    });
    tokio::spawn(dispatch_store_events(state.clone()));
    tokio::spawn(heartbeat(state.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, "serving signaling");
    let mut app = router(state.clone());
    if args.demo {
        app = app.merge(crate::dev::demo_routes());
    }
    if let Some(signer) = dev_signer {
        app = app.merge(crate::dev::token_route(signer));
        let local = listener.local_addr().unwrap_or(args.listen);
        println!(
            "Switchboard dev mode is up. Open http://{local}/?room=demo in two browser tabs (same room) to make a call."
        );
    }
    let hub = state.hub.clone();
    let grace = args.limits.shutdown_grace;
    let shutdown_hub = hub.clone();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: asking clients to reconnect elsewhere");
        shutdown_hub.shutdown(u64::try_from(grace.as_millis() / 2).unwrap_or(u64::MAX));
    };
    let header_timeout = args.limits.header_read_timeout;
    accept_loop(listener, app, header_timeout, shutdown).await;
    // The WebSocket sessions run on after the listener stops: wait for them to finish their
    // close handshakes, but never past the grace period, so a pod always exits in time.
    let drained = async {
        while hub.connections() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            remaining = hub.connections(),
            "grace period over; dropping remaining connections"
        );
    }
    Ok(())
}

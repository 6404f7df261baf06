//! The HTTP side: `/v1/ws` (join tokens checked before the upgrade), the probes, `/metrics`,
//! the demo page ([`demo`]), and serving with a header-read timeout and a graceful drain.
//!
//! It hands each upgraded socket to [`crate::session::run`] and knows nothing of rooms or
//! the store beyond what [`AppState`] offers. Every error it answers with is an
//! [`ErrorBody`].

pub mod admin;
pub mod demo;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Hs256Signer;
use crate::hub::Hub;
use crate::ids::RoomId;
use crate::protocol::ErrorBody;
use crate::session;
use crate::state::AppState;

/// An [`ErrorBody`] with its status: the one way signaling answers an HTTP request with an
/// error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn bad_field(field: &str, error: &dyn std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::bad_field(field, error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body.to_json(),
        )
            .into_response()
    }
}

impl From<&crate::auth::AuthError> for ApiError {
    fn from(error: &crate::auth::AuthError) -> Self {
        ApiError {
            status: StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
            body: ErrorBody::new(error.code(), error.to_string()),
        }
    }
}

/// What the router serves besides signaling itself.
#[derive(Default)]
pub struct Extras {
    /// The demo page at `/` and the JavaScript client at `/switchboard.js`.
    pub demo: bool,
    /// Dev mode's `/dev/token`, signed with this key.
    pub dev_signer: Option<Arc<Hs256Signer>>,
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
    // A `room` that is no room id is refused like any other mismatch (401 `room_mismatch`),
    // after the token: the token's own faults win, as for a valid `room`.
    let (requested_room, bad_room) = match query.get("room").map(|r| RoomId::parse(r)) {
        None => (None, None),
        Some(Ok(room)) => (Some(room), None),
        Some(Err(error)) => (None, Some(error)),
    };
    let verified = state
        .auth
        .verify(token, requested_room.as_ref(), SystemTime::now())
        .and_then(|claims| match bad_room {
            None => Ok(claims),
            Some(error) => Err(crate::auth::AuthError::InvalidRoomParameter {
                reason: error.to_string(),
            }),
        });
    let claims = match verified {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(code = error.code(), "join token refused");
            return ApiError::from(&error).into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = state.limits.max_message_bytes;
    // Boxed: the claims wait inside every connection's task until its `join`, and are dropped
    // after it.
    let claims = Box::new(claims);
    upgrade
        // Small buffers: most signaling messages are a few hundred bytes, and the library's
        // 128 KiB default per connection would dominate memory at high connection counts. The
        // read buffer stays allocated for the connection's life; 512 bytes take a join or a
        // candidate in one read, and a larger frame is read in full once its header is in.
        .read_buffer_size(512)
        .write_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session::run(socket, state, claims))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the room state answers and the Kubernetes watch works; liveness (`/healthz`)
/// depends on neither, so a Redis outage takes pods out of rotation instead of restarting
/// them all.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.not_ready() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.not_ready().is_none();
    match state.metrics.encode(state.hub.connections(), ready) {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Every route: signaling, probes, metrics, and the extras asked for.
pub fn router(state: Arc<AppState>, extras: Extras) -> Router {
    let mut app = Router::new()
        .route("/v1/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if extras.demo {
        app = app.merge(demo::page_routes());
    }
    if let Some(signer) = extras.dev_signer {
        app = app.merge(demo::token_route(signer));
    }
    app
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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

/// Serves `app` until `stop` resolves, then tells every client to reconnect elsewhere (spread
/// over half of `grace`) and waits for the sessions to close, never past `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    hub: Hub,
    header_timeout: Duration,
    grace: Duration,
    stop: impl Future<Output = ()>,
) {
    let shutdown_hub = hub.clone();
    let shutdown = async move {
        stop.await;
        tracing::info!("shutting down: asking clients to reconnect elsewhere");
        shutdown_hub.shutdown(u64::try_from(grace.as_millis() / 2).unwrap_or(u64::MAX));
    };
    accept_loop(listener, app, header_timeout, shutdown).await;
    // The WebSocket sessions run on after the listener stops: wait for them to finish their
    // close handshakes, but never past the grace period, so a pod always exits in time.
    let drained = async {
        while hub.sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            remaining = hub.sessions(),
            "grace period over; dropping remaining connections"
        );
    }
}

/// Accepts connections until `shutdown` completes. axum's own `serve` has no header-read
/// timeout, so connections are served through hyper directly, with one.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
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
                        tokio::time::sleep(Duration::from_millis(50)).await;
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

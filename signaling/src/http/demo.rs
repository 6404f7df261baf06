//! The demo page and its scripts (dev mode, and `serve --demo`), and dev mode's `/dev/token`.
//! Without `/dev/token` the page needs a `?token=` minted by the app's backend (or
//! `switchboard-signaling token`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::ApiError;
use crate::auth::{Hs256Signer, KeyError, MintClaims};
use crate::protocol::ErrorBody;

/// The demo page and its scripts. The client module is the one app developers use
/// (`docs/protocol.md`).
const DEMO_HTML: &str = include_str!("../../web/index.html");
const DEMO_JS: &str = include_str!("../../web/demo.js");
const CLIENT_JS: &str = include_str!("../../web/switchboard.js");

/// How long a `/dev/token` token is valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(600);

pub fn page_routes() -> Router {
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
    let minted = MintClaims::parse(
        &query.room,
        &query.user,
        query.name.as_deref(),
        SystemTime::now(),
        DEV_TOKEN_TTL,
    )
    .and_then(|claims| signer.mint(&claims));
    match minted {
        Ok(token) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "token": token }).to_string(),
        )
            .into_response(),
        Err(KeyError::InvalidInput { field, source }) => {
            ApiError::bad_field(field, &source).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "cannot mint a dev token");
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: ErrorBody::new("internal", "cannot sign the token"),
            }
            .into_response()
        }
    }
}

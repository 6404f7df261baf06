//! The server API, for the application's backend: list rooms and their participants, remove a
//! participant, end a room. `docs/api.md` is its reference.
//!
//! It is served on a listener of its own (`--admin-addr`), so a deployment can keep it off
//! the public Ingress, and every request needs an admin token: a JWT for the admin audience
//! with `"admin": true`, signed with one of the join-token keys ([`AuthConfig::verify_admin`]).
//! Join tokens are refused here, and admin tokens cannot join a room.
//!
//! The handlers only call the room store and the room source; kicks and room endings reach
//! every pod through the store.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Serialize;

use super::ApiError;
use crate::auth::AuthConfig;
use crate::ids::{ParticipantId, RoomId};
use crate::protocol::ErrorBody;
use crate::state::AppState;
use crate::store::StoreError;

/// What the server API's handlers share.
pub struct AdminState {
    pub app: Arc<AppState>,
    /// Verifies admin tokens: the join-token keys, requiring the admin audience.
    pub auth: AuthConfig,
}

/// One room in `GET /v1/rooms`.
#[derive(Debug, Serialize)]
struct RoomSummary {
    room: RoomId,
    participants: u32,
}

#[derive(Debug, Serialize)]
struct RoomList {
    rooms: Vec<RoomSummary>,
}

/// One participant in `GET /v1/rooms/{room}/participants`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ParticipantInfo {
    id: ParticipantId,
    user: crate::ids::UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<crate::ids::DisplayName>,
    /// The signaling pod holding the participant's connection.
    pod: String,
    /// Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    joined_at: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ParticipantList {
    room: RoomId,
    participants: Vec<ParticipantInfo>,
}

#[derive(Debug, Serialize)]
struct RoomEnded {
    room: RoomId,
    /// Participants whose connections were closed with 4003.
    removed: u32,
    /// Whether a Room object was deleted too (Kubernetes).
    #[serde(rename = "roomObjectDeleted")]
    room_object_deleted: bool,
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot encode a server API response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A store failure as the API reports it: 503 when the state is unreachable (retry), 500
/// otherwise. The cause goes to the logs, not the caller.
fn store_failure(state: &AdminState, error: &StoreError) -> ApiError {
    state.app.metrics.store_error(error);
    tracing::warn!(%error, "server API: room state failed");
    match error {
        StoreError::Unavailable(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: ErrorBody::new(
                "unavailable",
                "room state is unavailable; retry shortly".to_owned(),
            ),
        },
        _ => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: ErrorBody::new("internal", "room state refused the request".to_owned()),
        },
    }
}

fn parse_room(room: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(room).map_err(|error| ApiError::bad_field("room", &error))
}

/// Checks the admin token of every request before its handler runs.
async fn require_admin(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    match state.auth.verify_admin(token, SystemTime::now()) {
        Ok(claims) => {
            tracing::debug!(subject = %claims.subject, method = %request.method(), path = %request.uri().path(), "server API call");
            next.run(request).await
        }
        Err(error) => {
            tracing::debug!(code = error.code(), "admin token refused");
            ApiError::from(&error).into_response()
        }
    }
}

/// `GET /v1/rooms`: every room with participants, and how many.
async fn list_rooms(State(state): State<Arc<AdminState>>) -> Response {
    match state.app.store.rooms().await {
        Ok(rooms) => {
            let rooms = rooms
                .into_iter()
                .map(|(room, participants)| RoomSummary { room, participants })
                .collect();
            json(StatusCode::OK, &RoomList { rooms })
        }
        Err(error) => store_failure(&state, &error).into_response(),
    }
}

/// `GET /v1/rooms/{room}/participants`: who is in the room (empty when nobody is).
async fn list_participants(
    State(state): State<Arc<AdminState>>,
    Path(room): Path<String>,
) -> Response {
    let room = match parse_room(&room) {
        Ok(room) => room,
        Err(error) => return error.into_response(),
    };
    match state.app.store.participants(&room).await {
        Ok(entries) => {
            let participants = entries
                .into_iter()
                .map(|e| ParticipantInfo {
                    id: e.id,
                    user: e.user,
                    name: e.name,
                    pod: e.pod,
                    joined_at: e.joined_at,
                })
                .collect();
            json(StatusCode::OK, &ParticipantList { room, participants })
        }
        Err(error) => store_failure(&state, &error).into_response(),
    }
}

/// `DELETE /v1/rooms/{room}/participants/{id}`: removes the participant (4002 `kicked`,
/// wherever it is connected; it cannot resume). 204, or 404 when it is not in the room.
async fn kick(
    State(state): State<Arc<AdminState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let room = match parse_room(&room) {
        Ok(room) => room,
        Err(error) => return error.into_response(),
    };
    let id = match ParticipantId::parse(&id) {
        Ok(id) => id,
        Err(error) => return ApiError::bad_field("participant", &error).into_response(),
    };
    match state.app.store.kick(&room, &id).await {
        Ok(true) => {
            tracing::info!(room = %room.as_str(), participant = %id.as_str(), "participant removed through the server API");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody::new(
                "participant_not_found",
                format!("no participant {} in room {}", id.as_str(), room.as_str()),
            ),
        }
        .into_response(),
        Err(error) => store_failure(&state, &error).into_response(),
    }
}

/// `DELETE /v1/rooms/{room}`: ends the call (every participant closed with 4003, the room's
/// state removed) and deletes the Room object where there is one.
async fn end_room(State(state): State<Arc<AdminState>>, Path(room): Path<String>) -> Response {
    let room = match parse_room(&room) {
        Ok(room) => room,
        Err(error) => return error.into_response(),
    };
    // The Room object first: once it is marked deleted, no pod admits a new join into it.
    let room_object_deleted = match state.app.rooms.delete_room(&room).await {
        Ok(deleted) => deleted,
        Err(error) => {
            tracing::warn!(%error, "server API: cannot delete the Room");
            return ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: ErrorBody::new("internal", "cannot delete the Room object".to_owned()),
            }
            .into_response();
        }
    };
    match state.app.store.end_room(&room).await {
        Ok(removed) => {
            tracing::info!(room = %room.as_str(), removed, "room ended through the server API");
            json(
                StatusCode::OK,
                &RoomEnded {
                    room,
                    removed,
                    room_object_deleted,
                },
            )
        }
        Err(error) => store_failure(&state, &error).into_response(),
    }
}

/// The server API's routes, every one behind the admin token check.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", delete(end_room))
        .route("/v1/rooms/{room}/participants", get(list_participants))
        .route("/v1/rooms/{room}/participants/{id}", delete(kick))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .with_state(state)
}

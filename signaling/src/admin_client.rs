//! A client of the server API (`docs/api.md`), for the `switchboard-signaling room …`
//! commands. It only speaks HTTP to a running server; it knows nothing of the server's
//! internals beyond the documented JSON.

use std::time::Duration;

use serde::Deserialize;

/// How long one server API call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server API call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot reach the server API at {url}: {message}")]
    Request { url: String, message: String },
    /// The server answered with an error body: its stable code and message.
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server API answered something unexpected ({status}): {message}")]
    Unexpected { status: u16, message: String },
}

/// A participant as the server API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedParticipant {
    pub id: String,
    pub user: String,
    #[serde(default)]
    pub name: Option<String>,
    pub pod: String,
    #[serde(default)]
    pub joined_at: Option<u64>,
}

#[derive(Deserialize)]
struct RoomList {
    rooms: Vec<ListedRoom>,
}

#[derive(Deserialize)]
struct ListedRoom {
    room: String,
    participants: u32,
}

#[derive(Deserialize)]
struct ParticipantList {
    participants: Vec<ListedParticipant>,
}

#[derive(Deserialize)]
struct RoomEnded {
    removed: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// The server API at one base URL, with one admin token.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// A client of the server API at `base` (`http://host:port`).
    pub fn new(base: &str, token: &str) -> Result<Self, AdminClientError> {
        // reqwest's rustls comes without a crypto provider here (`rustls-no-provider`):
        // install ring's, as the rest of the binary uses, for `https://` URLs.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| AdminClientError::Client(e.to_string()))?;
        Ok(AdminClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// Rooms with participants, and how many each has.
    pub async fn rooms(&self) -> Result<Vec<(String, u32)>, AdminClientError> {
        let list: RoomList = self.call(reqwest::Method::GET, "/v1/rooms").await?;
        Ok(list
            .rooms
            .into_iter()
            .map(|r| (r.room, r.participants))
            .collect())
    }

    /// Who is in `room`.
    pub async fn participants(
        &self,
        room: &str,
    ) -> Result<Vec<ListedParticipant>, AdminClientError> {
        let path = format!("/v1/rooms/{room}/participants");
        let list: ParticipantList = self.call(reqwest::Method::GET, &path).await?;
        Ok(list.participants)
    }

    /// Removes `participant` from `room`.
    pub async fn kick(&self, room: &str, participant: &str) -> Result<(), AdminClientError> {
        let path = format!("/v1/rooms/{room}/participants/{participant}");
        self.send(reqwest::Method::DELETE, &path).await.map(drop)
    }

    /// Ends `room`'s call; returns how many participants were removed.
    pub async fn end(&self, room: &str) -> Result<u32, AdminClientError> {
        let path = format!("/v1/rooms/{room}");
        let ended: RoomEnded = self.call(reqwest::Method::DELETE, &path).await?;
        Ok(ended.removed)
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, AdminClientError> {
        let (status, body) = self.send(method, path).await?;
        serde_json::from_slice(&body).map_err(|e| AdminClientError::Unexpected {
            status,
            message: e.to_string(),
        })
    }

    /// Sends a request; a success status gives the body, an error status its error body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(u16, Vec<u8>), AdminClientError> {
        let url = format!("{}{path}", self.base);
        let request_failed = |e: reqwest::Error| AdminClientError::Request {
            url: url.clone(),
            message: e.to_string(),
        };
        let response = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(request_failed)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(request_failed)?.to_vec();
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => AdminClientError::Refused {
                status,
                code: error.error,
                message: error.message,
            },
            Err(_) => AdminClientError::Unexpected {
                status,
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        })
    }
}

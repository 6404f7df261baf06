//! `JanusVideoRoom`: rooms, load and session admission through the Janus admin API.
//!
//! Every request goes to `spec.admin.url` with the node's `admin_secret`; VideoRoom requests are
//! sent with `message_plugin`, which needs no Janus session, and carry the plugin's `admin_key`.
//! Rooms are created `permanent: false` (Janus keeps them in memory only, so a restarted Janus
//! holds none) and `is_private` (not listed to participants), with the pin derived by
//! `switchboard_sfu::janus::room_pin` and `publishers` = the Room's `maxParticipants`.

use serde_json::{Value, json};
use switchboard_sfu::janus::{JanusCredentials, VIDEOROOM_PLUGIN, room_pin};

use super::{REQUEST_TIMEOUT, SfuError, SfuLoad, SfuRoom};

/// VideoRoom error: the room already exists. Our ids are unique per Room object (they carry
/// its uid), so an existing room of that id is ours, created by an earlier attempt.
const ROOM_EXISTS: i64 = 427;
/// VideoRoom error: no such room.
const NO_SUCH_ROOM: i64 = 426;

/// One Janus node's admin API.
pub struct JanusNode {
    http: reqwest::Client,
    admin_url: String,
    credentials: JanusCredentials,
}

impl JanusNode {
    pub fn new(http: reqwest::Client, admin_url: String, credentials: JanusCredentials) -> Self {
        JanusNode {
            http,
            admin_url,
            credentials,
        }
    }

    /// One admin API request; returns the answer when `janus` is `success`.
    async fn admin(&self, what: &'static str, mut request: Value) -> Result<Value, SfuError> {
        request["transaction"] = json!(format!("switchboard-{what}"));
        request["admin_secret"] = json!(self.credentials.admin_secret);
        let url = &self.admin_url;
        let response = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header("content-type", "application/json")
            .body(request.to_string())
            .send()
            .await
            .map_err(|e| SfuError::Unreachable {
                url: url.clone(),
                reason: reqwest_reason(&e),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(SfuError::HttpStatus {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let body = response.bytes().await.map_err(|e| SfuError::Unreachable {
            url: url.clone(),
            reason: reqwest_reason(&e),
        })?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| SfuError::BadAnswer {
            what,
            detail: e.to_string(),
        })?;
        match answer["janus"].as_str() {
            Some("success") => Ok(answer),
            _ => Err(SfuError::Refused {
                what,
                code: answer["error"]["code"].as_i64().unwrap_or(0),
                reason: answer["error"]["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned(),
            }),
        }
    }

    /// A VideoRoom request through `message_plugin`; returns the plugin's `response`, or the
    /// plugin's own error as `Refused`.
    async fn videoroom(&self, what: &'static str, mut request: Value) -> Result<Value, SfuError> {
        request["admin_key"] = json!(self.credentials.room_admin_key);
        let answer = self
            .admin(
                what,
                json!({"janus": "message_plugin", "plugin": VIDEOROOM_PLUGIN, "request": request}),
            )
            .await?;
        let response = answer["response"].clone();
        if let Some(code) = response["error_code"].as_i64() {
            return Err(SfuError::Refused {
                what,
                code,
                reason: response["error"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(response)
    }

    pub async fn create_room(&self, room: &SfuRoom) -> Result<(), SfuError> {
        let pin = room_pin(&self.credentials.room_admin_key, &room.id);
        let result = self
            .videoroom(
                "create room",
                json!({"request": "create", "room": room.id, "permanent": false,
                       "is_private": true, "pin": pin, "publishers": room.publishers,
                       "description": room.id}),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SfuError::Refused {
                code: ROOM_EXISTS, ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn destroy_room(&self, id: &str) -> Result<(), SfuError> {
        let result = self
            .videoroom(
                "destroy room",
                json!({"request": "destroy", "room": id, "permanent": false}),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SfuError::Refused {
                code: NO_SUCH_ROOM, ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn list_rooms(&self) -> Result<Vec<String>, SfuError> {
        let response = self
            .videoroom("list rooms", json!({"request": "list"}))
            .await?;
        Ok(response["list"]
            .as_array()
            .map(|rooms| {
                rooms
                    .iter()
                    .filter_map(|r| r["room"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sessions from `list_sessions`; participants summed over every room's
    /// `listparticipants` (VideoRoom's own `num_participants` counts publishers only).
    pub async fn load(&self) -> Result<SfuLoad, SfuError> {
        let sessions = self
            .admin("list sessions", json!({"janus": "list_sessions"}))
            .await?;
        let sessions = sessions["sessions"].as_array().map_or(0, Vec::len);
        let mut participants = 0usize;
        for room in self.list_rooms().await? {
            let response = self
                .videoroom(
                    "list participants",
                    json!({"request": "listparticipants", "room": room}),
                )
                .await;
            match response {
                Ok(r) => participants += r["participants"].as_array().map_or(0, Vec::len),
                // Destroyed between the two requests.
                Err(SfuError::Refused {
                    code: NO_SUCH_ROOM, ..
                }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(SfuLoad {
            sessions: u32::try_from(sessions).unwrap_or(u32::MAX),
            participants: u32::try_from(participants).unwrap_or(u32::MAX),
        })
    }

    pub async fn accept_new_sessions(&self, accept: bool) -> Result<(), SfuError> {
        self.admin(
            "accept_new_sessions",
            json!({"janus": "accept_new_sessions", "accept": accept}),
        )
        .await
        .map(|_| ())
    }
}

fn reqwest_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.to_string()
    }
}

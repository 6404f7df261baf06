//! The versioned JSON wire protocol between clients and the signaling server.
//!
//! One serde-tagged enum per direction ([`ClientMessage`], [`ServerMessage`]), discriminated by
//! the `type` field, with camelCase field names. Every value that arrives from a client is
//! bounded and validated by its type, so handlers never see an oversized SDP or an id that is
//! unsafe in a Redis key. Incoming frames go through [`parse_client_message`], which reports
//! each kind of bad input as a typed [`ProtocolError`] with a stable [`ErrorCode`].
//!
//! This module is pure: it owns the message shapes, codes and limits, not the socket, the
//! rooms or any policy about what a message is allowed to do (that is the server's job).
//! `docs/protocol.md` is the reference for app developers and must change with this file.

mod fields;
mod parse;

use serde::{Deserialize, Serialize};

pub use self::fields::{
    CANDIDATE_MAX_BYTES, CandidateLine, FieldError, MsgRef, REF_MAX_CHARS, RESUME_TOKEN_MAX_BYTES,
    ResumeToken, SDP_MAX_BYTES, SDP_MID_MAX_BYTES, Sdp, SdpMid, USERNAME_FRAGMENT_MAX_BYTES,
    UsernameFragment,
};
pub use self::parse::{ProtocolError, join_attempt, parse_client_message};
use crate::ids::{DisplayName, ParticipantId, RoomId, UserId};

/// The protocol version this server speaks. Clients send it as `v` in `join`; any other
/// value is refused with `unsupported_version`, so an incompatible client fails at once
/// instead of half-working.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default largest text frame a client may send. Larger frames close the connection with
/// [`CloseCode::MessageTooBig`]. It leaves room for a 32 KiB SDP plus JSON escaping.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message from a client.
///
/// Frames from the network must go through [`parse_client_message`], which also checks the
/// protocol version and reports precise errors; `Deserialize` is here for test clients and
/// produces the same values for everything the parser accepts (a property test holds the two
/// together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    /// Enter the room the access token admits. Must be the first message.
    Join {
        /// The protocol version the client speaks; must be [`PROTOCOL_VERSION`].
        v: u32,
        /// Present when the client reconnects and wants its previous session back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// An SDP offer for one participant of the same room.
    Offer {
        to: ParticipantId,
        sdp: Sdp,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// An SDP answer for one participant of the same room.
    Answer {
        to: ParticipantId,
        sdp: Sdp,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// A trickled ICE candidate for one participant of the same room.
    Candidate {
        to: ParticipantId,
        #[serde(flatten)]
        candidate: IceCandidate,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// Leave the room; the server answers by closing the connection with 1000.
    Leave {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// Application-level liveness check; answered with `pong`.
    Ping {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
}

impl ClientMessage {
    /// The `type` of this message, for logs and metric labels.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::Offer { .. } => "offer",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Ping { .. } => "ping",
        }
    }

    /// The client's `ref`, to echo in the reply or error.
    pub fn msg_ref(&self) -> Option<&MsgRef> {
        match self {
            ClientMessage::Join { msg_ref, .. }
            | ClientMessage::Offer { msg_ref, .. }
            | ClientMessage::Answer { msg_ref, .. }
            | ClientMessage::Candidate { msg_ref, .. }
            | ClientMessage::Leave { msg_ref }
            | ClientMessage::Ping { msg_ref } => msg_ref.as_ref(),
        }
    }

    /// The participant a relayed message is addressed to.
    pub fn target(&self) -> Option<&ParticipantId> {
        match self {
            ClientMessage::Offer { to, .. }
            | ClientMessage::Answer { to, .. }
            | ClientMessage::Candidate { to, .. } => Some(to),
            _ => None,
        }
    }
}

/// What a reconnecting client presents to get its session back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resume {
    /// The `resumeToken` from the last `joined` (or `reconnect`).
    pub token: ResumeToken,
    /// The highest `seq` the client has processed; the server replays relayed messages after it.
    pub last_seq: u64,
}

/// An ICE candidate as WebRTC's `RTCIceCandidateInit` has it, so clients can pass
/// `candidate.toJSON()` through unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: CandidateLine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<SdpMid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<UsernameFragment>,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    /// The answer to `join`: who you are, who is here, where the media goes.
    Joined {
        /// The protocol version the server speaks.
        v: u32,
        /// Your participant id; others address you with it.
        participant_id: ParticipantId,
        room: RoomId,
        /// Everyone in the room, you included.
        participants: Vec<Participant>,
        /// The SFU the room is placed on; absent while the room has none (peer-to-peer only,
        /// or not placed yet: `sfuReassigned` follows when it is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sfu: Option<SfuInfo>,
        /// STUN/TURN servers with credentials, ready for `RTCPeerConnection`.
        ice_servers: Vec<IceServer>,
        /// Present this in `join.resume` to get this session back after a reconnect.
        resume_token: ResumeToken,
        /// The `seq` of the last relayed message already sent to you: 0 on a fresh join, so the
        /// first relayed message has `seq` 1. On a resume, messages after `resume.lastSeq` up
        /// to this value follow right after `joined`.
        seq: u64,
        /// Whether this continues a previous session (`join.resume` was accepted).
        resumed: bool,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// Someone entered the room.
    ParticipantJoined { participant: Participant },
    /// Someone left the room, and why.
    ParticipantLeft {
        id: ParticipantId,
        reason: LeaveReason,
    },
    /// An SDP offer relayed from `from`.
    Offer {
        from: ParticipantId,
        sdp: Sdp,
        seq: u64,
    },
    /// An SDP answer relayed from `from`.
    Answer {
        from: ParticipantId,
        sdp: Sdp,
        seq: u64,
    },
    /// An ICE candidate relayed from `from`.
    Candidate {
        from: ParticipantId,
        #[serde(flatten)]
        candidate: IceCandidate,
        seq: u64,
    },
    /// A request failed; `ref` is the failed message's `ref`.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
    /// The room moved to another SFU; reconnect media there (unless `sfu.generation` is lower
    /// than the one you have).
    SfuReassigned { sfu: SfuInfo },
    /// A fresh SFU token for the same room on the same node, sent before the previous one
    /// expires; use it for every later request on the existing SFU session.
    SfuRefresh { sfu: SfuInfo },
    /// Fresh TURN credentials, sent before the previous ones expire; apply them with
    /// `RTCPeerConnection.setConfiguration`.
    IceServersRefresh { ice_servers: Vec<IceServer> },
    /// The server may have lost relayed messages addressed to you. `participants` is the room
    /// as it is now and `seq` your current sequence number; renegotiate with everyone listed.
    Resync {
        participants: Vec<Participant>,
        seq: u64,
    },
    /// This server is going away: reconnect (to the same URL) and resume with `resumeToken`.
    Reconnect {
        resume_token: ResumeToken,
        /// Wait this long before reconnecting, so a whole pod's clients don't arrive at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The answer to `ping`.
    Pong {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        msg_ref: Option<MsgRef>,
    },
}

impl ServerMessage {
    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>, msg_ref: Option<MsgRef>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            msg_ref,
        }
    }

    /// The `type` of this message, for logs and metric labels.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::ParticipantJoined { .. } => "participantJoined",
            ServerMessage::ParticipantLeft { .. } => "participantLeft",
            ServerMessage::Offer { .. } => "offer",
            ServerMessage::Answer { .. } => "answer",
            ServerMessage::Candidate { .. } => "candidate",
            ServerMessage::Error { .. } => "error",
            ServerMessage::SfuReassigned { .. } => "sfuReassigned",
            ServerMessage::SfuRefresh { .. } => "sfuRefresh",
            ServerMessage::IceServersRefresh { .. } => "iceServersRefresh",
            ServerMessage::Resync { .. } => "resync",
            ServerMessage::Reconnect { .. } => "reconnect",
            ServerMessage::Pong { .. } => "pong",
        }
    }

    /// The JSON text frame for this message.
    pub fn to_json(&self) -> String {
        // These types hold only strings, numbers and string-keyed structs, which serde_json
        // always serializes; the fallback exists so that a future type that could fail turns
        // into a protocol error instead of a panic.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(
                r#"{"type":"error","code":"internal","message":"the server could not encode a message"}"#,
            )
        })
    }
}

/// The body of every HTTP error signaling answers with (a refused join token, a bad query,
/// dev mode's token endpoint): `{"error": <stable code>, "message": <text for people>}`.
/// Causes are logged, never put in `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            message: message.into(),
        }
    }

    /// A request field that failed validation: code `bad_request`, the field named first.
    pub fn bad_field(field: &str, error: &dyn std::fmt::Display) -> Self {
        ErrorBody::new("bad_request", format!("{field}: {error}"))
    }

    pub fn to_json(&self) -> String {
        // A struct of two strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: ParticipantId,
    pub user: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
}

/// Where the room's media goes, and what a client needs to reach its room there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SfuInfo {
    /// The `SfuNode` the room is placed on.
    pub node: String,
    /// The URL clients connect their media to.
    pub url: String,
    /// The node's `spec.kind`: `Opaque` (the URL is a label; media stays peer to peer) or
    /// `JanusVideoRoom`.
    pub kind: String,
    /// `Room.status.placementGeneration`: it grows with every move, so a client ignores an
    /// `sfuReassigned` or `sfuRefresh` older than what it has.
    pub generation: u64,
    /// The room's id on the SFU (Janus: the VideoRoom string id). Absent for `Opaque`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The room's pin on the SFU. Absent for `Opaque`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// A short-lived token for the SFU (Janus: a signed token for the VideoRoom plugin),
    /// minted for this participant. Absent for `Opaque`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When `token` expires, in Unix seconds; `sfuRefresh` comes well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<u64>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Why a participant left. Clients use it to tell "hung up" from "dropped".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The participant sent `leave` or closed its connection normally.
    Left,
    /// The connection was lost and not resumed in time.
    ConnectionLost,
    /// The same user joined again; this older session was replaced.
    DuplicateIdentity,
    /// Removed by the application or an operator.
    Kicked,
    /// The room was deleted.
    RoomDeleted,
}

impl LeaveReason {
    /// The wire string, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::ConnectionLost => "connection_lost",
            LeaveReason::DuplicateIdentity => "duplicate_identity",
            LeaveReason::Kicked => "kicked",
            LeaveReason::RoomDeleted => "room_deleted",
        }
    }
}

/// The stable error codes of `error` messages. Clients branch on these, so existing codes never
/// change meaning; new ones may be added (clients treat unknown codes like `internal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field is missing, has the wrong type, or is too long.
    BadRequest,
    /// The frame is not JSON.
    MalformedJson,
    /// The `type` is not one this server knows.
    UnknownType,
    /// `join.v` is not a version this server speaks.
    UnsupportedVersion,
    /// The message needs a joined session; send `join` first.
    NotJoined,
    /// `join` was sent twice on one connection.
    AlreadyJoined,
    /// `to` names no participant of your room. Deliberately the same for ids that exist in
    /// other rooms, so a client cannot probe for them.
    UnknownParticipant,
    /// The room has no free slot.
    RoomFull,
    /// The room does not exist and the server does not create rooms on demand.
    RoomNotFound,
    /// The room was created but not placed on an SFU in time.
    PlacementTimeout,
    /// Too many messages; slow down (a sustained flood closes the connection with 1008).
    RateLimited,
    /// The session cannot be resumed; send `join` without `resume`.
    ResumeFailed,
    /// The room state is unreachable (a Redis outage, or Redis too slow to answer): the
    /// request was not carried out, or, if Redis answered too late, may have been. Retry
    /// once the connection gets `resync`, or after a short wait.
    Unavailable,
    /// Something failed on the server; the message may be retried.
    Internal,
}

impl ErrorCode {
    /// The wire string, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::PlacementTimeout => "placement_timeout",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for documentation tests and metric pre-registration.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::MalformedJson,
        ErrorCode::UnknownType,
        ErrorCode::UnsupportedVersion,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::UnknownParticipant,
        ErrorCode::RoomFull,
        ErrorCode::RoomNotFound,
        ErrorCode::PlacementTimeout,
        ErrorCode::RateLimited,
        ErrorCode::ResumeFailed,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// The WebSocket close codes the server uses, with the reason text it sends. The 4xxx codes
/// are application codes: a client must not reconnect automatically after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: after `leave`, or a normal server-side close.
    Normal,
    /// 1001: the server is going away; it sent `reconnect` first.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol (a lone continuation frame, an unmasked
    /// frame, a reserved bit, an unknown opcode, an oversized or fragmented control frame).
    ProtocolError,
    /// 1003: a binary frame; the protocol is JSON text only.
    UnsupportedData,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1008: a sustained message flood after `rate_limited` errors.
    PolicyViolation,
    /// 1009: a frame larger than the server's message limit.
    MessageTooBig,
    /// 4001: the same user joined again elsewhere; this session was replaced.
    Replaced,
    /// 4002: removed from the room by the application or an operator.
    Kicked,
    /// 4003: the room was deleted.
    RoomDeleted,
    /// 4004: no `join` arrived in time after the connection opened.
    JoinTimeout,
    /// 4005: the connection answered no ping and sent nothing for the idle timeout.
    IdleTimeout,
    /// 4006: the client read too slowly; its outgoing queue filled up.
    SlowConsumer,
}

/// The close code for a frame the WebSocket library refused, judged by its error message.
/// Whatever the library refuses on the way in is the client's doing (a lone continuation
/// frame, an unmasked frame, a reserved bit, an unknown opcode, an oversized or fragmented
/// control frame), so everything but size and UTF-8 is a protocol error (1002), not a server
/// failure, which would tell the client to resume and send it again.
///
/// `None` when the client is already gone (a reset, an I/O error): there is no one to send a
/// close frame to.
pub fn close_for_receive_error(error: &str) -> Option<CloseCode> {
    if error.contains("without closing handshake") || error.contains("IO error") {
        None
    } else if error.contains("too long") || error.contains("Space limit") {
        Some(CloseCode::MessageTooBig)
    } else if error.contains("UTF-8") || error.contains("utf-8") {
        Some(CloseCode::InvalidPayload)
    } else {
        Some(CloseCode::ProtocolError)
    }
}

impl CloseCode {
    /// The numeric close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Replaced => 4001,
            CloseCode::Kicked => 4002,
            CloseCode::RoomDeleted => 4003,
            CloseCode::JoinTimeout => 4004,
            CloseCode::IdleTimeout => 4005,
            CloseCode::SlowConsumer => 4006,
        }
    }

    /// The close frame's reason text (well under the 123-byte limit).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::UnsupportedData => "binary_frames_not_supported",
            CloseCode::InvalidPayload => "invalid_utf8",
            CloseCode::PolicyViolation => "rate_limited",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::Replaced => "duplicate_identity",
            CloseCode::Kicked => "kicked",
            CloseCode::RoomDeleted => "room_deleted",
            CloseCode::JoinTimeout => "join_timeout",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
        }
    }
}

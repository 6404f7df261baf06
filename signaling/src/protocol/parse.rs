//! Turning one client text frame into a [`ClientMessage`], or into a precise [`ProtocolError`].
//!
//! Fields are read one by one from the parsed JSON object instead of through serde's derive,
//! so every failure names its field and maps to a stable code, and the client's `ref` is known
//! (and echoed) even when the rest of the message is wrong. Unknown fields are ignored, so
//! newer clients can add optional fields without breaking older servers. Nothing here panics,
//! whatever the input: a property test feeds it arbitrary text and JSON.

use serde_json::{Map, Value};

use super::fields::{
    CandidateLine, FieldError, MsgRef, ResumeToken, Sdp, SdpMid, UsernameFragment,
};
use super::{ClientMessage, ErrorCode, IceCandidate, PROTOCOL_VERSION, Resume, ServerMessage};
use crate::ids::{IdError, ParticipantId};

/// How much of an unknown `type` is repeated in the error, so a huge value is not echoed.
const ECHOED_TYPE_MAX_CHARS: usize = 64;

/// Why a client frame was refused. Every variant but [`ProtocolError::MalformedJson`] and
/// [`ProtocolError::NotAnObject`] carries the message's `ref` when it had a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is not valid JSON: {detail}")]
    MalformedJson { detail: String },
    #[error("message must be a JSON object")]
    NotAnObject,
    #[error("field `{field}` is missing")]
    MissingField {
        field: &'static str,
        msg_ref: Option<MsgRef>,
    },
    #[error("field `{field}` {reason}")]
    InvalidField {
        field: &'static str,
        reason: String,
        msg_ref: Option<MsgRef>,
    },
    #[error("field `{field}` is {len} long; at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
        msg_ref: Option<MsgRef>,
    },
    #[error("unknown message type {type_name:?}")]
    UnknownType {
        type_name: String,
        msg_ref: Option<MsgRef>,
    },
    #[error("unsupported protocol version {got}; this server speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion {
        got: String,
        msg_ref: Option<MsgRef>,
    },
}

impl ProtocolError {
    /// The `error.code` this failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::MalformedJson { .. } => ErrorCode::MalformedJson,
            ProtocolError::NotAnObject
            | ProtocolError::MissingField { .. }
            | ProtocolError::InvalidField { .. }
            | ProtocolError::TooLong { .. } => ErrorCode::BadRequest,
            ProtocolError::UnknownType { .. } => ErrorCode::UnknownType,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        }
    }

    /// The refused message's `ref`, if it had a valid one.
    pub fn msg_ref(&self) -> Option<&MsgRef> {
        match self {
            ProtocolError::MalformedJson { .. } | ProtocolError::NotAnObject => None,
            ProtocolError::MissingField { msg_ref, .. }
            | ProtocolError::InvalidField { msg_ref, .. }
            | ProtocolError::TooLong { msg_ref, .. }
            | ProtocolError::UnknownType { msg_ref, .. }
            | ProtocolError::UnsupportedVersion { msg_ref, .. } => msg_ref.as_ref(),
        }
    }

    /// The `error` message to send back. The connection stays open after it.
    pub fn to_server_message(&self) -> ServerMessage {
        ServerMessage::error(self.code(), self.to_string(), self.msg_ref().cloned())
    }
}

/// Whether a frame that [`parse_client_message`] refused was meant as a `join` (its `type` is
/// `"join"`), and if so whether it asked to resume: such a refusal counts as a failed join in
/// the metrics. Only called on refused frames, so the second parse costs nothing in the
/// common case.
pub fn join_attempt(text: &str) -> Option<bool> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    (object.get("type").and_then(Value::as_str) == Some("join"))
        .then(|| !matches!(object.get("resume"), None | Some(Value::Null)))
}

/// Parses one client text frame.
///
/// The frame size limit is the socket's job (it closes with 1009 before this is called);
/// this function bounds every field it accepts, so the result is safe to relay and to store.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| ProtocolError::MalformedJson {
            detail: error.to_string(),
        })?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    // The ref is read first so that every later error can echo it.
    let msg_ref = read_ref(&object)?;
    let fields = Fields {
        object: &object,
        msg_ref: &msg_ref,
    };
    let type_name = match object.get("type") {
        None | Some(Value::Null) => return Err(fields.missing("type")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(fields.invalid("type", "must be a string")),
    };

    match type_name {
        "join" => {
            let v = fields.version()?;
            let resume = match fields.optional("resume") {
                None => None,
                Some(Value::Object(resume)) => Some(fields.resume(resume)?),
                Some(_) => return Err(fields.invalid("resume", "must be an object")),
            };
            Ok(ClientMessage::Join { v, resume, msg_ref })
        }
        "offer" => Ok(ClientMessage::Offer {
            to: fields.participant("to")?,
            sdp: fields.text("sdp", Sdp::parse)?,
            msg_ref,
        }),
        "answer" => Ok(ClientMessage::Answer {
            to: fields.participant("to")?,
            sdp: fields.text("sdp", Sdp::parse)?,
            msg_ref,
        }),
        "candidate" => Ok(ClientMessage::Candidate {
            to: fields.participant("to")?,
            candidate: IceCandidate {
                candidate: fields.text("candidate", CandidateLine::parse)?,
                sdp_mid: fields.optional_text("sdpMid", SdpMid::parse)?,
                sdp_m_line_index: fields.optional_u16("sdpMLineIndex")?,
                username_fragment: fields
                    .optional_text("usernameFragment", UsernameFragment::parse)?,
            },
            msg_ref,
        }),
        "leave" => Ok(ClientMessage::Leave { msg_ref }),
        "ping" => Ok(ClientMessage::Ping { msg_ref }),
        other => Err(ProtocolError::UnknownType {
            type_name: other.chars().take(ECHOED_TYPE_MAX_CHARS).collect(),
            msg_ref,
        }),
    }
}

fn read_ref(object: &Map<String, Value>) -> Result<Option<MsgRef>, ProtocolError> {
    let no_ref = &None;
    let fields = Fields {
        object,
        msg_ref: no_ref,
    };
    fields.optional_text("ref", MsgRef::parse)
}

/// Typed access to the fields of one message, producing errors that carry its `ref`.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    msg_ref: &'a Option<MsgRef>,
}

impl<'a> Fields<'a> {
    /// A field's value; `null` counts as absent, as JavaScript clients often send it.
    fn optional(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|value| !value.is_null())
    }

    fn required(&self, field: &'static str) -> Result<&'a Value, ProtocolError> {
        self.optional(field).ok_or_else(|| self.missing(field))
    }

    fn missing(&self, field: &'static str) -> ProtocolError {
        ProtocolError::MissingField {
            field,
            msg_ref: self.msg_ref.clone(),
        }
    }

    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::InvalidField {
            field,
            reason: reason.into(),
            msg_ref: self.msg_ref.clone(),
        }
    }

    fn field_failure(&self, field: &'static str, error: FieldError) -> ProtocolError {
        match error {
            FieldError::TooLong { len, max } => ProtocolError::TooLong {
                field,
                len,
                max,
                msg_ref: self.msg_ref.clone(),
            },
            other => self.invalid(field, other.to_string()),
        }
    }

    fn id_failure(&self, field: &'static str, error: IdError) -> ProtocolError {
        match error {
            IdError::TooLong { len, max, .. } => ProtocolError::TooLong {
                field,
                len,
                max,
                msg_ref: self.msg_ref.clone(),
            },
            other => self.invalid(field, format!("is not a valid id: {other}")),
        }
    }

    fn string_value(
        &self,
        field: &'static str,
        value: &'a Value,
    ) -> Result<&'a str, ProtocolError> {
        value
            .as_str()
            .ok_or_else(|| self.invalid(field, "must be a string"))
    }

    fn text<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Result<T, FieldError>,
    ) -> Result<T, ProtocolError> {
        let s = self.string_value(field, self.required(field)?)?;
        parse(s).map_err(|error| self.field_failure(field, error))
    }

    fn optional_text<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, ProtocolError> {
        let Some(value) = self.optional(field) else {
            return Ok(None);
        };
        let s = self.string_value(field, value)?;
        parse(s)
            .map(Some)
            .map_err(|error| self.field_failure(field, error))
    }

    fn participant(&self, field: &'static str) -> Result<ParticipantId, ProtocolError> {
        let s = self.string_value(field, self.required(field)?)?;
        ParticipantId::parse(s).map_err(|error| self.id_failure(field, error))
    }

    fn optional_u16(&self, field: &'static str) -> Result<Option<u16>, ProtocolError> {
        let Some(value) = self.optional(field) else {
            return Ok(None);
        };
        value
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.invalid(field, "must be an integer from 0 to 65535"))
    }

    /// `join.v`: present, an integer, and the version this server speaks.
    fn version(&self) -> Result<u32, ProtocolError> {
        let value = self.required("v")?;
        let Value::Number(number) = value else {
            return Err(self.invalid("v", "must be an integer"));
        };
        match number.as_u64() {
            Some(n) if n == u64::from(PROTOCOL_VERSION) => Ok(PROTOCOL_VERSION),
            Some(_) => Err(ProtocolError::UnsupportedVersion {
                got: number.to_string(),
                msg_ref: self.msg_ref.clone(),
            }),
            // A negative integer: a version number, but never one we speak.
            None if number.is_i64() => Err(ProtocolError::UnsupportedVersion {
                got: number.to_string(),
                msg_ref: self.msg_ref.clone(),
            }),
            None => Err(self.invalid("v", "must be an integer")),
        }
    }

    fn resume(&self, resume: &'a Map<String, Value>) -> Result<Resume, ProtocolError> {
        let inner = Fields {
            object: resume,
            msg_ref: self.msg_ref,
        };
        let token = inner.string_value(
            "resume.token",
            inner
                .optional("token")
                .ok_or_else(|| self.missing("resume.token"))?,
        )?;
        let token =
            ResumeToken::parse(token).map_err(|error| self.field_failure("resume.token", error))?;
        let last_seq = inner
            .optional("lastSeq")
            .ok_or_else(|| self.missing("resume.lastSeq"))?
            .as_u64()
            .ok_or_else(|| self.invalid("resume.lastSeq", "must be a non-negative integer"))?;
        Ok(Resume { token, last_seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client_message(text).unwrap_err().code()
    }

    /// A browser's join and candidate messages parse into the expected values.
    #[test]
    fn parses_typical_messages() {
        let join = parse_client_message(
            r#"{"type":"join","v":1,"ref":"j1","resume":{"token":"rt.abc","lastSeq":7}}"#,
        )
        .unwrap();
        assert_eq!(
            join,
            ClientMessage::Join {
                v: 1,
                resume: Some(Resume {
                    token: ResumeToken::parse("rt.abc").unwrap(),
                    last_seq: 7
                }),
                msg_ref: Some(MsgRef::parse("j1").unwrap()),
            }
        );
        let candidate = parse_client_message(
            r#"{"type":"candidate","to":"p2","candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}"#,
        )
        .unwrap();
        let ClientMessage::Candidate { candidate, .. } = candidate else {
            panic!("not a candidate: {candidate:?}");
        };
        assert_eq!(candidate.sdp_m_line_index, Some(0));
        assert_eq!(candidate.username_fragment, None);
    }

    /// Each kind of bad input gets its own code.
    #[test]
    fn bad_input_codes() {
        assert_eq!(code("{"), ErrorCode::MalformedJson);
        assert_eq!(code(""), ErrorCode::MalformedJson);
        assert_eq!(code("[1]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"v":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"SendOffer"}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"join","v":2}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            code(r#"{"type":"join","v":-1}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(code(r#"{"type":"join","v":"1"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"offer","to":"p:2","sdp":"v=0"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"type":"candidate","to":"p2","candidate":"","sdpMLineIndex":70000}"#),
            ErrorCode::BadRequest
        );
    }

    /// Oversized fields are reported as such, naming the field and the limit.
    #[test]
    fn oversized_fields() {
        let sdp = "a".repeat(SDP_MAX);
        let text = format!(r#"{{"type":"offer","to":"p2","sdp":"{sdp}b","ref":"r9"}}"#);
        let error = parse_client_message(&text).unwrap_err();
        assert_eq!(
            error,
            ProtocolError::TooLong {
                field: "sdp",
                len: SDP_MAX + 1,
                max: SDP_MAX,
                msg_ref: MsgRef::parse("r9").ok(),
            }
        );
        let long_id = "p".repeat(65);
        let text = format!(r#"{{"type":"offer","to":"{long_id}","sdp":"v=0"}}"#);
        assert!(matches!(
            parse_client_message(&text),
            Err(ProtocolError::TooLong { field: "to", .. })
        ));
        let long_ref = "r".repeat(65);
        let text = format!(r#"{{"type":"ping","ref":"{long_ref}"}}"#);
        assert!(matches!(
            parse_client_message(&text),
            Err(ProtocolError::TooLong {
                field: "ref",
                msg_ref: None,
                ..
            })
        ));
    }

    const SDP_MAX: usize = super::super::SDP_MAX_BYTES;

    /// Errors after the ref is read echo it, so the client can match the error to its message.
    #[test]
    fn errors_echo_the_ref() {
        let error = parse_client_message(r#"{"type":"offer","ref":"o-1","to":"p2"}"#).unwrap_err();
        assert_eq!(error.msg_ref().map(MsgRef::as_str), Some("o-1"));
        assert_eq!(
            error.to_server_message().to_json(),
            r#"{"type":"error","code":"bad_request","message":"field `sdp` is missing","ref":"o-1"}"#
        );
        let error = parse_client_message(r#"{"type":"hello","ref":"h"}"#).unwrap_err();
        assert_eq!(error.msg_ref().map(MsgRef::as_str), Some("h"));
    }

    /// An unknown type is echoed only in part, however long it is.
    #[test]
    fn unknown_type_is_truncated() {
        let text = format!(r#"{{"type":"{}"}}"#, "x".repeat(10_000));
        let ProtocolError::UnknownType { type_name, .. } = parse_client_message(&text).unwrap_err()
        else {
            panic!("expected unknown_type");
        };
        assert_eq!(type_name.len(), ECHOED_TYPE_MAX_CHARS);
    }
}

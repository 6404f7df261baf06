//! Properties of the wire protocol: parsing never panics, agrees with the serde shapes, and
//! round-trips every valid message; server messages have the documented JSON shape.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use switchboard_signaling::ids::{DisplayName, ParticipantId, RoomId};
use switchboard_signaling::protocol::{
    CandidateLine, ClientMessage, CloseCode, ErrorCode, IceCandidate, IceServer, LeaveReason,
    MsgRef, Participant, ProtocolError, Resume, ResumeToken, Sdp, SdpMid, ServerMessage, SfuInfo,
    UsernameFragment, parse_client_message,
};

const FIELD_NAMES: &[&str] = &[
    "type",
    "v",
    "ref",
    "resume",
    "token",
    "lastSeq",
    "to",
    "sdp",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
    "usernameFragment",
];
const TYPE_NAMES: &[&str] = &["join", "offer", "answer", "candidate", "leave", "ping"];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..3).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::sample::select(TYPE_NAMES).prop_map(Value::from),
        "[A-Za-z0-9._-]{1,70}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// An object that looks like a message: a known (or random) type plus known fields with
/// arbitrary values, so the parser's field checks are exercised, not just its first line.
fn message_like_json() -> impl Strategy<Value = Value> {
    let type_value = prop_oneof![
        4 => prop::sample::select(TYPE_NAMES).prop_map(Value::from),
        1 => arbitrary_json(),
    ];
    (
        type_value,
        prop::collection::btree_map(field_name(), arbitrary_json(), 0..8),
    )
        .prop_map(|(type_value, fields)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert("type".into(), type_value);
            Value::Object(object)
        })
}

fn participant_id() -> impl Strategy<Value = ParticipantId> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| ParticipantId::parse(&s).unwrap())
}

fn msg_ref() -> impl Strategy<Value = Option<MsgRef>> {
    prop::option::of("(?s:.{0,64})".prop_map(|s| MsgRef::parse(&s).unwrap()))
}

fn sdp() -> impl Strategy<Value = Sdp> {
    "(?s:.{1,300})".prop_map(|s| Sdp::parse(&s).unwrap())
}

fn ice_candidate() -> impl Strategy<Value = IceCandidate> {
    (
        "(?s:.{0,200})",
        prop::option::of("(?s:.{0,16})"),
        prop::option::of(any::<u16>()),
        prop::option::of("[a-zA-Z0-9+/]{0,32}"),
    )
        .prop_map(|(candidate, mid, index, ufrag)| IceCandidate {
            candidate: CandidateLine::parse(&candidate).unwrap(),
            sdp_mid: mid.map(|mid| SdpMid::parse(&mid).unwrap()),
            sdp_m_line_index: index,
            username_fragment: ufrag.map(|ufrag| UsernameFragment::parse(&ufrag).unwrap()),
        })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    let resume = prop::option::of(("[A-Za-z0-9._~-]{1,100}", any::<u64>()).prop_map(
        |(token, last_seq)| Resume {
            token: ResumeToken::parse(&token).unwrap(),
            last_seq,
        },
    ));
    prop_oneof![
        (resume, msg_ref()).prop_map(|(resume, msg_ref)| ClientMessage::Join {
            v: 1,
            resume,
            msg_ref
        }),
        (participant_id(), sdp(), msg_ref()).prop_map(|(to, sdp, msg_ref)| ClientMessage::Offer {
            to,
            sdp,
            msg_ref
        }),
        (participant_id(), sdp(), msg_ref()).prop_map(|(to, sdp, msg_ref)| ClientMessage::Answer {
            to,
            sdp,
            msg_ref
        }),
        (participant_id(), ice_candidate(), msg_ref()).prop_map(|(to, candidate, msg_ref)| {
            ClientMessage::Candidate {
                to,
                candidate,
                msg_ref,
            }
        }),
        msg_ref().prop_map(|msg_ref| ClientMessage::Leave { msg_ref }),
        msg_ref().prop_map(|msg_ref| ClientMessage::Ping { msg_ref }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics the parser, and every refusal has a code.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Err(error) = parse_client_message(&text) {
            let _ = error.code();
            let _ = error.to_server_message().to_json();
        }
    }

    /// Arbitrary JSON never panics the parser; whatever it accepts, serde's shape accepts too,
    /// with the same value (the two paths cannot drift apart).
    #[test]
    fn arbitrary_json_never_panics(value in prop_oneof![arbitrary_json(), message_like_json()]) {
        let text = value.to_string();
        match parse_client_message(&text) {
            Ok(message) => {
                let via_serde: ClientMessage = serde_json::from_value(value.clone())
                    .map_err(|e| TestCaseError::fail(format!("serde refused {text}: {e}")))?;
                prop_assert_eq!(via_serde, message);
            }
            Err(error) => {
                let reply = serde_json::to_value(error.to_server_message()).unwrap();
                prop_assert_eq!(&reply["type"], "error");
                prop_assert_eq!(&reply["code"], &json!(error.code()));
            }
        }
    }

    /// Every valid client message survives serialize-then-parse unchanged.
    #[test]
    fn valid_messages_round_trip(message in client_message()) {
        let text = serde_json::to_string(&message).unwrap();
        prop_assert_eq!(parse_client_message(&text), Ok(message));
    }

    /// A valid message with its `ref` intact still echoes the ref when one field is broken.
    #[test]
    fn broken_field_keeps_ref(message in client_message(), pick in any::<prop::sample::Index>()) {
        let mut value = serde_json::to_value(&message).unwrap();
        let object = value.as_object_mut().unwrap();
        let fields: Vec<String> = object
            .keys()
            .filter(|key| *key != "ref" && *key != "type")
            .cloned()
            .collect();
        if fields.is_empty() {
            // leave and ping have nothing to break.
            return Ok(());
        }
        let field = pick.get(&fields);
        object.insert(field.clone(), json!({"not": "valid"}));
        object.insert("ref".to_owned(), json!("keep-me"));
        let error = parse_client_message(&value.to_string()).unwrap_err();
        prop_assert_eq!(error.msg_ref().map(MsgRef::as_str), Some("keep-me"));
    }
}

/// Malformed JSON, unknown types, missing fields and oversized strings are told apart.
#[test]
fn refusals_are_typed() {
    let cases: &[(&str, ErrorCode)] = &[
        (r#"{"type":"offer","#, ErrorCode::MalformedJson),
        ("\u{0}", ErrorCode::MalformedJson),
        (r#""join""#, ErrorCode::BadRequest),
        (r#"{"type":"JoinRoom"}"#, ErrorCode::UnknownType),
        (r#"{"type":"join","v":99}"#, ErrorCode::UnsupportedVersion),
        (r#"{"type":"answer","to":"p1"}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"answer","to":"p1","sdp":""}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"type":"candidate","to":"p1"}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"join","v":1,"resume":{"token":"t"}}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"join","v":1,"resume":{"token":"t","lastSeq":-1}}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"type":"ping","ref":5}"#, ErrorCode::BadRequest),
    ];
    for (text, code) in cases {
        let error = parse_client_message(text).unwrap_err();
        assert_eq!(error.code(), *code, "{text}: {error}");
    }
    let huge_candidate = format!(
        r#"{{"type":"candidate","to":"p1","candidate":"{}"}}"#,
        "c".repeat(1025)
    );
    assert!(matches!(
        parse_client_message(&huge_candidate),
        Err(ProtocolError::TooLong {
            field: "candidate",
            len: 1025,
            max: 1024,
            ..
        })
    ));
}

/// Deeply nested JSON is refused as malformed rather than overflowing the stack.
#[test]
fn deep_nesting_is_refused() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        parse_client_message(&text).unwrap_err().code(),
        ErrorCode::MalformedJson
    );
}

fn id<T: TryFrom<&'static str>>(s: &'static str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s).unwrap()
}

/// Server messages serialize to exactly the shapes `docs/protocol.md` shows.
#[test]
fn server_message_shapes() {
    let alice = Participant {
        id: id("p-a1"),
        user: id("alice"),
        name: Some(DisplayName::parse("Alice").unwrap()),
    };
    let joined = ServerMessage::Joined {
        v: 1,
        participant_id: id("p-a1"),
        room: RoomId::parse("standup").unwrap(),
        participants: vec![alice.clone()],
        sfu: Some(SfuInfo {
            node: "sfu-eu-1".into(),
            url: "wss://sfu-eu-1.example.com".into(),
            kind: "Opaque".into(),
            generation: 2,
            room: None,
            pin: None,
            token: None,
            token_expires_at: None,
        }),
        ice_servers: vec![IceServer {
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            username: Some("1700000000:alice".into()),
            credential: Some("c2VjcmV0".into()),
        }],
        resume_token: ResumeToken::parse("rt.x").unwrap(),
        seq: 0,
        resumed: false,
        msg_ref: Some(MsgRef::parse("j1").unwrap()),
    };
    assert_eq!(
        serde_json::to_value(&joined).unwrap(),
        json!({
            "type": "joined", "v": 1, "participantId": "p-a1", "room": "standup",
            "participants": [{"id": "p-a1", "user": "alice", "name": "Alice"}],
            "sfu": {"node": "sfu-eu-1", "url": "wss://sfu-eu-1.example.com",
                    "kind": "Opaque", "generation": 2},
            "iceServers": [{"urls": ["turn:turn.example.com:3478?transport=udp"],
                            "username": "1700000000:alice", "credential": "c2VjcmV0"}],
            "resumeToken": "rt.x", "seq": 0, "resumed": false, "ref": "j1"
        })
    );
    let candidate = ServerMessage::Candidate {
        from: id("p-b2"),
        candidate: IceCandidate {
            candidate: CandidateLine::parse("candidate:1 1 udp 1 192.0.2.1 9 typ host").unwrap(),
            sdp_mid: Some(SdpMid::parse("0").unwrap()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        },
        seq: 3,
    };
    assert_eq!(
        serde_json::to_value(&candidate).unwrap(),
        json!({"type": "candidate", "from": "p-b2",
               "candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host",
               "sdpMid": "0", "sdpMLineIndex": 0, "seq": 3})
    );
    let left = ServerMessage::ParticipantLeft {
        id: id("p-b2"),
        reason: LeaveReason::DuplicateIdentity,
    };
    assert_eq!(
        left.to_json(),
        r#"{"type":"participantLeft","id":"p-b2","reason":"duplicate_identity"}"#
    );
    let error = ServerMessage::error(ErrorCode::UnknownParticipant, "no such participant", None);
    assert_eq!(
        error.to_json(),
        r#"{"type":"error","code":"unknown_participant","message":"no such participant"}"#
    );
    let refresh = ServerMessage::SfuRefresh {
        sfu: SfuInfo {
            node: "sfu-a".into(),
            url: "ws://127.0.0.2:8188".into(),
            kind: "JanusVideoRoom".into(),
            generation: 3,
            room: Some("calls.standup.1a2b3c4d".into()),
            pin: Some("p1n".into()),
            token: Some("1764590000,janus,janus.plugin.videoroom:c2ln".into()),
            token_expires_at: Some(1764590000),
        },
    };
    assert_eq!(
        serde_json::to_value(&refresh).unwrap(),
        json!({"type": "sfuRefresh", "sfu": {
            "node": "sfu-a", "url": "ws://127.0.0.2:8188", "kind": "JanusVideoRoom",
            "generation": 3, "room": "calls.standup.1a2b3c4d", "pin": "p1n",
            "token": "1764590000,janus,janus.plugin.videoroom:c2ln",
            "tokenExpiresAt": 1764590000}})
    );
    for message in [joined, candidate, left, error, refresh] {
        let back: ServerMessage = serde_json::from_str(&message.to_json()).unwrap();
        assert_eq!(back, message);
    }
}

/// Error codes and leave reasons have stable snake_case strings, equal to their serde form.
#[test]
fn codes_are_stable_strings() {
    let expected = [
        "bad_request",
        "malformed_json",
        "unknown_type",
        "unsupported_version",
        "not_joined",
        "already_joined",
        "unknown_participant",
        "room_full",
        "room_not_found",
        "placement_timeout",
        "rate_limited",
        "resume_failed",
        "unavailable",
        "internal",
    ];
    let actual: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(actual, expected);
    for code in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
    }
    for reason in [
        LeaveReason::Left,
        LeaveReason::ConnectionLost,
        LeaveReason::DuplicateIdentity,
        LeaveReason::Kicked,
        LeaveReason::RoomDeleted,
    ] {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
    }
    assert_eq!(CloseCode::MessageTooBig.code(), 1009);
    assert_eq!(CloseCode::Replaced.code(), 4001);
}

/// Every JSON example in docs/protocol.md is a valid message of its direction, and every error
/// code and close code is documented, so the reference cannot drift from the code.
#[test]
fn docs_examples_are_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let docs = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut client_examples = 0;
    let mut server_examples = 0;
    let mut lines = docs.lines();
    while let Some(line) = lines.next() {
        let direction = match line.trim() {
            "```json client" => "client",
            "```json server" => "server",
            _ => continue,
        };
        let block: String = lines
            .by_ref()
            .take_while(|line| line.trim() != "```")
            .collect::<Vec<_>>()
            .join("\n");
        if direction == "client" {
            client_examples += 1;
            if let Err(error) = parse_client_message(&block) {
                panic!("client example does not parse ({error}):\n{block}");
            }
        } else {
            server_examples += 1;
            if let Err(error) = serde_json::from_str::<ServerMessage>(&block) {
                panic!("server example does not deserialize ({error}):\n{block}");
            }
        }
    }
    assert!(
        client_examples >= 6,
        "only {client_examples} client examples"
    );
    assert!(
        server_examples >= 12,
        "only {server_examples} server examples"
    );
    for code in ErrorCode::ALL {
        assert!(
            docs.contains(&format!("`{}`", code.as_str())),
            "error code {} is not documented",
            code.as_str()
        );
    }
    for close in [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::Replaced,
        CloseCode::Kicked,
        CloseCode::RoomDeleted,
        CloseCode::JoinTimeout,
        CloseCode::IdleTimeout,
        CloseCode::SlowConsumer,
    ] {
        assert!(
            docs.contains(&format!("| {} |", close.code())),
            "close code {} is not documented",
            close.code()
        );
    }
}

/// The Redis key table in `docs/architecture.md` is the store module's own (the source of
/// truth in `signaling/src/store/mod.rs`), row for row.
#[test]
fn the_documented_redis_keys_are_the_stores() {
    let rows = |text: &str, prefix: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter_map(|line| line.trim_start_matches(prefix).strip_prefix("| `sb:"))
            .map(|row| {
                format!("`sb:{row}")
                    .split('|')
                    .map(|cell| cell.trim().to_owned())
                    .filter(|cell| !cell.is_empty())
                    .collect()
            })
            .collect()
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let store = std::fs::read_to_string(root.join("src/store/mod.rs")).unwrap();
    let docs = std::fs::read_to_string(root.join("../docs/architecture.md")).unwrap();
    let from_store = rows(&store, "//! ");
    assert_eq!(from_store.len(), 6, "the store's key table");
    assert_eq!(rows(&docs, ""), from_store);
}

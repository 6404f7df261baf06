//! Identifiers and short names that cross trust boundaries: room, participant and user ids,
//! display names and region hints.
//!
//! Ids end up inside Redis keys and channel names (and a room id names a Kubernetes `Room`), so
//! each one is checked once, here, when it enters the process; everything downstream takes the
//! newtype and may build keys from it without escaping. This module only validates and
//! converts; it never does I/O.
//!
//! The id alphabet is `[A-Za-z0-9._-]`, 1 to 64 characters. `:` is deliberately not allowed:
//! it is the separator of our Redis keys (`sb:room:{<id>}:participants`) and of TURN REST usernames
//! (`<expiry>:<user>`), so an id can never be mistaken for, or forge, part of another key.
//! Braces are excluded too, so an id can never form a Redis Cluster hash tag of its own.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchboard_crds::validation::REGION_MAX_LEN;

/// The longest room, participant or user id accepted.
pub const ID_MAX_LEN: usize = 64;
/// The longest display name accepted, in characters (not bytes).
pub const DISPLAY_NAME_MAX_CHARS: usize = 64;
/// The longest region hint accepted; the same bound as `SfuNode.spec.region`.
pub const REGION_MAX_CHARS: usize = REGION_MAX_LEN as usize;

/// Why a value was refused. `kind` names the value ("room id", "display name", ...) so the
/// message can be shown to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is too long ({len}; at most {max})")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{kind} contains {found:?} at position {at}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    )]
    InvalidChar {
        kind: &'static str,
        found: char,
        at: usize,
    },
    #[error("{kind} contains a control character at position {at}")]
    ControlChar { kind: &'static str, at: usize },
    #[error(
        "region must be lowercase letters, digits and '-', and start and end with a letter or digit"
    )]
    InvalidRegion,
}

/// Checks the shared id rule. Length is checked on bytes first so a huge input is refused
/// without scanning it; since the alphabet is ASCII, bytes and characters agree for valid ids.
fn check_id(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > ID_MAX_LEN {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max: ID_MAX_LEN,
        });
    }
    for (at, found) in s.chars().enumerate() {
        if !is_id_char(found) {
            return Err(IdError::InvalidChar { kind, found, at });
        }
    }
    Ok(())
}

/// Whether `c` may appear in a room, participant or user id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Defines a validated id newtype. The three ids share one rule but stay distinct types so a
/// user id can never be passed where a participant id is expected.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id as text, ready for a Redis key or a log field.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_id($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A room, as named in the join token's `room` claim. Rooms are shared by every pod, so this
    /// id is part of the Redis keys and channels of the room.
    RoomId,
    "room id"
);
id_type!(
    /// One participant session in a room, chosen by the server. The same user joining twice gets
    /// a new participant id (and the older session is replaced).
    ParticipantId,
    "participant id"
);
id_type!(
    /// The application's user, from the join token's `sub` claim.
    UserId,
    "user id"
);

/// Prefix of Kubernetes names that encode a room id which is not itself a valid name.
/// Readable names never start with it, which is what keeps the mapping one-to-one.
const KUBE_ENCODED_PREFIX: &str = "x-";

impl RoomId {
    /// The name of this room's `Room` object in Kubernetes.
    ///
    /// Kubernetes names are lowercase DNS names, while room ids also allow upper case, `_` and
    /// `.`. An id that is already a DNS label (lowercase letters, digits and inner `-`, at most
    /// 63 characters) and does not start with `x-` is used as it is, so `kubectl get rooms`
    /// shows the names apps use. Any other id becomes `x-` followed by the hex of its bytes (at
    /// most 130 characters, within the 253 allowed). The mapping is one-to-one: two rooms can
    /// never share a `Room` object.
    pub fn kube_name(&self) -> String {
        if is_dns_label(&self.0) && !self.0.starts_with(KUBE_ENCODED_PREFIX) {
            return self.0.clone();
        }
        let mut name = String::with_capacity(KUBE_ENCODED_PREFIX.len() + 2 * self.0.len());
        name.push_str(KUBE_ENCODED_PREFIX);
        for byte in self.0.bytes() {
            name.push(hex_digit(byte >> 4));
            name.push(hex_digit(byte & 0x0f));
        }
        name
    }

    /// The room id a `Room` object name stands for: the inverse of [`RoomId::kube_name`].
    /// `None` for names no room id maps to (for example a `Room` created by hand as `x-zz`).
    pub fn from_kube_name(name: &str) -> Option<RoomId> {
        match name.strip_prefix(KUBE_ENCODED_PREFIX) {
            None => {
                if is_dns_label(name) {
                    RoomId::parse(name).ok()
                } else {
                    None
                }
            }
            Some(hex) => {
                if hex.len() % 2 != 0 {
                    return None;
                }
                let bytes = hex
                    .as_bytes()
                    .chunks_exact(2)
                    .map(|pair| match pair {
                        [high, low] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
                        _ => None,
                    })
                    .collect::<Option<Vec<u8>>>()?;
                let id = RoomId::try_from(String::from_utf8(bytes).ok()?).ok()?;
                // Only names `kube_name` itself produces map back, so the two stay inverses.
                (id.kube_name() == name).then_some(id)
            }
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    s.len() <= 63
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// A display name from the join token's `name` claim, shown to the other participants.
///
/// It is never part of a key, so any Unicode is allowed except control characters (which
/// could break logs and UIs); 1 to 64 characters.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates and wraps `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }

    fn check(s: &str) -> Result<(), IdError> {
        const KIND: &str = "display name";
        if s.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        // A character is at most 4 bytes: refuse obviously long input before counting.
        let chars = if s.len() > DISPLAY_NAME_MAX_CHARS * 4 {
            s.len()
        } else {
            s.chars().count()
        };
        if chars > DISPLAY_NAME_MAX_CHARS {
            return Err(IdError::TooLong {
                kind: KIND,
                len: chars,
                max: DISPLAY_NAME_MAX_CHARS,
            });
        }
        match s.chars().position(char::is_control) {
            Some(at) => Err(IdError::ControlChar { kind: KIND, at }),
            None => Ok(()),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::check(&s)?;
        Ok(Self(s))
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> String {
        name.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName({:?})", self.0)
    }
}

/// A region hint from the join token's `region` claim (`eu-west-1`). It uses the same rule as
/// `SfuNode.spec.region` (a DNS label, at most 63 characters), so a hint can always be
/// compared with, and copied into, a `Room.spec.region`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    /// Validates and wraps `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }

    fn check(s: &str) -> Result<(), IdError> {
        const KIND: &str = "region";
        if s.is_empty() {
            return Err(IdError::Empty { kind: KIND });
        }
        if s.len() > REGION_MAX_CHARS {
            return Err(IdError::TooLong {
                kind: KIND,
                len: s.len(),
                max: REGION_MAX_CHARS,
            });
        }
        if is_dns_label(s) {
            Ok(())
        } else {
            Err(IdError::InvalidRegion)
        }
    }

    /// The region as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Region {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::check(&s)?;
        Ok(Self(s))
    }
}

impl From<Region> for String {
    fn from(region: Region) -> String {
        region.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({:?})", self.0)
    }
}

/// `bytes` random bytes as lowercase hex, for ids that must not collide (participant ids,
/// resume tokens, webhook event ids). Not for secrets: when the OS random source fails it
/// falls back to the clock in nanoseconds, which keeps ids unique per process.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{nanos:032x}");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID_PATTERN: &str = "[A-Za-z0-9._-]{1,64}";

    proptest! {
        /// Every string of the documented alphabet and length is a valid id of each kind.
        #[test]
        fn alphabet_strings_are_ids(s in ID_PATTERN) {
            let room = RoomId::parse(&s).unwrap();
            prop_assert_eq!(room.as_str(), s.as_str());
            prop_assert!(ParticipantId::parse(&s).is_ok());
            prop_assert!(UserId::parse(&s).is_ok());
        }

        /// Any character outside the alphabet (including ':', '{', '/', spaces and non-ASCII)
        /// is refused wherever it appears.
        #[test]
        fn foreign_characters_are_refused(
            prefix in "[A-Za-z0-9._-]{0,30}",
            bad in any::<char>().prop_filter("outside the alphabet", |c| !is_id_char(*c)),
            suffix in "[A-Za-z0-9._-]{0,30}",
        ) {
            let s = format!("{prefix}{bad}{suffix}");
            let refused = matches!(
                RoomId::parse(&s),
                Err(IdError::InvalidChar { .. } | IdError::TooLong { .. })
            );
            prop_assert!(refused, "{s:?} was accepted");
            prop_assert!(UserId::parse(&s).is_err());
        }

        /// Ids longer than 64 are refused, whatever they contain.
        #[test]
        fn long_ids_are_refused(s in "[A-Za-z0-9._-]{65,200}") {
            let refused = matches!(RoomId::parse(&s), Err(IdError::TooLong { max: 64, .. }));
            prop_assert!(refused);
        }

        /// Arbitrary input never panics, and anything accepted satisfies the documented rule.
        #[test]
        fn arbitrary_input_is_checked(s in any::<String>()) {
            if let Ok(id) = ParticipantId::parse(&s) {
                prop_assert!((1..=64).contains(&id.as_str().len()));
                prop_assert!(id.as_str().chars().all(is_id_char));
            }
            let _ = DisplayName::parse(&s);
            let _ = Region::parse(&s);
        }

        /// Ids survive a JSON round trip, and JSON cannot smuggle in an invalid id.
        #[test]
        fn ids_round_trip_through_json(s in any::<String>()) {
            let json = serde_json::to_string(&s).unwrap();
            match serde_json::from_str::<UserId>(&json) {
                Ok(id) => {
                    prop_assert_eq!(id.as_str(), s.as_str());
                    prop_assert_eq!(serde_json::to_string(&id).unwrap(), json);
                }
                Err(_) => prop_assert!(UserId::parse(&s).is_err()),
            }
        }

        /// Every room maps to a valid Kubernetes object name, and back to itself.
        #[test]
        fn kube_names_are_valid_and_invertible(s in ID_PATTERN) {
            let room = RoomId::parse(&s).unwrap();
            let name = room.kube_name();
            prop_assert!(is_dns_subdomain(&name), "{name:?}");
            prop_assert_eq!(RoomId::from_kube_name(&name), Some(room));
        }

        /// Two different rooms never share a Kubernetes name.
        #[test]
        fn kube_names_are_one_to_one(a in ID_PATTERN, b in ID_PATTERN) {
            prop_assume!(a != b);
            let (a, b) = (RoomId::parse(&a).unwrap(), RoomId::parse(&b).unwrap());
            prop_assert_ne!(a.kube_name(), b.kube_name());
        }

        /// Anything `from_kube_name` accepts maps back to the same name (so no hand-made
        /// `Room` name aliases a room id).
        #[test]
        fn from_kube_name_only_accepts_its_own_names(name in "(x-)?[a-z0-9.-]{0,70}") {
            if let Some(room) = RoomId::from_kube_name(&name) {
                prop_assert_eq!(room.kube_name(), name);
            }
        }

        /// Region hints follow the SfuNode region rule exactly.
        #[test]
        fn regions_follow_the_crd_rule(s in "[a-z0-9-]{0,70}") {
            let crd_rule = !s.is_empty()
                && s.len() <= 63
                && !s.starts_with('-')
                && !s.ends_with('-');
            prop_assert_eq!(Region::parse(&s).is_ok(), crd_rule);
        }
    }

    /// The DNS-1123 subdomain rule the apiserver applies to object names: at most 253
    /// characters, dot-separated parts of lowercase letters, digits and inner '-' (the parts
    /// themselves are not limited to 63 characters).
    fn is_dns_subdomain(s: &str) -> bool {
        let part_ok = |part: &str| {
            let edge =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(part.chars().next())
                && edge(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        s.len() <= 253 && s.split('.').all(part_ok)
    }

    /// Readable room ids keep their name; others are hex-encoded.
    #[test]
    fn kube_name_examples() {
        let name = |s: &str| RoomId::parse(s).unwrap().kube_name();
        assert_eq!(name("standup-42"), "standup-42");
        assert_eq!(name("Standup"), "x-5374616e647570");
        assert_eq!(name("a_b"), "x-615f62");
        assert_eq!(name("x-1"), "x-782d31");
        assert_eq!(RoomId::from_kube_name("x-zz"), None);
        assert_eq!(RoomId::from_kube_name("x-41"), RoomId::parse("A").ok());
        // "x-61" would decode to "a", but "a" is named "a": not an alias.
        assert_eq!(RoomId::from_kube_name("x-61"), None);
    }

    /// Display names allow Unicode but not control characters or more than 64 characters.
    #[test]
    fn display_names() {
        assert!(DisplayName::parse("Zoë 🚀 O'Brien").is_ok());
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
        assert!(matches!(
            DisplayName::parse(&"é".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            DisplayName::parse("a\nb"),
            Err(IdError::ControlChar { at: 1, .. })
        ));
        assert!(DisplayName::parse("").is_err());
    }

    /// Error messages name the value and the offending character.
    #[test]
    fn error_messages_are_specific() {
        let error = RoomId::parse("room:1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "room id contains ':' at position 4; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
        );
    }
}

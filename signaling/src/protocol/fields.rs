//! Bounded text fields of the wire protocol: SDP, ICE candidate parts, message refs and resume
//! tokens.
//!
//! Each type enforces its size limit when it is built (and when it is deserialized), so a
//! relay path holding an [`Sdp`] knows it is at most 32 KiB without checking again. Contents
//! are otherwise opaque: the server relays SDP and candidates without interpreting them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest SDP accepted in an `offer` or `answer`, in bytes. Real offers with many
/// simulcast layers stay well below it; anything larger is abuse of the relay.
pub const SDP_MAX_BYTES: usize = 32 * 1024;
/// The largest ICE candidate line accepted, in bytes.
pub const CANDIDATE_MAX_BYTES: usize = 1024;
/// The longest `sdpMid` accepted, in bytes.
pub const SDP_MID_MAX_BYTES: usize = 64;
/// The longest `usernameFragment` accepted, in bytes (RFC 8445 allows up to 256 characters).
pub const USERNAME_FRAGMENT_MAX_BYTES: usize = 256;
/// The longest `ref` accepted, in characters.
pub const REF_MAX_CHARS: usize = 64;
/// The longest resume token accepted, in bytes.
pub const RESUME_TOKEN_MAX_BYTES: usize = 256;

/// Why a field value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} long; at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("contains {found:?}; only A-Z, a-z, 0-9, '.', '_', '~' and '-' are allowed")]
    InvalidChar { found: char },
}

/// Defines a bounded text newtype. `$measure` says how length is counted: bytes for fields that
/// are stored and relayed (their memory cost), characters for the client-chosen `ref`.
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, allow_empty = $allow_empty:expr, measure = $measure:expr, chars_ok = $chars_ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted.
            pub const MAX: usize = $max;

            /// Validates and wraps `s`.
            pub fn parse(s: &str) -> Result<Self, FieldError> {
                Self::check(s)?;
                Ok(Self(s.to_owned()))
            }

            fn check(s: &str) -> Result<(), FieldError> {
                if s.is_empty() && !$allow_empty {
                    return Err(FieldError::Empty);
                }
                let measure: fn(&str) -> usize = $measure;
                let len = measure(s);
                if len > $max {
                    return Err(FieldError::TooLong { len, max: $max });
                }
                let chars_ok: fn(char) -> bool = $chars_ok;
                match s.chars().find(|c| !chars_ok(*c)) {
                    Some(found) => Err(FieldError::InvalidChar { found }),
                    None => Ok(()),
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// Counts bytes, the cost of a field that is stored and relayed.
fn bytes(s: &str) -> usize {
    s.len()
}

/// Counts characters, but refuses obviously long input (more than 4 bytes per allowed
/// character) without scanning it.
fn chars(s: &str) -> usize {
    if s.len() > REF_MAX_CHARS * 4 {
        s.len()
    } else {
        s.chars().count()
    }
}

fn any_char(_: char) -> bool {
    true
}

/// Resume tokens are minted by the server; this alphabet covers base64url and JWT-like forms
/// while keeping them safe to put in a Redis key.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')
}

bounded_text!(
    /// A session description (the `sdp` of an `offer` or `answer`): 1 byte to 32 KiB.
    Sdp,
    max = SDP_MAX_BYTES,
    allow_empty = false,
    measure = bytes,
    chars_ok = any_char
);
bounded_text!(
    /// An ICE candidate line (`candidate:...`), at most 1 KiB. It may be empty: browsers signal
    /// the end of candidates with an empty candidate.
    CandidateLine,
    max = CANDIDATE_MAX_BYTES,
    allow_empty = true,
    measure = bytes,
    chars_ok = any_char
);
bounded_text!(
    /// The media stream identification tag a candidate belongs to (`sdpMid`).
    SdpMid,
    max = SDP_MID_MAX_BYTES,
    allow_empty = true,
    measure = bytes,
    chars_ok = any_char
);
bounded_text!(
    /// The ICE username fragment a candidate belongs to (`usernameFragment`).
    UsernameFragment,
    max = USERNAME_FRAGMENT_MAX_BYTES,
    allow_empty = true,
    measure = bytes,
    chars_ok = any_char
);
bounded_text!(
    /// A client-chosen correlation string (`ref`), echoed in the reply or error to that message.
    MsgRef,
    max = REF_MAX_CHARS,
    allow_empty = true,
    measure = chars,
    chars_ok = any_char
);
bounded_text!(
    /// The opaque token that lets a client resume its session after a reconnect.
    ResumeToken,
    max = RESUME_TOKEN_MAX_BYTES,
    allow_empty = false,
    measure = bytes,
    chars_ok = token_char
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each limit is inclusive: the maximum is accepted, one more is refused.
    #[test]
    fn limits_are_inclusive() {
        assert!(Sdp::parse(&"a".repeat(SDP_MAX_BYTES)).is_ok());
        assert_eq!(
            Sdp::parse(&"a".repeat(SDP_MAX_BYTES + 1)),
            Err(FieldError::TooLong {
                len: SDP_MAX_BYTES + 1,
                max: SDP_MAX_BYTES
            })
        );
        assert!(CandidateLine::parse(&"a".repeat(CANDIDATE_MAX_BYTES)).is_ok());
        assert!(CandidateLine::parse(&"a".repeat(CANDIDATE_MAX_BYTES + 1)).is_err());
        assert!(MsgRef::parse(&"é".repeat(REF_MAX_CHARS)).is_ok());
        assert!(MsgRef::parse(&"é".repeat(REF_MAX_CHARS + 1)).is_err());
    }

    /// Empty values are refused only where they mean nothing.
    #[test]
    fn empty_values() {
        assert_eq!(Sdp::parse(""), Err(FieldError::Empty));
        assert!(CandidateLine::parse("").is_ok());
        assert!(MsgRef::parse("").is_ok());
        assert_eq!(ResumeToken::parse(""), Err(FieldError::Empty));
    }

    /// Resume tokens only carry key-safe characters.
    #[test]
    fn resume_token_alphabet() {
        assert!(ResumeToken::parse("rt1.AbC-_~9").is_ok());
        assert_eq!(
            ResumeToken::parse("a:b"),
            Err(FieldError::InvalidChar { found: ':' })
        );
    }
}

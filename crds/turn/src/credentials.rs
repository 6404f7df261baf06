//! TURN REST API credentials, as coturn checks them with `use-auth-secret`.
//!
//! A credential is `username = "<unix-expiry-seconds>:<user>"` and
//! `password = base64(HMAC-SHA1(secret, username))` (standard alphabet, padded). coturn
//! recomputes the password from every secret in its set and refuses the credential once the
//! expiry has passed, so signaling can mint credentials without talking to the TURN servers.
//!
//! This module only computes and checks; it never reads clocks or secrets itself: callers pass
//! `now_unix` and the secret bytes, which keeps every function pure and testable.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Longest `<user>` part we mint, in bytes. STUN caps USERNAME at 513 bytes; staying far below
/// leaves room for the expiry prefix and keeps log lines readable.
pub const MAX_USER_LEN: usize = 128;

/// Errors from minting or verifying a credential. Messages never contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the shared secret is empty")]
    EmptySecret,
    #[error("no shared secret to verify against")]
    NoSecrets,
    #[error("invalid TURN user: {reason}")]
    InvalidUser { reason: &'static str },
    #[error("credential TTL must be at least one second")]
    ZeroTtl,
    #[error("expiry overflows: now {now_unix} + ttl {ttl_secs} seconds")]
    ExpiryOverflow { now_unix: u64, ttl_secs: u64 },
    #[error("malformed TURN username: {reason}")]
    Malformed { reason: &'static str },
    #[error("credential expired at {expired_at} (now {now_unix})")]
    Expired { expired_at: u64, now_unix: u64 },
    #[error("password does not match any shared secret")]
    BadSignature,
}

impl CredentialError {
    /// Stable, low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EmptySecret => "empty_secret",
            Self::NoSecrets => "no_secrets",
            Self::InvalidUser { .. } => "invalid_user",
            Self::ZeroTtl => "zero_ttl",
            Self::ExpiryOverflow { .. } => "expiry_overflow",
            Self::Malformed { .. } => "malformed",
            Self::Expired { .. } => "expired",
            Self::BadSignature => "bad_signature",
        }
    }
}

pub type Result<T, E = CredentialError> = std::result::Result<T, E>;

/// A minted TURN credential, ready for an `RTCIceServer` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
    /// First second at which coturn refuses the credential.
    pub expires_at_unix: u64,
}

// The password is a bearer token for the relay until it expires: keep it out of logs.
impl fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// Mints a credential for `user`, valid from `now_unix` for `ttl_secs` seconds.
///
/// `user` must be non-empty, at most [`MAX_USER_LEN`] bytes, and contain neither `:` (coturn
/// splits the username on it) nor control characters (they end up in coturn's logs).
pub fn mint(secret: &[u8], user: &str, now_unix: u64, ttl_secs: u64) -> Result<TurnCredential> {
    if secret.is_empty() {
        return Err(CredentialError::EmptySecret);
    }
    validate_user(user).map_err(|reason| CredentialError::InvalidUser { reason })?;
    if ttl_secs == 0 {
        return Err(CredentialError::ZeroTtl);
    }
    let expires_at_unix = now_unix
        .checked_add(ttl_secs)
        .ok_or(CredentialError::ExpiryOverflow { now_unix, ttl_secs })?;
    let username = format!("{expires_at_unix}:{user}");
    let password = STANDARD.encode(sign(secret, &username).finalize().into_bytes());
    Ok(TurnCredential {
        username,
        password,
        expires_at_unix,
    })
}

/// Checks a credential the way coturn does: the expiry must still be in the future and the
/// password must match the HMAC under at least one of `secrets` (compared in constant time).
///
/// Empty secrets never match, so a blank entry in a secret list cannot turn into a key
/// everyone knows.
pub fn verify(secrets: &[&[u8]], username: &str, password: &str, now_unix: u64) -> Result<()> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed {
        reason: "missing ':' between expiry and user",
    })?;
    // u64::from_str accepts a leading '+', which we never mint; demand plain digits.
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed {
            reason: "expiry is not a decimal number",
        });
    }
    let expired_at: u64 = expiry.parse().map_err(|_| CredentialError::Malformed {
        reason: "expiry does not fit in 64 bits",
    })?;
    validate_user(user).map_err(|reason| CredentialError::Malformed { reason })?;
    if now_unix >= expired_at {
        return Err(CredentialError::Expired {
            expired_at,
            now_unix,
        });
    }
    if secrets.is_empty() {
        return Err(CredentialError::NoSecrets);
    }
    let tag = STANDARD
        .decode(password)
        .map_err(|_| CredentialError::BadSignature)?;
    let matched = secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .any(|secret| sign(secret, username).verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(CredentialError::BadSignature)
    }
}

/// HMAC-SHA1 over the username, ready to finalize or verify.
fn sign(secret: &[u8], username: &str) -> HmacSha1 {
    // HMAC takes keys of any length (long ones are hashed first), so `new_from_slice` cannot
    // fail; the fallback keeps the no-panic rule without an unreachable error variant.
    let mut mac = match HmacSha1::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => <HmacSha1 as Mac>::new(&Default::default()),
    };
    mac.update(username.as_bytes());
    mac
}

fn validate_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("user is empty");
    }
    if user.len() > MAX_USER_LEN {
        return Err("user is longer than 128 bytes");
    }
    if user.contains(':') {
        return Err("user contains ':'");
    }
    if user.chars().any(char::is_control) {
        return Err("user contains a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Passwords computed independently with Python's hmac/hashlib/base64, e.g.
    /// `base64.b64encode(hmac.new(key, username.encode(), hashlib.sha1).digest())`.
    const PYTHON_VECTORS: &[(&[u8], &str, u64, u64, &str)] = &[
        (
            b"north-rotation-secret",
            "alice",
            1_700_000_000,
            3600,
            "KGSCJlsPtzgJKpLTyM5Q2HalYSA=",
        ),
        (
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "room-7/bob",
            4_102_444_000,
            800,
            "Um1D/VnBtl5OGat9oIRdlrBOW98=",
        ),
        (
            "ключ".as_bytes(),
            "José 日本",
            0,
            86_400,
            "J9EygqtKvuGNgGOmSv7aNsXR42U=",
        ),
        // A key longer than SHA-1's 64-byte block takes HMAC's hash-the-key path.
        (&[b'k'; 100], "x", 0, 1, "/MwKtMQe7zK7l9wqUIPu/geYCBA="),
    ];

    #[test]
    fn mint_matches_independently_computed_vectors() {
        for &(secret, user, now, ttl, password) in PYTHON_VECTORS {
            let cred = mint(secret, user, now, ttl).unwrap();
            assert_eq!(cred.username, format!("{}:{user}", now + ttl));
            assert_eq!(cred.password, password, "user {user}");
            assert_eq!(cred.expires_at_unix, now + ttl);
        }
    }

    #[test]
    fn sign_matches_rfc_2202_test_case_2() {
        // RFC 2202 section 3, test case 2: key "Jefe", digest effcdf6a...9c259a7c79.
        let tag = sign(b"Jefe", "what do ya want for nothing?")
            .finalize()
            .into_bytes();
        assert_eq!(STANDARD.encode(tag), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn mint_rejects_bad_input() {
        let s = b"secret".as_slice();
        assert_eq!(mint(b"", "u", 0, 1), Err(CredentialError::EmptySecret));
        assert!(matches!(
            mint(s, "", 0, 1),
            Err(CredentialError::InvalidUser { .. })
        ));
        assert!(matches!(
            mint(s, "a:b", 0, 1),
            Err(CredentialError::InvalidUser { .. })
        ));
        assert!(matches!(
            mint(s, "a\nb", 0, 1),
            Err(CredentialError::InvalidUser { .. })
        ));
        assert!(matches!(
            mint(s, "a\u{7f}", 0, 1),
            Err(CredentialError::InvalidUser { .. })
        ));
        assert!(matches!(
            mint(s, &"u".repeat(129), 0, 1),
            Err(CredentialError::InvalidUser { .. })
        ));
        assert!(mint(s, &"u".repeat(128), 0, 1).is_ok());
        assert_eq!(mint(s, "u", 0, 0), Err(CredentialError::ZeroTtl));
        assert_eq!(
            mint(s, "u", u64::MAX, 1),
            Err(CredentialError::ExpiryOverflow {
                now_unix: u64::MAX,
                ttl_secs: 1
            })
        );
    }

    #[test]
    fn verify_rejects_malformed_usernames() {
        let s: &[&[u8]] = &[b"secret"];
        for bad in [
            "alice",
            ":alice",
            "+5:alice",
            "12a:alice",
            "99999999999999999999999:alice",
            "100:",
            "100:a:b",
        ] {
            assert!(
                matches!(
                    verify(s, bad, "x", 0),
                    Err(CredentialError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn verify_refuses_expired_before_checking_signature() {
        let cred = mint(b"secret", "u", 100, 10).unwrap();
        let s: &[&[u8]] = &[b"secret"];
        assert_eq!(verify(s, &cred.username, &cred.password, 109), Ok(()));
        assert_eq!(
            verify(s, &cred.username, &cred.password, 110),
            Err(CredentialError::Expired {
                expired_at: 110,
                now_unix: 110
            })
        );
    }

    #[test]
    fn verify_needs_a_non_empty_matching_secret() {
        let cred = mint(b"secret", "u", 0, 10).unwrap();
        assert_eq!(
            verify(&[], &cred.username, &cred.password, 0),
            Err(CredentialError::NoSecrets)
        );
        assert_eq!(
            verify(&[b"", b"other"], &cred.username, &cred.password, 0),
            Err(CredentialError::BadSignature)
        );
        assert_eq!(
            verify(&[b"secret"], &cred.username, "not base64!", 0),
            Err(CredentialError::BadSignature)
        );
        // A truncated tag must not match as a prefix.
        assert_eq!(
            verify(&[b"secret"], &cred.username, &cred.password[..12], 0),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn debug_redacts_password() {
        let cred = mint(b"secret", "u", 0, 10).unwrap();
        let shown = format!("{cred:?}");
        assert!(!shown.contains(&cred.password));
        assert!(shown.contains("<redacted>"));
    }

    fn user() -> impl Strategy<Value = String> {
        "[^:\\p{Cc}]{1,32}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// A minted credential verifies for its whole lifetime and not a second longer.
        #[test]
        fn mint_verify_roundtrip(
            secret in prop::collection::vec(any::<u8>(), 1..100),
            user in user(),
            now in 0u64..4_000_000_000,
            ttl in 1u64..1_000_000,
        ) {
            let cred = mint(&secret, &user, now, ttl).unwrap();
            let secrets: &[&[u8]] = &[&secret];
            prop_assert_eq!(verify(secrets, &cred.username, &cred.password, now), Ok(()));
            prop_assert_eq!(verify(secrets, &cred.username, &cred.password, now + ttl - 1), Ok(()));
            let expired = verify(secrets, &cred.username, &cred.password, now + ttl);
            prop_assert!(matches!(expired, Err(CredentialError::Expired { .. })), "{:?}", expired);
        }

        /// Any other secret fails; the right one anywhere in the list succeeds.
        #[test]
        fn other_secret_fails(
            secret in prop::collection::vec(any::<u8>(), 1..80),
            other in prop::collection::vec(any::<u8>(), 1..80),
            user in user(),
            now in 0u64..4_000_000_000,
        ) {
            prop_assume!(secret != other);
            let cred = mint(&secret, &user, now, 60).unwrap();
            prop_assert_eq!(
                verify(&[&other], &cred.username, &cred.password, now),
                Err(CredentialError::BadSignature)
            );
            prop_assert_eq!(verify(&[&other, &secret], &cred.username, &cred.password, now), Ok(()));
        }

        /// Verification after the expiry fails whatever the secrets.
        #[test]
        fn expired_fails(
            secret in prop::collection::vec(any::<u8>(), 1..80),
            user in user(),
            now in 0u64..4_000_000_000,
            ttl in 1u64..100_000,
            late in 0u64..100_000,
        ) {
            let cred = mint(&secret, &user, now, ttl).unwrap();
            prop_assert_eq!(
                verify(&[&secret], &cred.username, &cred.password, now + ttl + late),
                Err(CredentialError::Expired { expired_at: now + ttl, now_unix: now + ttl + late })
            );
        }
    }
}

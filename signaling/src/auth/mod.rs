//! Join-token verification, done before the WebSocket upgrade.
//!
//! The app's backend mints a short-lived JWT saying which user may enter which room; the server
//! checks it here and answers any failure with 401 and a stable `{"error", "message"}` body
//! before a socket exists. Order of checks: shape and header, key by `kid`, the key's pinned
//! algorithm, then signature and registered claims (by jsonwebtoken), then our own claims.
//!
//! Guarantees: the algorithm always comes from the key's configuration, never from the token;
//! no claim is looked at before the signature has been verified; every refusal maps to one
//! [`AuthError`] with a stable code. This module does no I/O and reads no clock: the caller
//! passes `now` (jsonwebtoken additionally checks `exp` and `nbf` against the system clock, so
//! a wrong `now` can never make an expired token pass).

mod keys;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::SystemTime;

pub use self::keys::{
    AdminMintClaims, AuthConfig, AuthConfigBuilder, DEFAULT_LEEWAY, DEFAULT_MAX_LIFETIME,
    HS256_MIN_SECRET_BYTES, Hs256Signer, KID_MAX_LEN, KeyAlgorithm, KeyError, MAX_LEEWAY,
    MintClaims,
};
use self::keys::{VerificationKey, unix_seconds};
use crate::ids::{DisplayName, IdError, Region, RoomId, UserId};

/// The longest token accepted. Real join tokens are a few hundred bytes; the bound keeps
/// base64 and JSON decoding of hostile input cheap.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a verified join token admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims {
    /// `sub`: who is joining.
    pub user: UserId,
    /// `room`: the one room the token admits.
    pub room: RoomId,
    /// `name`: how others see the user.
    pub name: Option<DisplayName>,
    /// `region`: where the user is, used to place a new room near them.
    pub region: Option<Region>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// `iat`, in seconds since the Unix epoch, when present.
    pub issued_at: Option<u64>,
    /// The configured key that verified the token (for logs; not secret).
    pub key_id: String,
}

/// What a verified admin token grants: the whole server API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaims {
    /// `sub`: who is acting (for logs).
    pub subject: String,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The configured key that verified the token.
    pub key_id: String,
}

/// The audience admin tokens name unless `--admin-audience` says otherwise.
pub const DEFAULT_ADMIN_AUDIENCE: &str = "switchboard-admin";

/// Why a join token was refused. Each variant has a stable [`AuthError::code`]; messages never
/// include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token: send `Authorization: Bearer <token>` or `?access_token=<token>`")]
    MissingToken,
    #[error("the access token is not a well-formed JWT: {reason}")]
    Malformed { reason: &'static str },
    #[error("the token's algorithm is not accepted; tokens must use HS256, RS256, ES256 or EdDSA")]
    UnsupportedAlgorithm,
    #[error("the token has no `kid` header, and several keys are configured")]
    MissingKid,
    #[error("the token's `kid` names no configured key")]
    UnknownKid,
    #[error("the token is signed with {got}, but its key is pinned to {expected}")]
    AlgorithmMismatch {
        expected: KeyAlgorithm,
        got: KeyAlgorithm,
    },
    #[error("the token's signature does not verify")]
    InvalidSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf` or `iat` is in the future)")]
    NotYetValid,
    #[error("the token has no `exp` claim")]
    MissingExp,
    #[error("the token's `exp` claim must be a number of seconds since the Unix epoch")]
    InvalidExp,
    #[error("the token lives {lifetime_secs} s; at most {max_secs} s are accepted")]
    LifetimeTooLong { lifetime_secs: u64, max_secs: u64 },
    #[error("the token's `aud` claim is missing or names another audience")]
    InvalidAudience,
    #[error("the token's `iss` claim is missing or names another issuer")]
    InvalidIssuer,
    #[error("the token's `{claim}` claim {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    #[error("the token is for another room")]
    RoomMismatch,
    /// A `room` query parameter that is no room id at all can name no token's room; it is a
    /// `room_mismatch`, with a message saying why.
    #[error("the `room` query parameter is not a room id ({reason}), so it matches no token")]
    InvalidRoomParameter { reason: String },
    #[error("the server could not use its verification key")]
    KeyUnusable,
    /// A join token (it names a `room`) presented to the server API.
    #[error(
        "a join token cannot be used on the server API; send an admin token (`admin: true`, `aud` the admin audience)"
    )]
    JoinToken,
    /// A token for the admin audience without the admin grant.
    #[error("the token has no admin grant (`\"admin\": true`)")]
    NotAdmin,
}

impl AuthError {
    /// The stable code sent as `error` in the 401 body (and usable as a metric label).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed { .. } => "malformed_token",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::MissingKid => "missing_kid",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::AlgorithmMismatch { .. } => "algorithm_mismatch",
            AuthError::InvalidSignature => "invalid_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::MissingExp => "missing_exp",
            AuthError::InvalidExp => "invalid_exp",
            AuthError::LifetimeTooLong { .. } => "lifetime_too_long",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::InvalidClaim { .. } => "invalid_claim",
            AuthError::RoomMismatch | AuthError::InvalidRoomParameter { .. } => "room_mismatch",
            AuthError::KeyUnusable => "server_key_error",
            AuthError::JoinToken => "join_token",
            AuthError::NotAdmin => "not_admin",
        }
    }

    /// The HTTP status to answer with: 401, except 403 for a valid token that does not grant
    /// the server API, and 500 when our own key is at fault.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::KeyUnusable => 500,
            AuthError::JoinToken | AuthError::NotAdmin => 403,
            _ => 401,
        }
    }

    /// The response body: `{"error": <code>, "message": <text>}`.
    pub fn to_json_body(&self) -> String {
        crate::protocol::ErrorBody::new(self.code(), self.to_string()).to_json()
    }
}

/// The JOSE header fields we look at before choosing a key. Unknown fields are ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11) must be understood or the token refused; we
    /// understand none.
    #[serde(default)]
    crit: Option<Value>,
}

impl AuthConfig {
    /// Verifies a join token at time `now`.
    ///
    /// `requested_room` is the room the client asked for (for example from the URL); a token
    /// for another room is refused. With `None`, the token's room is the one joined.
    pub fn verify(
        &self,
        token: &str,
        requested_room: Option<&RoomId>,
        now: SystemTime,
    ) -> Result<JoinClaims, AuthError> {
        let (kid, claims) = self.verified_claims(token)?;
        // The signature is verified: from here on the claims are the issuer's.
        let times = self.check_times(&claims, now)?;
        let mut verified = join_claims(&claims, times)?;
        if let Some(requested) = requested_room
            && *requested != verified.room
        {
            return Err(AuthError::RoomMismatch);
        }
        verified.key_id = kid.to_owned();
        Ok(verified)
    }

    /// Verifies an admin token (for the server API) at time `now`. This configuration must
    /// require the admin audience ([`AuthConfigBuilder::audience`]), which join tokens do not
    /// carry; the token must also carry the grant `"admin": true`.
    pub fn verify_admin(&self, token: &str, now: SystemTime) -> Result<AdminClaims, AuthError> {
        let (kid, claims) = match self.verified_claims(token) {
            // The library checks the signature before the audience, so the payload of a token
            // refused for its audience is authentic and may be read to say what it is.
            Err(AuthError::InvalidAudience) if names_a_room(token) => {
                return Err(AuthError::JoinToken);
            }
            other => other?,
        };
        let (expires_at, _) = self.check_times(&claims, now)?;
        if claims.contains_key("room") {
            return Err(AuthError::JoinToken);
        }
        if claims.get("admin") != Some(&Value::Bool(true)) {
            return Err(AuthError::NotAdmin);
        }
        let subject = required_string(&claims, "sub")?.to_owned();
        Ok(AdminClaims {
            subject,
            expires_at,
            key_id: kid.to_owned(),
        })
    }

    /// Checks the token's shape, header and key, then its signature and registered claims
    /// (by jsonwebtoken); returns the key id and the verified claims.
    fn verified_claims<'s>(
        &'s self,
        token: &str,
    ) -> Result<(&'s str, Map<String, Value>), AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed {
                reason: "longer than 8 KiB",
            });
        }
        let mut segments = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::Malformed {
                reason: "expected three dot-separated parts",
            });
        };
        let header: RawHeader = decode_segment(header).ok_or(AuthError::Malformed {
            reason: "the header is not base64url-encoded JSON with an `alg`",
        })?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed {
                reason: "critical header extensions are not supported",
            });
        }
        let token_alg =
            KeyAlgorithm::from_jws_name(&header.alg).ok_or(AuthError::UnsupportedAlgorithm)?;
        let (kid, key) = self.select_key(header.kid.as_deref())?;
        if token_alg != key.alg {
            return Err(AuthError::AlgorithmMismatch {
                expected: key.alg,
                got: token_alg,
            });
        }
        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &key.validation)
                .map_err(|error| map_library_error(&error, token))?
                .claims;
        Ok((kid, claims))
    }

    fn select_key(&self, kid: Option<&str>) -> Result<(&str, &VerificationKey), AuthError> {
        match kid {
            Some(kid) => self
                .keys
                .get_key_value(kid)
                .map(|(kid, key)| (kid.as_str(), key))
                .ok_or(AuthError::UnknownKid),
            // Without a kid the key would be a guess; only unambiguous with one key.
            None => match (self.keys.iter().next(), self.keys.len()) {
                (Some((kid, key)), 1) => Ok((kid.as_str(), key)),
                _ => Err(AuthError::MissingKid),
            },
        }
    }

    /// Checks `exp`, `nbf`, `iat` and the lifetime; returns `exp` and `iat`.
    fn check_times(
        &self,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<(u64, Option<u64>), AuthError> {
        let now = unix_seconds(now);
        let leeway = self.leeway.as_secs();

        let expires_at = match numeric_claim(claims, "exp") {
            Claim::Absent => return Err(AuthError::MissingExp),
            Claim::NotANumber => return Err(AuthError::InvalidExp),
            Claim::Present(exp) => exp,
        };
        if now > expires_at.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        match numeric_claim(claims, "nbf") {
            Claim::Absent => {}
            Claim::NotANumber => return Err(invalid_claim("nbf", "must be a number")),
            Claim::Present(nbf) if nbf > now.saturating_add(leeway) => {
                return Err(AuthError::NotYetValid);
            }
            Claim::Present(_) => {}
        }
        let issued_at = match numeric_claim(claims, "iat") {
            Claim::Absent => None,
            Claim::NotANumber => return Err(invalid_claim("iat", "must be a number")),
            Claim::Present(iat) if iat > now.saturating_add(leeway) => {
                return Err(AuthError::NotYetValid);
            }
            Claim::Present(iat) if iat > expires_at => {
                return Err(invalid_claim("iat", "is after `exp`"));
            }
            Claim::Present(iat) => Some(iat),
        };
        // Without `iat` the lifetime still to run is what we can bound; the leeway keeps a
        // slightly fast issuer clock from tipping a maximal token over.
        let lifetime_secs = match issued_at {
            Some(iat) => expires_at - iat,
            None => expires_at.saturating_sub(now).saturating_sub(leeway),
        };
        let max_secs = self.max_lifetime.as_secs();
        if lifetime_secs > max_secs {
            return Err(AuthError::LifetimeTooLong {
                lifetime_secs,
                max_secs,
            });
        }

        Ok((expires_at, issued_at))
    }
}

/// The join-specific claims of a token whose signature and times are verified.
fn join_claims(
    claims: &Map<String, Value>,
    (expires_at, issued_at): (u64, Option<u64>),
) -> Result<JoinClaims, AuthError> {
    let user = required_string(claims, "sub")?;
    let user = UserId::parse(user).map_err(|error| id_claim("sub", &error))?;
    let room = required_string(claims, "room")?;
    let room = RoomId::parse(room).map_err(|error| id_claim("room", &error))?;
    let name = optional_string(claims, "name")?
        .map(DisplayName::parse)
        .transpose()
        .map_err(|error| id_claim("name", &error))?;
    let region = optional_string(claims, "region")?
        .map(Region::parse)
        .transpose()
        .map_err(|error| id_claim("region", &error))?;

    Ok(JoinClaims {
        user,
        room,
        name,
        region,
        expires_at,
        issued_at,
        key_id: String::new(),
    })
}

/// Whether a token's payload names a `room` (a join token). Only called on a token whose
/// signature has been verified.
fn names_a_room(token: &str) -> bool {
    let claims: Option<Map<String, Value>> = token.split('.').nth(1).and_then(decode_segment);
    claims.is_some_and(|claims| claims.contains_key("room"))
}

/// Decodes one base64url JWT segment as JSON.
fn decode_segment<T: for<'de> Deserialize<'de>>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Maps jsonwebtoken's refusals onto ours. Only called after the header checks above, so
/// algorithm errors here mean the library disagreed with them, which is still a refusal.
fn map_library_error(error: &jsonwebtoken::errors::Error, token: &str) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => exp_problem(token).unwrap_or(AuthError::MissingExp),
            "aud" => AuthError::InvalidAudience,
            "iss" => AuthError::InvalidIssuer,
            "sub" => invalid_claim("sub", "is missing"),
            _ => AuthError::Malformed {
                reason: "a required claim is missing",
            },
        },
        ErrorKind::InvalidClaimFormat(claim) => match claim.as_str() {
            "exp" => AuthError::InvalidExp,
            "nbf" => invalid_claim("nbf", "must be a number"),
            _ => AuthError::Malformed {
                reason: "a registered claim has the wrong type",
            },
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::UnsupportedAlgorithm
        }
        // The library reads `exp` as an integer and gives up on the whole payload when it is
        // something it cannot skip (an array, an object): an authentic payload whose only
        // fault is its `exp` is an `invalid_exp`, not a malformed token.
        ErrorKind::Json(_) => exp_problem(token).unwrap_or(AuthError::Malformed {
            reason: "the token could not be decoded",
        }),
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => AuthError::KeyUnusable,
        _ => AuthError::Malformed {
            reason: "the token could not be decoded",
        },
    }
}

/// jsonwebtoken reports a string `exp`, one too large for it and a missing one alike. It
/// checks the signature before the claims, so by the time it complains the payload is
/// authentic and may be read to say which it is. `None` when `exp` is a usable number (or the
/// payload is no JSON object), so the fault is elsewhere.
fn exp_problem(token: &str) -> Option<AuthError> {
    let claims: Map<String, Value> = token.split('.').nth(1).and_then(decode_segment)?;
    match numeric_claim(&claims, "exp") {
        Claim::Absent => Some(AuthError::MissingExp),
        Claim::NotANumber => Some(AuthError::InvalidExp),
        Claim::Present(_) => None,
    }
}

enum Claim {
    Absent,
    NotANumber,
    Present(u64),
}

/// A NumericDate claim (RFC 7519 §2): a JSON number of seconds, possibly fractional (the
/// fraction is dropped). Strings, negative numbers, numbers of 2^64 or more (no date at all:
/// the Sun is gone by then) and other types are not dates.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Claim {
    /// 2^64 as a float: the first value `as u64` would saturate.
    const TOO_LARGE: f64 = 18_446_744_073_709_551_616.0;
    match claims.get(name) {
        None | Some(Value::Null) => Claim::Absent,
        Some(Value::Number(number)) => match number.as_u64() {
            Some(seconds) => Claim::Present(seconds),
            None => match number.as_f64() {
                Some(seconds) if seconds.is_finite() && (0.0..TOO_LARGE).contains(&seconds) => {
                    Claim::Present(seconds as u64)
                }
                _ => Claim::NotANumber,
            },
        },
        Some(_) => Claim::NotANumber,
    }
}

fn required_string<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, AuthError> {
    optional_string(claims, name)?.ok_or_else(|| invalid_claim(name, "is missing"))
}

fn optional_string<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid_claim(name, "must be a string")),
    }
}

fn invalid_claim(claim: &'static str, reason: &str) -> AuthError {
    AuthError::InvalidClaim {
        claim,
        reason: reason.to_owned(),
    }
}

fn id_claim(claim: &'static str, error: &IdError) -> AuthError {
    AuthError::InvalidClaim {
        claim,
        reason: format!("is invalid: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"admin-test-secret-0123456789abcdef";

    fn signer() -> Hs256Signer {
        Hs256Signer::new(Some("k1"), SECRET).unwrap()
    }

    fn admin_config() -> AuthConfig {
        AuthConfig::builder()
            .hs256_secret("k1", SECRET)
            .unwrap()
            .audience(DEFAULT_ADMIN_AUDIENCE)
            .build()
            .unwrap()
    }

    fn join_config() -> AuthConfig {
        AuthConfig::builder()
            .hs256_secret("k1", SECRET)
            .unwrap()
            .build()
            .unwrap()
    }

    fn admin_token(aud: &str, now: SystemTime, ttl: Duration, grant: bool) -> String {
        let mut claims = AdminMintClaims::new("backend", aud, now, ttl);
        claims.admin = grant;
        signer().mint_admin(&claims).unwrap()
    }

    /// A valid admin token is accepted and names who acts.
    #[test]
    fn admin_token_is_accepted() {
        let now = SystemTime::now();
        let token = admin_token(DEFAULT_ADMIN_AUDIENCE, now, Duration::from_secs(60), true);
        let claims = admin_config().verify_admin(&token, now).unwrap();
        assert_eq!(claims.subject, "backend");
        assert_eq!(claims.key_id, "k1");
    }

    /// The server API refuses a join token, an expired admin token, a token for another
    /// audience and one without the grant, each with its documented code and status.
    #[test]
    fn admin_refusals_have_their_codes() {
        let now = SystemTime::now();
        let join = signer()
            .mint(&MintClaims::parse("r1", "alice", None, now, Duration::from_secs(60)).unwrap())
            .unwrap();
        let expired = admin_token(
            DEFAULT_ADMIN_AUDIENCE,
            now - Duration::from_secs(600),
            Duration::from_secs(60),
            true,
        );
        let other = admin_token("another-service", now, Duration::from_secs(60), true);
        let no_grant = admin_token(DEFAULT_ADMIN_AUDIENCE, now, Duration::from_secs(60), false);
        let config = admin_config();
        for (token, code, status) in [
            (join.as_str(), "join_token", 403),
            (expired.as_str(), "token_expired", 401),
            (other.as_str(), "invalid_audience", 401),
            (no_grant.as_str(), "not_admin", 403),
            ("", "missing_token", 401),
        ] {
            let error = config.verify_admin(token, now).unwrap_err();
            assert_eq!(
                (error.code(), error.http_status()),
                (code, status),
                "{error}"
            );
        }
    }

    /// An admin token cannot join a room: join verification refuses any `aud` it was not
    /// configured for.
    #[test]
    fn admin_token_cannot_join() {
        let now = SystemTime::now();
        let token = admin_token(DEFAULT_ADMIN_AUDIENCE, now, Duration::from_secs(60), true);
        let error = join_config().verify(&token, None, now).unwrap_err();
        assert_eq!(error.code(), "invalid_audience");
    }
}

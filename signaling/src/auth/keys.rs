//! The keys join tokens are verified with, each pinned to one algorithm, the verifier's
//! settings, and an HS256 signer for tests and dev-mode tokens.
//!
//! A key's algorithm is part of its configuration, never read from a token: that is what makes
//! `alg: none` and the HS256-with-an-RSA-public-key confusion impossible. Every problem with a
//! key is reported when it is configured, so a bad key fails the process at startup rather than
//! every join later. Secrets never appear in `Debug` output or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

use crate::ids::{DisplayName, IdError, Region, RoomId, UserId};

/// The shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the
/// hash output (256 bits); shorter secrets can be brute-forced from a single token.
pub const HS256_MIN_SECRET_BYTES: usize = 32;
/// The longest key id accepted.
pub const KID_MAX_LEN: usize = 128;
/// The default longest token lifetime (`exp - iat`). Join tokens should live minutes; this
/// default only keeps tokens that live for months out.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The default clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest leeway accepted. More than minutes of skew is a broken clock, not skew, and
/// jsonwebtoken subtracts the leeway from the current time, which must not underflow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// Why a key or a signer could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key id must be 1 to {KID_MAX_LEN} visible ASCII characters")]
    InvalidKid,
    #[error("key id `{0}` is configured twice")]
    DuplicateKid(String),
    #[error("the HS256 secret of key `{kid}` is {len} bytes; at least {min} are required")]
    SecretTooShort { kid: String, len: usize, min: usize },
    #[error("key `{kid}`: HS256 keys are shared secrets, not PEM public keys")]
    PemForHmac { kid: String },
    #[error("key `{kid}` is not a valid {alg} public key in PEM form")]
    InvalidPublicKey { kid: String, alg: KeyAlgorithm },
    #[error("no verification key is configured")]
    NoKeys,
    #[error("unknown JWT algorithm `{0}`; use HS256, RS256, ES256 or EdDSA")]
    UnknownAlgorithm(String),
    #[error("could not sign the token: {0}")]
    Signing(String),
    /// A room, user or display name given to [`MintClaims::parse`] is not valid.
    #[error("{field}: {source}")]
    InvalidInput {
        field: &'static str,
        #[source]
        source: IdError,
    },
}

/// The algorithms a key can be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl KeyAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [KeyAlgorithm; 4] = [
        KeyAlgorithm::Hs256,
        KeyAlgorithm::Rs256,
        KeyAlgorithm::Es256,
        KeyAlgorithm::EdDsa,
    ];

    /// The JWS `alg` name (RFC 7518).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Hs256 => "HS256",
            KeyAlgorithm::Rs256 => "RS256",
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a token header names, matched exactly as JWS requires. `None` for `none`
    /// and for every algorithm we do not support.
    pub fn from_jws_name(name: &str) -> Option<KeyAlgorithm> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == name)
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            KeyAlgorithm::Hs256 => Algorithm::HS256,
            KeyAlgorithm::Rs256 => Algorithm::RS256,
            KeyAlgorithm::Es256 => Algorithm::ES256,
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses an algorithm from configuration, ignoring case (`hs256`, `EdDSA`).
impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| KeyError::UnknownAlgorithm(s.chars().take(32).collect()))
    }
}

/// How join tokens are verified: the keys by `kid`, and the claim checks.
/// Build one with [`AuthConfig::builder`]; verify tokens with [`AuthConfig::verify`].
#[derive(Clone)]
pub struct AuthConfig {
    pub(super) keys: BTreeMap<String, VerificationKey>,
    pub(super) max_lifetime: Duration,
    pub(super) leeway: Duration,
}

/// One configured key with everything needed to check a token signed by it.
#[derive(Clone)]
pub(super) struct VerificationKey {
    pub(super) alg: KeyAlgorithm,
    pub(super) decoding: DecodingKey,
    /// Built once per key: the library checks signature, algorithm, `exp`, `nbf`, `aud` and
    /// `iss`, and `verify` re-checks the times and adds the rest.
    pub(super) validation: Validation,
}

impl AuthConfig {
    /// Starts a configuration with the default lifetime and leeway and no keys.
    pub fn builder() -> AuthConfigBuilder {
        AuthConfigBuilder {
            keys: Vec::new(),
            audience: None,
            issuer: None,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The configured key ids and their pinned algorithms.
    pub fn keys(&self) -> impl Iterator<Item = (&str, KeyAlgorithm)> {
        self.keys.iter().map(|(kid, key)| (kid.as_str(), key.alg))
    }

    /// The longest accepted token lifetime.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// The tolerated clock skew.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material stays out of logs; kids and algorithms are enough to debug a setup.
        f.debug_struct("AuthConfig")
            .field(
                "keys",
                &self
                    .keys()
                    .map(|(kid, alg)| format!("{kid}:{alg}"))
                    .collect::<Vec<_>>(),
            )
            .field("max_lifetime", &self.max_lifetime)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// Collects keys and settings for an [`AuthConfig`].
pub struct AuthConfigBuilder {
    keys: Vec<(String, KeyAlgorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
    max_lifetime: Duration,
    leeway: Duration,
}

impl AuthConfigBuilder {
    /// Adds an HS256 shared secret (the raw bytes, at least 32 of them) under `kid`.
    pub fn hs256_secret(mut self, kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        self.check_new_kid(kid)?;
        if secret.len() < HS256_MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort {
                kid: kid.to_owned(),
                len: secret.len(),
                min: HS256_MIN_SECRET_BYTES,
            });
        }
        self.keys.push((
            kid.to_owned(),
            KeyAlgorithm::Hs256,
            DecodingKey::from_secret(secret),
        ));
        Ok(self)
    }

    /// Adds a public key in PEM form (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY` for RSA)
    /// under `kid`, pinned to `alg`.
    ///
    /// ECDSA and Ed25519 keys are fully checked here. An RSA key whose PEM and ASN.1 are well
    /// formed but whose numbers are not a usable key is only found at the first verification,
    /// which then fails with `invalid_signature`.
    pub fn public_key_pem(
        mut self,
        kid: &str,
        alg: KeyAlgorithm,
        pem: &[u8],
    ) -> Result<Self, KeyError> {
        self.check_new_kid(kid)?;
        let invalid = || KeyError::InvalidPublicKey {
            kid: kid.to_owned(),
            alg,
        };
        let decoding = match alg {
            KeyAlgorithm::Hs256 => {
                return Err(KeyError::PemForHmac {
                    kid: kid.to_owned(),
                });
            }
            KeyAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            KeyAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
            KeyAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|_| invalid())?;
        // Building a verifier parses the key itself (the PEM step only unwraps it), so a wrong
        // curve or a corrupt point is refused now. The probe signature is empty, so the result
        // can only be "does not verify" or a key error.
        ensure_crypto_provider();
        if jsonwebtoken::crypto::verify("", b"probe", &decoding, alg.jwt()).is_err() {
            return Err(invalid());
        }
        self.keys.push((kid.to_owned(), alg, decoding));
        Ok(self)
    }

    /// Requires `aud` to be (or contain) this audience. Without it, tokens that carry an
    /// `aud` are refused, as RFC 7519 §4.1.3 requires of a recipient that is not named.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Requires `iss` to be this issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The longest accepted lifetime: `exp - iat`, or `exp - now` for tokens without `iat`.
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The clock skew tolerated on `exp`, `nbf` and `iat`, capped at [`MAX_LEEWAY`].
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(MAX_LEEWAY);
        self
    }

    /// Finishes the configuration; at least one key is required.
    pub fn build(self) -> Result<AuthConfig, KeyError> {
        if self.keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        ensure_crypto_provider();
        let mut required = vec!["exp", "sub"];
        if self.audience.is_some() {
            required.push("aud");
        }
        if self.issuer.is_some() {
            required.push("iss");
        }
        let keys = self
            .keys
            .into_iter()
            .map(|(kid, alg, decoding)| {
                let mut validation = Validation::new(alg.jwt());
                // Every setting is spelled out rather than inherited from the library's
                // defaults, so an upgrade cannot loosen them silently.
                validation.algorithms = vec![alg.jwt()];
                validation.set_required_spec_claims(&required);
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                validation.leeway = self.leeway.as_secs();
                validation.reject_tokens_expiring_in_less_than = 0;
                validation.aud = None;
                validation.iss = None;
                validation.sub = None;
                if let Some(audience) = &self.audience {
                    validation.set_audience(&[audience]);
                }
                if let Some(issuer) = &self.issuer {
                    validation.set_issuer(&[issuer]);
                }
                (
                    kid,
                    VerificationKey {
                        alg,
                        decoding,
                        validation,
                    },
                )
            })
            .collect();
        Ok(AuthConfig {
            keys,
            max_lifetime: self.max_lifetime,
            leeway: self.leeway,
        })
    }

    fn check_new_kid(&self, kid: &str) -> Result<(), KeyError> {
        check_kid(kid)?;
        if self.keys.iter().any(|(existing, _, _)| existing == kid) {
            return Err(KeyError::DuplicateKid(kid.to_owned()));
        }
        Ok(())
    }
}

/// Key ids appear in logs and metric labels, so they are kept short and printable.
fn check_kid(kid: &str) -> Result<(), KeyError> {
    let printable = kid.bytes().all(|b| b.is_ascii_graphic());
    if kid.is_empty() || kid.len() > KID_MAX_LEN || !printable {
        return Err(KeyError::InvalidKid);
    }
    Ok(())
}

/// Selects RustCrypto as jsonwebtoken's backend for the whole process.
///
/// jsonwebtoken picks its backend from cargo features and panics at first use when both
/// backends end up enabled, which feature unification in the workspace could cause without
/// touching this crate. Installing the provider explicitly removes that failure mode. If a
/// provider is already installed (by us or by the binary), that one stays.
fn ensure_crypto_provider() {
    let _already_installed = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// Seconds since the Unix epoch; a clock before 1970 counts as the epoch itself.
pub(super) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The claims of a token minted by [`Hs256Signer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MintClaims {
    pub sub: UserId,
    pub room: RoomId,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<DisplayName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl MintClaims {
    /// Claims for `sub` in `room`, issued at `now` and valid for `ttl`.
    pub fn new(sub: UserId, room: RoomId, now: SystemTime, ttl: Duration) -> Self {
        let iat = unix_seconds(now);
        MintClaims {
            sub,
            room,
            exp: iat.saturating_add(ttl.as_secs()),
            iat: Some(iat),
            name: None,
            region: None,
            aud: None,
            iss: None,
        }
    }

    /// Claims from unchecked text (the `token` command's flags, dev mode's `/dev/token`
    /// query): each value is validated as the verifier will, and an invalid one is named
    /// (`room`, `user` or `name`) in the error.
    pub fn parse(
        room: &str,
        user: &str,
        name: Option<&str>,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let invalid = |field| move |source| KeyError::InvalidInput { field, source };
        let room = RoomId::parse(room).map_err(invalid("room"))?;
        let user = UserId::parse(user).map_err(invalid("user"))?;
        let mut claims = MintClaims::new(user, room, now, ttl);
        claims.name = name
            .map(DisplayName::parse)
            .transpose()
            .map_err(invalid("name"))?;
        Ok(claims)
    }
}

/// Signs HS256 join tokens: for tests and the dev-mode token command. Production tokens come
/// from the application's backend.
pub struct Hs256Signer {
    kid: Option<String>,
    key: EncodingKey,
}

impl Hs256Signer {
    /// A signer with the same secret rules as [`AuthConfigBuilder::hs256_secret`]. `kid` goes
    /// into the token header; leave it out only when the verifier has exactly one key.
    pub fn new(kid: Option<&str>, secret: &[u8]) -> Result<Self, KeyError> {
        if let Some(kid) = kid {
            check_kid(kid)?;
        }
        if secret.len() < HS256_MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort {
                kid: kid.unwrap_or_default().to_owned(),
                len: secret.len(),
                min: HS256_MIN_SECRET_BYTES,
            });
        }
        ensure_crypto_provider();
        Ok(Hs256Signer {
            kid: kid.map(str::to_owned),
            key: EncodingKey::from_secret(secret),
        })
    }

    /// Signs `claims` into a compact JWT.
    pub fn mint(&self, claims: &MintClaims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|error| KeyError::Signing(error.to_string()))
    }

    /// Signs an admin token (for the server API) into a compact JWT.
    pub fn mint_admin(&self, claims: &AdminMintClaims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|error| KeyError::Signing(error.to_string()))
    }
}

/// The claims of an admin token: who acts (`sub`), the admin audience, and the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminMintClaims {
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// The admin grant; always `true` (a token without it is refused).
    pub admin: bool,
}

impl AdminMintClaims {
    /// An admin token for `sub` and audience `aud`, issued at `now`, valid for `ttl`.
    pub fn new(sub: &str, aud: &str, now: SystemTime, ttl: Duration) -> Self {
        let iat = unix_seconds(now);
        AdminMintClaims {
            sub: sub.to_owned(),
            aud: aud.to_owned(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            admin: true,
        }
    }
}

impl fmt::Debug for Hs256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hs256Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one place that turns text into claims names the field it refuses.
    #[test]
    fn claims_from_text_name_the_bad_field() {
        let now = SystemTime::now();
        let ttl = Duration::from_secs(60);
        let claims = MintClaims::parse("standup", "alice", Some("Alice"), now, ttl).unwrap();
        assert_eq!(claims.room.as_str(), "standup");
        assert_eq!(claims.sub.as_str(), "alice");
        assert_eq!(claims.name.as_ref().map(DisplayName::as_str), Some("Alice"));
        assert_eq!(claims.exp, claims.iat.unwrap() + 60);
        for (room, user, name, field) in [
            ("bad room!", "alice", None, "room: "),
            ("standup", "", None, "user: "),
            ("standup", "alice", Some(""), "name: "),
        ] {
            let error = MintClaims::parse(room, user, name, now, ttl).unwrap_err();
            assert!(
                matches!(error, KeyError::InvalidInput { .. }),
                "{room}/{user}: {error}"
            );
            assert!(error.to_string().starts_with(field), "{error}");
        }
    }

    /// Config files may spell algorithms in any case; token headers may not.
    #[test]
    fn algorithm_names() {
        assert_eq!("eddsa".parse::<KeyAlgorithm>(), Ok(KeyAlgorithm::EdDsa));
        assert_eq!("HS256".parse::<KeyAlgorithm>(), Ok(KeyAlgorithm::Hs256));
        assert!("none".parse::<KeyAlgorithm>().is_err());
        assert_eq!(
            KeyAlgorithm::from_jws_name("RS256"),
            Some(KeyAlgorithm::Rs256)
        );
        assert_eq!(KeyAlgorithm::from_jws_name("rs256"), None);
        assert_eq!(KeyAlgorithm::from_jws_name("none"), None);
        assert_eq!(KeyAlgorithm::from_jws_name("HS384"), None);
    }

    /// Bad key setups are refused when configured, not at the first join.
    #[test]
    fn bad_keys_are_refused_at_configuration() {
        let short = AuthConfig::builder().hs256_secret("k", b"too short");
        assert!(matches!(
            short,
            Err(KeyError::SecretTooShort { len: 9, .. })
        ));
        let duplicate = AuthConfig::builder()
            .hs256_secret("k", &[1; 32])
            .and_then(|b| b.hs256_secret("k", &[2; 32]));
        assert_eq!(duplicate.err(), Some(KeyError::DuplicateKid("k".into())));
        let garbage = AuthConfig::builder().public_key_pem("r", KeyAlgorithm::Rs256, b"nope");
        assert!(matches!(garbage, Err(KeyError::InvalidPublicKey { .. })));
        let hmac_pem = AuthConfig::builder().public_key_pem("h", KeyAlgorithm::Hs256, b"x");
        assert!(matches!(hmac_pem, Err(KeyError::PemForHmac { .. })));
        assert!(matches!(
            AuthConfig::builder().hs256_secret("", &[1; 32]),
            Err(KeyError::InvalidKid)
        ));
        assert_eq!(AuthConfig::builder().build().err(), Some(KeyError::NoKeys));
    }

    /// Debug output never contains the secret.
    #[test]
    fn debug_hides_secrets() {
        let secret = b"correct horse battery staple 1234";
        let config = AuthConfig::builder()
            .hs256_secret("main", secret)
            .unwrap()
            .build()
            .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("main:HS256"), "{debug}");
        assert!(!debug.contains("horse"), "{debug}");
        let signer = Hs256Signer::new(Some("main"), secret).unwrap();
        assert!(!format!("{signer:?}").contains("horse"));
    }
}

//! Join-token verification against real signatures: every supported algorithm is accepted,
//! and each attack or mistake from the field notes is refused with its own code.
//!
//! Keys are the test-only PEM fixtures in `tests/fixtures/`. Tokens are stamped with the real
//! clock because jsonwebtoken also checks `exp` against it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_signaling::auth::{
    AuthConfig, AuthError, Hs256Signer, JoinClaims, KeyAlgorithm, MintClaims,
};
use switchboard_signaling::ids::{RoomId, UserId};

const HS_SECRET: &[u8] = b"test-only-hs256-secret-0123456789abcdef";
const AUDIENCE: &str = "switchboard";
const ISSUER: &str = "https://app.example";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A verifier with one key of each algorithm, an audience, an issuer and a 1 h lifetime cap.
fn config() -> AuthConfig {
    AuthConfig::builder()
        .hs256_secret("hs", HS_SECRET)
        .unwrap()
        .public_key_pem("rsa", KeyAlgorithm::Rs256, &fixture("rsa.pub.pem"))
        .unwrap()
        .public_key_pem("ec", KeyAlgorithm::Es256, &fixture("ec.pub.pem"))
        .unwrap()
        .public_key_pem("ed", KeyAlgorithm::EdDsa, &fixture("ed25519.pub.pem"))
        .unwrap()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .max_lifetime(Duration::from_secs(3600))
        .leeway(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn claims() -> Value {
    let now = now();
    json!({
        "sub": "alice", "room": "standup", "iat": now, "exp": now + 600,
        "aud": AUDIENCE, "iss": ISSUER, "name": "Alice", "region": "eu-west-1",
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn signing_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(HS_SECRET),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture("rsa.key.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture("ec.key.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture("ed25519.key.pem")).unwrap(),
        other => panic!("no test key for {other:?}"),
    }
}

fn sign_with(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign_with(
        Algorithm::HS256,
        Some("hs"),
        &signing_key(Algorithm::HS256),
        claims,
    )
}

/// A token assembled by hand, for headers no honest library would produce.
fn craft(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn verify(token: &str) -> Result<JoinClaims, AuthError> {
    config().verify(token, None, SystemTime::now())
}

fn refusal(token: &str) -> &'static str {
    match verify(token) {
        Ok(claims) => panic!("token was accepted: {claims:?}"),
        Err(error) => error.code(),
    }
}

/// A valid token of each algorithm is accepted and yields its claims.
#[test]
fn accepts_each_algorithm() {
    for (alg, kid) in [
        (Algorithm::HS256, "hs"),
        (Algorithm::RS256, "rsa"),
        (Algorithm::ES256, "ec"),
        (Algorithm::EdDSA, "ed"),
    ] {
        let token = sign_with(alg, Some(kid), &signing_key(alg), &claims());
        let verified = verify(&token).unwrap_or_else(|error| panic!("{alg:?}: {error}"));
        assert_eq!(verified.user.as_str(), "alice");
        assert_eq!(verified.room.as_str(), "standup");
        assert_eq!(verified.name.as_ref().map(|n| n.as_str()), Some("Alice"));
        assert_eq!(
            verified.region.as_ref().map(|r| r.as_str()),
            Some("eu-west-1")
        );
        assert_eq!(verified.key_id, kid);
        assert_eq!(verified.expires_at, verified.issued_at.unwrap() + 600);
    }
}

/// The requested room must be the token's room: a room A token cannot open room B.
#[test]
fn room_must_match() {
    let token = hs256(&claims());
    let config = config();
    let standup = RoomId::parse("standup").unwrap();
    let other = RoomId::parse("board-meeting").unwrap();
    assert!(
        config
            .verify(&token, Some(&standup), SystemTime::now())
            .is_ok()
    );
    let error = config
        .verify(&token, Some(&other), SystemTime::now())
        .unwrap_err();
    assert_eq!(error.code(), "room_mismatch");
}

/// Expired tokens are refused; the leeway absorbs small clock skew only.
#[test]
fn expiry() {
    let now = now();
    let expired = with(claims(), json!({"iat": now - 700, "exp": now - 120}));
    assert_eq!(refusal(&hs256(&expired)), "token_expired");
    let skewed = with(claims(), json!({"iat": now - 600, "exp": now - 10}));
    assert!(verify(&hs256(&skewed)).is_ok());
}

/// `exp` is required and must be a number; a string is not a date.
#[test]
fn exp_must_be_a_number() {
    let exp = now() + 600;
    let string_exp = with(claims(), json!({"exp": exp.to_string()}));
    assert_eq!(refusal(&hs256(&string_exp)), "invalid_exp");
    let bool_exp = with(claims(), json!({"exp": true}));
    assert_eq!(refusal(&hs256(&bool_exp)), "invalid_exp");
    let missing_exp = with(claims(), json!({"exp": null}));
    assert_eq!(refusal(&hs256(&missing_exp)), "missing_exp");
    // A fractional NumericDate is a number, and accepted.
    let fractional = with(claims(), json!({"exp": exp as f64 + 0.5}));
    assert!(verify(&hs256(&fractional)).is_ok());
}

/// Long-lived tokens are refused, measured from `iat` or, without it, from now.
#[test]
fn lifetime_is_capped() {
    let now = now();
    let long = with(claims(), json!({"iat": now, "exp": now + 7200}));
    assert_eq!(refusal(&hs256(&long)), "lifetime_too_long");
    let long_no_iat = with(claims(), json!({"iat": null, "exp": now + 7200}));
    assert_eq!(refusal(&hs256(&long_no_iat)), "lifetime_too_long");
    let max_no_iat = with(claims(), json!({"iat": null, "exp": now + 3600}));
    assert!(verify(&hs256(&max_no_iat)).is_ok());
    let future_iat = with(claims(), json!({"iat": now + 300, "exp": now + 600}));
    assert_eq!(refusal(&hs256(&future_iat)), "token_not_yet_valid");
    let future_nbf = with(claims(), json!({"nbf": now + 300}));
    assert_eq!(refusal(&hs256(&future_nbf)), "token_not_yet_valid");
}

/// A token signed by another key than the one its kid names does not verify.
#[test]
fn wrong_key() {
    let other_secret = EncodingKey::from_secret(b"another-secret-that-is-long-enough!!");
    let token = sign_with(Algorithm::HS256, Some("hs"), &other_secret, &claims());
    assert_eq!(refusal(&token), "invalid_signature");
    let other_ec = EncodingKey::from_ec_pem(&fixture("ec-other.key.pem")).unwrap();
    let token = sign_with(Algorithm::ES256, Some("ec"), &other_ec, &claims());
    assert_eq!(refusal(&token), "invalid_signature");
}

/// Changing the payload of a signed token breaks its signature.
#[test]
fn tampered_payload() {
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(claims(), json!({"room": "board-meeting"}));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    assert_eq!(refusal(&forged), "invalid_signature");
}

/// `alg: none` is refused in every spelling, with or without a kid or signature.
#[test]
fn alg_none() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        for header in [
            json!({"alg": alg, "typ": "JWT", "kid": "hs"}),
            json!({"alg": alg, "typ": "JWT"}),
        ] {
            for signature in [&b""[..], b"x"] {
                let token = craft(&header, &claims(), signature);
                assert_eq!(refusal(&token), "unsupported_algorithm", "{header}");
            }
        }
    }
}

/// The classic confusion attack: an HS256 token "signed" with the RSA public key as the HMAC
/// secret, presented for the RS256 key. The key's pinned algorithm wins.
#[test]
fn hs256_against_rsa_key() {
    let public_pem = fixture("rsa.pub.pem");
    let confused = EncodingKey::from_secret(&public_pem);
    let token = sign_with(Algorithm::HS256, Some("rsa"), &confused, &claims());
    assert_eq!(refusal(&token), "algorithm_mismatch");

    // Also when the RSA key is the only one and the token names no kid.
    let rsa_only = AuthConfig::builder()
        .public_key_pem("rsa", KeyAlgorithm::Rs256, &public_pem)
        .unwrap()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .build()
        .unwrap();
    let token = sign_with(Algorithm::HS256, None, &confused, &claims());
    let error = rsa_only
        .verify(&token, None, SystemTime::now())
        .unwrap_err();
    assert_eq!(error.code(), "algorithm_mismatch");

    // And an ES256 token for the EdDSA key.
    let token = sign_with(
        Algorithm::ES256,
        Some("ed"),
        &signing_key(Algorithm::ES256),
        &claims(),
    );
    assert_eq!(refusal(&token), "algorithm_mismatch");
}

/// Algorithms outside the supported four are refused before any key is chosen.
#[test]
fn unsupported_algorithms() {
    let token = craft(&json!({"alg": "HS512", "kid": "hs"}), &claims(), b"sig");
    assert_eq!(refusal(&token), "unsupported_algorithm");
    let token = craft(&json!({"alg": "hs256", "kid": "hs"}), &claims(), b"sig");
    assert_eq!(refusal(&token), "unsupported_algorithm");
}

/// `aud` and `iss` must match when configured, and are then required.
#[test]
fn audience_and_issuer() {
    let wrong_aud = with(claims(), json!({"aud": "another-app"}));
    assert_eq!(refusal(&hs256(&wrong_aud)), "invalid_audience");
    let no_aud = with(claims(), json!({"aud": null}));
    assert_eq!(refusal(&hs256(&no_aud)), "invalid_audience");
    let many_aud = with(claims(), json!({"aud": ["another-app", AUDIENCE]}));
    assert!(verify(&hs256(&many_aud)).is_ok());
    let wrong_iss = with(claims(), json!({"iss": "https://evil.example"}));
    assert_eq!(refusal(&hs256(&wrong_iss)), "invalid_issuer");
    let no_iss = with(claims(), json!({"iss": null}));
    assert_eq!(refusal(&hs256(&no_iss)), "invalid_issuer");
}

/// Key selection by kid: unknown kids are refused, and a missing kid is only accepted when
/// exactly one key is configured.
#[test]
fn key_selection() {
    let token = sign_with(
        Algorithm::HS256,
        Some("retired"),
        &signing_key(Algorithm::HS256),
        &claims(),
    );
    assert_eq!(refusal(&token), "unknown_kid");
    let no_kid = sign_with(
        Algorithm::HS256,
        None,
        &signing_key(Algorithm::HS256),
        &claims(),
    );
    assert_eq!(refusal(&no_kid), "missing_kid");

    let single = AuthConfig::builder()
        .hs256_secret("only", HS_SECRET)
        .unwrap()
        .audience(AUDIENCE)
        .issuer(ISSUER)
        .build()
        .unwrap();
    let verified = single.verify(&no_kid, None, SystemTime::now()).unwrap();
    assert_eq!(verified.key_id, "only");
}

/// Our own claims are validated like any other input: ids, names and regions.
#[test]
fn claim_values_are_validated() {
    for changes in [
        json!({"sub": "alice:admin"}),
        json!({"sub": null}),
        json!({"sub": 42}),
        json!({"room": "room/../other"}),
        json!({"room": null}),
        json!({"room": "r".repeat(65)}),
        json!({"name": "n".repeat(65)}),
        json!({"name": "bad\u{7}name"}),
        json!({"region": "EU-West"}),
        json!({"region": "-eu"}),
        json!({"iat": "yesterday"}),
    ] {
        let token = hs256(&with(claims(), changes.clone()));
        assert_eq!(refusal(&token), "invalid_claim", "{changes}");
    }
    let minimal = with(claims(), json!({"name": null, "region": null}));
    let verified = verify(&hs256(&minimal)).unwrap();
    assert_eq!((verified.name, verified.region), (None, None));
}

/// Tokens that are not JWTs at all get `missing_token` or `malformed_token`.
#[test]
fn malformed_tokens() {
    assert_eq!(refusal(""), "missing_token");
    for token in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.e30.sig",
        "bm90IGpzb24.e30.sig",
    ] {
        assert_eq!(refusal(token), "malformed_token", "{token}");
    }
    let huge = format!("{}.e30.sig", "a".repeat(10_000));
    assert_eq!(refusal(&huge), "malformed_token");
    let crit = craft(
        &json!({"alg": "HS256", "kid": "hs", "crit": ["exp"]}),
        &claims(),
        b"sig",
    );
    assert_eq!(refusal(&crit), "malformed_token");
}

/// Refusals become a 401 with a stable `{error, message}` body that leaks no key material.
#[test]
fn http_body() {
    let error = verify(&craft(&json!({"alg": "none"}), &claims(), b"")).unwrap_err();
    assert_eq!(error.http_status(), 401);
    let body: Value = serde_json::from_str(&error.to_json_body()).unwrap();
    assert_eq!(body["error"], "unsupported_algorithm");
    assert!(body["message"].as_str().unwrap().contains("HS256"));
    assert_eq!(body.as_object().unwrap().len(), 2);

    let wrong = sign_with(
        Algorithm::HS256,
        Some("hs"),
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough!!"),
        &claims(),
    );
    let body = verify(&wrong).unwrap_err().to_json_body();
    assert!(!body.contains(std::str::from_utf8(HS_SECRET).unwrap()));
}

/// The dev-mode signer mints tokens the verifier accepts.
#[test]
fn minted_tokens_verify() {
    let signer = Hs256Signer::new(Some("hs"), HS_SECRET).unwrap();
    let mut claims = MintClaims::new(
        UserId::parse("bob").unwrap(),
        RoomId::parse("standup").unwrap(),
        SystemTime::now(),
        Duration::from_secs(300),
    );
    claims.aud = Some(AUDIENCE.into());
    claims.iss = Some(ISSUER.into());
    let token = signer.mint(&claims).unwrap();
    let verified = verify(&token).unwrap();
    assert_eq!(verified.user.as_str(), "bob");
    assert_eq!(verified.expires_at, claims.exp);
}

/// Every refusal has its own stable code.
#[test]
fn codes_are_distinct() {
    let errors = [
        AuthError::MissingToken,
        AuthError::Malformed { reason: "x" },
        AuthError::UnsupportedAlgorithm,
        AuthError::MissingKid,
        AuthError::UnknownKid,
        AuthError::AlgorithmMismatch {
            expected: KeyAlgorithm::Rs256,
            got: KeyAlgorithm::Hs256,
        },
        AuthError::InvalidSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::MissingExp,
        AuthError::InvalidExp,
        AuthError::LifetimeTooLong {
            lifetime_secs: 2,
            max_secs: 1,
        },
        AuthError::InvalidAudience,
        AuthError::InvalidIssuer,
        AuthError::InvalidClaim {
            claim: "sub",
            reason: "x".into(),
        },
        AuthError::RoomMismatch,
        AuthError::KeyUnusable,
    ];
    let mut codes: Vec<&str> = errors.iter().map(AuthError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

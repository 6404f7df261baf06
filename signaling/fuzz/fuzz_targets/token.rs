//! Token checking: any string as a join token, and any JSON payload correctly signed with
//! the server's HS256 key (so the claim checks are reached, not only the signature), is
//! refused with a documented code or accepted with claims that hold the documented rules.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use switchboard_signaling::auth::AuthConfig;

const SECRET: &[u8] = b"fuzzing-secret-of-at-least-32-bytes!";
/// 2026-01-01, fixed so a run is reproducible.
const NOW: u64 = 1_767_225_600;

const CODES: &[&str] = &[
    "missing_token",
    "malformed_token",
    "unsupported_algorithm",
    "missing_kid",
    "unknown_kid",
    "algorithm_mismatch",
    "invalid_signature",
    "token_expired",
    "token_not_yet_valid",
    "missing_exp",
    "invalid_exp",
    "lifetime_too_long",
    "invalid_audience",
    "invalid_issuer",
    "invalid_claim",
    "room_mismatch",
];

fn config() -> &'static AuthConfig {
    static CONFIG: OnceLock<AuthConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        AuthConfig::builder()
            .hs256_secret("k", SECRET)
            .expect("key")
            .build()
            .expect("config")
    })
}

/// A compact JWT over `payload` with a valid HS256 signature.
fn signed(header: &str, payload: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => signed(r#"{"alg":"HS256","typ":"JWT","kid":"k"}"#, rest),
        // The header too is the fuzzer's: the first line is the header, the rest the payload.
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (header, payload) = text.split_once('\n').unwrap_or((&text, "{}"));
            signed(header, payload.as_bytes())
        }
    };
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    match config().verify(&token, None, now) {
        Ok(claims) => {
            let leeway = config().leeway().as_secs();
            assert!(claims.expires_at + leeway >= NOW, "expired token accepted");
            let lifetime = claims
                .issued_at
                .map_or(claims.expires_at.saturating_sub(NOW + leeway), |iat| {
                    claims.expires_at - iat
                });
            assert!(
                lifetime <= config().max_lifetime().as_secs(),
                "too long-lived"
            );
        }
        Err(error) => {
            assert!(
                CODES.contains(&error.code()),
                "undocumented code {}",
                error.code()
            );
            assert_eq!(error.http_status(), 401, "{error}");
        }
    }
});

//! Real Janus refuses every credential a participant must not get in with, and accepts the
//! one signaling hands out: two Debian Janus instances side by side in a test network
//! namespace, driven over the plain Janus HTTP API (no browser), with tokens minted in the
//! signed-token format of `docs/sfu.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_tests::browser::NetworkNamespace;
use switchboard_tests::janus::{JanusRefusal, VIDEOROOM};
use switchboard_tests::{Janus, JanusOptions};

/// Janus's answer to a missing, expired, foreign or tampered token.
const UNAUTHORIZED: i64 = 403;
/// Janus's answer to a token that does not list the plugin.
const PLUGIN_NOT_ALLOWED: i64 = 405;
/// The VideoRoom plugin's answer to a wrong pin.
const WRONG_PIN: i64 = 433;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Janus's signed token: `<expiry>,janus,<plugin>...:<base64(HMAC-SHA1(secret, data))>`.
fn mint_token(secret: &str, expires_at: u64, plugins: &[&str]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut data = format!("{expires_at},janus");
    for plugin in plugins {
        data.push(',');
        data.push_str(plugin);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("{data}:{signature}")
}

fn refused_with(result: Result<u64, JanusRefusal>, code: i64, what: &str) {
    match result {
        Err(refusal) => assert_eq!(refusal.code, code, "{what}: {refusal:?}"),
        Ok(id) => panic!("{what}: Janus accepted it (id {id})"),
    }
}

/// Proves Janus A refuses a token signed for B, an expired token, a token whose expiry was
/// pushed back without re-signing, no token at all, a token that does not name the VideoRoom
/// plugin, and the wrong room pin; and that the right token and pin get a participant in (the
/// refusals are about the credential, not a broken setup: B takes B's token).
#[test]
fn janus_refuses_bad_tokens_and_pins_and_accepts_the_right_ones() {
    let namespace = NetworkNamespace::create().unwrap();
    let ip = namespace.add_sfu_address().unwrap();
    namespace
        .run(move || {
            let a = Janus::start(JanusOptions::new("sfu-a", ip, 20000..=20099)).unwrap();
            let b = Janus::start(JanusOptions::new("sfu-b", ip, 20100..=20199)).unwrap();
            let info = a.info().unwrap();
            assert_eq!(info["accepting-new-sessions"], true, "{info}");
            assert!(info["plugins"][VIDEOROOM].is_object(), "{info}");

            let room = "default.standup.1a2b3c4d";
            let pin = "pin-0123456789";
            a.create_room(room, pin, 6).unwrap();
            assert_eq!(a.list_rooms().unwrap(), [room]);

            let later = now() + 600;
            let good = mint_token(&a.options().token_secret, later, &[VIDEOROOM]);
            let for_b = mint_token(&b.options().token_secret, later, &[VIDEOROOM]);
            let expired = mint_token(&a.options().token_secret, now() - 5, &[VIDEOROOM]);
            // The signature of an expired token, with its expiry moved into the future.
            let (_, signature) = expired.split_once(':').unwrap();
            let tampered = format!("{later},janus,{VIDEOROOM}:{signature}");
            let no_plugin = mint_token(&a.options().token_secret, later, &[]);

            refused_with(
                a.create_session(Some(&for_b)).unwrap(),
                UNAUTHORIZED,
                "token for B",
            );
            assert!(
                b.create_session(Some(&for_b)).unwrap().is_ok(),
                "B must accept its own token"
            );
            refused_with(
                a.create_session(Some(&expired)).unwrap(),
                UNAUTHORIZED,
                "expired token",
            );
            refused_with(
                a.create_session(Some(&tampered)).unwrap(),
                UNAUTHORIZED,
                "tampered expiry",
            );
            refused_with(a.create_session(None).unwrap(), UNAUTHORIZED, "no token");

            let session = a.create_session(Some(&good)).unwrap().unwrap();
            refused_with(
                a.attach(session, &no_plugin).unwrap(),
                PLUGIN_NOT_ALLOWED,
                "token without the VideoRoom plugin",
            );
            let handle = a.attach(session, &good).unwrap().unwrap();
            let wrong = a
                .join_as_publisher(session, handle, &good, room, "not-the-pin", "alice")
                .unwrap();
            assert_eq!(
                wrong.as_ref().map_err(|r| r.code),
                Err(WRONG_PIN),
                "wrong pin: {wrong:?}"
            );
            assert!(a.list_participants(room).unwrap().is_empty());

            let joined = a
                .join_as_publisher(session, handle, &good, room, pin, "alice")
                .unwrap()
                .unwrap();
            assert_eq!(joined["videoroom"], "joined", "{joined}");
            assert_eq!(joined["room"], room, "{joined}");
            assert_eq!(a.list_participants(room).unwrap(), ["alice"]);
            // Nothing of it reached B.
            assert!(b.list_rooms().unwrap().is_empty());
        })
        .unwrap();
}

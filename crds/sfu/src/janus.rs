//! `JanusVideoRoom`: Janus with the VideoRoom plugin, token authentication and the admin API.
//!
//! Janus's signed tokens (`token_auth_secret`) are `<expiry>,janus,<plugin>[,<plugin>…]:<sig>`
//! where `<expiry>` is a Unix time in seconds and `<sig>` is standard, padded base64 of
//! HMAC-SHA1(secret, everything before the colon). Janus checks the token on every request,
//! keepalives included, so a client swaps in a fresh token before the old one expires.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::SfuError;

/// The VideoRoom plugin's package name, as a token lists it and as clients attach to it.
pub const VIDEOROOM_PLUGIN: &str = "janus.plugin.videoroom";

/// The Secret key holding Janus's `token_auth_secret`.
pub const TOKEN_SECRET_KEY: &str = "tokenSecret";
/// The Secret key holding Janus's `admin_secret` (admin API).
pub const ADMIN_SECRET_KEY: &str = "adminSecret";
/// The Secret key holding the VideoRoom plugin's `admin_key` (needed to create rooms).
pub const ROOM_ADMIN_KEY_KEY: &str = "roomAdminKey";

const NEEDS: &str = "tokenSecret, adminSecret and roomAdminKey";
/// The longest room id handed to Janus; Kubernetes names make longer ones impossible anyway.
const ROOM_ID_MAX: usize = 300;

/// The three secrets of one Janus node, read from its credentials Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JanusCredentials {
    /// Signs participants' tokens (`token_auth_secret`).
    pub token_secret: Vec<u8>,
    /// Authenticates admin API requests (`admin_secret`).
    pub admin_secret: String,
    /// Authorizes room creation and destruction in the VideoRoom plugin (`admin_key`); also
    /// the key the room pins are derived from.
    pub room_admin_key: String,
}

// Secrets never reach logs, even through `{:?}`.
impl fmt::Debug for JanusCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JanusCredentials { .. }")
    }
}

impl JanusCredentials {
    /// Reads the credentials from a Secret's `data`, naming any key that is missing or empty.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, SfuError> {
        let get = |key: &'static str| -> Result<&[u8], SfuError> {
            let value = data.get(key).ok_or(SfuError::MissingKey {
                key,
                kind: "JanusVideoRoom",
                needs: NEEDS,
            })?;
            if value.is_empty() {
                return Err(SfuError::BadKey {
                    key,
                    problem: "empty",
                });
            }
            Ok(value)
        };
        let text = |key: &'static str| -> Result<String, SfuError> {
            let value = String::from_utf8(get(key)?.to_vec()).map_err(|_| SfuError::BadKey {
                key,
                problem: "not UTF-8",
            })?;
            // Janus reads these from its configuration as strings; a trailing newline from
            // `echo` into a file is the usual mistake and would never match.
            if value.trim() != value {
                return Err(SfuError::BadKey {
                    key,
                    problem: "surrounded by whitespace",
                });
            }
            Ok(value)
        };
        let token_secret = text(TOKEN_SECRET_KEY)?.into_bytes();
        Ok(Self {
            token_secret,
            admin_secret: text(ADMIN_SECRET_KEY)?,
            room_admin_key: text(ROOM_ADMIN_KEY_KEY)?,
        })
    }
}

/// Mints a Janus signed token valid until `expires_at` (Unix seconds) for `plugins`.
pub fn mint_token(secret: &[u8], expires_at: u64, plugins: &[&str]) -> String {
    let data = format!("{expires_at},janus,{}", plugins.join(","));
    let signature = STANDARD.encode(hmac_sha1(secret, data.as_bytes()));
    format!("{data}:{signature}")
}

/// The id of a Room's VideoRoom on Janus: `<namespace>.<name>.<first 8 of the uid>`. The uid
/// part keeps a deleted and recreated Room of the same name from reusing a room that is still
/// being torn down; namespace and name keep it readable in Janus's own listings.
pub fn room_id(namespace: &str, room_name: &str, room_uid: &str) -> String {
    let uid: String = room_uid.chars().filter(|c| *c != '-').take(8).collect();
    let mut id = format!("{namespace}.{room_name}.{uid}");
    id.truncate(ROOM_ID_MAX);
    id
}

/// The pin of a VideoRoom: derived from the node's room admin key and the room id, so the
/// operator (which sets it at creation) and signaling (which hands it to participants) agree
/// without storing it anywhere. 20 hex digits, 80 bits.
pub fn room_pin(room_admin_key: &str, sfu_room: &str) -> String {
    let mac = hmac_sha1(
        room_admin_key.as_bytes(),
        format!("pin\0{sfu_room}").as_bytes(),
    );
    mac.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than panic.
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A token computed independently with Python:
    /// `base64.b64encode(hmac.new(b"janussecret", b"1764590000,janus,janus.plugin.videoroom", hashlib.sha1).digest())`.
    #[test]
    fn token_matches_an_independent_hmac() {
        let token = mint_token(b"janussecret", 1_764_590_000, &[VIDEOROOM_PLUGIN]);
        assert_eq!(
            token,
            "1764590000,janus,janus.plugin.videoroom:VPA4YZP1fcUEPmZpI9k62HXrI6w="
        );
    }

    #[test]
    fn token_lists_every_plugin_in_order() {
        let token = mint_token(b"k", 5, &["a", "b"]);
        assert!(token.starts_with("5,janus,a,b:"), "{token}");
    }

    #[test]
    fn room_id_is_readable_and_bounded() {
        assert_eq!(
            room_id("calls", "standup", "1a2b3c4d-5e6f-7a8b-9c0d-0e1f2a3b4c5d"),
            "calls.standup.1a2b3c4d"
        );
        let long = "x".repeat(400);
        assert!(room_id(&long, &long, "u").len() <= ROOM_ID_MAX);
    }

    #[test]
    fn credentials_name_the_missing_key() {
        let mut data = BTreeMap::new();
        data.insert(TOKEN_SECRET_KEY.to_owned(), b"t".to_vec());
        data.insert(ADMIN_SECRET_KEY.to_owned(), b"a".to_vec());
        let err = JanusCredentials::from_secret_data(&data).unwrap_err();
        assert!(err.to_string().contains("roomAdminKey"), "{err}");
        data.insert(ROOM_ADMIN_KEY_KEY.to_owned(), b"r\n".to_vec());
        let err = JanusCredentials::from_secret_data(&data).unwrap_err();
        assert!(err.to_string().contains("whitespace"), "{err}");
        data.insert(ROOM_ADMIN_KEY_KEY.to_owned(), b"r".to_vec());
        let creds = JanusCredentials::from_secret_data(&data).unwrap();
        assert_eq!(creds.room_admin_key, "r");
        assert_eq!(format!("{creds:?}"), "JanusCredentials { .. }");
    }

    proptest! {
        /// Pins depend on both the key and the room, and are always 20 hex digits.
        #[test]
        fn pins_differ_per_room_and_key(key in "[a-z]{1,16}", a in "[a-z.]{1,32}", b in "[a-z.]{1,32}") {
            let pin = room_pin(&key, &a);
            prop_assert_eq!(pin.len(), 20);
            prop_assert!(pin.chars().all(|c| c.is_ascii_hexdigit()));
            if a != b {
                prop_assert_ne!(pin.clone(), room_pin(&key, &b));
            }
            prop_assert_ne!(pin, room_pin(&format!("{key}x"), &a));
        }
    }
}

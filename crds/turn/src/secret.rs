//! The TURN shared secret: generation, validation and a type that keeps it out of logs.
//!
//! A secret is 32 bytes (256 bits) from the operating system's CSPRNG, encoded as 64
//! lowercase hex characters. The *encoded string* is the HMAC key: coturn reads the secret
//! from its Redis set (`turn/realm/<realm>/secret`) as a string and uses its bytes as they
//! are, and signaling reads the same string from the mounted Kubernetes Secret. Hex keeps the
//! value printable, free of whitespace and quoting problems in Redis, YAML and env files.
//!
//! Nothing here prints a secret: [`SharedSecret`] has a redacting `Debug`, no `Display`, and
//! errors describe the shape of bad input without echoing it.

use std::fmt;

use sha1::{Digest, Sha1};

/// Bytes of entropy in a generated secret.
pub const SECRET_BYTES: usize = 32;
/// Length of the encoded form: two hex characters per byte.
pub const ENCODED_LEN: usize = SECRET_BYTES * 2;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random number generator failed")]
    Random(#[from] getrandom::Error),
    #[error("a shared secret must be {ENCODED_LEN} hex characters, got {len}")]
    BadLength { len: usize },
    #[error("a shared secret must be lowercase hex; character {position} is not")]
    NotLowercaseHex { position: usize },
}

impl SecretError {
    /// Stable, low-cardinality label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Random(_) => "random",
            Self::BadLength { .. } => "bad_length",
            Self::NotLowercaseHex { .. } => "not_lowercase_hex",
        }
    }
}

pub type Result<T, E = SecretError> = std::result::Result<T, E>;

/// A TURN shared secret in its encoded (64 lowercase hex characters) form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// Draws a fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_entropy(bytes))
    }

    /// Encodes entropy the caller drew itself. Only for callers with their own CSPRNG and for
    /// deterministic tests; the bytes must be uniformly random for the secret to be one.
    pub fn from_entropy(bytes: [u8; SECRET_BYTES]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut encoded = String::with_capacity(ENCODED_LEN);
        for byte in bytes {
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(encoded)
    }

    /// Accepts a secret in encoded form, e.g. read back from the Kubernetes Secret or Redis.
    pub fn from_encoded(encoded: &str) -> Result<Self> {
        if encoded.len() != ENCODED_LEN {
            return Err(SecretError::BadLength { len: encoded.len() });
        }
        if let Some(position) = encoded
            .bytes()
            .position(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(SecretError::NotLowercaseHex { position });
        }
        Ok(Self(encoded.to_owned()))
    }

    /// The HMAC key: the bytes of the encoded string, exactly as coturn uses them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The encoded string, for writing to Redis or the Kubernetes Secret. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, non-secret name for the secret (first 8 hex digits of its SHA-1), so logs and
    /// Events can say which secret was promoted or dropped.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.0)
    }
}

/// The fingerprint of any encoded secret, including strings found in Redis that are not valid
/// secrets, so they can be named in logs without being shown.
pub fn fingerprint_of(encoded: &str) -> String {
    let digest = Sha1::digest(encoded.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret(<redacted {}>)", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generate_yields_64_lowercase_hex_chars() {
        let secret = SharedSecret::generate().unwrap();
        assert_eq!(secret.expose().len(), 64);
        assert!(
            secret
                .expose()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(secret.as_bytes(), secret.expose().as_bytes());
    }

    #[test]
    fn generate_draws_fresh_values() {
        let a = SharedSecret::generate().unwrap();
        let b = SharedSecret::generate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = SharedSecret::from_entropy([0xab; SECRET_BYTES]);
        let shown = format!("{secret:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("redacted"));
        assert!(shown.contains(&secret.fingerprint()));
    }

    #[test]
    fn from_entropy_encodes_each_byte_as_two_hex_digits() {
        let mut bytes = [0u8; SECRET_BYTES];
        bytes[0] = 0x0f;
        bytes[1] = 0xa0;
        bytes[31] = 0xff;
        let secret = SharedSecret::from_entropy(bytes);
        assert!(secret.expose().starts_with("0fa0"));
        assert!(secret.expose().ends_with("00ff"));
    }

    #[test]
    fn fingerprint_is_a_sha1_prefix() {
        // python3 -c 'import hashlib; print(hashlib.sha1(b"x").hexdigest()[:8])'
        assert_eq!(fingerprint_of("x"), "11f6ad8e");
    }

    #[test]
    fn from_encoded_rejects_bad_shapes() {
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(SharedSecret::from_encoded(&good).unwrap().expose(), good);
        assert!(matches!(
            SharedSecret::from_encoded(""),
            Err(SecretError::BadLength { len: 0 })
        ));
        assert!(matches!(
            SharedSecret::from_encoded(&good[1..]),
            Err(SecretError::BadLength { len: 63 })
        ));
        assert!(matches!(
            SharedSecret::from_encoded(&format!("{good}0")),
            Err(SecretError::BadLength { len: 65 })
        ));
        let upper = good.to_uppercase();
        assert!(matches!(
            SharedSecret::from_encoded(&upper),
            Err(SecretError::NotLowercaseHex { position: 10 })
        ));
        let spaced = format!(" {}", &good[1..]);
        assert!(matches!(
            SharedSecret::from_encoded(&spaced),
            Err(SecretError::NotLowercaseHex { position: 0 })
        ));
        // 64 bytes but multi-byte characters: refused, never sliced mid-character.
        let wide = "é".repeat(32);
        assert!(matches!(
            SharedSecret::from_encoded(&wide),
            Err(SecretError::NotLowercaseHex { position: 0 })
        ));
    }

    #[test]
    fn errors_do_not_echo_input() {
        let err = SharedSecret::from_encoded("supersecretvalue").unwrap_err();
        assert!(!err.to_string().contains("supersecret"));
    }

    proptest! {
        /// Every encoding of entropy reads back as the same secret.
        #[test]
        fn entropy_roundtrips_through_encoding(bytes in any::<[u8; SECRET_BYTES]>()) {
            let secret = SharedSecret::from_entropy(bytes);
            prop_assert_eq!(SharedSecret::from_encoded(secret.expose()).unwrap(), secret);
        }
    }
}

//! Cross-check with an independent JWT implementation: tokens minted by Python's PyJWT, for
//! each supported algorithm, are accepted by our verifier.
//!
//! Needs `python3` with PyJWT and cryptography (`pip install pyjwt cryptography`). The test
//! does not install them; it fails, saying so, when they are missing. Set `PYTHON` to use
//! another interpreter.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_signaling::auth::{AuthConfig, KeyAlgorithm};
use switchboard_signaling::ids::RoomId;

const HS_SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

/// Mints one token per algorithm and prints `ALG TOKEN` lines. Claims use what PyJWT users
/// write: integer times, `aud`/`iss`, and a non-ASCII display name.
const MINT_SCRIPT: &str = r#"
import sys, jwt
fixtures, now, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def pem(name):
    with open(f"{fixtures}/{name}", "rb") as f:
        return f.read()
claims = {"sub": "user-42", "room": "Standup_EU.1", "iat": now, "exp": now + 600,
          "aud": "switchboard", "iss": "https://app.example",
          "name": "Zoë \U0001F680", "region": "eu-west-1"}
for alg, kid, key in [("HS256", "hs", secret.encode()), ("RS256", "rsa", pem("rsa.key.pem")),
                      ("ES256", "ec", pem("ec.key.pem")), ("EdDSA", "ed", pem("ed25519.key.pem"))]:
    print(alg, jwt.encode(claims, key, algorithm=alg, headers={"kid": kid}))
"#;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Fails with an actionable message when PyJWT (or its crypto backend) is not importable.
fn require_pyjwt(python: &str) {
    let probe = Command::new(python)
        .args(["-c", "import jwt, cryptography"])
        .output();
    match probe {
        Err(error) => panic!(
            "cannot run `{python}` ({error}); this test needs Python 3 with PyJWT: \
             pip install pyjwt cryptography"
        ),
        Ok(output) if !output.status.success() => panic!(
            "PyJWT is not installed for `{python}`; install it with: pip install pyjwt cryptography\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
}

#[test]
fn pyjwt_tokens_are_accepted() {
    let python = python();
    require_pyjwt(&python);

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let read = |name: &str| std::fs::read(format!("{fixtures}/{name}")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut child = Command::new(&python)
        .args(["-", fixtures, &now.to_string(), HS_SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(MINT_SCRIPT.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "PyJWT failed to mint tokens:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let config = AuthConfig::builder()
        .hs256_secret("hs", HS_SECRET.as_bytes())
        .unwrap()
        .public_key_pem("rsa", KeyAlgorithm::Rs256, &read("rsa.pub.pem"))
        .unwrap()
        .public_key_pem("ec", KeyAlgorithm::Es256, &read("ec.pub.pem"))
        .unwrap()
        .public_key_pem("ed", KeyAlgorithm::EdDsa, &read("ed25519.pub.pem"))
        .unwrap()
        .audience("switchboard")
        .issuer("https://app.example")
        .max_lifetime(Duration::from_secs(3600))
        .build()
        .unwrap();
    let room = RoomId::parse("Standup_EU.1").unwrap();

    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut algorithms = Vec::new();
    for line in stdout.lines() {
        let (alg, token) = line.split_once(' ').unwrap();
        let claims = config
            .verify(token, Some(&room), SystemTime::now())
            .unwrap_or_else(|error| panic!("PyJWT {alg} token refused: {error}\n{token}"));
        assert_eq!(claims.user.as_str(), "user-42", "{alg}");
        assert_eq!(claims.name.as_ref().unwrap().as_str(), "Zoë 🚀", "{alg}");
        assert_eq!(
            claims.region.as_ref().unwrap().as_str(),
            "eu-west-1",
            "{alg}"
        );
        assert_eq!(claims.issued_at, Some(now), "{alg}");
        algorithms.push(alg.to_owned());
    }
    assert_eq!(algorithms, ["HS256", "RS256", "ES256", "EdDSA"]);
}

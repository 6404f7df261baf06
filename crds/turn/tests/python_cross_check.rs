//! Cross-checks minted credentials against Python's hmac/hashlib/base64, an implementation
//! that shares no code with ours. Needs `python3` on PATH and fails loudly without it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use switchboard_turn::credentials::mint;
use switchboard_turn::secret::SharedSecret;

/// Python builds the username itself from expiry and user, then signs it, so both halves of
/// the credential are checked. Input and output are hex so no quoting can go wrong.
const PYTHON: &str = r#"
import base64, hashlib, hmac, sys
for line in sys.stdin:
    key, user, expiry = line.split()
    username = (expiry + ":" + bytes.fromhex(user).decode("utf-8")).encode("utf-8")
    tag = hmac.new(bytes.fromhex(key), username, hashlib.sha1).digest()
    print(username.hex(), base64.b64encode(tag).decode("ascii"))
"#;

/// splitmix64: a fixed-seed generator so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Case {
    secret: Vec<u8>,
    user: String,
    now: u64,
    ttl: u64,
}

fn cases() -> Vec<Case> {
    // Non-ASCII and punctuation included: the HMAC input is the UTF-8 bytes of the username.
    const POOL: &[char] = &[
        'a', 'z', 'A', 'Z', '0', '9', '-', '_', '.', '/', '@', ' ', '+', '=', 'é', 'ß', '日', '本',
        '🙂',
    ];
    let mut rng = Rng(0x5eed_cafe);
    (0..50)
        .map(|i| {
            let secret = if i % 2 == 0 {
                // The shape the operator generates.
                let mut entropy = [0u8; 32];
                for b in &mut entropy {
                    *b = rng.next() as u8;
                }
                SharedSecret::from_entropy(entropy).as_bytes().to_vec()
            } else {
                // Arbitrary keys, including ones longer than SHA-1's 64-byte block.
                let len = 1 + rng.below(100) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            };
            let mut user = String::new();
            for _ in 0..=rng.below(40) {
                let c = POOL[rng.below(POOL.len() as u64) as usize];
                if user.len() + c.len_utf8() <= 128 {
                    user.push(c);
                }
            }
            Case {
                secret,
                user,
                now: rng.below(4_000_000_000),
                ttl: 1 + rng.below(172_800),
            }
        })
        .collect()
}

/// Every one of 50 random credentials matches Python's username and password exactly.
#[test]
fn minted_credentials_match_python() {
    let cases = cases();
    let input: String = cases
        .iter()
        .map(|c| {
            format!(
                "{} {} {}\n",
                hex(&c.secret),
                hex(c.user.as_bytes()),
                c.now + c.ttl
            )
        })
        .collect();

    let mut child = match Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => panic!(
            "this test needs python3 on PATH to cross-check TURN credentials, \
             and starting it failed: {err}"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write cases to python3");
    let output = child.wait_with_output().expect("wait for python3");
    assert!(
        output.status.success(),
        "python3 failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let stdout = String::from_utf8(output.stdout).expect("python3 prints ASCII");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "one line per case from python3");
    for (case, line) in cases.iter().zip(lines) {
        let (username_hex, password) = line.split_once(' ').expect("two fields");
        let cred = mint(&case.secret, &case.user, case.now, case.ttl).unwrap();
        assert_eq!(
            hex(cred.username.as_bytes()),
            username_hex,
            "user {:?}",
            case.user
        );
        assert_eq!(cred.password, password, "user {:?}", case.user);
        assert_eq!(cred.expires_at_unix, case.now + case.ttl);
    }
}

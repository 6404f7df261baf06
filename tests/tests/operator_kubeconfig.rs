//! The operator's start-up message for a kubeconfig whose client certificate is X.509 v1
//! (which kubectl accepts and rustls refuses) says what is wrong and what to do, instead of
//! rustls's "invalid private key: invalid peer certificate: UnsupportedCertVersion".

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use switchboard_tests::binaries::workspace_binary;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Proves an X.509 v1 client certificate stops the operator with a message naming the
/// problem (version 1) and the way out (a version 3 certificate, or a token).
#[test]
fn a_v1_client_certificate_gets_a_message_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genrsa", "-out", "ca.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=test-ca",
            "-days",
            "1",
            "-out",
            "ca.crt",
        ],
    );
    openssl(d, &["genrsa", "-out", "client.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "client.key",
            "-subj",
            "/CN=admin/O=system:masters",
            "-out",
            "client.csr",
        ],
    );
    // Signed without extensions: OpenSSL writes an X.509 version 1 certificate.
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            "client.crt",
        ],
    );
    let text = Command::new("openssl")
        .args(["x509", "-in", "client.crt", "-noout", "-text"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
        "the test certificate is not version 1"
    );
    let b64 = |name: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join(name)).unwrap())
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        b64("ca.crt"),
        b64("client.crt"),
        b64("client.key")
    );
    std::fs::write(d.join("kubeconfig"), kubeconfig).unwrap();

    let bin = workspace_binary("switchboard-operator", "switchboard-operator").unwrap();
    let mut child = Command::new(bin)
        .args(["--listen=127.0.0.1:0"])
        .env("KUBECONFIG", d.join("kubeconfig"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the operator did not stop on a kubeconfig it cannot use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    // The log goes where the telemetry crate writes it; read both streams.
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!status.success(), "{stderr}");
    for needle in [
        "X.509 version 1",
        "version 3",
        "extendedKeyUsage=clientAuth",
        "token",
    ] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
}

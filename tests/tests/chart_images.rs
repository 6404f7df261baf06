//! The images, built from the root `Dockerfile`'s two targets on local Debian bases
//! (`tests/e2e/local-images.sh`; there is no registry to pull from) and run the way the chart
//! runs them: as user 65532, read-only root filesystem, no capabilities. Signaling serves
//! `/readyz` against the test Redis and relays a join, offer and answer; the operator syncs its
//! watches against the test apiserver.
//!
//! Needs a Docker daemon (`docker info`), root and debootstrap: a plain `cargo test` skips it,
//! saying so, where they are missing; under `tests/run.sh` their absence fails it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_tests::http::get;
use switchboard_tests::signaling::{Client, TEST_KID, TEST_SECRET, token};
use switchboard_tests::{ControlPlane, RedisServer, free_port, repo_root};

const HOUR: Duration = Duration::from_secs(3600);

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A running container, removed on drop (its log printed if the test failed).
struct Container(String);

impl Container {
    fn run(image: &str, args: &[&str]) -> Container {
        // Host network: the test Redis and apiserver listen on loopback only.
        let mut all = vec![
            "run",
            "-d",
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ];
        all.extend(args);
        all.push(image);
        Container(docker(&all))
    }

    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(port, "/readyz").is_ok_and(|(code, _)| code == 200) {
            assert!(
                Instant::now() < deadline,
                "/readyz did not answer 200 within 30s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", "--tail", "40", &self.0])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- container {} ---\n{}", self.0, self.logs());
        }
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// Proves both targets of the Dockerfile build on local bases into non-root images that serve as the chart
/// runs them: signaling ready on Redis and relaying offer and answer, the operator ready on the
/// apiserver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_build_and_serve() {
    switchboard_tests::require!(Docker, Redis, ControlPlane);
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(repo_root().join("tests/e2e/local-images.sh"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "local-images.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("images built in {:?}", started.elapsed());
    for image in ["switchboard/operator:local", "switchboard/signaling:local"] {
        let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", image]);
        assert_eq!(user, "65532:65532", "{image} runs as");
    }

    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let listen = format!("SWITCHBOARD_LISTEN=127.0.0.1:{port}");
    let redis_url = format!("SWITCHBOARD_REDIS_URL={}", redis.url());
    let key = format!("SWITCHBOARD_JWT_HS256={TEST_KID}={TEST_SECRET}");
    let signaling = Container::run(
        "switchboard/signaling:local",
        &[
            "--user=65532:65532",
            "-e",
            &listen,
            "-e",
            &redis_url,
            "-e",
            &key,
        ],
    );
    signaling.wait_ready(port);
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let (mut alice, ja) = Client::join(&url, &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (mut bob, jb) = Client::join(&url, &token("bob", "standup", HOUR))
        .await
        .unwrap();
    alice
        .send_json(&json!({"type": "offer", "to": jb["participantId"], "sdp": "v=0 offer"}))
        .await
        .unwrap();
    assert_eq!(bob.recv_type("offer").await.unwrap()["sdp"], "v=0 offer");
    bob.send_json(&json!({"type": "answer", "to": ja["participantId"], "sdp": "v=0 answer"}))
        .await
        .unwrap();
    assert_eq!(
        alice.recv_type("answer").await.unwrap()["sdp"],
        "v=0 answer"
    );

    let cp = ControlPlane::start().await.unwrap();
    let port = free_port().unwrap();
    let kubeconfig = format!(
        "{}:/etc/switchboard/kubeconfig:ro",
        cp.kubeconfig().display()
    );
    let listen = format!("SWITCHBOARD_OPERATOR_LISTEN=127.0.0.1:{port}");
    let operator = Container::run(
        "switchboard/operator:local",
        &[
            "--user=65532:65532",
            "-v",
            &kubeconfig,
            "-e",
            "KUBECONFIG=/etc/switchboard/kubeconfig",
            "-e",
            &listen,
            "-e",
            "SWITCHBOARD_LEADER_ELECTION=false",
        ],
    );
    operator.wait_ready(port);
    eprintln!("images test took {:?}", started.elapsed());
}

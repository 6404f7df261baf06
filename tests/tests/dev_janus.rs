//! Dev mode with a real Janus: `dev --sfu-file` with a `JanusVideoRoom` SfuNode and its
//! credentials Secret creates each room on Janus itself (there is no operator), once, and
//! hands participants credentials Janus accepts: the token opens a session and attaches the
//! VideoRoom plugin, and the pin lets them into the room. And `dev --janus`, the one command
//! a newcomer runs: dev mode starts Janus itself and two demo pages call through it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};
use switchboard_tests::browser::{Browser, NetworkNamespace, run_sfu_call};
use switchboard_tests::signaling::{Client, SignalingProcess};
use switchboard_tests::{Janus, JanusOptions};

/// A token from dev mode's `/dev/token`.
fn dev_token(server: &SignalingProcess, user: &str) -> String {
    let (code, body) = switchboard_tests::http::request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        server.port(),
        "GET",
        &format!("/dev/token?room=standup&user={user}"),
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// Proves dev mode creates the room on Janus on the first join (and only then, and once), and
/// that the token and pin it hands out are accepted by that Janus.
#[test]
fn dev_mode_creates_rooms_on_janus_and_its_credentials_work_there() {
    switchboard_tests::require!(Janus, NetworkNamespace);
    let namespace = NetworkNamespace::create().unwrap();
    let ip = namespace.add_sfu_address().unwrap();
    namespace
        .run(move || {
            let janus = Janus::start(JanusOptions::new("janus-local", ip, 20400..=20499)).unwrap();
            let options = janus.options();
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("janus.yaml");
            std::fs::write(
                &file,
                format!(
                    "apiVersion: switchboard.dev/v1alpha1\nkind: SfuNode\nmetadata: {{name: janus-local}}\n\
                     spec:\n  kind: JanusVideoRoom\n  url: {url}\n  region: local\n  capacity: {{participants: 50}}\n  \
                     admin: {{url: {admin:?}, credentialsSecret: janus-local}}\n---\n\
                     apiVersion: v1\nkind: Secret\nmetadata: {{name: janus-local}}\n\
                     stringData: {{tokenSecret: {token:?}, adminSecret: {admin_secret:?}, roomAdminKey: {key:?}}}\n",
                    url = janus.ws_url(),
                    admin = janus.admin_url(),
                    token = options.token_secret,
                    admin_secret = options.admin_secret,
                    key = options.room_admin_key,
                ),
            )
            .unwrap();
            let file = file.display().to_string();
            let server = SignalingProcess::start_dev(&["--sfu-file", &file]).unwrap();
            assert!(janus.list_rooms().unwrap().is_empty(), "nothing before a join");

            let runtime = tokio::runtime::Runtime::new().unwrap();
            let url = server.ws_url();
            let alice = dev_token(&server, "alice");
            let (_alice, joined) = runtime
                .block_on(Client::join(&url, &alice))
                .unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail(20)));
            let sfu = &joined["sfu"];
            assert_eq!(sfu["kind"], "JanusVideoRoom", "{joined}");
            assert_eq!(sfu["node"], "janus-local");
            assert_eq!(sfu["url"], janus.ws_url());
            assert_eq!(sfu["generation"], 0, "nothing moves rooms in dev mode");
            let room = sfu["room"].as_str().unwrap().to_owned();
            let pin = sfu["pin"].as_str().unwrap().to_owned();
            let token = sfu["token"].as_str().unwrap().to_owned();
            assert_eq!(janus.list_rooms().unwrap(), [room.as_str()], "created on Janus");

            // A second participant: the same room, not created again.
            let (_bob, joined_b) = runtime
                .block_on(Client::join(&url, &dev_token(&server, "bob")))
                .unwrap();
            assert_eq!(joined_b["sfu"]["room"], room.as_str());
            assert_eq!(joined_b["sfu"]["pin"], pin.as_str());
            assert_eq!(janus.list_rooms().unwrap(), [room.as_str()]);

            // Janus takes the token and the pin.
            let session = janus
                .create_session(Some(&token))
                .unwrap()
                .unwrap_or_else(|refusal| panic!("token refused: {refusal:?}"));
            let handle = janus.attach(session, &token).unwrap().unwrap();
            let entered = janus
                .join_as_publisher(session, handle, &token, &room, &pin, "alice")
                .unwrap()
                .unwrap_or_else(|refusal| panic!("pin refused: {refusal:?}"));
            assert_eq!(entered["videoroom"], "joined", "{entered}");
            assert_eq!(janus.list_participants(&room).unwrap(), ["alice"]);
        })
        .unwrap();
}

/// Proves `dev --janus` is an SFU call in one command: dev mode starts Debian's Janus with
/// configuration and secrets of its own, places the room on it, and two demo pages (which
/// fetch their tokens from dev mode, as a newcomer's browser does) publish and decode each
/// other's video through that Janus's RTP ports.
#[test]
fn dev_janus_starts_janus_and_carries_a_demo_call_through_it() {
    switchboard_tests::require!(Janus, Chromium, NetworkNamespace);
    let browser = Browser::prepare().unwrap();
    let namespace = NetworkNamespace::create().unwrap();
    let ip = namespace.add_sfu_address().unwrap();
    let rtp_ports = 20700..=20799;
    let (report, log, whole_log) = namespace
        .run(move || {
            let dev = SignalingProcess::start_dev(&[
                "--janus",
                &format!("--janus-listen-ip={ip}"),
                &format!("--janus-ice-ip={ip}"),
                "--janus-rtp-ports=20700-20799",
            ])
            .unwrap();
            let page = |user: &str| {
                format!(
                    "{}/?room=standup&user={user}&name={user}&media=canvas",
                    dev.http_url()
                )
            };
            let config = json!({
                "pages": [page("alice"), page("bob")],
                "node": "janus-local",
                "failovers": [],
            });
            let report = run_sfu_call(&browser, &config).unwrap();
            (report, dev.log_tail(30), dev.log_tail(usize::MAX))
        })
        .unwrap();
    assert_eq!(
        report["ok"], true,
        "browser scenario failed: {report:#}\n{log}"
    );
    assert_eq!(report["modes"], json!(["sfu", "sfu"]), "{report:#}");
    let ids: Vec<String> = serde_json::from_value(report["participantIds"].clone()).unwrap();
    assert_eq!(ids.len(), 2, "{report:#}");
    support::assert_media_through_node(&report["first"], &ids, "janus-local", &rtp_ports, &report);

    // Dev mode was killed with SIGKILL when the closure dropped it: its Janus goes too.
    let folder = whole_log
        .split_whitespace()
        .find_map(|word| {
            let start = word.find("/tmp/switchboard-dev-janus-")?;
            let path = &word[start..];
            Some(path[..path.rfind('/')?].to_owned())
        })
        .unwrap_or_else(|| panic!("dev mode logs where its Janus lives:\n{whole_log}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while janus_running_from(&folder) {
        assert!(
            std::time::Instant::now() < deadline,
            "Janus from {folder} still runs 5 s after dev mode was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether a process whose command line names `folder` is alive.
fn janus_running_from(folder: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie (state Z) has exited; only its parent has not reaped it yet.
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        !zombie && String::from_utf8_lossy(&cmdline).contains(folder)
    })
}

/// A Janus that cannot be started is a clear error at start, naming the program and how to
/// get it, and dev mode exits instead of serving rooms nobody can join.
#[test]
fn dev_janus_without_janus_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-janus-here");
    let bin = switchboard_tests::binaries::workspace_binary(
        "switchboard-signaling",
        "switchboard-signaling",
    )
    .unwrap();
    let output = std::process::Command::new(bin)
        .args(["dev", "--listen=127.0.0.1:0", "--janus"])
        .arg(format!("--janus-bin={}", missing.display()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot start {}", missing.display()))
            && stderr.contains("apt-get install janus"),
        "{stderr}"
    );
}

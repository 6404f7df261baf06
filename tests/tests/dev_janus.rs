//! Dev mode with a real Janus: `dev --sfu-file` with a `JanusVideoRoom` SfuNode and its
//! credentials Secret creates each room on Janus itself (there is no operator), once, and
//! hands participants credentials Janus accepts: the token opens a session and attaches the
//! VideoRoom plugin, and the pin lets them into the room.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use switchboard_tests::browser::NetworkNamespace;
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

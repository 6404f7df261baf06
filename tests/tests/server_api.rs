//! The server API and the end of a call, with real processes: two `switchboard-signaling`
//! pods on one real Redis (and, for Room deletion, a real kube-apiserver), clients on both.
//! A kick and an ended room reach the participant wherever it is connected, close it with the
//! documented code, leave nothing in Redis and cannot be resumed; the API refuses what is not
//! an admin token, each with its documented code; the `room` CLI commands drive the same API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use switchboard_crds::Room;
use switchboard_signaling::admin_client::{AdminClient, AdminClientError};
use switchboard_signaling::auth::{AdminMintClaims, DEFAULT_ADMIN_AUDIENCE, Hs256Signer};
use switchboard_tests::binaries::workspace_binary;
use switchboard_tests::objects::room;
use switchboard_tests::signaling::{Client, Ended, SignalingProcess, TEST_KID, TEST_SECRET, token};
use switchboard_tests::webhook_receiver::{WEBHOOK_SECRET, WebhookReceiver, received};
use switchboard_tests::{ControlPlane, RedisServer, free_port};

const HOUR: Duration = Duration::from_secs(3600);
const NS: &str = "calls";

/// A pod on `redis` serving the server API too; returns it and the API's base URL.
fn pod(
    redis: &RedisServer,
    name: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (SignalingProcess, String) {
    let admin_port = free_port().unwrap();
    let mut args = vec![
        format!("--redis-url={}", redis.url()),
        format!("--pod-name={name}"),
        format!("--admin-addr=127.0.0.1:{admin_port}"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = SignalingProcess::start_with_env(&args, env).unwrap();
    (process, format!("http://127.0.0.1:{admin_port}"))
}

/// An admin token from the test key, for `aud`, issued at `issued` for `ttl`.
fn admin_token_at(aud: &str, issued: SystemTime, ttl: Duration) -> String {
    let signer = Hs256Signer::new(Some(TEST_KID), TEST_SECRET.as_bytes()).unwrap();
    signer
        .mint_admin(&AdminMintClaims::new("backend", aud, issued, ttl))
        .unwrap()
}

fn admin(url: &str) -> AdminClient {
    let token = admin_token_at(DEFAULT_ADMIN_AUDIENCE, SystemTime::now(), HOUR);
    AdminClient::new(url, &token).unwrap()
}

/// Every Redis key that belongs to `room`.
async fn room_keys(redis: &RedisServer, room: &str) -> Vec<String> {
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::AsyncCommands::keys(&mut connection, format!("sb:room:{{{room}}}*"))
        .await
        .unwrap()
}

/// Reads until `participantLeft` for `id`; returns its reason.
async fn left_reason(client: &mut Client, id: &Value) -> Value {
    loop {
        let message = client.recv_type("participantLeft").await.unwrap();
        if message["id"] == *id {
            return message["reason"].clone();
        }
    }
}

/// Proves a kick through one pod's API closes the participant connected to the other pod with
/// 4002, tells the room (`kicked`), and that the kicked session cannot resume; the listings
/// show the room, its count and each participant's pod and join time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_works_across_pods_and_cannot_be_resumed() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let (a, api_a) = pod(&redis, "pod-a", &[], &[]);
    let (b, _api_b) = pod(&redis, "pod-b", &[], &[]);
    let (mut alice, _) = Client::join(&a.ws_url(), &token("alice", "standup", HOUR))
        .await
        .unwrap();
    let (mut bob, bob_joined) = Client::join(&b.ws_url(), &token("bob", "standup", HOUR))
        .await
        .unwrap();
    alice.recv_type("participantJoined").await.unwrap();
    let api = admin(&api_a);

    let rooms = api.rooms().await.unwrap();
    assert!(rooms.contains(&("standup".to_owned(), 2)), "{rooms:?}");
    let participants = api.participants("standup").await.unwrap();
    let by_user: Vec<(&str, &str)> = participants
        .iter()
        .map(|p| (p.user.as_str(), p.pod.as_str()))
        .collect();
    assert_eq!(by_user.len(), 2, "{participants:?}");
    assert!(by_user.contains(&("alice", "pod-a")) && by_user.contains(&("bob", "pod-b")));
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for p in &participants {
        let joined = p.joined_at.expect("joinedAt is listed");
        assert!(joined <= now_ms && now_ms - joined < 60_000, "{p:?}");
    }

    let bob_id = bob_joined["participantId"].clone();
    api.kick("standup", bob_id.as_str().unwrap()).await.unwrap();
    assert_eq!(bob.until_closed().await, Ended::Closed(Some(4002)));
    assert_eq!(left_reason(&mut alice, &bob_id).await, json!("kicked"));

    let resume_token = bob_joined["resumeToken"].as_str().unwrap();
    for url in [a.ws_url(), b.ws_url()] {
        let (_, answer) = Client::resume(&url, &token("bob", "standup", HOUR), resume_token, 0)
            .await
            .unwrap();
        assert_eq!(answer["code"], "resume_failed", "{answer}");
    }
    match api.kick("standup", bob_id.as_str().unwrap()).await {
        Err(AdminClientError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "participant_not_found"));
        }
        other => panic!("a second kick must be 404: {other:?}"),
    }
    let participants = api.participants("standup").await.unwrap();
    assert_eq!(participants.len(), 1, "{participants:?}");
    // Alice stays, and keeps being refreshed: the kick did not take her along.
    assert!(alice.quiet_for(Duration::from_millis(300)).await);
}

/// Proves ending a room through the API closes every participant on both pods with 4003
/// after `participantLeft`/`room_deleted`, leaves no key of the room in Redis, and refuses a
/// resume into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_room_closes_everyone_and_clears_redis() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let (a, api_a) = pod(&redis, "pod-a", &[], &[]);
    let (b, _api_b) = pod(&redis, "pod-b", &[], &[]);
    let (mut alice, alice_joined) = Client::join(&a.ws_url(), &token("alice", "retro", HOUR))
        .await
        .unwrap();
    let (mut bob, bob_joined) = Client::join(&b.ws_url(), &token("bob", "retro", HOUR))
        .await
        .unwrap();
    alice.recv_type("participantJoined").await.unwrap();
    assert!(!room_keys(&redis, "retro").await.is_empty());

    let removed = admin(&api_a).end("retro").await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(
        left_reason(&mut alice, &bob_joined["participantId"]).await,
        json!("room_deleted")
    );
    assert_eq!(alice.until_closed().await, Ended::Closed(Some(4003)));
    assert_eq!(
        left_reason(&mut bob, &alice_joined["participantId"]).await,
        json!("room_deleted")
    );
    assert_eq!(bob.until_closed().await, Ended::Closed(Some(4003)));
    // The closed sessions do not put themselves back (no refresh-and-restore).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(room_keys(&redis, "retro").await, Vec::<String>::new());
    let (_, answer) = Client::resume(
        &b.ws_url(),
        &token("alice", "retro", HOUR),
        alice_joined["resumeToken"].as_str().unwrap(),
        0,
    )
    .await
    .unwrap();
    assert_eq!(answer["code"], "resume_failed", "{answer}");
    let rooms = admin(&api_a).rooms().await.unwrap();
    assert!(!rooms.iter().any(|(r, _)| r == "retro"), "{rooms:?}");
}

/// Proves the API refuses a join token, an expired admin token, an admin token for another
/// audience, a token without the admin grant and no token at all, each with its documented
/// status and code, and that an admin token cannot join a room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_is_not_an_admin_token() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let (a, api_a) = pod(&redis, "pod-a", &[], &[]);
    let signer = Hs256Signer::new(Some(TEST_KID), TEST_SECRET.as_bytes()).unwrap();
    let mut no_grant =
        AdminMintClaims::new("backend", DEFAULT_ADMIN_AUDIENCE, SystemTime::now(), HOUR);
    no_grant.admin = false;
    let cases = [
        (token("alice", "standup", HOUR), 403, "join_token"),
        (
            admin_token_at(
                DEFAULT_ADMIN_AUDIENCE,
                SystemTime::now() - Duration::from_secs(7200),
                Duration::from_secs(60),
            ),
            401,
            "token_expired",
        ),
        (
            admin_token_at("billing-service", SystemTime::now(), HOUR),
            401,
            "invalid_audience",
        ),
        (signer.mint_admin(&no_grant).unwrap(), 403, "not_admin"),
        (String::new(), 401, "missing_token"),
    ];
    for (bad, want_status, want_code) in cases {
        let api = AdminClient::new(&api_a, &bad).unwrap();
        for call in [
            api.rooms().await.map(drop),
            api.end("standup").await.map(drop),
        ] {
            match call {
                Err(AdminClientError::Refused { status, code, .. }) => {
                    assert_eq!((status, code.as_str()), (want_status, want_code));
                }
                other => panic!("{want_code}: expected a refusal, got {other:?}"),
            }
        }
    }
    let admin_token = admin_token_at(DEFAULT_ADMIN_AUDIENCE, SystemTime::now(), HOUR);
    let Err(refused) = Client::connect(&a.ws_url(), &admin_token).await else {
        panic!("an admin token must not open a signaling connection");
    };
    assert!(refused.contains("401"), "{refused}");
    // The API is not on the public listener.
    let (status, _) = switchboard_tests::http::get(a.port(), "/v1/rooms").unwrap();
    assert_eq!(status, 404);

    // A room id outside the id charset: 400 `bad_request`.
    let api = AdminClient::new(&api_a, &admin_token).unwrap();
    match api.participants("bad~room").await {
        Err(AdminClientError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "bad_request"));
        }
        other => panic!("bad_request: expected a refusal, got {other:?}"),
    }
    // The room state gone: 503 `unavailable`, at once and not a hang.
    drop(redis);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match api.rooms().await {
            Err(AdminClientError::Refused { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (503, "unavailable"));
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "unavailable: expected a refusal within 10 s, got {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Proves the `room` CLI commands drive the API: list, participants, kick and end, with the
/// admin token minted from the same key the server trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_cli_lists_kicks_and_ends() {
    switchboard_tests::require!(Redis);
    let redis = RedisServer::start().unwrap();
    let (a, api_a) = pod(&redis, "pod-a", &[], &[]);
    let (mut alice, _) = Client::join(&a.ws_url(), &token("alice", "cli-room", HOUR))
        .await
        .unwrap();
    let (mut bob, bob_joined) = Client::join(&a.ws_url(), &token("bob", "cli-room", HOUR))
        .await
        .unwrap();
    let bin = workspace_binary("switchboard-signaling", "switchboard-signaling").unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(&bin)
            .arg("room")
            .args(args)
            .arg(format!("--admin-url={api_a}"))
            .env("SWITCHBOARD_JWT_HS256", format!("{TEST_KID}={TEST_SECRET}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (ok, text) = cli(&["list"]);
    assert!(ok && text.contains("cli-room\t2"), "{text}");
    let (ok, text) = cli(&["participants", "cli-room"]);
    assert!(
        ok && text.contains("\talice\tpod-a\t") && text.contains("\tbob\tpod-a\t"),
        "{text}"
    );
    let bob_id = bob_joined["participantId"].as_str().unwrap();
    let (ok, text) = cli(&["kick", "cli-room", bob_id]);
    assert!(ok, "{text}");
    assert_eq!(bob.until_closed().await, Ended::Closed(Some(4002)));
    let (ok, text) = cli(&["kick", "cli-room", bob_id]);
    assert!(!ok && text.contains("404 participant_not_found"), "{text}");
    let (ok, text) = cli(&["end", "cli-room"]);
    assert!(ok && text.contains("1 participants removed"), "{text}");
    assert_eq!(alice.until_closed().await, Ended::Closed(Some(4003)));
}

/// Proves `kubectl delete room` on the real apiserver ends the call: with the SFU finalizer holding
/// the Room (only `deletionTimestamp` set), every client on both pods gets 4003, Redis holds
/// nothing of the room, neither a resume nor a new join gets in, and although both pods see
/// the deletion, each webhook event of the call arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_room_object_ends_the_call() {
    switchboard_tests::require!(ControlPlane, Redis);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace(NS).await.unwrap();
    let client = cp.client().await.unwrap();
    let rooms: Api<Room> = Api::namespaced(client.clone(), NS);
    let mut object = room("allhands", 10, json!({}));
    // As the operator puts on a Room it provisioned on an SFU.
    object.metadata.finalizers = Some(vec!["switchboard.dev/sfu-room".to_owned()]);
    rooms.create(&PostParams::default(), &object).await.unwrap();
    let redis = RedisServer::start().unwrap();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    // Both pods post webhooks: both see the deletion, and each event must still come once.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let hook_port = free_port().unwrap();
    let _receiver = WebhookReceiver::start(hook_port, &out, dir.path()).unwrap();
    let hooks = [
        "--namespace=calls".to_owned(),
        format!("--webhook-url=http://127.0.0.1:{hook_port}/hooks"),
        format!("--webhook-key=wh={WEBHOOK_SECRET}"),
    ];
    let hooks: Vec<&str> = hooks.iter().map(String::as_str).collect();
    let (a, _) = pod(&redis, "pod-a", &env, &hooks);
    let (b, _) = pod(&redis, "pod-b", &env, &hooks);
    let (mut alice, alice_joined) = Client::join(&a.ws_url(), &token("alice", "allhands", HOUR))
        .await
        .unwrap();
    let (mut bob, _) = Client::join(&b.ws_url(), &token("bob", "allhands", HOUR))
        .await
        .unwrap();
    let (mut carol, _) = Client::join(&b.ws_url(), &token("carol", "allhands", HOUR))
        .await
        .unwrap();
    alice.recv_type("participantJoined").await.unwrap();

    // As users do it; without waiting, since the finalizer holds the Room.
    let deleted = cp
        .kubectl(["delete", "room", "allhands", "-n", NS, "--wait=false"])
        .unwrap();
    assert!(deleted.status.success(), "{deleted:?}");
    let terminating = rooms.get("allhands").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.until_closed().await, Ended::Closed(Some(4003)));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(room_keys(&redis, "allhands").await, Vec::<String>::new());
    let (_, answer) = Client::resume(
        &b.ws_url(),
        &token("alice", "allhands", HOUR),
        alice_joined["resumeToken"].as_str().unwrap(),
        0,
    )
    .await
    .unwrap();
    assert_eq!(answer["type"], "error", "{answer}");
    let mut late = Client::connect(&a.ws_url(), &token("dave", "allhands", HOUR))
        .await
        .unwrap();
    late.send_json(&json!({"type": "join", "v": 1}))
        .await
        .unwrap();
    assert_eq!(
        late.recv_type("error").await.unwrap()["code"],
        "room_not_found"
    );

    // Every event once, verified: the two pods that saw the deletion did not both report it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received(&out).len() < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = received(&out);
    assert!(events.iter().all(|r| r["verified"] == true), "{events:?}");
    let mut got: Vec<String> = events
        .iter()
        .map(|r| {
            let e = &r["event"];
            format!(
                "{} {} {}",
                e["event"].as_str().unwrap(),
                e["participant"]["user"].as_str().unwrap_or("-"),
                e["reason"].as_str().unwrap_or("-")
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "participant_joined alice -",
            "participant_joined bob -",
            "participant_joined carol -",
            "participant_left alice room_deleted",
            "participant_left bob room_deleted",
            "participant_left carol room_deleted",
            "room_finished - -",
            "room_started - -",
        ]
    );

    // Let the Room go.
    rooms
        .patch(
            "allhands",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
}

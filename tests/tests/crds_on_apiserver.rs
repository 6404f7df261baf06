//! Switchboard's CRDs on a real kube-apiserver: examples apply, invalid objects are refused with
//! the field named, printer columns and `kubectl explain` work, and a kube-rs client can list,
//! watch and patch the status of both kinds.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use switchboard_crds::{Room, RoomPhase, RoomSpec, SfuNode};
use switchboard_tests::{ControlPlane, repo_root};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Proves the examples are valid and `kubectl get sfu,rooms` shows the printer columns.
#[tokio::test]
async fn kubectl_applies_examples_and_shows_printer_columns() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    let apply = cp.kubectl(["apply", "-f", "crds/examples/"]).unwrap();
    assert!(
        apply.status.success(),
        "kubectl apply failed: {}",
        stderr(&apply)
    );
    assert!(
        stdout(&apply).contains("sfunode.switchboard.dev/sfu-eu-1 created"),
        "{}",
        stdout(&apply)
    );
    assert!(
        stdout(&apply).contains("room.switchboard.dev/webinar created"),
        "{}",
        stdout(&apply)
    );

    let get = cp.kubectl(["get", "sfu"]).unwrap();
    assert!(get.status.success(), "{}", stderr(&get));
    let header = stdout(&get).lines().next().unwrap_or_default().to_owned();
    for column in [
        "NAME",
        "REGION",
        "READY",
        "SCHEDULABLE",
        "ROOMS",
        "PARTICIPANTS",
        "CAPACITY",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "sfu header lacks {column}: {header}"
        );
    }
    let eu = stdout(&get)
        .lines()
        .find(|l| l.starts_with("sfu-eu-1"))
        .map(str::to_owned);
    let eu = eu.unwrap_or_else(|| panic!("no sfu-eu-1 row in:\n{}", stdout(&get)));
    assert!(eu.contains("eu-west-1") && eu.contains("500"), "row: {eu}");

    let get = cp.kubectl(["get", "rooms"]).unwrap();
    assert!(get.status.success(), "{}", stderr(&get));
    let header = stdout(&get).lines().next().unwrap_or_default().to_owned();
    for column in ["NAME", "PHASE", "SFU", "PARTICIPANTS", "MAX", "AGE"] {
        assert!(
            header.contains(column),
            "room header lacks {column}: {header}"
        );
    }
    assert!(
        stdout(&get)
            .lines()
            .any(|l| l.starts_with("webinar") && l.contains("200")),
        "{}",
        stdout(&get)
    );

    // The category groups both kinds.
    let all = cp.kubectl(["get", "switchboard", "-o", "name"]).unwrap();
    let names = stdout(&all);
    assert!(
        names.contains("sfunode.switchboard.dev/sfu-us-1")
            && names.contains("room.switchboard.dev/standup"),
        "{names}"
    );
}

/// Proves each kind of invalid object is refused at apply, with the offending field named.
#[tokio::test]
async fn kubectl_refuses_invalid_objects_and_names_the_field() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    let dir = repo_root().join("tests/fixtures/invalid");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 8,
        "expected the invalid fixtures in {}",
        dir.display()
    );
    for fixture in fixtures {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let expected_field = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` line", fixture.display()))
            .trim()
            .to_owned();
        let out = cp
            .kubectl(["apply", "-f", fixture.to_str().unwrap()])
            .unwrap();
        assert!(
            !out.status.success(),
            "{} was accepted: {}",
            fixture.display(),
            stdout(&out)
        );
        let message = stderr(&out);
        eprintln!("{}: {}", fixture.display(), message.trim());
        assert!(
            message.contains(&expected_field),
            "{}: refusal does not name {expected_field}:\n{message}",
            fixture.display()
        );
    }
    // Nothing invalid was stored.
    let listed = cp.kubectl(["get", "sfu,rooms", "-o", "name"]).unwrap();
    assert_eq!(stdout(&listed).trim(), "", "invalid objects were stored");
}

/// Proves `kubectl explain` shows the field documentation written on the Rust types.
#[tokio::test]
async fn kubectl_explain_prints_field_docs() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    let out = cp.kubectl(["explain", "room.spec"]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "maxParticipants",
        "participant slots this room reserves",
        "regionPolicy",
        "sfuSelector",
        "emptyTimeoutSeconds",
    ] {
        assert!(
            text.contains(needle),
            "explain room.spec lacks {needle:?}:\n{text}"
        );
    }
    let out = cp.kubectl(["explain", "sfunode.spec.capacity"]).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Participant slots"),
        "{}",
        stdout(&out)
    );
}

/// Proves a kube-rs client can list, watch and patch the status subresource of both kinds.
#[tokio::test]
async fn kube_client_lists_watches_and_patches_status() {
    switchboard_tests::require!(ControlPlane);
    let cp = ControlPlane::start().await.unwrap();
    cp.create_namespace("calls").await.unwrap();
    let client = cp.client().await.unwrap();
    let rooms: Api<Room> = Api::namespaced(client.clone(), "calls");
    let nodes: Api<SfuNode> = Api::namespaced(client.clone(), "calls");

    let mut watch = rooms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();

    let room = Room::new(
        "daily",
        RoomSpec {
            max_participants: 6,
            region: Some("eu-west-1".into()),
            region_policy: None,
            sfu_selector: None,
            empty_timeout_seconds: Some(300),
        },
    );
    rooms.create(&PostParams::default(), &room).await.unwrap();
    let node: SfuNode = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "SfuNode",
        "metadata": {"name": "sfu-a"},
        "spec": {"url": "wss://sfu-a.example.com", "region": "eu-west-1", "capacity": {"participants": 50}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    // Status is a subresource: a status patch lands, and the spec cannot be changed through it.
    let status = json!({"status": {
        "phase": "Placed", "sfuNode": "sfu-a", "sfuUrl": "wss://sfu-a.example.com",
        "reservedParticipants": 6, "placementGeneration": 1, "participants": 2,
        "conditions": [{"type": "Placed", "status": "True", "reason": "Placed", "message": "on sfu-a",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }, "spec": {"maxParticipants": 99}});
    rooms
        .patch_status("daily", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let node_status =
        json!({"status": {"allocated": {"rooms": 1, "participants": 6}, "observedGeneration": 1}});
    nodes
        .patch_status(
            "sfu-a",
            &PatchParams::default(),
            &Patch::Merge(&node_status),
        )
        .await
        .unwrap();

    let listed = rooms.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let got = &listed.items[0];
    assert_eq!(
        got.spec.max_participants, 6,
        "spec changed through the status subresource"
    );
    let got_status = got.status.clone().unwrap();
    assert_eq!(got_status.phase, Some(RoomPhase::Placed));
    assert_eq!(got_status.sfu_node.as_deref(), Some("sfu-a"));
    assert_eq!(got_status.participants, 2);
    let node = nodes.get("sfu-a").await.unwrap();
    assert_eq!(node.status.unwrap().allocated.unwrap().participants, 6);

    // The watch saw the creation and the status change.
    let mut saw_added = false;
    let mut saw_placed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(saw_added && saw_placed) {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("watch timed out");
        match event.expect("watch ended").expect("watch error") {
            WatchEvent::Added(r) => saw_added |= r.metadata.name.as_deref() == Some("daily"),
            WatchEvent::Modified(r) => {
                saw_placed |= r.status.as_ref().and_then(|s| s.phase) == Some(RoomPhase::Placed)
            }
            _ => {}
        }
    }

    // The schema guards status too: a status patch with an unknown phase is refused.
    let bad = json!({"status": {"phase": "Floating"}});
    let err = rooms
        .patch_status("daily", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("status.phase"), "{err}");
}

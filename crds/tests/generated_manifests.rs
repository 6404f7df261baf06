//! The committed CRD manifests are exactly what the Rust types generate.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("generated");
    for crd in switchboard_crds::all_crds() {
        let path = dir.join(switchboard_crds::crd_file_name(&crd));
        let expected = switchboard_crds::crd_yaml(&crd).unwrap();
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; run `cargo run -p switchboard-crds --bin crdgen`",
                path.display()
            )
        });
        assert!(
            committed == expected,
            "{} is stale; run `cargo run -p switchboard-crds --bin crdgen` and commit the result",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        switchboard_crds::all_crds().len(),
        "stray files in {}",
        dir.display()
    );
}

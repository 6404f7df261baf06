//! The client's TypeScript declarations (`signaling/web/switchboard.d.ts`) against a small
//! typed app (`tests/typescript/example.ts`), checked by npm's `tsc --noEmit`. The example also
//! holds mistakes marked `@ts-expect-error`, so declarations that grow too loose fail too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use switchboard_tests::browser::tsc;
use switchboard_tests::repo_root;

fn check(project: &Path) -> (bool, String) {
    let output = Command::new(tsc().unwrap())
        .args(["--noEmit", "-p"])
        .arg(project)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Proves the declarations type-check the example app, with every marked mistake rejected.
#[test]
fn the_typed_example_checks_against_the_declarations() {
    let (ok, text) = check(&repo_root().join("tests/typescript/tsconfig.json"));
    assert!(ok, "tsc --noEmit failed:\n{text}");
}

/// Proves the check bites: the same example against declarations where the placement
/// generation may be a string fails, on the mistake that then goes unnoticed.
#[test]
fn looser_declarations_fail_the_check() {
    let root = repo_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let to = dir.path().join(from);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(from), &to).unwrap();
        to
    };
    copy("tests/typescript/tsconfig.json");
    copy("tests/typescript/example.ts");
    let declarations = copy("signaling/web/switchboard.d.ts");
    let text = std::fs::read_to_string(&declarations).unwrap();
    let loose = text.replace("  generation: number;", "  generation: number | string;");
    assert_ne!(loose, text, "the mutation must change the declarations");
    std::fs::write(&declarations, loose).unwrap();

    let (ok, text) = check(&dir.path().join("tests/typescript/tsconfig.json"));
    assert!(!ok, "tsc accepted loose declarations:\n{text}");
    assert!(
        text.contains("TS2578"),
        "expected an unused @ts-expect-error (TS2578):\n{text}"
    );
}

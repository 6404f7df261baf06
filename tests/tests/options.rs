//! Both binaries refuse zero, negative and absurd durations, sizes and counts at start, with
//! clap's usage exit code (2) and a message naming the option and the allowed range, instead
//! of starting and then breaking (a zero ping interval used to panic every connection's task;
//! a zero message limit refused every frame).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use switchboard_tests::binaries::workspace_binary;

/// `(option, bad value, allowed range as the message states it)`.
const SIGNALING: &[(&str, &str, &str)] = &[
    ("--ping-interval", "0s", "between 100ms and 10m"),
    ("--ping-interval", "-1s", "duration"),
    ("--ping-interval", "100years", "between 100ms and 10m"),
    ("--idle-timeout", "0s", "between 200ms and 1h"),
    ("--join-timeout", "0s", "between 100ms and 10m"),
    ("--header-read-timeout", "0s", "between 100ms and 10m"),
    ("--shutdown-grace", "2h", "between 0s and 1h"),
    ("--participant-ttl", "0s", "between 1s and 1h"),
    ("--placement-wait", "0s", "between 100ms and 10m"),
    ("--auto-create-empty-timeout", "0s", "between 1s and 30days"),
    ("--jwt-max-lifetime", "0s", "between 10s and 7days"),
    ("--jwt-leeway", "1h", "between 0s and 5m"),
    ("--turn-credential-ttl", "0s", "between 2s and 7days"),
    ("--sfu-token-ttl", "0s", "between 2s and 1day"),
    ("--max-message-bytes", "0", "between 1024 and 16777216"),
    ("--max-message-bytes", "-1", "between 1024 and 16777216"),
    ("--send-queue", "0", "between 1 and 65536"),
    ("--rate-per-second", "0", "between 0.1 and 1000000"),
    ("--rate-per-second", "NaN", "between 0.1 and 1000000"),
    ("--rate-burst", "-5", "between 1 and 1000000"),
    ("--flood-strikes", "0", "between 1 and 100000"),
    ("--default-max-participants", "0", "between 1 and 100000"),
    (
        "--auto-create-max-participants",
        "99999999999",
        "between 1 and 100000",
    ),
    ("--mailbox-len", "0", "between 1 and 100000"),
    ("--webhook-queue", "0", "between 1 and 1000000"),
    ("--webhook-retry-for", "0s", "between 1s and 1day"),
    ("--webhook-timeout", "0s", "between 100ms and 1m"),
];

const OPERATOR: &[(&str, &str, &str)] = &[
    ("--failover-grace", "2h", "between 0s and 1h"),
    ("--failover-grace", "-1s", "duration"),
    ("--reservation-ttl", "0s", "between 1s and 1h"),
    ("--health-interval", "0s", "between 50ms and 1m"),
    ("--placement-batch", "0", "between 1 and 10000"),
    ("--lease-duration-seconds", "0", "between 2 and 300"),
    ("--lease-duration-seconds", "-3", "between 2 and 300"),
    (
        "--turn-rotation-interval",
        "1000years",
        "between 0s and 1year",
    ),
];

fn refused(binary: &[&str], option: &str, value: &str, range: &str) {
    let bin = workspace_binary(binary[0], binary[0]).unwrap();
    let output = Command::new(&bin)
        .args(&binary[1..])
        .arg(format!("{option}={value}"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{} {option}={value} was not refused at start: {stderr}",
        binary[0]
    );
    assert!(
        stderr.contains(option) && stderr.contains(range),
        "{} {option}={value}: the message names neither the option nor `{range}`: {stderr}",
        binary[0]
    );
}

/// Proves every bad signaling value is refused before the server starts.
#[test]
fn signaling_refuses_bad_values_at_start() {
    for (option, value, range) in SIGNALING {
        refused(&["switchboard-signaling", "serve"], option, value, range);
    }
    // The dev server shares the limits.
    refused(
        &["switchboard-signaling", "dev"],
        "--ping-interval",
        "0s",
        "between 100ms and 10m",
    );
}

/// Proves every bad operator value is refused before the operator starts.
#[test]
fn operator_refuses_bad_values_at_start() {
    for (option, value, range) in OPERATOR {
        refused(&["switchboard-operator"], option, value, range);
    }
}

/// The `--options` in the first column of each options table (`| Option | Env | ...`, or
/// `| flag | ...`) of a doc, table by table.
fn documented_options(doc: &str) -> Vec<BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(doc);
    let text = std::fs::read_to_string(path).unwrap();
    let mut tables = Vec::new();
    let mut current: Option<BTreeSet<String>> = None;
    for line in text.lines() {
        let header = line.to_ascii_lowercase();
        if header.starts_with("| option |") || header.starts_with("| flag |") {
            current = Some(BTreeSet::new());
        } else if !line.starts_with('|') {
            if let Some(done) = current.take() {
                tables.push(done);
            }
        } else if let Some(options) = current.as_mut() {
            let first = line.split('|').nth(1).unwrap_or_default();
            options.extend(long_options(first));
        }
    }
    tables.extend(current);
    tables
}

fn long_options(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| {
            word.starts_with("--") && word[2..].starts_with(|c: char| c.is_ascii_lowercase())
        })
        .map(str::to_owned)
        .collect()
}

fn help_options(args: &[&str]) -> BTreeSet<String> {
    let bin = workspace_binary(args[0], args[0]).unwrap();
    let output = Command::new(&bin)
        .args(&args[1..])
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    help.lines()
        .filter_map(|line| line.trim_start().split_once("--"))
        .flat_map(|(before, rest)| {
            // Option lines start with `-x, --name` or `--name`; other lines only mention them.
            (before.is_empty() || before.ends_with(", "))
                .then(|| long_options(&format!("--{rest}")).into_iter().next())
                .flatten()
        })
        .filter(|option| option != "--help" && option != "--version")
        .collect()
}

/// Proves `docs/operations.md` (and `docs/turn.md` for the operator's TURN rotation) lists
/// exactly the options each binary's `--help` shows: none missing, none that does not exist;
/// likewise dev mode's `--janus` options.
#[test]
fn the_options_tables_match_the_binaries() {
    let operations = documented_options("operations.md");
    assert_eq!(
        operations.len(),
        3,
        "an operator, a signaling and a `dev --janus` table"
    );
    let turn = documented_options("turn.md");
    let operator_docs: BTreeSet<String> = operations[0]
        .iter()
        .chain(turn.iter().flatten())
        .filter(|option| operations[0].contains(*option) || option.starts_with("--turn-"))
        .cloned()
        .collect();
    assert_eq!(
        help_options(&["switchboard-operator"]),
        operator_docs,
        "switchboard-operator --help vs docs"
    );
    assert_eq!(
        help_options(&["switchboard-signaling", "serve"]),
        operations[1],
        "switchboard-signaling serve --help vs docs/operations.md"
    );
    let janus: BTreeSet<String> = help_options(&["switchboard-signaling", "dev"])
        .into_iter()
        .filter(|option| option.starts_with("--janus"))
        .collect();
    assert_eq!(
        janus, operations[2],
        "switchboard-signaling dev --help (--janus*) vs docs/operations.md"
    );
}

/// Both binaries log to stderr, without colour codes when it is not a terminal: stdout stays
/// for what a command prints on purpose, and log files and pipelines get plain lines.
#[test]
fn logs_go_to_stderr_without_colour_codes() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    // The operator cannot reach a cluster, logs why and exits.
    let operator = workspace_binary("switchboard-operator", "switchboard-operator").unwrap();
    let output = Command::new(&operator)
        .env("RUST_LOG", "info")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "operator stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("cannot connect to Kubernetes"),
        "operator stderr: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "colour codes in {stderr:?}");

    // The signaling server logs that it serves, then runs until stopped.
    let signaling = workspace_binary("switchboard-signaling", "switchboard-signaling").unwrap();
    let mut child = Command::new(&signaling)
        .args([
            "serve",
            "--listen=127.0.0.1:0",
            "--jwt-hs256=test=switchboard-test-secret-0123456789abcdef",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let serving = loop {
        match seen.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("serving signaling") => break line,
            Ok(_) => {}
            Err(error) => {
                let _ = child.kill();
                panic!("no \"serving signaling\" on stderr: {error}");
            }
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.is_empty(), "signaling stdout: {stdout:?}");
    assert!(!serving.contains('\u{1b}'), "colour codes in {serving:?}");
}

/// `(path in the chart's values schema, binary and subcommand, option, step)`: every bounded
/// number the chart passes to a binary. The step is the smallest change the option notices.
const CHART_NUMBERS: &[(&str, &[&str], &str, f64)] = &[
    (
        "signaling.limits.maxMessageBytes",
        SERVE,
        "--max-message-bytes",
        1.0,
    ),
    (
        "signaling.limits.ratePerSecond",
        SERVE,
        "--rate-per-second",
        0.01,
    ),
    ("signaling.limits.rateBurst", SERVE, "--rate-burst", 0.5),
    (
        "signaling.limits.floodStrikes",
        SERVE,
        "--flood-strikes",
        1.0,
    ),
    ("signaling.limits.sendQueue", SERVE, "--send-queue", 1.0),
    (
        "signaling.defaultMaxParticipants",
        SERVE,
        "--default-max-participants",
        1.0,
    ),
    (
        "signaling.autoCreate.maxParticipants",
        SERVE,
        "--auto-create-max-participants",
        1.0,
    ),
    ("signaling.mailboxLen", SERVE, "--mailbox-len", 1.0),
    ("signaling.webhooks.queue", SERVE, "--webhook-queue", 1.0),
    (
        "operator.placementBatch",
        OPERATOR_BIN,
        "--placement-batch",
        1.0,
    ),
    (
        "operator.leaderElection.leaseDurationSeconds",
        OPERATOR_BIN,
        "--lease-duration-seconds",
        1.0,
    ),
];
const SERVE: &[&str] = &["switchboard-signaling", "serve"];
const OPERATOR_BIN: &[&str] = &["switchboard-operator"];

/// Whether `binary` accepts `option=value`. A bad value of a known option always follows it,
/// so the binary stops at parsing either way: at `option` if it refuses `value`, else at the
/// known bad one.
fn accepts(binary: &[&str], option: &str, value: f64) -> bool {
    let bin = workspace_binary(binary[0], binary[0]).unwrap();
    let stopper = if binary[0] == "switchboard-operator" {
        "--health-interval=0s"
    } else {
        "--ping-interval=0s"
    };
    let output = Command::new(&bin)
        .args(&binary[1..])
        .arg(format!("{option}={value}"))
        .arg(stopper)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{option}={value}: {stderr}");
    let stopped_at = stopper.split('=').next().unwrap();
    match (stderr.contains(option), stderr.contains(stopped_at)) {
        (true, false) => false,
        (false, true) => true,
        _ => panic!("{option}={value}: cannot tell which option was refused: {stderr}"),
    }
}

/// Proves the chart's values schema allows exactly the numbers the binaries accept, so a value
/// `helm install` takes never crash-loops a pod at start, and the schema refuses nothing that
/// would work.
#[test]
fn the_chart_schema_allows_exactly_what_the_binaries_accept() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/switchboard/values.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (value_path, binary, option, step) in CHART_NUMBERS {
        let mut node = &schema;
        for key in value_path.split('.') {
            node = &node["properties"][key];
        }
        let bound = |name: &str| {
            node[name]
                .as_f64()
                .unwrap_or_else(|| panic!("{value_path} has no `{name}` in the values schema"))
        };
        let (min, max) = (bound("minimum"), bound("maximum"));
        assert!(
            accepts(binary, option, min),
            "{option} refuses {value_path}'s minimum {min}"
        );
        assert!(
            accepts(binary, option, max),
            "{option} refuses {value_path}'s maximum {max}"
        );
        assert!(
            !accepts(binary, option, min - step),
            "{option} accepts {}, below {value_path}'s minimum {min}",
            min - step
        );
        assert!(
            !accepts(binary, option, max + step),
            "{option} accepts {}, above {value_path}'s maximum {max}",
            max + step
        );
    }
}

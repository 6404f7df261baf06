//! Which suites can run on this machine.
//!
//! A newcomer's `cargo test` at the repository root must not fail (or spend minutes building
//! Go) because `redis-server`, Go, Chromium, root or a Docker daemon is absent. So every test
//! that needs one of those starts with [`require!`](crate::require): when something is
//! missing, it prints one line naming what and how to get it, straight to the terminal (past
//! the test harness's output capture, so it shows for a passing test too), and returns.
//!
//! `tests/run.sh` sets `SWITCHBOARD_REQUIRE_ALL=1`: there, a missing prerequisite fails the
//! test with the same message instead, so the one command that runs everything never passes
//! by skipping.
//!
//! This module only looks (the PATH, environment variables, the effective uid, `docker
//! info`); it installs and starts nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The environment variable that turns a missing prerequisite into a failure.
pub const REQUIRE_ALL: &str = "SWITCHBOARD_REQUIRE_ALL";

/// The prefix of every skip line; `tests/run.sh` counts the lines that start with it.
pub const SKIP_PREFIX: &str = "switchboard: skipped";

/// Something a suite needs that `cargo` does not build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `redis-server` and `redis-cli` (the Redis store, Redis Cluster, pods sharing rooms).
    Redis,
    /// coturn's `turnserver` and `turnutils_uclient`.
    Coturn,
    /// etcd, kube-apiserver and kubectl: `SWITCHBOARD_CONTROLPLANE_DIR`, or Go to build them.
    ControlPlane,
    /// helm and kubeconform: `SWITCHBOARD_CHART_TOOLS_DIR`, or Go to build them.
    ChartTools,
    /// Headless Chromium, and node with npm for playwright-core.
    Chromium,
    /// Root and `ip`, to make a network namespace.
    NetworkNamespace,
    /// A Docker daemon answering `docker info`, and root with debootstrap for the local base
    /// images (there is no registry to pull from).
    Docker,
    /// Debian's Janus gateway (`janus`, with the VideoRoom plugin), a real SFU.
    Janus,
    /// npm, to install the TypeScript compiler that checks the client's declarations.
    Npm,
    /// The benchmark peers (Centrifugo, socket.io): `SWITCHBOARD_PEERS_DIR`, or Go and npm to
    /// build them; node runs socket.io.
    BenchPeers,
}

/// One prerequisite found missing: what, and how to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub need: Need,
    pub why: String,
}

/// What a test does about its prerequisites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Everything is here: run.
    Run,
    /// Something is missing and skipping is allowed: this line says what and how to run it.
    Skip(String),
}

/// A prerequisite is missing where skipping is not allowed, or the switch itself is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrerequisiteError {
    #[error(
        "{test} cannot run: {missing}. {REQUIRE_ALL}=1 (set by tests/run.sh) makes this a failure, not a skip"
    )]
    Missing { test: String, missing: String },
    #[error("{REQUIRE_ALL} must be 1 (missing prerequisites fail) or 0 (they skip), not {0:?}")]
    BadSwitch(String),
}

/// Whether the current test may run: looks for every `need`, and either runs, skips (printing
/// why) or refuses. Called by [`require!`](crate::require); tests use that.
pub fn gate(needs: &[Need]) -> Result<Gate, PrerequisiteError> {
    let require_all = require_all(std::env::var(REQUIRE_ALL).ok().as_deref())?;
    let missing: Vec<Missing> = needs.iter().filter_map(|need| look_for(*need)).collect();
    let gate = decide(&test_name(), &missing, require_all)?;
    if let Gate::Skip(line) = &gate {
        // Written to the stderr handle, not with eprintln!: the test harness captures the print
        // macros of passing tests, and a skip must be seen. One write keeps the line whole
        // among parallel tests.
        let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
    }
    Ok(gate)
}

/// Reads the `SWITCHBOARD_REQUIRE_ALL` value: unset, empty or `0` allow skipping, `1` forbids
/// it, anything else is a mistake worth saying.
pub fn require_all(value: Option<&str>) -> Result<bool, PrerequisiteError> {
    match value.map(str::trim) {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(PrerequisiteError::BadSwitch(other.to_owned())),
    }
}

/// The pure decision: run when nothing is missing; otherwise skip with a line naming each
/// missing prerequisite and how to run the suite, or fail under `require_all`.
pub fn decide(
    test: &str,
    missing: &[Missing],
    require_all: bool,
) -> Result<Gate, PrerequisiteError> {
    if missing.is_empty() {
        return Ok(Gate::Run);
    }
    let list = missing
        .iter()
        .map(|m| m.why.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if require_all {
        return Err(PrerequisiteError::Missing {
            test: test.to_owned(),
            missing: list,
        });
    }
    Ok(Gate::Skip(format!(
        "{SKIP_PREFIX} {test}: {list}. `bash tests/run.sh` installs what is missing and runs every suite (see tests/README.md)"
    )))
}

/// The running test's name: the test harness names each test's thread after it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("this test")
        .to_owned()
}

/// `None` when `need` is here, else what is missing and how to get it.
fn look_for(need: Need) -> Option<Missing> {
    let why = match need {
        Need::Redis => missing_commands(
            &["redis-server", "redis-cli"],
            "apt-get install redis-server",
        ),
        Need::Coturn => missing_commands(
            &["turnserver", "turnutils_uclient"],
            "apt-get install coturn",
        ),
        Need::Janus => missing_commands(&["janus"], "apt-get install janus"),
        Need::Npm => missing_commands(&["node", "npm"], "apt-get install npm"),
        Need::ControlPlane => built_by_go(
            "SWITCHBOARD_CONTROLPLANE_DIR",
            "the test control plane (etcd, kube-apiserver, kubectl)",
            "tests/controlplane/build.sh",
        ),
        Need::ChartTools => built_by_go(
            "SWITCHBOARD_CHART_TOOLS_DIR",
            "helm and kubeconform",
            "tests/tools/build.sh",
        ),
        Need::Chromium => {
            let chromium = std::env::var_os("CHROMIUM")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
            let mut gaps = Vec::new();
            if !chromium.is_file() {
                gaps.push(format!(
                    "{} is missing (apt-get install chromium, or set CHROMIUM)",
                    chromium.display()
                ));
            }
            gaps.extend(missing_commands(&["node", "npm"], "apt-get install npm"));
            (!gaps.is_empty()).then(|| gaps.join("; "))
        }
        Need::NetworkNamespace => {
            let mut gaps = Vec::new();
            if !nix::unistd::geteuid().is_root() {
                gaps.push("root, to make a network namespace (run as root)".to_owned());
            }
            gaps.extend(missing_commands(&["ip"], "apt-get install iproute2"));
            (!gaps.is_empty()).then(|| gaps.join("; "))
        }
        Need::Docker => {
            let mut gaps = Vec::new();
            match Command::new("docker")
                .args(["info", "--format", "{{.ServerVersion}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
            {
                Err(error) => gaps.push(format!(
                    "a Docker daemon (cannot run docker: {error}; apt-get install docker.io and start dockerd)"
                )),
                Ok(output) if !output.status.success() => gaps.push(format!(
                    "a Docker daemon (`docker info` failed: {}; start dockerd)",
                    String::from_utf8_lossy(&output.stderr).trim().replace('\n', " ")
                )),
                Ok(_) => {}
            }
            if !nix::unistd::geteuid().is_root() {
                gaps.push("root, for debootstrap (run as root)".to_owned());
            }
            gaps.extend(missing_commands(
                &["debootstrap"],
                "apt-get install debootstrap",
            ));
            (!gaps.is_empty()).then(|| gaps.join("; "))
        }
        Need::BenchPeers => {
            let mut gaps = Vec::new();
            if std::env::var_os("SWITCHBOARD_PEERS_DIR").is_none() {
                gaps.extend(missing_commands(
                    &["go", "npm"],
                    "install Go and npm to build Centrifugo and socket.io, or export SWITCHBOARD_PEERS_DIR=$(bash tests/bench/peers/build.sh | tail -n 1)",
                ));
            }
            gaps.extend(missing_commands(&["node"], "apt-get install nodejs"));
            (!gaps.is_empty()).then(|| gaps.join("; "))
        }
    };
    why.map(|why| Missing { need, why })
}

/// The tools a Go build script makes: here when its directory is exported, or when Go can
/// build it (the script caches it, so only the first run takes minutes).
fn built_by_go(env: &str, what: &str, script: &str) -> Option<String> {
    if std::env::var_os(env).is_some() || on_path("go").is_some() {
        return None;
    }
    Some(format!(
        "{what}, built from Go modules (Go is not on PATH and {env} is not set: install Go, or export {env}=$(bash {script} | tail -n 1))"
    ))
}

/// Which of `commands` are not on PATH, with how to get them; `None` when all are there.
fn missing_commands(commands: &[&str], how: &str) -> Option<String> {
    let absent: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|command| on_path(command).is_none())
        .collect();
    (!absent.is_empty()).then(|| format!("{} not on PATH ({how})", absent.join(" and ")))
}

/// The first executable file called `command` in a PATH directory.
fn on_path(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Gates the calling test on what it needs (the [`Need`] variant names): runs it when all are
/// here; otherwise prints why and returns early, or under `SWITCHBOARD_REQUIRE_ALL=1` (set by
/// `tests/run.sh`) fails it.
///
/// ```ignore
/// #[tokio::test]
/// async fn store_survives_a_redis_restart() {
///     switchboard_tests::require!(Redis);
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! require {
    ($($need:ident),+ $(,)?) => {
        match $crate::prerequisites::gate(&[$($crate::prerequisites::Need::$need),+]) {
            Ok($crate::prerequisites::Gate::Run) => {}
            Ok($crate::prerequisites::Gate::Skip(_)) => return,
            Err(error) => panic!("{error}"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_missing() -> Missing {
        Missing {
            need: Need::Redis,
            why: "redis-server not on PATH (apt-get install redis-server)".to_owned(),
        }
    }

    /// Proves a test with everything it needs runs, whatever the switch says.
    #[test]
    fn nothing_missing_runs() {
        assert_eq!(decide("t", &[], false), Ok(Gate::Run));
        assert_eq!(decide("t", &[], true), Ok(Gate::Run));
    }

    /// Proves a missing prerequisite skips with a line that names the test, what is missing,
    /// how to get it and how to run everything.
    #[test]
    fn missing_skips_and_says_how_to_run() {
        let Ok(Gate::Skip(line)) = decide("room_store::ttl", &[redis_missing()], false) else {
            panic!("expected a skip");
        };
        assert!(
            line.starts_with(&format!("{SKIP_PREFIX} room_store::ttl: ")),
            "{line}"
        );
        assert!(
            line.contains("redis-server not on PATH (apt-get install redis-server)"),
            "{line}"
        );
        assert!(line.contains("bash tests/run.sh"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }

    /// Proves that under SWITCHBOARD_REQUIRE_ALL=1 a missing prerequisite is a failure naming
    /// every missing part, never a skip.
    #[test]
    fn missing_fails_when_everything_is_required() {
        let docker = Missing {
            need: Need::Docker,
            why: "a Docker daemon".to_owned(),
        };
        let error = decide("t", &[redis_missing(), docker], true).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("redis-server not on PATH"), "{text}");
        assert!(text.contains("a Docker daemon"), "{text}");
        assert!(text.contains("SWITCHBOARD_REQUIRE_ALL=1"), "{text}");
    }

    /// Proves the switch reads 1 and 0 (or unset) and refuses anything else by name.
    #[test]
    fn switch_is_one_or_zero() {
        assert_eq!(require_all(None), Ok(false));
        assert_eq!(require_all(Some("")), Ok(false));
        assert_eq!(require_all(Some("0")), Ok(false));
        assert_eq!(require_all(Some("1")), Ok(true));
        let error = require_all(Some("yes")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("SWITCHBOARD_REQUIRE_ALL must be 1"),
            "{error}"
        );
    }

    /// Proves the PATH lookup finds a real command and not an absent one.
    #[test]
    fn path_lookup_finds_sh_only() {
        assert!(on_path("sh").is_some());
        assert!(on_path("switchboard-no-such-command").is_none());
        assert!(missing_commands(&["sh"], "x").is_none());
        let text = missing_commands(&["sh", "switchboard-no-such-command"], "how").unwrap();
        assert_eq!(text, "switchboard-no-such-command not on PATH (how)");
    }
}

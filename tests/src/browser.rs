//! Real-browser tests: headless Chromium (Debian's `chromium`) driven by playwright-core from
//! npm, inside a network namespace the test creates, so every WebRTC packet stays on that
//! namespace's loopback and nothing outside can interfere.
//!
//! [`NetworkNamespace::run`] moves one thread into the namespace (`setns`) and runs the
//! scenario there: every server the harness starts from that thread (signaling, Redis,
//! coturn) and the browser inherit the namespace, and the harness's own readiness checks
//! connect from inside it too.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{HarnessError, Result};

/// The playwright-core version the browser scenarios are written against.
pub const PLAYWRIGHT_CORE: &str = "1.65.1";

/// The address SFUs bind to inside a test namespace (see [`NetworkNamespace::add_sfu_address`]).
pub const SFU_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// A named network namespace with only `lo`, up; deleted on drop.
#[derive(Debug)]
pub struct NetworkNamespace {
    name: String,
}

fn run(what: &str, command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .map_err(HarnessError::io(what.to_owned()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Io {
            action: what.to_owned(),
            source: std::io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        })
    }
}

impl NetworkNamespace {
    /// `ip netns add` a fresh namespace and bring its loopback up.
    pub fn create() -> Result<Self> {
        let nonce = getrandom_suffix();
        let name = format!("switchboard-{nonce}");
        run(
            "ip netns add",
            Command::new("ip").args(["netns", "add", &name]),
        )?;
        let ns = NetworkNamespace { name };
        run(
            "bring lo up in the test namespace",
            Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]),
        )?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the namespace [`SFU_ADDRESS`] on a veth pair of its own, so an SFU can gather
    /// ICE candidates: Janus 1.1.2 skips loopback interfaces when it gathers, so with only
    /// `lo` every PeerConnection to it fails (error 490). A `/32` in 127/8 on a veth keeps the
    /// traffic inside the namespace (the kernel delivers it locally) and inside loopback space.
    pub fn add_sfu_address(&self) -> Result<std::net::Ipv4Addr> {
        let exec = |what: &str, args: &[&str]| {
            run(
                what,
                Command::new("ip")
                    .args(["netns", "exec", &self.name, "ip"])
                    .args(args),
            )
        };
        exec(
            "create the SFU veth pair",
            &[
                "link", "add", "sfu0", "type", "veth", "peer", "name", "sfu1",
            ],
        )?;
        exec(
            "address the SFU veth",
            &["addr", "add", &format!("{SFU_ADDRESS}/32"), "dev", "sfu0"],
        )?;
        exec("bring sfu0 up", &["link", "set", "sfu0", "up"])?;
        exec("bring sfu1 up", &["link", "set", "sfu1", "up"])?;
        Ok(SFU_ADDRESS)
    }

    /// Runs `scenario` on a thread that has entered the namespace, with a tokio runtime of
    /// its own, and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        scenario: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let path = PathBuf::from(format!("/var/run/netns/{}", self.name));
        let thread = std::thread::spawn(move || -> Result<T> {
            let file = std::fs::File::open(&path)
                .map_err(HarnessError::io(format!("open {}", path.display())))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
                HarnessError::Io {
                    action: "enter the test network namespace".to_owned(),
                    source: std::io::Error::from(errno),
                }
            })?;
            Ok(scenario())
        });
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn getrandom_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}

/// A directory holding `node_modules/playwright-core`, installed from npm into the cache on
/// first use. Call it outside the test's namespace: npm needs the registry.
pub fn playwright_dir() -> Result<PathBuf> {
    npm_package_dir("playwright-core", PLAYWRIGHT_CORE)
}

/// The TypeScript version the client's declarations are checked with.
pub const TYPESCRIPT: &str = "7.0.2";

/// The `tsc` binary of npm's `typescript` [`TYPESCRIPT`], installed into the cache on first use.
pub fn tsc() -> Result<PathBuf> {
    Ok(npm_package_dir("typescript", TYPESCRIPT)?.join("node_modules/.bin/tsc"))
}

/// A directory holding `node_modules/<package>` at `version`, installed from npm into the
/// cache (`SWITCHBOARD_CACHE`, or `~/.cache/switchboard`) on first use and reused after.
pub fn npm_package_dir(package: &str, version: &str) -> Result<PathBuf> {
    // Tests of one binary run in parallel; one of them installs.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = std::env::var_os("SWITCHBOARD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchboard")))
        .ok_or_else(|| HarnessError::Io {
            action: "find the cache directory".to_owned(),
            source: std::io::Error::other("neither SWITCHBOARD_CACHE nor HOME is set"),
        })?;
    let dir = cache.join(format!("node-{package}-{version}"));
    if dir
        .join(format!("node_modules/{package}/package.json"))
        .is_file()
    {
        return Ok(dir);
    }
    let staging = cache.join(format!(
        "node-{package}-{version}.tmp-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(HarnessError::io("create the npm directory"))?;
    run(
        &format!("npm install {package}"),
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&staging)
            .arg(format!("{package}@{version}")),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).map_err(HarnessError::io("move the npm directory"))?;
    Ok(dir)
}

/// The Chromium binary: `CHROMIUM`, or Debian's `/usr/bin/chromium`.
pub fn chromium() -> Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Io {
            action: "find Chromium".to_owned(),
            source: std::io::Error::other(format!(
                "{} is missing; install Debian's chromium (tests/run.sh does)",
                path.display()
            )),
        })
    }
}

/// What a browser scenario needs from outside the namespace.
#[derive(Debug, Clone)]
pub struct Browser {
    pub playwright_dir: PathBuf,
    pub chromium: PathBuf,
}

impl Browser {
    /// Finds Chromium and installs playwright-core if needed (outside the namespace).
    pub fn prepare() -> Result<Self> {
        Ok(Browser {
            playwright_dir: playwright_dir()?,
            chromium: chromium()?,
        })
    }
}

/// Runs `tests/browser/call.mjs` with `config` and returns its JSON report (also when the
/// scenario failed: the report then has `ok: false` and an `error`).
pub fn run_call(browser: &Browser, config: &serde_json::Value) -> Result<serde_json::Value> {
    run_scenario(browser, "call.mjs", config)
}

/// Runs `tests/browser/sfu.mjs` (the client's SFU mode against real Janus, see that file)
/// with `config` and returns its JSON report.
pub fn run_sfu(browser: &Browser, config: &serde_json::Value) -> Result<serde_json::Value> {
    run_scenario(browser, "sfu.mjs", config)
}

/// Runs `tests/browser/sfu_call.mjs` (demo pages through signaling, the operator and Janus,
/// with SFU failovers; see that file) with `config` and returns its JSON report.
pub fn run_sfu_call(browser: &Browser, config: &serde_json::Value) -> Result<serde_json::Value> {
    run_scenario(browser, "sfu_call.mjs", config)
}

/// Runs one `tests/browser/*.mjs` scenario and reads the JSON report on its last line.
fn run_scenario(
    browser: &Browser,
    script: &str,
    config: &serde_json::Value,
) -> Result<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("node")
        .arg(root.join("browser").join(script))
        .arg(config.to_string())
        .env("PLAYWRIGHT_DIR", &browser.playwright_dir)
        .env("CHROMIUM", &browser.chromium)
        .env("CLIENT_JS", root.join("../signaling/web/switchboard.js"))
        .output()
        .map_err(HarnessError::io(format!("run node tests/browser/{script}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| HarnessError::Io {
        action: format!("read the report of tests/browser/{script}"),
        source: std::io::Error::other(format!(
            "{e}; stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )),
    })
}

//! The harness behind Switchboard's integration tests: a real Kubernetes control plane (etcd
//! and kube-apiserver run as local processes, envtest-style), `redis-server`, Janus, coturn
//! with its `turnutils_uclient`, and the plumbing they share (free loopback ports, child
//! processes that die with the test).
//!
//! Suites gate themselves on what they need with [`require!`] (see [`prerequisites`]).
//!
//! Everything here is test infrastructure. It starts real servers on loopback only and tears
//! them down when the owning value is dropped, including when a test panics.

pub mod binaries;
pub mod browser;
pub mod chart;
pub mod control_plane;
pub mod coturn;
pub mod http;
pub mod janus;
pub mod netns;
pub mod objects;
pub mod operator;
pub mod pki;
pub mod prerequisites;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod signaling;
pub mod tools;
pub mod webhook_receiver;

pub use control_plane::ControlPlane;
pub use coturn::Coturn;
pub use janus::{Janus, JanusOptions};
pub use operator::{OperatorProcess, fast_args};
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;

use std::collections::BTreeSet;
use std::path::PathBuf;

/// What can go wrong while bringing up test infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate test certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error("{what} did not become ready within {seconds}s; last lines of its log:\n{log_tail}")]
    NotReady {
        what: &'static str,
        seconds: u64,
        log_tail: String,
    },
    #[error("{what} exited early ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        what: &'static str,
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("{what} still runs {seconds}s after SIGTERM; last lines of its log:\n{log_tail}")]
    StillRunning {
        what: &'static str,
        seconds: u64,
        log_tail: String,
    },
    #[error("building the control plane failed: {0}")]
    Build(String),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("cannot parse {path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

impl HarnessError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| HarnessError::Io { action, source }
    }
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// The root of the repository, for fixtures and committed manifests.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A free TCP port on 127.0.0.1, found by binding port 0 and letting it go.
///
/// Never the same port twice in one process: tests run in parallel threads, and a port one
/// test was handed but has not bound yet is free again to the kernel, so a second test could
/// be handed it too. Another process could still take it before the server binds; the window
/// is tiny and the servers started here fail loudly if it happens.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    // Held while looking, so the kernel cannot hand the same port to this loop again.
    let mut held = Vec::new();
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(HarnessError::io("bind a free port"))?;
        let port = listener
            .local_addr()
            .map_err(HarnessError::io("read a bound port"))?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
        held.push(listener);
    }
    Err(HarnessError::io("find a port not handed out before")(
        std::io::Error::other("64 ports in a row were handed out already"),
    ))
}

#[cfg(test)]
mod tests {
    /// Proves no port is handed out twice in one process, even after its probe socket closed
    /// (the kernel would pick some of these ports again).
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let port = super::free_port().unwrap();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}

//! A throwaway Redis Cluster: three `redis-server` masters in cluster mode on free loopback
//! ports, joined with `redis-cli --cluster create`, no replicas, persistence off.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::{HarnessError, Result, free_port};

/// A running cluster whose nodes are killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ChildProcess>,
    ports: Vec<u16>,
    _dir: TempDir,
}

const MASTERS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts three masters, creates the cluster and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-cluster-")
            .tempdir()
            .map_err(HarnessError::io("create a Redis Cluster directory"))?;
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..MASTERS {
            let port = free_port()?;
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(HarnessError::io("create a Redis Cluster node directory"))?;
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &node_dir.display().to_string(),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            nodes.push(ChildProcess::spawn(
                "redis-server",
                Path::new("redis-server"),
                &args,
                &[],
                &node_dir.join("redis.log"),
            )?);
            ports.push(port);
        }
        for &port in &ports {
            wait_for(port, "PING", "PONG")?;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create
            .output()
            .map_err(HarnessError::io("run redis-cli --cluster create"))?;
        if !output.status.success() {
            return Err(HarnessError::NotReady {
                what: "redis cluster create",
                seconds: 0,
                log_tail: String::from_utf8_lossy(&output.stdout).into_owned(),
            });
        }
        for &port in &ports {
            wait_for(port, "CLUSTER INFO", "cluster_state:ok")?;
        }
        Ok(RedisCluster {
            nodes,
            ports,
            _dir: dir,
        })
    }

    /// The nodes as `redis://127.0.0.1:<port>`, comma separated, as `--redis-url` takes them.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The node processes' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(ChildProcess::pid).collect()
    }
}

/// Runs `command` through redis-cli until its output contains `want`.
fn wait_for(port: u16, command: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(command.split(' '))
            .output()
            .map_err(HarnessError::io("run redis-cli"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        if text.contains(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::NotReady {
                what: "redis cluster node",
                seconds: READY_TIMEOUT.as_secs(),
                log_tail: text.into_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! `dev --janus`: dev mode starts a Janus of its own, so a call through a real SFU takes one
//! command. The configuration comes from [`switchboard_sfu::janus_config`] (the same files the
//! tests' Janus uses), with secrets generated at start and free ports, written to a temporary
//! folder; the node is handed to the fixed placement as `janus-local`, with its credentials,
//! exactly as if it had come from an `--sfu-file`.
//!
//! Janus lives as long as dev mode: it is killed when dev mode stops (Ctrl-C or SIGTERM), and
//! dev mode stops if Janus exits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_sfu::janus::JanusCredentials;
use switchboard_sfu::janus_config::LocalJanus;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::random_secret;
use crate::config::LocalJanusArgs;
use crate::rooms::{FixedJanus, FixedNode};

/// The node name rooms are placed on.
pub const NODE_NAME: &str = "janus-local";
/// How long Janus gets to open its ports.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the local Janus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalJanusError {
    #[error("cannot make a folder for Janus's configuration: {0}")]
    Folder(#[source] std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a free port on {ip}: {source}")]
    Port {
        ip: std::net::Ipv4Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make Janus's secrets: {0}")]
    Secret(String),
    #[error(
        "cannot start {program}: {source} (Debian: `apt-get install janus`, or point --janus-bin at it)"
    )]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Janus exited at start ({status}); its log {log}:\n{tail}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("Janus did not open its ports within {timeout:?}; its log {log}:\n{tail}")]
    NotListening {
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
}

/// A running local Janus; killing it on drop.
#[derive(Debug)]
pub struct RunningJanus {
    child: Child,
    config: LocalJanus,
    log: PathBuf,
    /// Keeps the configuration folder (and the log) while Janus runs.
    _folder: TempDir,
}

/// A fresh secret for Janus's configuration.
fn secret() -> Result<String, LocalJanusError> {
    random_secret().map_err(LocalJanusError::Secret)
}

impl RunningJanus {
    /// Writes the configuration and starts Janus, returning once its transports accept
    /// connections.
    pub async fn start(args: &LocalJanusArgs) -> Result<Self, LocalJanusError> {
        let folder = tempfile::Builder::new()
            .prefix("switchboard-dev-janus-")
            .tempdir()
            .map_err(LocalJanusError::Folder)?;
        let ip = args.janus_listen_ip;
        let config = LocalJanus {
            name: NODE_NAME.to_owned(),
            configs_folder: folder.path().display().to_string(),
            lib_folder: None,
            listen_ip: ip,
            ice_ip: args.janus_ice_ip,
            http_port: free_port(ip)?,
            admin_port: free_port(ip)?,
            ws_port: free_port(ip)?,
            rtp_ports: args.janus_rtp_ports.clone(),
            session_timeout_secs: 60,
            token_secret: secret()?,
            admin_secret: secret()?,
            room_admin_key: secret()?,
        };
        for (name, text) in config.files() {
            let path = folder.path().join(name);
            std::fs::write(&path, text)
                .map_err(|source| LocalJanusError::Write { path, source })?;
        }
        let log = folder.path().join("janus.log");
        // A program that cannot be found is reported as such here, before `setpriv` (which
        // would start and then fail to run it) is put in front of it.
        let program = find_program(&args.janus_bin).ok_or_else(|| LocalJanusError::Spawn {
            program: args.janus_bin.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such program"),
        })?;
        // Janus must not outlive dev mode, even one killed with SIGKILL (where no drop runs):
        // `setpriv --pdeathsig` (util-linux) asks the kernel to send Janus SIGTERM when dev
        // mode's process dies. Without setpriv, `kill_on_drop` still covers a normal exit.
        let mut command = match find_program(Path::new("setpriv")) {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "TERM", "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let child = command
            .arg("--configs-folder")
            .arg(folder.path())
            .arg("--config")
            .arg(folder.path().join("janus.jcfg"))
            .arg("--log-file")
            .arg(&log)
            .arg("--disable-stdout")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalJanusError::Spawn {
                program: args.janus_bin.clone(),
                source,
            })?;
        let mut janus = RunningJanus {
            child,
            config,
            log,
            _folder: folder,
        };
        janus.wait_listening().await?;
        tracing::info!(
            node = NODE_NAME,
            url = %janus.config.ws_url(),
            admin = %janus.config.admin_url(),
            rtp_ports = ?janus.config.rtp_ports,
            log = %janus.log.display(),
            "local Janus started"
        );
        Ok(janus)
    }

    /// The node dev mode places rooms on, with the credentials Janus was started with.
    pub fn node(&self) -> FixedNode {
        FixedNode {
            name: NODE_NAME.to_owned(),
            url: self.config.ws_url(),
            region: "local".to_owned(),
            capacity: 1000,
            max_rooms: None,
            turn_urls: Vec::new(),
            janus: Some(FixedJanus {
                admin_url: self.config.admin_url(),
                credentials: JanusCredentials {
                    token_secret: self.config.token_secret.as_bytes().to_vec(),
                    admin_secret: self.config.admin_secret.clone(),
                    room_admin_key: self.config.room_admin_key.clone(),
                },
            }),
        }
    }

    /// Resolves when Janus exits (it should not while dev mode runs).
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => format!("Janus exited ({status}); its log: {}", self.log.display()),
            Err(error) => format!("cannot wait for Janus: {error}"),
        }
    }

    async fn wait_listening(&mut self) -> Result<(), LocalJanusError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let ip = self.config.listen_ip;
        let ports = [
            self.config.http_port,
            self.config.admin_port,
            self.config.ws_port,
        ];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalJanusError::Exited {
                    status,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            let mut open = 0;
            for port in ports {
                if tokio::net::TcpStream::connect((ip, port)).await.is_ok() {
                    open += 1;
                }
            }
            if open == ports.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LocalJanusError::NotListening {
                    timeout: STARTUP_TIMEOUT,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A port nothing listens on right now; Janus binds it a moment later.
fn free_port(ip: std::net::Ipv4Addr) -> Result<u16, LocalJanusError> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| LocalJanusError::Port { ip, source })
}

/// `program` itself if it names a path, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

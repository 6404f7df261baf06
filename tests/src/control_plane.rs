//! A real Kubernetes control plane for tests: etcd and kube-apiserver as local processes on free
//! loopback ports, with a generated CA, serving certificate, admin client certificate and RBAC
//! authorization on, plus a kubeconfig and Switchboard's CRDs installed.
//!
//! Dropping a [`ControlPlane`] kills both processes and removes their data, also when the test
//! panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tempfile::TempDir;

use crate::pki::TestPki;
use crate::process::ChildProcess;
use crate::tools::control_plane_binary;
use crate::{HarnessError, Result, free_port, repo_root};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CRD_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    // Field order is drop order: the apiserver goes before etcd, and the directory last.
    apiserver: ChildProcess,
    etcd: ChildProcess,
    url: String,
    kubeconfig: PathBuf,
    pki: TestPki,
    dir: TempDir,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(HarnessError::io(format!("write {}", path.display())))
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits until the apiserver is ready, and installs the
    /// committed CRDs from `crds/generated/`.
    pub async fn start() -> Result<Self> {
        let control_plane = Self::start_without_crds().await?;
        control_plane.install_crds().await?;
        Ok(control_plane)
    }

    /// Starts etcd and kube-apiserver without installing any CRD.
    pub async fn start_without_crds() -> Result<Self> {
        let etcd_bin = control_plane_binary("etcd")?;
        let apiserver_bin = control_plane_binary("kube-apiserver")?;
        let dir = tempfile::Builder::new()
            .prefix("switchboard-controlplane-")
            .tempdir()
            .map_err(HarnessError::io("create a control-plane directory"))?;
        let d = dir.path();

        let pki = TestPki::generate()?;
        write(&d.join("ca.crt"), &pki.ca_pem)?;
        write(&d.join("apiserver.crt"), &pki.serving.cert_pem)?;
        write(&d.join("apiserver.key"), &pki.serving.key_pem)?;
        write(&d.join("sa.key"), &pki.service_account_key_pem)?;
        write(&d.join("sa.pub"), &pki.service_account_public_pem)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=switchboard-test".to_owned(),
            format!("--data-dir={}", d.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=switchboard-test={peer_url}"),
            // Test data is thrown away; fsync only slows the tests down.
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let mut etcd =
            ChildProcess::spawn("etcd", &etcd_bin, &etcd_args, &[], &d.join("etcd.log"))?;

        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d.join("certs").display()),
            format!("--tls-cert-file={}", d.join("apiserver.crt").display()),
            format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ),
            format!("--client-ca-file={}", d.join("ca.crt").display()),
            "--authorization-mode=RBAC".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", d.join("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--profiling=false".to_owned(),
            // No kube-proxy or nodes here, so there is no `kubernetes` Service endpoint to keep;
            // the reconciler also refuses a loopback advertise address.
            "--endpoint-reconciler-type=none".to_owned(),
        ];
        let apiserver = ChildProcess::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &apiserver_args,
            &[],
            &d.join("kube-apiserver.log"),
        )?;

        let kubeconfig = d.join("kubeconfig");
        write(&kubeconfig, &kubeconfig_yaml(&url, &pki))?;

        let mut control_plane = ControlPlane {
            apiserver,
            etcd: {
                etcd.check_running()?;
                etcd
            },
            url,
            kubeconfig,
            pki,
            dir,
        };
        control_plane.wait_ready().await?;
        Ok(control_plane)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.etcd.check_running()?;
            self.apiserver.check_running()?;
            let request = http::Request::get("/readyz").body(Vec::new());
            if let Ok(request) = request
                && let Ok(body) = client.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "kube-apiserver",
                    seconds: READY_TIMEOUT.as_secs(),
                    log_tail: self.apiserver.log_tail(15),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kube client authenticated as the admin (`system:masters`).
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A kube client that authenticates with a bearer token, for example a ServiceAccount
    /// token, so tests can check what RBAC lets that identity do.
    pub fn client_with_token(&self, token: &str) -> Result<Client> {
        let mut config = Config::new(self.url.parse().map_err(|e: http::uri::InvalidUri| {
            HarnessError::Build(format!("bad apiserver url {}: {e}", self.url))
        })?);
        config.root_cert = Some(vec![pem_to_der(&self.pki.ca_pem)?]);
        config.auth_info.token = Some(token.to_owned().into());
        Ok(Client::try_from(config)?)
    }

    /// Process ids of etcd and kube-apiserver, so tests can check teardown.
    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.pid(), self.apiserver.pid()]
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Where the apiserver writes its log, for diagnosing a failed test.
    pub fn apiserver_log(&self) -> &Path {
        self.apiserver.log_path()
    }

    /// Runs the built kubectl against this control plane and returns its output.
    pub fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let kubectl = control_plane_binary("kubectl")?;
        Command::new(&kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .current_dir(repo_root())
            .output()
            .map_err(HarnessError::io(format!("run {}", kubectl.display())))
    }

    /// Applies the committed CRD manifests (`crds/generated/*.yaml`) with server-side apply and
    /// waits until each is Established.
    pub async fn install_crds(&self) -> Result<()> {
        let client = self.client().await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let dir = repo_root().join("crds/generated");
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(HarnessError::io(format!("list {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        entries.sort();
        let mut names = Vec::new();
        for path in entries {
            let text = std::fs::read_to_string(&path)
                .map_err(HarnessError::io(format!("read {}", path.display())))?;
            let crd: CustomResourceDefinition =
                serde_norway::from_str(&text).map_err(|e| HarnessError::Manifest {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(
                &name,
                &PatchParams::apply("switchboard-tests").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            names.push(name);
        }
        let deadline = Instant::now() + CRD_TIMEOUT;
        for name in names {
            loop {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(HarnessError::NotReady {
                        what: "CRD establishment",
                        seconds: CRD_TIMEOUT.as_secs(),
                        log_tail: format!("{name} not Established"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Established is not the end: the apiserver publishes a CRD's OpenAPI schema a moment
        // later, and `kubectl explain` and server-side field validation need it.
        loop {
            let request =
                http::Request::get("/openapi/v3/apis/switchboard.dev/v1alpha1").body(Vec::new());
            if let Ok(request) = request
                && let Ok(body) = client.request_text(request).await
                && body.contains("dev.switchboard.v1alpha1.Room")
                && body.contains("dev.switchboard.v1alpha1.SfuNode")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "CRD OpenAPI publication",
                    seconds: CRD_TIMEOUT.as_secs(),
                    log_tail: "switchboard.dev/v1alpha1 not in /openapi/v3".to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a namespace, so each test can keep its objects apart.
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client().await?);
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(())
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    BASE64
        .decode(body.trim())
        .map_err(|e| HarnessError::Build(format!("bad CA PEM: {e}")))
}

fn kubeconfig_yaml(url: &str, pki: &TestPki) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: switchboard-test
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: switchboard-test-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: switchboard-test
  context:
    cluster: switchboard-test
    user: switchboard-test-admin
    namespace: default
current-context: switchboard-test
",
        ca = BASE64.encode(&pki.ca_pem),
        cert = BASE64.encode(&pki.admin.cert_pem),
        key = BASE64.encode(&pki.admin.key_pem),
    )
}

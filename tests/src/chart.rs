//! The Helm chart (`charts/switchboard`) under test: helm and kubeconform built from their Go
//! modules, rendered manifests as JSON, kubeconform schemas generated offline from a real
//! apiserver and our CRDs, and the chart's Deployments turned back into the exact command line
//! and environment a kubelet would give their containers.
//!
//! Nothing here fakes Kubernetes: the schemas come from the test apiserver's own
//! `/openapi/v2` and from `crds/generated/`, and the pods' environment is resolved from the
//! rendered Secrets the way the kubelet resolves `secretKeyRef`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::{HarnessError, Result, repo_root};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/switchboard")
}

/// The directory holding `helm` and `kubeconform`. `tests/run.sh` builds them with
/// `tests/tools/build.sh` and exports `SWITCHBOARD_CHART_TOOLS_DIR`; without it the script runs
/// here (instant when the cache is warm).
pub fn tools_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    crate::tools::built_dir(&DIR, "SWITCHBOARD_CHART_TOOLS_DIR", "tests/tools/build.sh")
}

/// A helm with its own empty config, cache and data directories, so the user's repositories
/// and plugins never leak into a test.
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    pub fn new() -> Result<Self> {
        let home = tempfile::Builder::new()
            .prefix("switchboard-helm-")
            .tempdir()
            .map_err(HarnessError::io("create a helm home"))?;
        Ok(Helm {
            bin: tools_dir()?.join("helm"),
            home,
            kubeconfig: None,
        })
    }

    /// Points helm at a cluster.
    pub fn with_kubeconfig(mut self, kubeconfig: &Path) -> Self {
        self.kubeconfig = Some(kubeconfig.to_path_buf());
        self
    }

    /// Runs helm with `args`; the output whatever the exit status.
    pub fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let home = self.home.path();
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .current_dir(repo_root())
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBERNETES_SERVICE_HOST");
        match &self.kubeconfig {
            Some(kubeconfig) => command.env("KUBECONFIG", kubeconfig),
            // No cluster: `helm template` must not reach one by accident.
            None => command.env("KUBECONFIG", home.join("no-kubeconfig")),
        };
        command
            .output()
            .map_err(HarnessError::io(format!("run {}", self.bin.display())))
    }

    /// `helm template` of the chart as release `release` in `namespace` with extra `args`
    /// (`-f FILE`, `--set K=V`); the manifests, or helm's error output.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        args: &[&str],
    ) -> std::result::Result<String, String> {
        let chart = chart_dir();
        let mut all = vec!["template", release];
        let chart = chart.display().to_string();
        all.extend([chart.as_str(), "--namespace", namespace]);
        all.extend(args);
        let output = self.run(&all).map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// Splits a multi-document YAML stream into JSON objects, skipping empty documents.
pub fn parse_manifests(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| HarnessError::Manifest {
                path: PathBuf::from("<helm template>"),
                message: e.to_string(),
            })?;
        if value.is_object() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The object of `kind` named `name`, if rendered.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Every rendered object of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// What a Deployment's first container would run: its arguments (after the image's
/// entrypoint) and its environment, with `secretKeyRef` resolved from the rendered Secrets and
/// `fieldRef` from the pod's name and namespace, as the kubelet does.
#[derive(Debug, Clone)]
pub struct ContainerCommand {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl ContainerCommand {
    pub fn of(objects: &[Value], deployment: &str, pod_name: &str) -> Result<Self> {
        let bad = |message: String| HarnessError::Manifest {
            path: PathBuf::from(format!("Deployment {deployment}")),
            message,
        };
        let deploy = find(objects, "Deployment", deployment)
            .ok_or_else(|| bad("not rendered".to_owned()))?;
        let namespace = deploy["metadata"]["namespace"]
            .as_str()
            .ok_or_else(|| bad("no namespace".to_owned()))?;
        let containers = deploy["spec"]["template"]["spec"]["containers"]
            .as_array()
            .ok_or_else(|| bad("no containers".to_owned()))?;
        let [container] = containers.as_slice() else {
            return Err(bad(format!("{} containers, expected 1", containers.len())));
        };
        if container.get("command").is_some() {
            return Err(bad("overrides the image's entrypoint".to_owned()));
        }
        let args = container["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        if container.get("envFrom").is_some() {
            return Err(bad("envFrom is not resolved here".to_owned()));
        }
        let mut env = BTreeMap::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"]
                .as_str()
                .ok_or_else(|| bad(format!("env without a name: {var}")))?;
            let value = if let Some(value) = var.get("value") {
                value
                    .as_str()
                    .ok_or_else(|| bad(format!("{name}: value is not a string: {value}")))?
                    .to_owned()
            } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod_name.to_owned(),
                    "metadata.namespace" => namespace.to_owned(),
                    other => return Err(bad(format!("{name}: fieldRef {other} not resolved"))),
                }
            } else if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
                let secret_name = secret["name"].as_str().unwrap_or_default();
                let key = secret["key"].as_str().unwrap_or_default();
                secret_value(objects, secret_name, key).ok_or_else(|| {
                    bad(format!(
                        "{name}: Secret {secret_name} key {key} is not in the rendered chart"
                    ))
                })?
            } else {
                return Err(bad(format!("{name}: unsupported env source {var}")));
            };
            env.insert(name.to_owned(), value);
        }
        Ok(ContainerCommand { args, env })
    }
}

/// A key of a rendered Secret, from `stringData` or base64 `data`.
pub fn secret_value(objects: &[Value], name: &str, key: &str) -> Option<String> {
    let secret = find(objects, "Secret", name)?;
    if let Some(value) = secret["stringData"][key].as_str() {
        return Some(value.to_owned());
    }
    let encoded = secret["data"][key].as_str()?;
    let bytes = BASE64.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// Writes kubeconform schemas into `dir`, named the way kubeconform looks them up
/// (`{{ .ResourceKind }}{{ .KindSuffix }}.json`, e.g. `deployment-apps-v1.json`):
///
/// - one per kind in `openapi_v2`, the apiserver's `/openapi/v2` document, each standalone
///   (the definitions it references copied in) and strict (objects refuse unknown fields, as
///   the apiserver's strict field validation does);
/// - one per version of each CRD manifest in `crds`, from its `openAPIV3Schema`.
///
/// So validation needs no network and checks against exactly the Kubernetes version the tests
/// run, and against the CRDs as committed.
pub fn write_kubeconform_schemas(openapi_v2: &Value, crds: &[PathBuf], dir: &Path) -> Result<()> {
    let definitions = openapi_v2["definitions"]
        .as_object()
        .ok_or_else(|| HarnessError::Build("/openapi/v2 has no definitions".to_owned()))?;
    let strict: Map<String, Value> = definitions
        .iter()
        .map(|(name, schema)| (name.clone(), strict_schema(name, schema)))
        .collect();
    for (name, schema) in &strict {
        let Some(gvks) = definitions[name]["x-kubernetes-group-version-kind"].as_array() else {
            continue;
        };
        // Kinds served under several groups (DeleteOptions, WatchEvent) are no manifests.
        let [gvk] = gvks.as_slice() else { continue };
        let (group, version, kind) = (
            gvk["group"].as_str().unwrap_or_default(),
            gvk["version"].as_str().unwrap_or_default(),
            gvk["kind"].as_str().unwrap_or_default(),
        );
        let mut needed = BTreeMap::new();
        collect_refs(schema, &strict, &mut needed);
        let mut file = schema.clone();
        if let Some(object) = file.as_object_mut() {
            object.insert(
                "$schema".to_owned(),
                json!("http://json-schema.org/draft-07/schema#"),
            );
            object.insert(
                "definitions".to_owned(),
                Value::Object(needed.into_iter().collect()),
            );
        }
        write_schema(dir, &schema_file_name(kind, group, version), &file)?;
    }
    for path in crds {
        let text = std::fs::read_to_string(path)
            .map_err(HarnessError::io(format!("read {}", path.display())))?;
        let crd: Value = serde_norway::from_str(&text).map_err(|e| HarnessError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let name = version["name"].as_str().unwrap_or_default();
            let mut schema = openapi_v3_to_json_schema(&version["schema"]["openAPIV3Schema"]);
            if let Some(properties) = schema["properties"].as_object_mut() {
                properties.insert(
                    "apiVersion".to_owned(),
                    json!({"type": "string", "enum": [format!("{group}/{name}")]}),
                );
                properties.insert("kind".to_owned(), json!({"type": "string", "enum": [kind]}));
                properties.insert("metadata".to_owned(), json!({"type": "object"}));
            }
            if let Some(object) = schema.as_object_mut() {
                object.insert(
                    "$schema".to_owned(),
                    json!("http://json-schema.org/draft-07/schema#"),
                );
            }
            write_schema(dir, &schema_file_name(kind, group, name), &schema)?;
        }
    }
    Ok(())
}

/// kubeconform's file name for a kind: the kind in lower case, the first label of the group
/// (none for the core group) and the version.
fn schema_file_name(kind: &str, group: &str, version: &str) -> String {
    let kind = kind.to_lowercase();
    match group.split('.').next().filter(|g| !g.is_empty()) {
        Some(group) => format!("{kind}-{}-{version}.json", group.to_lowercase()),
        None => format!("{kind}-{version}.json"),
    }
}

fn write_schema(dir: &Path, name: &str, schema: &Value) -> Result<()> {
    let path = dir.join(name);
    let text = serde_json::to_string(schema)
        .map_err(|e| HarnessError::Build(format!("cannot serialize {name}: {e}")))?;
    std::fs::write(&path, text).map_err(HarnessError::io(format!("write {}", path.display())))
}

/// A Swagger 2 definition made strict: unknown fields refused, and the types the apiserver
/// accepts in several JSON forms (int-or-string, quantities) widened to all of them.
fn strict_schema(name: &str, schema: &Value) -> Value {
    if name == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
        return json!({"oneOf": [{"type": "string"}, {"type": "number"}]});
    }
    transform(schema, &|object| {
        if object.get("format").and_then(Value::as_str) == Some("int-or-string") {
            object.clear();
            object.insert(
                "oneOf".to_owned(),
                json!([{"type": "string"}, {"type": "integer"}]),
            );
            return;
        }
        if object.contains_key("properties") && !object.contains_key("additionalProperties") {
            object.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    })
}

/// A CRD's OpenAPI v3 schema as JSON Schema: `nullable` becomes a `null` type, and objects
/// refuse unknown fields unless they preserve them, as the apiserver prunes or refuses them.
fn openapi_v3_to_json_schema(schema: &Value) -> Value {
    transform(schema, &|object| {
        if object.remove("nullable") == Some(Value::Bool(true))
            && let Some(Value::String(kind)) = object.get("type").cloned()
        {
            object.insert("type".to_owned(), json!([kind, "null"]));
        }
        if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            object.insert(
                "oneOf".to_owned(),
                json!([{"type": "string"}, {"type": "integer"}]),
            );
        }
        let preserves =
            object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if object.contains_key("properties")
            && !object.contains_key("additionalProperties")
            && !preserves
        {
            object.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    })
}

/// Applies `edit` to every object in `value`, children first.
fn transform(value: &Value, edit: &dyn Fn(&mut Map<String, Value>)) -> Value {
    match value {
        Value::Object(object) => {
            let mut out: Map<String, Value> = object
                .iter()
                .map(|(k, v)| (k.clone(), transform(v, edit)))
                .collect();
            edit(&mut out);
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| transform(v, edit)).collect()),
        other => other.clone(),
    }
}

/// Every definition `schema` references, transitively.
fn collect_refs(schema: &Value, all: &Map<String, Value>, found: &mut BTreeMap<String, Value>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("$ref")
                && let Some(name) = reference.strip_prefix("#/definitions/")
                && !found.contains_key(name)
                && let Some(definition) = all.get(name)
            {
                found.insert(name.to_owned(), definition.clone());
                collect_refs(definition, all, found);
            }
            for value in object.values() {
                collect_refs(value, all, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_refs(item, all, found);
            }
        }
        _ => {}
    }
}

/// Runs kubeconform on `manifests` (YAML) against the schemas in `schemas`, skipping `skip`
/// kinds; the output whatever the exit status.
pub fn kubeconform(schemas: &Path, manifests: &str, skip: &[&str]) -> Result<Output> {
    use std::io::Write;
    let bin = tools_dir()?.join("kubeconform");
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        schemas.display()
    );
    let mut command = Command::new(&bin);
    command
        .args(["-strict", "-summary", "-output", "text", "-schema-location"])
        .arg(&location);
    if !skip.is_empty() {
        command.arg("-skip").arg(skip.join(","));
    }
    let mut child = command
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(HarnessError::io(format!("run {}", bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(manifests.as_bytes())
            .map_err(HarnessError::io("write manifests to kubeconform"))?;
    }
    child
        .wait_with_output()
        .map_err(HarnessError::io("wait for kubeconform"))
}

/// A kubeconfig that authenticates to `server` with a bearer `token`, for example a
/// ServiceAccount token from a TokenRequest.
pub fn token_kubeconfig(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: switchboard-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: service-account
  user:
    token: {token}
contexts:
- name: switchboard-test
  context:
    cluster: switchboard-test
    user: service-account
    namespace: {namespace}
current-context: switchboard-test
",
        ca = BASE64.encode(ca_pem),
    )
}

/// One replica of a chart Deployment run as a local process: the image's binary with the
/// container's exact arguments and environment, except the listen address (`listen_env`),
/// moved to a free loopback port, and `KUBECONFIG`, the pod's ServiceAccount credentials.
pub struct ChartPod {
    process: crate::process::ChildProcess,
    port: u16,
    name: String,
    _dir: tempfile::TempDir,
}

impl ChartPod {
    /// Starts `binary` as pod `name` and waits until `/readyz` answers 200.
    pub fn start(
        binary: &Path,
        name: &str,
        command: &ContainerCommand,
        listen_env: &str,
        kubeconfig: &Path,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-chart-pod-")
            .tempdir()
            .map_err(HarnessError::io("create a pod directory"))?;
        let port = crate::free_port()?;
        let mut env = command.env.clone();
        if env
            .insert(listen_env.to_owned(), format!("127.0.0.1:{port}"))
            .is_none()
        {
            return Err(HarnessError::Build(format!(
                "{name}: the chart does not set {listen_env}"
            )));
        }
        env.insert("KUBECONFIG".to_owned(), kubeconfig.display().to_string());
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut process = crate::process::ChildProcess::spawn(
            "chart pod",
            binary,
            &command.args,
            &pairs,
            &dir.path().join("pod.log"),
        )?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            process.check_running()?;
            if crate::http::get(port, "/readyz").is_ok_and(|(code, _)| code == 200) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    what: "chart pod",
                    seconds: 30,
                    log_tail: format!("{name}:\n{}", process.log_tail(20)),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(ChartPod {
            process,
            port,
            name: name.to_owned(),
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

impl Drop for ChartPod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.process.log_tail(40));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_follow_kubeconform() {
        assert_eq!(
            schema_file_name("Deployment", "apps", "v1"),
            "deployment-apps-v1.json"
        );
        assert_eq!(schema_file_name("Pod", "", "v1"), "pod-v1.json");
        assert_eq!(
            schema_file_name("Role", "rbac.authorization.k8s.io", "v1"),
            "role-rbac-v1.json"
        );
        assert_eq!(
            schema_file_name("Room", "switchboard.dev", "v1alpha1"),
            "room-switchboard-v1alpha1.json"
        );
    }

    #[test]
    fn crd_schemas_become_strict_and_nullable() {
        let schema = openapi_v3_to_json_schema(&json!({
            "type": "object",
            "properties": {"a": {"type": "string", "nullable": true}, "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {}}}
        }));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["a"]["type"], json!(["string", "null"]));
        assert!(
            schema["properties"]["b"]
                .get("additionalProperties")
                .is_none()
        );
    }
}

//! The Helm chart without a cluster run: `helm lint`, the values schema refusing typos, the
//! chart's CRDs matching `crds/generated/`, the rendered manifests validated by kubeconform
//! against schemas generated from the real test apiserver and our CRDs, and the RBAC shape
//! (namespaced, no wildcards, Secrets by name).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use switchboard_tests::chart::{
    Helm, chart_dir, find, kubeconform, of_kind, parse_manifests, write_kubeconform_schemas,
};
use switchboard_tests::{ControlPlane, repo_root};

const TEST_VALUES: &str = "charts/switchboard/ci/test-values.yaml";

/// Every optional part switched on, so validation covers every template.
const EVERYTHING: &[&str] = &[
    "--set",
    "signaling.ingress.enabled=true,signaling.ingress.className=nginx,signaling.ingress.tlsSecretName=signaling-tls",
    "--set",
    "signaling.autoCreate.enabled=true,signaling.autoscaling.enabled=false,signaling.replicas=3",
    "--set",
    "metrics.serviceMonitor.enabled=true,metrics.grafanaDashboard.enabled=true",
    "--set",
    "turn.realm=example.org,turn.redisUrls[0]=redis://coturn-redis:6379/0,turn.iceUrls[0]=turn:turn.example.com:3478",
    "--set",
    "jwt.publicKeys[0].kid=app,jwt.publicKeys[0].alg=ES256,jwt.publicKeys[0].key=app.pem,jwt.publicKeysSecret=jwt-public-keys",
    "--set",
    "watchNamespace=calls",
    "--set",
    "signaling.admin.enabled=true,signaling.webhooks.urls[0]=https://backend.example.com/hooks,signaling.webhooks.existingSecret=webhook-key",
];

fn render(args: &[&str]) -> String {
    let helm = Helm::new().unwrap();
    let mut all = vec!["-f", TEST_VALUES];
    all.extend(args);
    helm.template("sb", "switchboard", &all)
        .unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
}

fn crd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("crds/generated"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Proves `helm lint --strict` passes, with the test values and with every option on.
#[test]
fn helm_lint_passes() {
    switchboard_tests::require!(ChartTools);
    let helm = Helm::new().unwrap();
    let chart = chart_dir().display().to_string();
    for extra in [&[][..], EVERYTHING] {
        let mut args = vec!["lint", "--strict", chart.as_str(), "-f", TEST_VALUES];
        args.extend(extra);
        let output = helm.run(&args).unwrap();
        assert!(
            output.status.success(),
            "helm lint {extra:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Proves the values schema refuses misspelt keys and bad values, and that the required values
/// fail with a message that says what to set.
#[test]
fn values_schema_refuses_typos_and_missing_values() {
    switchboard_tests::require!(ChartTools);
    let helm = Helm::new().unwrap();
    let typos = [
        ("operator.replcas=3", "replcas"),
        ("signaling.ingres.enabled=true", "ingres"),
        ("turn.iceUrl[0]=turn:x", "iceUrl"),
        ("operator.strategy=Random", "strategy"),
        ("operator.failoverGrace=soon", "failoverGrace"),
        ("signaling.replicas=1", "replicas"),
        ("redis.url=http://redis:6379", "url"),
    ];
    for (set, named) in typos {
        let error = helm
            .template("sb", "switchboard", &["-f", TEST_VALUES, "--set", set])
            .expect_err(set);
        assert!(
            error.contains("schema") && error.contains(named),
            "--set {set}: {error}"
        );
    }
    let error = helm.template("sb", "switchboard", &[]).unwrap_err();
    assert!(
        error.contains("set redis.url or redis.existingSecret"),
        "{error}"
    );
    let error = helm
        .template(
            "sb",
            "switchboard",
            &["--set", "redis.url=redis://r:6379/0"],
        )
        .unwrap_err();
    assert!(error.contains("set jwt.hs256"), "{error}");
}

/// Proves the CRDs the chart installs are exactly the committed `crds/generated/` ones.
#[test]
fn chart_crds_are_the_generated_crds() {
    for generated in crd_files() {
        let name = generated.file_name().unwrap();
        let copy = chart_dir().join("files/crds").join(name);
        let (a, b) = (
            std::fs::read_to_string(&generated).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
        );
        assert!(
            a == b,
            "{} differs from {}; run: cp crds/generated/*.yaml charts/switchboard/files/crds/",
            copy.display(),
            generated.display()
        );
    }
    let copies = std::fs::read_dir(chart_dir().join("files/crds"))
        .unwrap()
        .count();
    assert_eq!(copies, crd_files().len(), "a stale CRD copy in the chart");
}

/// Proves every rendered object validates against the test apiserver's own schemas (strict:
/// unknown fields refused) and our CRDs, that the CRD schemas accept `crds/examples/`, and that
/// the validation fails on a misspelt field in either.
#[tokio::test]
async fn rendered_manifests_validate_with_kubeconform() {
    switchboard_tests::require!(ChartTools, ControlPlane);
    let cp = ControlPlane::start_without_crds().await.unwrap();
    let client = cp.client().await.unwrap();
    let openapi = client
        .request_text(http::Request::get("/openapi/v2").body(Vec::new()).unwrap())
        .await
        .unwrap();
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    let schemas = tempfile::tempdir().unwrap();
    write_kubeconform_schemas(&openapi, &crd_files(), schemas.path()).unwrap();
    // The Prometheus Operator's CRDs are not available offline; ServiceMonitor is checked for
    // shape below instead.
    let skip = ["ServiceMonitor"];

    for (what, args) in [("test values", &[][..]), ("every option", EVERYTHING)] {
        let manifests = render(args);
        let output = kubeconform(schemas.path(), &manifests, &skip).unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kubeconform ({what}):\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("kubeconform ({what}): {}", report.trim());
        let objects = parse_manifests(&manifests).unwrap();
        let expected_valid = objects.len()
            - objects
                .iter()
                .filter(|o| skip.contains(&o["kind"].as_str().unwrap_or_default()))
                .count();
        assert!(
            report.contains(&format!("Valid: {expected_valid},")),
            "not every object was validated ({what}): {report}"
        );
    }

    let examples = std::fs::read_to_string(repo_root().join("crds/examples/rooms.yaml")).unwrap()
        + "\n---\n"
        + &std::fs::read_to_string(repo_root().join("crds/examples/sfunodes.yaml")).unwrap();
    let output = kubeconform(schemas.path(), &examples, &[]).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // Able to fail: a misspelt field in a Deployment and in a Room.
    let bad_deployment = render(&[]).replacen("imagePullPolicy:", "imagePulPolicy:", 1);
    let bad_room = examples.replacen("maxParticipants:", "maxParticipant:", 1);
    for (what, bad) in [("Deployment", bad_deployment), ("Room", bad_room)] {
        let output = kubeconform(schemas.path(), &bad, &skip).unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        eprintln!("kubeconform (misspelt {what}): {}", report.trim());
        assert!(
            !output.status.success(),
            "a misspelt {what} passed: {report}"
        );
        assert!(report.contains("additional properties"), "{what}: {report}");
    }
}

/// Proves the RBAC is namespaced and least-privilege: no ClusterRoles, no wildcards, Secrets
/// and the Lease only by name, Room creation only with auto-create, and no `delete` for
/// signaling (the server API, off by default, adds `delete` on Rooms; see below).
#[test]
fn rbac_is_namespaced_and_least_privilege() {
    switchboard_tests::require!(ChartTools);
    for (auto_create, args) in [
        (false, &[][..]),
        (true, &["--set", "signaling.autoCreate.enabled=true"][..]),
    ] {
        let objects = parse_manifests(&render(args)).unwrap();
        assert!(of_kind(&objects, "ClusterRole").is_empty());
        assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
        let roles = of_kind(&objects, "Role");
        assert_eq!(roles.len(), 2);
        for role in &roles {
            let text = role.to_string();
            assert!(!text.contains("\"*\""), "a wildcard in {text}");
            for rule in role["rules"].as_array().unwrap() {
                let resources: Vec<&str> = rule["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect();
                if resources.contains(&"secrets") || resources.contains(&"leases") {
                    assert!(
                        rule["resourceNames"]
                            .as_array()
                            .is_some_and(|n| n.len() == 1),
                        "secrets/leases without a single resourceName: {rule}"
                    );
                    assert!(
                        !rule["verbs"].as_array().unwrap().contains(&"create".into()),
                        "create cannot be limited by name: {rule}"
                    );
                }
            }
        }
        let signaling = find(&objects, "Role", "sb-switchboard-signaling").unwrap();
        let verbs: Vec<String> = signaling["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"] == serde_json::json!(["rooms"]))
            .flat_map(|r| r["verbs"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            verbs.contains(&"create".to_owned()),
            auto_create,
            "{verbs:?}"
        );
        assert!(!signaling.to_string().contains("delete"), "{signaling}");
        // The Secret and the Lease the rules name are the ones the chart creates.
        assert!(find(&objects, "Secret", "sb-switchboard-turn").is_some());
        assert!(find(&objects, "Lease", "sb-switchboard-operator").is_some());
    }
}

/// Proves the pods are hardened and probed as the issue asks, and the optional objects render
/// with the WebSocket settings, the ServiceMonitors and a dashboard that parses.
#[test]
fn pods_are_restricted_and_optional_objects_render() {
    switchboard_tests::require!(ChartTools);
    let objects = parse_manifests(&render(EVERYTHING)).unwrap();
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(deployments.len(), 2);
    for deployment in deployments {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let container = &pod["containers"][0];
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    }
    let operator = find(&objects, "Deployment", "sb-switchboard-operator").unwrap();
    assert_eq!(operator["spec"]["replicas"], 2);
    let ingress = find(&objects, "Ingress", "sb-switchboard-signaling").unwrap();
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"],
        "3600"
    );
    assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 2);
    let dashboard = find(&objects, "ConfigMap", "sb-switchboard-dashboard").unwrap();
    let json: Value =
        serde_json::from_str(dashboard["data"]["switchboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["title"], "Switchboard");
    // With autoscaling on (the default), the HPA owns the replica count.
    let default = parse_manifests(&render(&[])).unwrap();
    let hpa = find(
        &default,
        "HorizontalPodAutoscaler",
        "sb-switchboard-signaling",
    )
    .unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    let signaling = find(&default, "Deployment", "sb-switchboard-signaling").unwrap();
    assert!(signaling["spec"].get("replicas").is_none());
    assert_eq!(of_kind(&default, "PodDisruptionBudget").len(), 2);
    // The CRDs are kept on uninstall by default, and not when asked.
    for crd in of_kind(&default, "CustomResourceDefinition") {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let unkept = parse_manifests(&render(&["--set", "crds.keep=false"])).unwrap();
    for crd in of_kind(&unkept, "CustomResourceDefinition") {
        assert!(crd["metadata"].get("annotations").is_none(), "{crd}");
    }
}

/// Proves the server API stays off the public side: its own ClusterIP Service (even with a
/// LoadBalancer for signaling), never the Ingress backend; it alone grants `delete` on Rooms;
/// and webhooks get their URLs and a signing key from a Secret, or refuse to render without
/// a key.
#[test]
fn server_api_and_webhooks_render_off_the_public_side() {
    switchboard_tests::require!(ChartTools);
    let objects = parse_manifests(&render(&[
        "--set",
        "signaling.admin.enabled=true,signaling.service.type=LoadBalancer",
        "--set",
        "signaling.ingress.enabled=true",
        "--set",
        "signaling.webhooks.urls[0]=https://backend.example.com/hooks,signaling.webhooks.key=wh=0123456789abcdef0123456789abcdef",
    ]))
    .unwrap();
    let admin = find(&objects, "Service", "sb-switchboard-signaling-admin").unwrap();
    assert_eq!(admin["spec"]["type"], "ClusterIP");
    assert_eq!(admin["spec"]["ports"][0]["targetPort"], "admin");
    let public = find(&objects, "Service", "sb-switchboard-signaling").unwrap();
    let public_ports: Vec<&str> = public["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targetPort"].as_str().unwrap())
        .collect();
    assert_eq!(
        public_ports,
        ["http"],
        "the public Service has no admin port"
    );
    let ingress = find(&objects, "Ingress", "sb-switchboard-signaling").unwrap();
    assert!(!ingress.to_string().contains("admin"), "{ingress}");
    let role = find(&objects, "Role", "sb-switchboard-signaling").unwrap();
    let room_verbs = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["rooms"]))
        .unwrap()["verbs"]
        .clone();
    assert!(
        room_verbs.as_array().unwrap().contains(&"delete".into()),
        "{room_verbs}"
    );
    let deployment = find(&objects, "Deployment", "sb-switchboard-signaling").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("SWITCHBOARD_ADMIN_ADDR").unwrap()["value"],
        "0.0.0.0:8444"
    );
    assert_eq!(
        var("SWITCHBOARD_WEBHOOK_URLS").unwrap()["value"],
        "https://backend.example.com/hooks"
    );
    assert_eq!(
        var("SWITCHBOARD_WEBHOOK_KEY").unwrap()["valueFrom"]["secretKeyRef"]["key"],
        "webhook-key"
    );
    let secret = find(&objects, "Secret", "sb-switchboard-config").unwrap();
    assert!(secret["stringData"]["webhook-key"].is_string(), "{secret}");

    let helm = Helm::new().unwrap();
    let refused = helm
        .template(
            "sb",
            "switchboard",
            &[
                "-f",
                TEST_VALUES,
                "--set",
                "signaling.webhooks.urls[0]=https://backend.example.com/hooks",
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(refused.contains("webhooks are always signed"), "{refused}");
}

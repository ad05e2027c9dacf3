//! The two install paths: the Helm chart (lint, template, its copies of the
//! shipped files) and kustomize render the same RBAC, and both are accepted
//! by a real kube-apiserver (server-side dry-run) from a clean checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::harness::kube::{KubeApiServer, NAMESPACE};
use crate::harness::{pinned_version, tool};

const CHART: &str = "deploy/helm/etcd-inspector";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn helm(args: &[&str]) -> String {
    let out = Command::new(tool("helm", &pinned_version("helm", "helm.sh/helm/v3")))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect()
}

fn render_chart(extra: &[&str]) -> String {
    let chart = repo(CHART);
    let mut args = vec!["template", "etcd-inspector", chart.to_str().unwrap(), "-n", NAMESPACE];
    args.extend_from_slice(extra);
    helm(&args)
}

/// RBAC objects by (kind, name, namespace): rules, roleRef and subjects.
fn rbac(docs: &[Value], default_namespace: &str) -> Vec<(String, String, String, String)> {
    let mut found: Vec<_> = docs
        .iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("rbac.authorization.k8s.io"))
        })
        .map(|d| {
            let namespace = match d["kind"].as_str() {
                Some("Role" | "RoleBinding") => d["metadata"]["namespace"].as_str().unwrap_or(default_namespace),
                _ => "",
            };
            let body = serde_yaml::to_string(&(&d["rules"], &d["roleRef"], &d["subjects"])).unwrap();
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
                namespace.to_string(),
                body,
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn the_chart_lints_and_carries_the_shipped_files() {
    helm(&["lint", "--strict", repo(CHART).to_str().unwrap()]);
    for (copy, original) in [
        ("files/rules.yaml", "deploy/prometheus/rules.yaml"),
        ("files/etcd-inspector.json", "deploy/grafana/etcd-inspector.json"),
        ("crds/crds.yaml", "deploy/crds.yaml"),
    ] {
        assert_eq!(
            std::fs::read_to_string(repo(&format!("{CHART}/{copy}"))).unwrap(),
            std::fs::read_to_string(repo(original)).unwrap(),
            "{CHART}/{copy} is stale: run `make rules crds`"
        );
    }
    // Values reach what they configure.
    let docs = documents(&render_chart(&[
        "--set",
        "replicas=3,host.metricNames=kstone,serviceMonitor.enabled=false,dashboard.enabled=false",
        "--set",
        "rbac.secretNamespaces={team-a}",
        "--set",
        "plugins.settings.healthy.timeoutSeconds=5",
        "--set-string",
        "plugins.configMaps[0].name=extra,plugins.configMaps[0].binaryData.db-quota\\.wasm=AGFzbQ==",
    ]));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        !kinds.contains(&"ServiceMonitor") && kinds.contains(&"PrometheusRule"),
        "{kinds:?}"
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = serde_yaml::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]).unwrap();
    for flag in [
        "--metric-names=kstone",
        "--bundled-plugins=/usr/lib/etcd-inspector/plugins",
        "--plugin-config=/etc/etcd-inspector/plugins.yaml",
        "--lease-lock-namespace=kstone",
    ] {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }
    let extra = docs.iter().find(|d| d["metadata"]["name"] == "extra").unwrap();
    assert_eq!(extra["metadata"]["labels"]["etcd-inspector.io/plugin"], "true");
    assert_eq!(extra["binaryData"]["db-quota.wasm"], "AGFzbQ==");
    let settings = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "etcd-inspector-plugin-settings")
        .unwrap();
    let settings: Value = serde_yaml::from_str(settings["data"]["plugins.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(settings["plugins"]["healthy"]["timeoutSeconds"], 5);
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "team-a"),
        "Secrets of team-a may be read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_and_kustomize_render_the_same_rbac_and_a_real_api_server_accepts_both() {
    let kube = KubeApiServer::start().await;
    let kustomized = kube.kubectl(&["kustomize", repo("deploy").to_str().unwrap()]).unwrap();
    let charted = render_chart(&[]);
    let roles = rbac(&documents(&charted), NAMESPACE);
    assert_eq!(roles.len(), 6, "two ClusterRoles, a Role and three bindings: {roles:?}");
    assert_eq!(
        roles,
        rbac(&documents(&kustomized), NAMESPACE),
        "the chart's RBAC differs from deploy/rbac.yaml's"
    );

    // The Prometheus Operator's kinds are not ours to install: stand-ins
    // that accept any spec, so the rest is validated for real.
    let stubs = ["servicemonitors", "prometheusrules"]
        .iter()
        .map(|plural| {
            let kind = if *plural == "servicemonitors" { "ServiceMonitor" } else { "PrometheusRule" };
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.monitoring.coreos.com\nspec:\n  group: monitoring.coreos.com\n  scope: Namespaced\n  names: {{plural: {plural}, kind: {kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n---\n"
            )
        })
        .collect::<String>();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    kube.kubectl(&["apply", "-f", &write("stubs.yaml", &stubs)]).unwrap();
    kube.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ])
    .unwrap();
    let kustomize = kube.kubectl(&["apply", "--dry-run=server", "-k", repo("deploy").to_str().unwrap()]);
    assert!(kustomize.is_ok(), "kubectl apply -k deploy/: {kustomize:?}");
    let chart = kube.kubectl(&["apply", "--dry-run=server", "-f", &write("chart.yaml", &charted)]);
    assert!(chart.is_ok(), "the chart: {chart:?}");
}

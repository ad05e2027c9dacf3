//! The alerting rules: the PrometheusRule ships the same groups as the
//! plain rules file, every alert has a runbook section, and every alert
//! passes its promtool unit tests (tests/prometheus/rules.test.yaml:
//! firing and not firing); and in a real Prometheus, real faults fire them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::wait_until;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

#[test]
fn the_prometheus_rule_carries_the_rules_file() {
    let plain = yaml("deploy/prometheus/rules.yaml");
    let operator = yaml("deploy/prometheus-rule.yaml");
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "deploy/prometheus-rule.yaml is stale: run `make rules`"
    );
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(repo("docs/runbook.md")).unwrap();
    let rules = yaml("deploy/prometheus/rules.yaml");
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            for key in ["summary", "description"] {
                assert!(rule["annotations"][key].is_string(), "{name}: {key}");
            }
            assert_eq!(
                rule["annotations"]["runbook"].as_str(),
                Some(format!("docs/runbook.md#{}", name.to_lowercase()).as_str()),
                "{name}: runbook"
            );
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "docs/runbook.md has no section {name}"
            );
        }
    }
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool() {
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg("rules.test.yaml")
        .current_dir(repo("tests/prometheus"))
        .output()
        .expect("promtool (apt-get install prometheus; make test does)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Every alert of the rules file is exercised by the unit tests.
    let tests = std::fs::read_to_string(repo("tests/prometheus/rules.test.yaml")).unwrap();
    let rules = yaml("deploy/prometheus/rules.yaml");
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          - exp_labels"
                )),
                "{name} has no firing test"
            );
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts: []")),
                "{name} has no quiet test"
            );
        }
    }
}

/// The shipped rules in a real Prometheus scraping a real host: a stopped
/// member, a real NOSPACE and a raised CORRUPT each make their alert fire
/// in Prometheus's own API, and each resolves after recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_faults_fire_the_shipped_alerts_in_prometheus_and_they_resolve() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    use nix::sys::signal::Signal;

    use crate::harness::etcd::{EtcdCluster, Options};
    use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
    use crate::harness::plugin_file;
    use crate::harness::prometheus::Prometheus;

    let etcd = EtcdCluster::start(Options::new(3).quota(2 << 20)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("healthy.yaml", inspection_manifest("prod", "healthy", 1)),
        ("alarm.yaml", inspection_manifest("prod", "alarm", 1)),
    ];
    let plugins = [plugin_file("bundled", "healthy"), plugin_file("bundled", "alarm")];
    let host = Host::start(&plugins, &manifests, &["--etcd-timeout", "1"]).await;
    let prometheus = Prometheus::start(host.base_url.trim_start_matches("http://")).await;
    let endpoint = |i: usize| etcd.members[i].client_url.trim_start_matches("http://").to_string();

    // Every member healthy: the inspector is scraped and nothing fires.
    wait_until(
        "three healthy series in Prometheus",
        Duration::from_secs(90),
        async || {
            let result = prometheus.query("inspection_etcd_endpoint_healthy == 1").await?;
            (result.len() == 3).then_some(()).ok_or(format!("{result:?}"))
        },
    )
    .await;
    prometheus.expect("EtcdInspectorAbsent", &[], false).await;

    // A stopped member.
    let frozen = (etcd.leader_index() + 1) % 3;
    etcd.signal(frozen, Signal::SIGSTOP);
    let frozen_endpoint = endpoint(frozen);
    let unhealthy = [("clusterName", "prod"), ("endpoint", frozen_endpoint.as_str())];
    prometheus.expect("EtcdMemberUnhealthy", &unhealthy, true).await;
    etcd.signal(frozen, Signal::SIGCONT);
    prometheus.expect("EtcdMemberUnhealthy", &unhealthy, false).await;

    // A real NOSPACE from a full quota, then the documented recovery.
    let error = etcd.fill_quota().await;
    assert!(error.contains("database space exceeded"), "{error}");
    prometheus
        .expect(
            "EtcdAlarmNoSpace",
            &[("clusterName", "prod"), ("alarmType", "NOSPACE")],
            true,
        )
        .await;
    etcd.recover_from_nospace();
    prometheus
        .expect("EtcdAlarmNoSpace", &[("clusterName", "prod")], false)
        .await;

    // CORRUPT raised on one member through the Maintenance API, then cleared.
    let id = etcd.status()[0].0;
    let mut options = AlarmOptions::new();
    options.with_member(id);
    let mut client = etcd.client().await;
    client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(options.clone()))
        .await
        .unwrap();
    let corrupt = [("clusterName", "prod"), ("alarmType", "CORRUPT")];
    prometheus.expect("EtcdAlarmCorrupt", &corrupt, true).await;
    client
        .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, Some(options))
        .await
        .unwrap();
    prometheus.expect("EtcdAlarmCorrupt", &corrupt, false).await;
}

/// Every query of the Grafana dashboard returns series from a real
/// Prometheus scraping a real host, and names only metrics the host exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_host() {
    use crate::harness::certs::Pki;
    use crate::harness::etcd::{EtcdCluster, Options};
    use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
    use crate::harness::plugin_file;
    use crate::harness::prometheus::Prometheus;

    use etcd_client::PutOptions;

    let mut etcd = EtcdCluster::start(Options::new(3)).await;
    let mut client = etcd.client().await;
    for i in 0..5 {
        client
            .put(format!("/registry/pods/default/p{i}"), "x", None)
            .await
            .unwrap();
    }
    // Leases, one with a key, for the leases row.
    for ttl in [600, 3600] {
        let lease = client.lease_grant(ttl, None).await.unwrap().id();
        if ttl == 600 {
            let options = PutOptions::new().with_lease(lease);
            client.put("/leased", "x", Some(options)).await.unwrap();
        }
    }
    // A learner, started, for the membership row's learner panel.
    let learner = etcd.add_member(true).await;
    etcd.start_member(learner, etcd.version);
    // A TLS cluster of its own for the certificates row.
    let pki = Pki::new("dashboard-ca");
    let secure = EtcdCluster::start(Options::new(1).tls(&pki)).await;
    let certs = secure.dir().join("certs");
    pki.write_cert_dir(&certs, &pki.ca.cert);
    let gates =
        "healthy=true,alarm=true,consistency=true,request=true,compaction=true,latency=true,quota=true,membership=true,leases=true";
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest(
                "prod",
                &[
                    ("importedAddr", &etcd.members[0].client_url),
                    ("featureGates", gates),
                    ("request", r#"{"path":"/registry/"}"#),
                    // Growth over 30 s instead of hours, so the quota's
                    // projection has series while the writer below writes.
                    ("etcd-inspector.io/quota-growth-window-seconds", "30"),
                ],
            ),
        ),
        // Rounds every second (its default is a minute), so the growth
        // projection has history within the test.
        ("quota.yaml", inspection_manifest("prod", "quota", 1)),
        (
            "secure.yaml",
            cluster_manifest(
                "secure",
                &[
                    ("importedAddr", &secure.members[0].client_url),
                    ("certName", certs.to_str().unwrap()),
                    ("featureGates", "certificates=true"),
                ],
            ),
        ),
    ];
    let plugins: Vec<_> = [
        "healthy",
        "alarm",
        "consistency",
        "request",
        "compaction",
        "latency",
        "quota",
        "membership",
        "certificates",
        "leases",
    ]
    .iter()
    .map(|p| plugin_file("bundled", p))
    .collect();
    let host = Host::start(&plugins, &manifests, &["--allow-cert-dirs-outside-manifests"]).await;
    let prometheus = Prometheus::start(host.base_url.trim_start_matches("http://")).await;
    // Writes while Prometheus watches, so write rates are not zero and the
    // database file grows (32 KiB values kept as history).
    let writer = tokio::spawn(async move {
        let value = vec![b'x'; 32 * 1024];
        for i in 0..3000u32 {
            let _ = client
                .put(format!("/registry/pods/default/w{}", i % 20), "x", None)
                .await;
            let _ = client.put(format!("/bulk/{}", i % 20), value.clone(), None).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/etcd-inspector.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("${inspection}", "inspection")
                .replace("$cluster", "prod|secure")
        })
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    for expr in &exprs {
        wait_until(&format!("series for {expr}"), Duration::from_secs(90), async || {
            let result = prometheus.query(expr).await?;
            (!result.is_empty()).then_some(()).ok_or(format!("{result:?}"))
        })
        .await;
    }
    // A counter appears on /metrics with its first event (a failed round, a
    // reload); those must at least be documented metrics of the host.
    let exported = host.get("/metrics").await.unwrap();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("inspection_") || w.starts_with("etcd_inspector_"))
        {
            let family = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&format!("# TYPE {family} ")) || readme.contains(&format!("`{family}")),
                "the dashboard names {name}, which the host does not export"
            );
        }
    }
    writer.abort();
}

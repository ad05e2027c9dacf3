//! Kubernetes mode end to end: the host's controllers against a real
//! kube-apiserver (harness/kube.rs) with deploy/'s CRDs and RBAC applied as
//! they ship, the host running as its ServiceAccount, and real etcd behind.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_inspector::cluster::crd::{EtcdCluster, EtcdInspection};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::harness::certs::Pki;
use crate::harness::etcd::{EtcdCluster as Etcd, Options};
use crate::harness::host::{cluster_manifest, Host};
use crate::harness::kube::KubeApiServer;
use crate::harness::{plugin_file, wait_until};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";
const FEATURES: [&str; 4] = ["alarm", "consistency", "healthy", "request"];

fn secret(name: &str, pki: &Pki, ca: &str) -> Secret {
    let data: BTreeMap<String, ByteString> = [
        ("ca.crt", ca.to_string()),
        ("server.crt", pki.client.cert.clone()),
        ("server.key", pki.client.key.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// The cluster's Ready condition (empty until there is one).
async fn ready_condition(
    clusters: &Api<EtcdCluster>,
    name: &str,
) -> Result<etcd_inspector::cluster::crd::Condition, String> {
    let status = clusters
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .unwrap_or_default();
    Ok(status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap_or_default())
}

fn bundled() -> Vec<std::path::PathBuf> {
    FEATURES.iter().map(|f| plugin_file("bundled", f)).collect()
}

async fn inspections(api: &Api<EtcdInspection>) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|i| i.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_sample_is_reconciled_inspected_and_cleaned_up() {
    let pki = Pki::new("cluster-ca");
    let etcd = Etcd::start(Options::new(3).tls(&pki)).await;
    let kube = KubeApiServer::start().await;
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kstone");
    secrets
        .create(&PostParams::default(), &secret("env-etcd", &pki, &pki.ca.cert))
        .await
        .unwrap();
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/etcd-cluster.yaml"
    ))
    .unwrap()
    .replace("https://cluster_ip:2379", &etcd.members[0].client_url);
    let cluster: EtcdCluster = serde_yaml::from_str(&sample).expect("the seed's sample is accepted unchanged");
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), "kstone");
    clusters.create(&PostParams::default(), &cluster).await.unwrap();

    let host = Host::kubernetes(
        &bundled(),
        &kube.host_kubeconfig(),
        &["--lease-duration", "3", "--resync-interval", "1"],
    )
    .await;

    // Status: each member's own version and role, phase Running.
    let status = wait_until(
        "phase Running with three members",
        Duration::from_secs(60),
        async || {
            let c = clusters.get("env-etcd").await.map_err(|e| e.to_string())?;
            let status = c.status.unwrap_or_default();
            if status.phase.as_deref() == Some("Running") && status.members.len() == 3 {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
    let mut roles: Vec<&str> = status.members.iter().map(|m| m.role.as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["Follower", "Follower", "Leader"]);
    assert!(
        status
            .members
            .iter()
            .all(|m| m.version == etcd.version.release() && m.status == "Running"),
        "{:?}",
        status.members
    );
    assert_eq!(status.ready_members.as_deref(), Some("3/3"));
    // What `kubectl get etcdclusters` shows, from the CRD's printer columns.
    let table = kube.kubectl(&["get", "etcdclusters", "-n", "kstone"]).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "PHASE", "READY", "AGE"], "{table}");
    assert_eq!(rows[1][..3], ["env-etcd", "Running", "3/3"], "{table}");
    assert_eq!(
        status.feature_gates_status.get("backup").map(String::as_str),
        Some("disabled")
    );
    assert_eq!(
        status.feature_gates_status.get("healthy").map(String::as_str),
        Some("enabled")
    );
    let labelled = clusters
        .get("env-etcd")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(labelled.get("healthy").map(String::as_str), Some("true"));
    assert_eq!(labelled.get("clusterType").map(String::as_str), Some("imported"));

    // Four EtcdInspections, owned by the cluster, and their metrics.
    let inspection_api: Api<EtcdInspection> = Api::namespaced(client.clone(), "kstone");
    let expected: Vec<String> = FEATURES.iter().map(|f| format!("env-etcd-{f}")).collect();
    wait_until("four inspections", Duration::from_secs(60), async || {
        let names = inspections(&inspection_api).await;
        if names == expected {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    wait_until(
        "healthy metrics and an inspection status",
        Duration::from_secs(60),
        async || {
            let series = host.scrape().await.all(HEALTHY, &[("clusterName", "env-etcd")]);
            let status = inspection_api
                .get("env-etcd-healthy")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if series.len() == 3 && series.iter().all(|(_, v)| *v == 1.0) && status.reason == "ok" {
                Ok(())
            } else {
                Err(format!("{series:?} {status:?}"))
            }
        },
    )
    .await;

    // Disabling a feature deletes its inspection and its series.
    let gates = "alarm=true,consistency=true,healthy=false,request=true";
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"featureGates": gates}}}));
    clusters
        .patch("env-etcd", &PatchParams::default(), &patch)
        .await
        .unwrap();
    wait_until("healthy disabled", Duration::from_secs(60), async || {
        let names = inspections(&inspection_api).await;
        let series = host.scrape().await.all(HEALTHY, &[]);
        if !names.contains(&"env-etcd-healthy".to_string()) && series.is_empty() {
            Ok(())
        } else {
            Err(format!("{names:?} {series:?}"))
        }
    })
    .await;

    // A Secret with a wrong CA: a condition naming the problem.
    let stranger = Pki::new("some-other-ca");
    let wrong = secret("env-etcd", &pki, &stranger.ca.cert);
    let current = secrets.get("env-etcd").await.unwrap();
    let wrong = Secret {
        metadata: current.metadata,
        ..wrong
    };
    secrets
        .replace("env-etcd", &PostParams::default(), &wrong)
        .await
        .unwrap();
    wait_until("a TLS condition", Duration::from_secs(60), async || {
        let ready = ready_condition(&clusters, "env-etcd").await?;
        if ready.status == "False" && ready.reason == "TLSError" && ready.message.contains("UnknownIssuer") {
            Ok(())
        } else {
            Err(format!("{ready:?}"))
        }
    })
    .await;

    // Deleting the cluster deletes its inspections (owner references) and every series.
    clusters.delete("env-etcd", &DeleteParams::default()).await.unwrap();
    wait_until("everything of env-etcd gone", Duration::from_secs(60), async || {
        let text = host.get("/metrics").await?;
        let left: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("clusterName=\"env-etcd\""))
            .collect();
        let names = inspections(&inspection_api).await;
        if left.is_empty() && names.is_empty() {
            Ok(())
        } else {
            Err(format!("{names:?} {left:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_replica_inspects_and_another_takes_over() {
    let etcd = Etcd::start(Options::new(1)).await;
    let kube = KubeApiServer::start().await;
    let client = kube.client().await;
    let yaml = cluster_manifest(
        "solo",
        &[
            ("importedAddr", &etcd.members[0].client_url),
            ("featureGates", "healthy=true"),
        ],
    );
    let cluster: EtcdCluster = serde_yaml::from_str(&yaml).unwrap();
    Api::<EtcdCluster>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    let kubeconfig = kube.host_kubeconfig();
    let flags = ["--lease-duration", "2", "--resync-interval", "1"];
    let plugins = [plugin_file("bundled", "healthy")];
    let mut hosts = vec![
        Host::kubernetes(&plugins, &kubeconfig, &flags).await,
        Host::kubernetes(&plugins, &kubeconfig, &flags).await,
    ];
    let inspecting = async |hosts: &[Host]| {
        let mut who = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if !h.scrape().await.all(HEALTHY, &[("clusterName", "solo")]).is_empty() {
                who.push(i);
            }
        }
        who
    };
    let leader = wait_until(
        "one replica inspects",
        Duration::from_secs(60),
        async || match inspecting(&hosts).await.as_slice() {
            [one] => Ok(*one),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // Both serve /metrics and /health; the follower keeps exporting nothing.
    for _ in 0..5 {
        assert_eq!(
            inspecting(&hosts).await,
            vec![leader],
            "exactly one replica may inspect"
        );
        assert_eq!(hosts[1 - leader].get("/health").await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The leader dies without releasing the lease; the other takes over once it expires.
    drop(hosts.remove(leader));
    wait_until(
        "the other replica takes over",
        Duration::from_secs(60),
        async || match inspecting(&hosts).await.as_slice() {
            [0] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_another_namespace_is_refused_with_the_flag_to_allow_it() {
    let kube = KubeApiServer::start().await;
    let client = kube.client().await;
    let yaml = cluster_manifest(
        "borrower",
        &[
            ("importedAddr", "https://127.0.0.1:1"),
            ("certName", "kube-system/etcd-certs"),
            ("featureGates", "healthy=true"),
        ],
    );
    let cluster: EtcdCluster = serde_yaml::from_str(&yaml).unwrap();
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), "default");
    clusters.create(&PostParams::default(), &cluster).await.unwrap();
    let _host = Host::kubernetes(
        &bundled(),
        &kube.host_kubeconfig(),
        &["--lease-duration", "2", "--resync-interval", "1"],
    )
    .await;
    wait_until(
        "a CredentialsUnavailable condition",
        Duration::from_secs(60),
        async || {
            let ready = ready_condition(&clusters, "borrower").await?;
            let expected = "cluster default/borrower: metadata.annotations.certName: \
                        Secret kube-system/etcd-certs is outside the cluster's namespace default; \
                        start etcd-inspector with --allow-cross-namespace-secrets to allow it";
            if ready.reason == "CredentialsUnavailable" && ready.message == expected {
                Ok(())
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;
    let inspection_api: Api<EtcdInspection> = Api::namespaced(client, "default");
    assert!(
        inspections(&inspection_api).await.is_empty(),
        "no inspection for a cluster that cannot be reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_and_registry_plugins_override_the_bundled_ones_and_rejections_become_events() {
    use crate::harness::registry::Registry;
    use crate::plugin_lifecycle::{new_build, plugin_status, sha256};
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::api::events::v1::Event;

    let kube = KubeApiServer::start().await;
    let client = kube.client().await;
    // A plugin published to a registry that wants a login, which the host
    // reads from a dockerconfigjson Secret.
    let registry = Registry::start("puller", "k8s-registry-pw").await;
    let login = registry.docker_config("login.json", "puller", "k8s-registry-pw");
    let db_quota = plugin_file("examples", "db-quota");
    let pushed = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-inspector"))
        .args([
            "plugin",
            "push",
            db_quota.to_str().unwrap(),
            &registry.reference("etcd/db-quota:1"),
        ])
        .args([
            "--registry-config",
            login.to_str().unwrap(),
            "--registry-ca",
            registry.ca_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let pinned = String::from_utf8(pushed.stdout).unwrap().trim().to_string();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kstone");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("registry-login".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(std::fs::read(&login).unwrap()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kstone");
    let original = std::fs::read(plugin_file("bundled", "healthy")).unwrap();
    let map = |bytes: Vec<u8>| ConfigMap {
        metadata: ObjectMeta {
            name: Some("inspector-plugins".into()),
            labels: Some([("etcd-inspector.io/plugin".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        binary_data: Some([("healthy.wasm".to_string(), ByteString(bytes))].into()),
        ..Default::default()
    };
    // The image's bundled plugins: what serves before any ConfigMap.
    let work = tempfile::tempdir().unwrap();
    let bundled = work.path().join("bundled");
    std::fs::create_dir_all(&bundled).unwrap();
    std::fs::write(bundled.join("healthy.wasm"), &original).unwrap();
    let plugin_dir = work.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let flags = [
        "--plugin-dir",
        plugin_dir.to_str().unwrap(),
        "--bundled-plugins",
        bundled.to_str().unwrap(),
        "--plugin-configmaps",
        "etcd-inspector.io/plugin=true",
        "--lease-duration",
        "2",
        "--registry-secret",
        "registry-login",
        "--registry-ca",
        registry.ca_file.to_str().unwrap(),
        "--plugin-oci",
        &format!("db-quota={pinned}"),
    ];
    let host = Host::kubernetes(&[], &kube.host_kubeconfig(), &flags).await;
    let from_registry = plugin_status(&host, "/db-quota.wasm").await.unwrap_or_default();
    assert_eq!(
        from_registry["serving"]["sha256"],
        sha256(&std::fs::read(&db_quota).unwrap()),
        "pulled with the Secret's login before the host serves: {from_registry}"
    );
    assert_eq!(from_registry["source"]["reference"], pinned.as_str(), "{from_registry}");
    assert!(!host.log().contains("k8s-registry-pw"), "no password in the log");
    let serving = async |expected: &str| {
        let status = plugin_status(&host, "/healthy.wasm").await.unwrap_or_default();
        if status["serving"]["sha256"] == expected && status["state"] == "active" {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    };
    wait_until("the bundled plugin serves", Duration::from_secs(60), async || {
        serving(&sha256(&original)).await
    })
    .await;

    // A corrupt override from a ConfigMap: the bundled version keeps
    // serving and an Event says why.
    maps.create(&PostParams::default(), &map(b"not wasm at all".to_vec()))
        .await
        .unwrap();
    let replace = async |bytes: Vec<u8>| {
        let current = maps.get("inspector-plugins").await.unwrap();
        let next = ConfigMap {
            metadata: current.metadata,
            ..map(bytes)
        };
        maps.replace("inspector-plugins", &PostParams::default(), &next)
            .await
            .unwrap();
    };
    let events: Api<Event> = Api::namespaced(client.clone(), "kstone");
    wait_until(
        "a PluginRejected event on the ConfigMap",
        Duration::from_secs(60),
        async || {
            let list = events.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let found = list
                .items
                .iter()
                .find(|e| e.reason.as_deref() == Some("PluginRejected"));
            match found {
                Some(e) => {
                    let note = e.note.clone().unwrap_or_default();
                    let regarding = e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                    assert!(note.contains("healthy.wasm: not a WebAssembly file"), "{note}");
                    assert!(
                        note.contains(&format!("version {} keeps serving", sha256(&original))),
                        "{note}"
                    );
                    assert_eq!(regarding, "inspector-plugins");
                    Ok(())
                }
                None => Err(format!("{} events", list.items.len())),
            }
        },
    )
    .await;
    let status = plugin_status(&host, "/healthy.wasm").await.unwrap();
    assert_eq!(
        status["serving"]["sha256"],
        sha256(&original),
        "the old version keeps serving: {status}"
    );

    // A good new version serves (how fast is bench C's to measure).
    let v2 = new_build(&original, "v2");
    replace(v2.clone()).await;
    wait_until("the new version serves", Duration::from_secs(60), async || {
        serving(&sha256(&v2)).await
    })
    .await;

    // Deleting the ConfigMap brings the bundled version back.
    maps.delete("inspector-plugins", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        "the bundled version serves again",
        Duration::from_secs(60),
        async || serving(&sha256(&original)).await,
    )
    .await;
}

/// One cluster name in two namespaces: series carry clusterName only, so
/// the second is refused in Kubernetes mode as in standalone mode, and its
/// status says why; the first keeps its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_name_used_in_two_namespaces_is_refused_with_a_condition() {
    let etcd = Etcd::start(Options::new(1)).await;
    let kube = KubeApiServer::start().await;
    let client = kube.client().await;
    let yaml = cluster_manifest(
        "prod",
        &[
            ("importedAddr", &etcd.members[0].client_url),
            ("featureGates", "healthy=true"),
        ],
    );
    for namespace in ["team-a", "team-b"] {
        kube.namespace(namespace);
        let mut cluster: EtcdCluster = serde_yaml::from_str(&yaml).unwrap();
        cluster.metadata.namespace = Some(namespace.into());
        let api: Api<EtcdCluster> = Api::namespaced(client.clone(), namespace);
        api.create(&PostParams::default(), &cluster).await.unwrap();
    }
    let host = Host::kubernetes(
        &bundled(),
        &kube.host_kubeconfig(),
        &["--lease-duration", "2", "--resync-interval", "1"],
    )
    .await;
    let (a, b): (Api<EtcdCluster>, Api<EtcdCluster>) = (
        Api::namespaced(client.clone(), "team-a"),
        Api::namespaced(client.clone(), "team-b"),
    );
    wait_until("one DuplicateName condition", Duration::from_secs(60), async || {
        let reasons = (
            ready_condition(&a, "prod").await?.reason,
            ready_condition(&b, "prod").await?.reason,
        );
        let series = host.scrape().await.all(HEALTHY, &[("clusterName", "prod")]).len();
        match (reasons.0.as_str(), reasons.1.as_str()) {
            ("DuplicateName", "AllMembersHealthy") | ("AllMembersHealthy", "DuplicateName") if series == 1 => Ok(()),
            _ => Err(format!("{reasons:?}, {series} series")),
        }
    })
    .await;
    let refused = match ready_condition(&a, "prod").await.unwrap() {
        c if c.reason == "DuplicateName" => c,
        _ => ready_condition(&b, "prod").await.unwrap(),
    };
    assert!(
        refused
            .message
            .contains("clusterName \"prod\" is already used by cluster team-"),
        "{refused:?}"
    );
}

//! request.wasm under the host's watch: exact counts under a known
//! workload, recovery after a compaction while disconnected, and clean-up
//! when the feature is disabled; and the same counts from one watch per
//! round (`--watch-mode rounds`).

use std::time::Duration;

use crate::harness::etcd::{member_metrics, EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::proxy::Proxy;
use crate::harness::{plugin_file, wait_until};

const KEYS: &str = "inspection_etcd_key_total";
const REQUESTS: &str = "inspection_etcd_request_total";

/// Waits until each (metric, labels…, value) holds for cluster "prod".
async fn expect(host: &Host, expected: &[(&str, &[&str], f64)]) {
    wait_until(&format!("{expected:?}"), Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        for (metric, labels, value) in expected {
            let mut want = vec![("clusterName", "prod")];
            let names: &[&str] = if *metric == KEYS {
                &["etcdPrefix", "resourceName"]
            } else {
                &["grpcMethod", "etcdPrefix", "resourceName"]
            };
            want.extend(names.iter().copied().zip(labels.iter().copied()));
            let got = scrape.get(metric, &want);
            if got != Some(*value) {
                return Err(format!("{metric}{labels:?} = {got:?}, want {value}"));
            }
        }
        Ok(())
    })
    .await;
}

async fn put(client: &mut etcd_client::Client, key: &str) {
    client.put(key, "v", None).await.unwrap();
}

async fn delete(client: &mut etcd_client::Client, key: &str) {
    client.delete(key, None).await.unwrap();
}

fn request_cluster(url: &str, extra: &[(&str, &str)]) -> String {
    let mut annotations = vec![
        ("importedAddr", url),
        ("featureGates", "request=true"),
        ("request", r#"{"path":"/registry/"}"#),
    ];
    annotations.extend_from_slice(extra);
    cluster_manifest("prod", &annotations)
}

/// A one-member etcd that the host reaches only through a proxy the test
/// can cut, with pods p0..p3 written. The member advertises its own
/// address; the cluster manifest's extClientURL rewrites it to the proxy.
struct BehindProxy {
    etcd: EtcdCluster,
    proxy: Proxy,
    client: etcd_client::Client,
    /// The EtcdCluster manifest (cluster "prod") pointing at the proxy.
    cluster: String,
}

impl BehindProxy {
    async fn start(version: Version) -> Self {
        let etcd = EtcdCluster::start(Options::new(1).version(version)).await;
        let member_url = etcd.members[0].client_url.clone();
        let member_addr: std::net::SocketAddr = member_url.trim_start_matches("http://").parse().unwrap();
        let proxy = Proxy::start(member_addr).await;
        let proxied = format!("127.0.0.1:{}", proxy.port);
        let mut client = etcd.client().await;
        for i in 0..4 {
            put(&mut client, &format!("/registry/pods/default/p{i}")).await;
        }
        let rewrite = format!("{member_addr}->{proxied}");
        let cluster = request_cluster(&format!("http://{proxied}"), &[("extClientURL", &rewrite)]);
        BehindProxy {
            etcd,
            proxy,
            client,
            cluster,
        }
    }

    /// The member's own client URL, not the proxy's.
    fn member_url(&self) -> &str {
        &self.etcd.members[0].client_url
    }

    /// Compacts at the latest revision while the host is cut off (after
    /// [`Proxy::cut`]), then lets the host back in.
    fn compact_and_restore(&self) {
        let revision = self.etcd.status()[0].1.to_string();
        self.etcd
            .etcdctl(&["--endpoints", self.member_url(), "compact", &revision])
            .unwrap();
        self.proxy.restore();
    }
}

/// The host found the history compacted and counted afresh.
fn assert_recounted(host: &Host) {
    assert!(
        host.log().contains("history compacted at"),
        "the host must recount after a compaction:\n{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_gives_exact_key_and_request_counts() {
    let etcd = EtcdCluster::start(Options::new(3)).await;
    let mut client = etcd.client().await;
    for i in 0..5 {
        put(&mut client, &format!("/registry/pods/default/p{i}")).await;
    }
    for i in 0..2 {
        put(
            &mut client,
            &format!("/registry/apiextensions.k8s.io/customresourcedefinitions/crd{i}"),
        )
        .await;
        put(&mut client, &format!("/registry/services/endpoints/default/e{i}")).await;
    }
    for i in 0..3 {
        put(
            &mut client,
            &format!("/registry/stable.example.com/crontabs/default/c{i}"),
        )
        .await;
    }
    put(&mut client, "/other/outside-the-path").await;
    let manifests = [("cluster.yaml", request_cluster(&etcd.members[0].client_url, &[]))];
    let host = Host::start(&[plugin_file("bundled", "request")], &manifests, &[]).await;

    let crd = "customresourcedefinitions.apiextensions.k8s.io";
    let crontabs = "crontabs.stable.example.com";
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 5.0),
            (KEYS, &["registry", crd], 2.0),
            (KEYS, &["registry", "endpoints"], 2.0),
            (KEYS, &["registry", crontabs], 3.0),
        ],
    )
    .await;
    assert_eq!(
        host.scrape().await.all(KEYS, &[("etcdPrefix", "other")]),
        vec![],
        "outside the request path"
    );

    // Creates, overwrites and deletes.
    for i in 5..8 {
        put(&mut client, &format!("/registry/pods/default/p{i}")).await;
    }
    put(&mut client, "/registry/pods/default/p0").await;
    put(&mut client, "/registry/pods/default/p1").await;
    delete(&mut client, "/registry/pods/default/p2").await;
    put(&mut client, "/registry/stable.example.com/crontabs/default/c9").await;
    delete(&mut client, "/registry/services/endpoints/default/e0").await;
    delete(&mut client, "/registry/services/endpoints/default/e1").await;
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 7.0),
            (REQUESTS, &["PUT", "registry", "pods"], 5.0),
            (REQUESTS, &["Delete", "registry", "pods"], 1.0),
            (KEYS, &["registry", crontabs], 4.0),
            (REQUESTS, &["PUT", "registry", crontabs], 1.0),
            (KEYS, &["registry", "endpoints"], 0.0),
            (REQUESTS, &["Delete", "registry", "endpoints"], 2.0),
            (KEYS, &["registry", crd], 2.0),
        ],
    )
    .await;
}

async fn a_compaction_while_disconnected_is_recounted_exactly(version: Version) {
    let mut member = BehindProxy::start(version).await;
    let manifests = [("cluster.yaml", member.cluster.clone())];
    let host = Host::start(
        &[plugin_file("bundled", "request")],
        &manifests,
        &["--etcd-timeout", "1"],
    )
    .await;
    expect(&host, &[(KEYS, &["registry", "pods"], 4.0)]).await;
    put(&mut member.client, "/registry/pods/default/p4").await;
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 5.0),
            (REQUESTS, &["PUT", "registry", "pods"], 1.0),
        ],
    )
    .await;

    member.proxy.cut();
    for i in 5..9 {
        put(&mut member.client, &format!("/registry/pods/default/p{i}")).await;
    }
    delete(&mut member.client, "/registry/pods/default/p0").await;
    put(&mut member.client, "/registry/configmaps/default/c0").await;
    member.compact_and_restore();

    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 8.0),
            (KEYS, &["registry", "configmaps"], 1.0),
        ],
    )
    .await;
    assert_recounted(&host);
    // Counting continues from the recount.
    delete(&mut member.client, "/registry/pods/default/p1").await;
    expect(&host, &[(KEYS, &["registry", "pods"], 7.0)]).await;
}
on_every_etcd!(a_compaction_while_disconnected_is_recounted_exactly);

/// Watchers etcd serves now, from the member's own /metrics.
async fn etcd_watchers(member_url: &str) -> f64 {
    member_metrics(member_url)
        .await
        .get("etcd_debugging_mvcc_watcher_total", &[])
        .unwrap_or(0.0)
}

/// `--watch-mode rounds`: each round's watch delivers the events since the
/// last one, exactly, and closes once caught up, so etcd serves no watcher
/// between rounds; history compacted between two rounds is recounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_mode_counts_exactly_and_holds_no_watch_between_rounds() {
    let mut member = BehindProxy::start(Version::default()).await;
    let manifests = [
        ("cluster.yaml", member.cluster.clone()),
        ("request.yaml", inspection_manifest("prod", "request", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "request")],
        &manifests,
        &["--watch-mode", "rounds", "--etcd-timeout", "1"],
    )
    .await;
    expect(&host, &[(KEYS, &["registry", "pods"], 4.0)]).await;
    for i in 4..7 {
        put(&mut member.client, &format!("/registry/pods/default/p{i}")).await;
    }
    put(&mut member.client, "/registry/pods/default/p0").await;
    delete(&mut member.client, "/registry/pods/default/p1").await;
    put(&mut member.client, "/registry/configmaps/default/c0").await;
    // The request counts come only from events: a census does not count them.
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 6.0),
            (REQUESTS, &["PUT", "registry", "pods"], 4.0),
            (REQUESTS, &["Delete", "registry", "pods"], 1.0),
            (KEYS, &["registry", "configmaps"], 1.0),
            (REQUESTS, &["PUT", "registry", "configmaps"], 1.0),
        ],
    )
    .await;
    wait_until(
        "no watcher between rounds",
        Duration::from_secs(30),
        async || match etcd_watchers(member.member_url()).await {
            0.0 => Ok(()),
            w => Err(format!("{w} watchers")),
        },
    )
    .await;

    member.proxy.cut();
    for i in 7..9 {
        put(&mut member.client, &format!("/registry/pods/default/p{i}")).await;
    }
    delete(&mut member.client, "/registry/configmaps/default/c0").await;
    member.compact_and_restore();
    expect(&host, &[(KEYS, &["registry", "pods"], 8.0)]).await;
    assert_recounted(&host);
    let configmaps = [
        ("clusterName", "prod"),
        ("etcdPrefix", "registry"),
        ("resourceName", "configmaps"),
    ];
    assert_eq!(
        host.scrape().await.get(KEYS, &configmaps),
        None,
        "the recount finds no configmap left"
    );
    // Events after the recount are counted again.
    delete(&mut member.client, "/registry/pods/default/p2").await;
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 7.0),
            (REQUESTS, &["Delete", "registry", "pods"], 2.0),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_request_closes_the_watch_and_deletes_the_series() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let url = etcd.members[0].client_url.clone();
    let mut client = etcd.client().await;
    put(&mut client, "/registry/pods/default/p0").await;
    let manifests = [("cluster.yaml", request_cluster(&url, &[]))];
    let host = Host::start(
        &[plugin_file("bundled", "request")],
        &manifests,
        &["--rescan-interval", "0.5"],
    )
    .await;
    expect(&host, &[(KEYS, &["registry", "pods"], 1.0)]).await;
    put(&mut client, "/registry/pods/default/p1").await;
    expect(
        &host,
        &[
            (KEYS, &["registry", "pods"], 2.0),
            (REQUESTS, &["PUT", "registry", "pods"], 1.0),
        ],
    )
    .await;
    assert!(etcd_watchers(&url).await >= 1.0, "the host watches etcd");

    let disabled = cluster_manifest(
        "prod",
        &[
            ("importedAddr", &url),
            ("featureGates", "request=false"),
            ("request", r#"{"path":"/registry/"}"#),
        ],
    );
    std::fs::write(host.manifest_dir().join("cluster.yaml"), disabled).unwrap();
    wait_until(
        "series deleted and the watch closed",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            let left = scrape.all(KEYS, &[]).len() + scrape.all(REQUESTS, &[]).len();
            let w = etcd_watchers(&url).await;
            if left == 0 && w == 0.0 {
                Ok(())
            } else {
                Err(format!("{left} series left, {w} watchers"))
            }
        },
    )
    .await;
}

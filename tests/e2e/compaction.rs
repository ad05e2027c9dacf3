//! compaction.wasm: the compact revision and the history kept since, before
//! and after a real compaction, on every etcd version.

use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

async fn history_since_the_last_compaction_is_reported(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let mut client = etcd.client().await;
    for i in 0..30 {
        client.put(format!("/k/{i}"), "x", None).await.unwrap();
    }
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("compaction.yaml", inspection_manifest("prod", "compaction", 1)),
    ];
    let host = Host::start(&[plugin_file("bundled", "compaction")], &manifests, &[]).await;
    let expect = async |compacted: f64, since: f64| {
        wait_until(
            &format!("compacted at {compacted}, {since} since"),
            Duration::from_secs(60),
            async || {
                let scrape = host.scrape().await;
                let got = (
                    scrape.get("inspection_etcd_compact_revision", &[("clusterName", "prod")]),
                    scrape.get("inspection_etcd_revisions_since_compaction", &[("clusterName", "prod")]),
                );
                (got == (Some(compacted), Some(since)))
                    .then_some(())
                    .ok_or(format!("{got:?}"))
            },
        )
        .await
    };
    let current = etcd.status()[0].1;
    expect(0.0, current as f64).await;
    let compact = current - 10;
    client.compact(compact as i64, None).await.unwrap();
    expect(compact as f64, 10.0).await;
}
on_every_etcd!(history_since_the_last_compaction_is_reported);

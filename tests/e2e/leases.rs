//! leases.wasm on real leases: every lease counted, their granted TTLs and
//! the ones without keys exact when a round sees them all; with fewer asked
//! about per round than there are leases, a round asks about that many and
//! scales what it saw to the total.

use std::time::Duration;

use etcd_client::PutOptions;

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const LEASES: &str = "inspection_etcd_leases";
const BY_TTL: &str = "inspection_etcd_leases_by_granted_ttl";
const WITHOUT_KEYS: &str = "inspection_etcd_leases_without_keys";

async fn leases_are_counted_by_ttl_and_keys(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let mut client = etcd.client().await;
    // 10 leases of 4 min with no key, 10 of 10 min and 40 of 2 h with one key each.
    for (count, ttl, keys) in [(10, 240, false), (10, 600, true), (40, 7200, true)] {
        for i in 0..count {
            let lease = client.lease_grant(ttl, None).await.unwrap().id();
            if keys {
                let options = PutOptions::new().with_lease(lease);
                client
                    .put(format!("/leased/{ttl}/{i}"), "x", Some(options))
                    .await
                    .unwrap();
            }
        }
    }
    let url = etcd.members[0].client_url.clone();
    let manifests = [
        ("all.yaml", cluster_manifest("all", &[("importedAddr", &url)])),
        (
            "few.yaml",
            cluster_manifest(
                "few",
                &[("importedAddr", &url), ("etcd-inspector.io/leases-per-round", "15")],
            ),
        ),
        ("i1.yaml", inspection_manifest("all", "leases", 1)),
        ("i2.yaml", inspection_manifest("few", "leases", 1)),
    ];
    let host = Host::start(&[plugin_file("bundled", "leases")], &manifests, &[]).await;

    let exact = [
        ("60", 0.0),
        ("300", 10.0),
        ("900", 20.0),
        ("3600", 20.0),
        ("86400", 60.0),
    ];
    wait_until("every lease counted", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let seen = (
            s.get(LEASES, &[("clusterName", "few")]),
            s.get(LEASES, &[("clusterName", "all")]),
            s.get(WITHOUT_KEYS, &[("clusterName", "all")]),
        );
        (seen == (Some(60.0), Some(60.0), Some(10.0)))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    let s = host.scrape().await;
    for (le, expected) in &exact {
        assert_eq!(
            s.get(BY_TTL, &[("clusterName", "all"), ("le", le)]),
            Some(*expected),
            "le={le}"
        );
    }
    // The sampled cluster: 15 leases a round, the estimate scaled to 60.
    assert_eq!(
        s.get("inspection_etcd_leases_sampled", &[("clusterName", "few")]),
        Some(15.0)
    );
    let estimate = s.get(BY_TTL, &[("clusterName", "few"), ("le", "86400")]).unwrap();
    assert_eq!(estimate, 60.0, "every lease is granted for less than a day");
    let short = s.get(BY_TTL, &[("clusterName", "few"), ("le", "300")]).unwrap();
    assert!(
        [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0].contains(&short),
        "a multiple of 60/15 of the short leases sampled: {short}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_counted_by_ttl_and_keys_on_3_6() {
    leases_are_counted_by_ttl_and_keys(Version::V3_6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_counted_by_ttl_and_keys_on_3_4() {
    leases_are_counted_by_ttl_and_keys(Version::V3_4).await
}

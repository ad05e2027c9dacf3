//! latency.wasm: every member's serializable and linearizable read timed,
//! on every etcd version; a frozen member's series leave, the others stay.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::metrics::Scrape;
use crate::harness::{plugin_file, wait_until};

const READ_LATENCY: &str = "inspection_etcd_read_latency_seconds";

fn timed(scrape: &Scrape, member: &str, kind: &str) -> Option<f64> {
    scrape.get(
        READ_LATENCY,
        &[("clusterName", "prod"), ("member", member), ("kind", kind)],
    )
}

async fn each_member_and_kind_of_read_is_timed(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("latency.yaml", inspection_manifest("prod", "latency", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "latency")],
        &manifests,
        &["--etcd-timeout", "1"],
    )
    .await;
    let all = ["m0", "m1", "m2"];
    wait_until("six timings", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let values: Vec<Option<f64>> = all
            .iter()
            .flat_map(|m| [timed(&scrape, m, "serializable"), timed(&scrape, m, "linearizable")])
            .collect();
        // A real read on loopback: more than nothing, well under a second.
        let plausible = values.iter().all(|v| v.is_some_and(|s| s > 0.0 && s < 1.0));
        plausible.then_some(()).ok_or(format!("{values:?}"))
    })
    .await;

    let frozen = (etcd.leader_index() + 1) % 3;
    etcd.signal(frozen, Signal::SIGSTOP);
    let frozen_name = format!("m{frozen}");
    wait_until(
        "the frozen member's timings leave",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            let gone = timed(&scrape, &frozen_name, "serializable").is_none();
            let others = all
                .iter()
                .filter(|m| **m != frozen_name)
                .all(|m| timed(&scrape, m, "linearizable").is_some());
            (gone && others)
                .then_some(())
                .ok_or(format!("{:?}", scrape.all(READ_LATENCY, &[])))
        },
    )
    .await;
    etcd.signal(frozen, Signal::SIGCONT);
}
on_every_etcd!(each_member_and_kind_of_read_is_timed);

//! membership.wasm on real members: a learner added with `etcdctl member
//! add --learner` is counted before it starts, measured while it catches
//! up and gone once promoted; a moved leader is counted; a 3.5 cluster
//! with one member upgraded to 3.6 shows its versions and their skew.

use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::metrics::Scrape;
use crate::harness::{plugin_file, wait_until};

const MEMBERS: &str = "inspection_etcd_members";
const NOT_STARTED: &str = "inspection_etcd_members_not_started";
const GAP: &str = "inspection_etcd_learner_raft_index_gap";
const VERSION: &str = "inspection_etcd_member_version_info";

async fn host_for(etcd: &EtcdCluster) -> Host {
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("membership.yaml", inspection_manifest("prod", "membership", 1)),
    ];
    Host::start(&[plugin_file("bundled", "membership")], &manifests, &[]).await
}

fn prod(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut all = vec![("clusterName", "prod")];
    all.extend_from_slice(labels);
    scrape.get(name, &all)
}

async fn a_learner_is_seen_from_added_to_promoted(version: Version) {
    let mut etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let host = host_for(&etcd).await;
    let scrape = wait_until("three voters that agree", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let seen = (
            prod(&s, MEMBERS, &[("role", "voter")]),
            prod(&s, MEMBERS, &[("role", "learner")]),
            prod(&s, "inspection_etcd_member_list_disagreement", &[]),
            prod(&s, "inspection_etcd_member_has_leader", &[("member", "m2")]),
        );
        (seen == (Some(3.0), Some(0.0), Some(0.0), Some(1.0)))
            .then_some(s.clone())
            .ok_or(format!("{seen:?}"))
    })
    .await;
    assert_eq!(prod(&scrape, "inspection_etcd_version_skew", &[]), Some(0.0));
    let release = version.release();
    // A new 3.6 cluster bootstraps on the 3.5 schema and moves its storage
    // version up some seconds after the cluster version is set: 3.5.0 is
    // what members report meanwhile (seen here), 3.6.0 after.
    let storage = if version >= Version::V3_6 {
        format!("{}.0", version.line())
    } else {
        String::new()
    };
    wait_until("every member's storage version", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let settled = ["m0", "m1", "m2"].iter().all(|m| {
            prod(
                &s,
                VERSION,
                &[("member", m), ("version", &release), ("storage_version", &storage)],
            ) == Some(1.0)
        });
        settled.then_some(()).ok_or(format!("{:?}", s.all(VERSION, &[])))
    })
    .await;

    // Announced, not started: a learner nobody runs yet.
    let added = etcd.add_member(true).await;
    let id = format!("{:x}", added.id);
    wait_until("the announced learner", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let seen = (prod(&s, MEMBERS, &[("role", "learner")]), prod(&s, NOT_STARTED, &[]));
        (seen == (Some(1.0), Some(1.0)))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;

    // History for it to catch up on, then it starts.
    let mut client = etcd.client().await;
    for i in 0..300 {
        client
            .put(format!("/history/{i}"), vec![b'x'; 1024], None)
            .await
            .unwrap();
    }
    etcd.start_member(added, version);
    let gap = wait_until("the started learner caught up", Duration::from_secs(90), async || {
        let s = host.scrape().await;
        match (prod(&s, NOT_STARTED, &[]), prod(&s, GAP, &[("member", "m3")])) {
            (Some(0.0), Some(gap)) if gap < 50.0 => Ok(gap),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(gap >= 0.0);

    let endpoints = etcd.endpoints();
    // A learner is promoted once it has caught up; etcd refuses before.
    wait_until("the learner promoted", Duration::from_secs(60), async || {
        etcd.etcdctl(&["--endpoints", &endpoints, "member", "promote", &id])
            .map(|_| ())
    })
    .await;
    wait_until("four voters, no learner", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let seen = (
            prod(&s, MEMBERS, &[("role", "voter")]),
            prod(&s, MEMBERS, &[("role", "learner")]),
            prod(&s, GAP, &[("member", "m3")]),
        );
        (seen == (Some(4.0), Some(0.0), None))
            .then_some(())
            .ok_or(format!("{seen:?}"))
    })
    .await;

    // Leadership handed to another member is one leader change.
    let changes = |s: &Scrape| prod(s, "inspection_etcd_leader_changes_total", &[]).unwrap_or(0.0);
    let before = changes(&host.scrape().await);
    let leader = etcd.leader_index();
    let target = etcd.status()[(leader + 1) % 3].0;
    let leader_url = etcd.members[leader].client_url.clone();
    etcd.etcdctl(&["--endpoints", &leader_url, "move-leader", &format!("{target:x}")])
        .unwrap();
    wait_until("the leader change counted", Duration::from_secs(60), async || {
        let now = changes(&host.scrape().await);
        (now == before + 1.0).then_some(()).ok_or(format!("{before} -> {now}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_seen_from_added_to_promoted_on_3_6() {
    a_learner_is_seen_from_added_to_promoted(Version::V3_6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_seen_from_added_to_promoted_on_3_4() {
    a_learner_is_seen_from_added_to_promoted(Version::V3_4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_upgraded_to_3_6_in_a_3_5_cluster_shows_the_skew() {
    let mut etcd = EtcdCluster::start(Options::new(3).version(Version::V3_5)).await;
    let host = host_for(&etcd).await;
    wait_until("one version", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let skew = prod(&s, "inspection_etcd_version_skew", &[]);
        (skew == Some(0.0)).then_some(()).ok_or(format!("{skew:?}"))
    })
    .await;

    // One step of a rolling upgrade: m2 restarts on 3.6 with its data.
    etcd.restart_member(2, Version::V3_6).await;
    let (old, new) = (Version::V3_5.release(), Version::V3_6.release());
    let scrape = wait_until("two versions", Duration::from_secs(60), async || {
        let s = host.scrape().await;
        let skew = prod(&s, "inspection_etcd_version_skew", &[]);
        let upgraded = s.all(VERSION, &[("clusterName", "prod"), ("member", "m2"), ("version", &new)]);
        (skew == Some(1.0) && upgraded.len() == 1)
            .then_some(s.clone())
            .ok_or(format!("skew {skew:?}, {:?}", s.all(VERSION, &[])))
    })
    .await;
    assert_eq!(
        scrape.all(VERSION, &[("clusterName", "prod"), ("version", &old)]).len(),
        2,
        "m0 and m1 still run {old}"
    );
    // A 3.6 member reports the storage version of the cluster it joined;
    // the 3.5 members report none.
    let upgraded = &scrape.all(VERSION, &[("clusterName", "prod"), ("member", "m2")])[0].0;
    assert!(upgraded["storage_version"].starts_with("3."), "{upgraded:?}");
    assert_eq!(
        prod(&scrape, "inspection_etcd_downgrade_enabled", &[("target_version", "")]),
        Some(0.0),
        "the 3.6 member reports no downgrade"
    );
}

//! consistency.wasm on a real 3-member cluster: idle, busy, and with a
//! frozen member.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::etcd::{member_metrics, EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::metrics::Scrape;
use crate::harness::{plugin_file, wait_until};

const KEY_DIFF: &str = "inspection_etcd_node_diff_total";
const REVISION_DIFF: &str = "inspection_etcd_node_revision_diff_total";
const APPLIED_DIFF: &str = "inspection_etcd_node_raft_applied_index_diff_total";
const RAFT_DIFF: &str = "inspection_etcd_node_raft_index_diff_total";
const CONSISTENT: &str = "inspection_etcd_hashkv_consistent";
const NOT_COMPARABLE: &str = "inspection_etcd_hashkv_not_comparable";
const REVISION: &str = "inspection_etcd_consistency_revision";

async fn start(etcd: &EtcdCluster) -> Host {
    start_with_timeout(etcd, "1").await
}

/// `etcd_timeout`: seconds per etcd call. One second makes the frozen
/// member's rounds quick; under a busy writer on a starved machine a Count
/// may take longer, which is a missing reading, not what a test is about.
async fn start_with_timeout(etcd: &EtcdCluster, etcd_timeout: &str) -> Host {
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("consistency.yaml", inspection_manifest("prod", "consistency", 1)),
    ];
    Host::start(
        &[plugin_file("bundled", "consistency")],
        &manifests,
        &["--etcd-timeout", etcd_timeout],
    )
    .await
}

fn cluster(scrape: &Scrape, name: &str) -> Option<f64> {
    scrape.get(name, &[("clusterName", "prod")])
}

async fn write_keys(etcd: &EtcdCluster, n: usize) {
    let mut client = etcd.client().await;
    for i in 0..n {
        client
            .put(format!("/registry/pods/default/p{i}"), "x", None)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_reads_zero_everywhere_and_consistent() {
    let etcd = EtcdCluster::start(Options::new(3)).await;
    write_keys(&etcd, 40).await;
    let host = start(&etcd).await;
    let scrape = wait_until("a comparison with every member", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        match cluster(&scrape, CONSISTENT) {
            Some(_) => Ok(scrape),
            None => Err(format!("{:?}", cluster(&scrape, NOT_COMPARABLE))),
        }
    })
    .await;
    for name in [KEY_DIFF, REVISION_DIFF, APPLIED_DIFF, RAFT_DIFF, NOT_COMPARABLE] {
        assert_eq!(cluster(&scrape, name), Some(0.0), "{name}");
    }
    assert_eq!(cluster(&scrape, CONSISTENT), Some(1.0));
    for member in ["m0", "m1", "m2"] {
        let labels = [("clusterName", "prod"), ("member", member)];
        assert_eq!(
            scrape.get("inspection_etcd_member_key_total", &labels),
            Some(40.0),
            "{member}"
        );
        assert_eq!(
            scrape.get("inspection_etcd_member_reachable", &labels),
            Some(1.0),
            "{member}"
        );
    }
}

/// A client writing as fast as it can (500 keys, rewritten in turn) until
/// stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    async fn start(etcd: &EtcdCluster) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut client = etcd.client().await;
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    client
                        .put(format!("/registry/events/default/e{}", n % 500), n.to_string(), None)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        };
        Writer { stop, task }
    }

    fn assert_writing(&self) {
        assert!(!self.task.is_finished(), "the writer failed");
    }

    /// Stops it; how many writes it made.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// What the comparison of one round must read on a busy healthy cluster.
fn assert_no_false_difference(scrape: &Scrape, revision: f64) {
    assert_eq!(cluster(scrape, KEY_DIFF), Some(0.0), "key diff at revision {revision}");
    assert_eq!(
        cluster(scrape, REVISION_DIFF),
        Some(0.0),
        "revision diff at revision {revision}"
    );
    assert_eq!(cluster(scrape, CONSISTENT), Some(1.0), "HashKV at revision {revision}");
}

async fn a_busy_cluster_shows_no_false_key_or_revision_difference(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    // Once on a slow VM a round under the writer lacked the key difference
    // (fewer than two Counts answered), most likely a Count past the one
    // second of `start`: this test gets the host's default, 3 s.
    let host = start_with_timeout(&etcd, "3").await;
    let writer = Writer::start(&etcd).await;
    // Watch at least six inspection rounds while the writer runs.
    let mut rounds = BTreeSet::new();
    while rounds.len() < 6 {
        let scrape = host.scrape().await;
        if let Some(revision) = cluster(&scrape, REVISION) {
            if rounds.insert(revision as u64) {
                assert_no_false_difference(&scrape, revision);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.assert_writing();
    }
    let writes = writer.stop().await;
    let spread = rounds.last().unwrap() - rounds.first().unwrap();
    assert!(
        spread > 100,
        "the rounds must be under load: only {spread} revisions ({writes} writes)"
    );
}
on_every_etcd!(a_busy_cluster_shows_no_false_key_or_revision_difference);

/// `alarm` and `consistency` ask every member for its Status at the start
/// of each round (their rounds fall together). Where one asked after the
/// other's previous etcd call returned, the other takes that answer rather
/// than asking again: etcd, counting the Status calls it served, sees what
/// the two plugins asked for less what the host says it shared; and the
/// shared readings leave a busy cluster without false differences (the
/// lag bound needs each second-round reading to follow every first-round
/// one, which a shared answer also does).
async fn alarm_and_consistency_share_status_answers_on_a_busy_cluster(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("alarm.yaml", inspection_manifest("prod", "alarm", 1)),
        ("consistency.yaml", inspection_manifest("prod", "consistency", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "alarm"), plugin_file("bundled", "consistency")],
        &manifests,
        // One thread, as in a pod with the chart's CPU limit: a call that
        // waits for another's answer must not hold up the one asking.
        &["--etcd-timeout", "3", "--worker-threads", "1"],
    )
    .await;
    let writer = Writer::start(&etcd).await;
    let served = async || etcd_served(&etcd, "grpc_server_handled_total", "Status").await;
    // Status calls the plugins asked for, and how many the host shared.
    let asked = |scrape: &Scrape| {
        let rounds = |plugin: &str| -> f64 {
            scrape
                .all("etcd_inspector_plugin_invocations_total", &[("plugin", plugin)])
                .iter()
                .map(|(_, n)| n)
                .sum()
        };
        let shared = scrape
            .get("etcd_inspector_etcd_answers_shared_total", &[])
            .unwrap_or(0.0);
        (
            3.0 * rounds("alarm") + 6.0 * rounds("consistency"),
            rounds("consistency"),
            shared,
        )
    };
    let first = wait_until("a first comparison", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        cluster(&scrape, REVISION)
            .map(|_| scrape)
            .ok_or_else(|| "no round yet".to_string())
    })
    .await;
    let (asked_before, rounds_before, shared_before) = asked(&first);
    let served_before = served().await;
    let mut seen = BTreeSet::new();
    let last = loop {
        let scrape = host.scrape().await;
        if let Some(revision) = cluster(&scrape, REVISION) {
            if seen.insert(revision as u64) {
                assert_no_false_difference(&scrape, revision);
            }
        }
        if asked(&scrape).1 - rounds_before >= 10.0 {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.assert_writing();
    };
    let served = served().await - served_before;
    let (asked_after, rounds_after, shared_after) = asked(&last);
    writer.stop().await;
    let (asked, rounds, shared) = (
        asked_after - asked_before,
        rounds_after - rounds_before,
        shared_after - shared_before,
    );
    assert!(
        shared >= 2.0 * rounds,
        "most of alarm's 3 Status calls a round are shared: {shared} in {rounds} rounds\n{}",
        host.log()
    );
    // A round of each plugin may be under way at either reading.
    assert!(
        (served - (asked - shared)).abs() <= 9.0,
        "etcd served {served} Status calls; the plugins asked for {asked}, {shared} of them shared"
    );
}
on_every_etcd!(alarm_and_consistency_share_status_answers_on_a_busy_cluster);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_makes_hashkv_not_comparable_not_consistent() {
    let etcd = EtcdCluster::start(Options::new(3)).await;
    write_keys(&etcd, 10).await;
    let host = start(&etcd).await;
    wait_until("a first comparison", Duration::from_secs(60), async || {
        cluster(&host.scrape().await, CONSISTENT).ok_or("none yet".to_string())
    })
    .await;
    let frozen = (etcd.leader_index() + 1) % 3;
    let frozen_name = format!("m{frozen}");
    etcd.signal(frozen, Signal::SIGSTOP);
    let scrape = wait_until("not comparable", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let reachable = scrape.get("inspection_etcd_member_reachable", &[("member", frozen_name.as_str())]);
        if cluster(&scrape, NOT_COMPARABLE) == Some(1.0) && reachable == Some(0.0) {
            Ok(scrape)
        } else {
            Err(format!(
                "not_comparable={:?} reachable={reachable:?}",
                cluster(&scrape, NOT_COMPARABLE)
            ))
        }
    })
    .await;
    assert_eq!(
        cluster(&scrape, CONSISTENT),
        None,
        "an incomplete comparison is never reported as consistent"
    );
    // The other members' values are still there and still agree.
    assert_eq!(cluster(&scrape, KEY_DIFF), Some(0.0));
    for (i, member) in ["m0", "m1", "m2"].iter().enumerate().filter(|(i, _)| *i != frozen) {
        let labels = [("clusterName", "prod"), ("member", *member)];
        assert_eq!(
            scrape.get("inspection_etcd_member_key_total", &labels),
            Some(10.0),
            "member {i}"
        );
    }
    assert_eq!(scrape.get("inspection_failed_num", &[("clusterName", "prod")]), None);
    etcd.signal(frozen, Signal::SIGCONT);
}

/// An edited plugin annotation reaches the running inspection at its next
/// round: the count prefix moves from /a/ to /b/ without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_annotation_takes_effect_at_the_next_round() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let mut client = etcd.client().await;
    for key in ["/a/1", "/a/2", "/a/3", "/b/1"] {
        client.put(key, "x", None).await.unwrap();
    }
    let url = etcd.members[0].client_url.clone();
    let manifest = |prefix: &str| {
        cluster_manifest(
            "prod",
            &[
                ("importedAddr", &url),
                ("etcd-inspector.io/consistency-count-prefix", prefix),
            ],
        )
    };
    let manifests = [
        ("cluster.yaml", manifest("/a/")),
        ("consistency.yaml", inspection_manifest("prod", "consistency", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "consistency")],
        &manifests,
        &["--rescan-interval", "1"],
    )
    .await;
    let keys = async |expected: f64| {
        wait_until(
            &format!("{expected} keys counted"),
            Duration::from_secs(60),
            async || match host
                .scrape()
                .await
                .get("inspection_etcd_member_key_total", &[("clusterName", "prod")])
            {
                Some(n) if n == expected => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await
    };
    keys(3.0).await;
    std::fs::write(host.manifest_dir().join("cluster.yaml"), manifest("/b/")).unwrap();
    keys(1.0).await;
}

/// A cluster compacted at its current revision and idle since is still
/// compared, and consistent. etcd 3.4 refuses HashKV there: once a round
/// has seen the compaction, later rounds hash the current revision without
/// asking for the refusal (and the Watch the host makes to explain it).
async fn an_idle_cluster_compacted_at_its_current_revision_is_compared(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    write_keys(&etcd, 20).await;
    let revision = etcd.status()[0].1 as i64;
    etcd.client().await.compact(revision, None).await.unwrap();
    let host = start(&etcd).await;
    let scrape = wait_until(
        "a comparison after the compaction",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            match (cluster(&scrape, CONSISTENT), cluster(&scrape, NOT_COMPARABLE)) {
                (Some(1.0), Some(0.0)) => Ok(scrape),
                other => Err(format!("consistent, not comparable: {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(cluster(&scrape, REVISION), Some(revision as f64));
    let (rounds, served) = calls_over_rounds(&etcd, &host, 3).await;
    assert_eq!(served.watches, 0.0, "Watches opened in {rounds} rounds");
    // One HashKV per member a round; a round may be under way at either reading.
    assert!(
        served.hashes <= 3.0 * (rounds + 1.0),
        "{} HashKV in {rounds} rounds: refused ones asked again",
        served.hashes
    );
}
on_every_etcd!(an_idle_cluster_compacted_at_its_current_revision_is_compared);

/// `method` calls counted by `counter` on every member (etcd's own
/// metrics): `grpc_server_handled_total` counts a call when it ends,
/// `grpc_server_started_total` a stream such as Watch when it opens.
async fn etcd_served(etcd: &EtcdCluster, counter: &str, method: &str) -> f64 {
    let mut total = 0.0;
    for member in &etcd.members {
        let scrape = member_metrics(&member.client_url).await;
        total += scrape
            .all(counter, &[("grpc_method", method)])
            .iter()
            .map(|(_, calls)| calls)
            .sum::<f64>();
    }
    total
}

/// Calls etcd's members served, summed from their own metrics.
struct Served {
    ranges: f64,
    hashes: f64,
    /// Watch streams opened.
    watches: f64,
}

/// Waits for `n` more consistency rounds; says how many ran and what etcd
/// served meanwhile.
async fn calls_over_rounds(etcd: &EtcdCluster, host: &Host, n: u32) -> (f64, Served) {
    let served = async || Served {
        ranges: etcd_served(etcd, "grpc_server_handled_total", "Range").await,
        hashes: etcd_served(etcd, "grpc_server_handled_total", "HashKV").await,
        watches: etcd_served(etcd, "grpc_server_started_total", "Watch").await,
    };
    let rounds = async || -> f64 {
        host.scrape()
            .await
            .all("etcd_inspector_plugin_invocations_total", &[("plugin", "consistency")])
            .iter()
            .map(|(_, n)| n)
            .sum()
    };
    let (rounds_before, before) = (rounds().await, served().await);
    let rounds_after = wait_until(&format!("{n} more rounds"), Duration::from_secs(30), async || {
        let now = rounds().await;
        if now >= rounds_before + f64::from(n) {
            Ok(now)
        } else {
            Err(format!("{now} rounds"))
        }
    })
    .await;
    let after = served().await;
    (
        rounds_after - rounds_before,
        Served {
            ranges: after.ranges - before.ranges,
            hashes: after.hashes - before.hashes,
            watches: after.watches - before.watches,
        },
    )
}

/// etcd 3.5+ keeps the hash of its last compactions: HashKV there is read
/// from memory instead of scanning the store, so that is where members are
/// compared; 3.4 has no such hash and is compared at the common revision.
/// The compaction is learnt from a round's answers, then checked with one
/// count a round (no Watch to find it) until etcd compacts again.
async fn a_compacted_cluster_is_hashed_at_its_compaction_where_etcd_keeps_that_hash(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    write_keys(&etcd, 20).await;
    let host = start(&etcd).await;
    // Never compacted: the common revision.
    let compact = etcd.status()[0].1;
    hashed_at(&host, compact).await;
    write_keys(&etcd, 5).await;
    let current = etcd.status()[0].1;
    etcd.client().await.compact(compact as i64, None).await.unwrap();
    hashed_at(&host, if version >= Version::V3_5 { compact } else { current }).await;
    if version < Version::V3_5 {
        return;
    }

    let (rounds, served) = calls_over_rounds(&etcd, &host, 4).await;
    // Each member's key count and the one check; a round may be under way
    // at either reading.
    assert!(
        served.ranges <= 4.0 * (rounds + 1.0),
        "{} Ranges in {rounds} rounds: more than the counts and one check a round",
        served.ranges
    );
    assert_eq!(served.watches, 0.0, "Watches opened to find the compaction");

    // Compacted again: the check is refused with the newer revision.
    write_keys(&etcd, 5).await;
    let newer = etcd.status()[0].1;
    etcd.client().await.compact(newer as i64, None).await.unwrap();
    hashed_at(&host, newer).await;
}
on_every_etcd!(a_compacted_cluster_is_hashed_at_its_compaction_where_etcd_keeps_that_hash);

/// Waits for a consistent comparison of HashKV at revision `expected`.
async fn hashed_at(host: &Host, expected: u64) {
    wait_until("HashKV compared", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let hashed = cluster(&scrape, "inspection_etcd_hashkv_revision");
        match (cluster(&scrape, CONSISTENT), hashed) {
            (Some(1.0), Some(r)) if r == expected as f64 => Ok(()),
            other => Err(format!("consistent, hashed revision: {other:?}; want {expected}")),
        }
    })
    .await;
}

//! healthy.wasm against a real 3-member cluster, with a member frozen by SIGSTOP.

use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use nix::sys::signal::Signal;

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";
const INTERVAL: Duration = Duration::from_secs(3);

async fn a_stopped_member_reads_0_within_two_intervals_and_recovers(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        (
            "healthy.yaml",
            inspection_manifest("prod", "healthy", INTERVAL.as_secs() as u32),
        ),
    ];
    // The probe of a frozen member ends at the etcd timeout, well inside an interval.
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &["--etcd-timeout", "1"],
    )
    .await;

    // Every member is discovered through MemberList, though only one was given.
    wait_until("all three members healthy", 4 * INTERVAL, async || {
        let scrape = host.scrape().await;
        let series = scrape.all(HEALTHY, &[("clusterName", "prod")]);
        if series.len() == 3 && series.iter().all(|(_, v)| *v == 1.0) {
            Ok(())
        } else {
            Err(format!("{series:?}"))
        }
    })
    .await;
    // Members sharing a host are told apart by port (the seed's host-only label collided).
    let scrape = host.scrape().await;
    for m in &etcd.members {
        let label = m.client_url.trim_start_matches("http://");
        assert_eq!(
            scrape.get(HEALTHY, &[("clusterName", "prod"), ("endpoint", label)]),
            Some(1.0)
        );
    }

    // Freeze a follower: the leader stays, so the other two must stay healthy throughout.
    let leader = etcd.leader_index();
    let frozen = (leader + 1) % 3;
    let frozen_label = etcd.members[frozen]
        .client_url
        .trim_start_matches("http://")
        .to_string();
    etcd.signal(frozen, Signal::SIGSTOP);
    let stopped_at = Instant::now();
    wait_until("the frozen member reads 0", 2 * INTERVAL, async || {
        let scrape = host.scrape().await;
        for (i, m) in etcd.members.iter().enumerate().filter(|(i, _)| *i != frozen) {
            let label = m.client_url.trim_start_matches("http://");
            let value = scrape.get(HEALTHY, &[("clusterName", "prod"), ("endpoint", label)]);
            assert_eq!(
                value,
                Some(1.0),
                "member {i} must stay healthy while {frozen} is frozen"
            );
        }
        match scrape.get(HEALTHY, &[("clusterName", "prod"), ("endpoint", &frozen_label)]) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("frozen member reported after {:?}", stopped_at.elapsed());

    etcd.signal(frozen, Signal::SIGCONT);
    wait_until(
        "the thawed member reads 1 again",
        2 * INTERVAL + Duration::from_secs(2),
        async || {
            let scrape = host.scrape().await;
            match scrape.get(HEALTHY, &[("clusterName", "prod"), ("endpoint", &frozen_label)]) {
                Some(1.0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // An unhealthy member is a finding, not a failed inspection.
    let scrape = host.scrape().await;
    assert_eq!(scrape.get("inspection_failed_num", &[("clusterName", "prod")]), None);
    assert!(
        scrape
            .get(
                "etcd_inspector_plugin_invocations_total",
                &[("plugin", "healthy"), ("outcome", "ok")]
            )
            .unwrap()
            >= 3.0
    );
}
on_every_etcd!(a_stopped_member_reads_0_within_two_intervals_and_recovers);

/// A cluster that never answers fails every round, but the log says so
/// once per condition (it started, and every few minutes while it lasts),
/// not once per round: the rounds are counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_stays_down_is_logged_once_not_every_round() {
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("down", &[("importedAddr", &dead), ("featureGates", "healthy=true")]),
        ),
        ("consistency.yaml", inspection_manifest("down", "consistency", 1)),
    ];
    let plugins = [plugin_file("bundled", "healthy"), plugin_file("bundled", "consistency")];
    let host = Host::start(&plugins, &manifests, &[]).await;
    wait_until("six failed rounds", Duration::from_secs(60), async || {
        let failed = host.scrape().await.get(
            "inspection_failed_num",
            &[("clusterName", "down"), ("inspectionType", "consistency")],
        );
        match failed {
            Some(n) if n >= 6.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let log = host.log();
    let mut warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("down"))
        // Without the timestamp, so repeats compare equal.
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
        .collect();
    let all = warnings.len();
    warnings.sort();
    warnings.dedup();
    assert_eq!(all, warnings.len(), "a warning repeated:\n{log}");
    assert!(
        warnings.iter().any(|w| w.contains("inspection failed")),
        "the failure is logged once:\n{log}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("MemberList failed")),
        "the member list failure is logged once:\n{log}"
    );
}

/// A member with a CORRUPT alarm is unhealthy, and where it serves
/// /readyz (3.5+) the log names the failing check, not just "false".
async fn a_corrupt_member_is_unhealthy_with_the_failing_check_named(version: Version) {
    let etcd = EtcdCluster::start(Options::new(1).version(version)).await;
    let url = etcd.members[0].client_url.clone();
    let manifests = [
        ("cluster.yaml", cluster_manifest("prod", &[("importedAddr", &url)])),
        ("healthy.yaml", inspection_manifest("prod", "healthy", 1)),
    ];
    let host = Host::start(&[plugin_file("bundled", "healthy")], &manifests, &[]).await;
    let healthy = async |expected: f64| {
        wait_until(
            &format!("healthy = {expected}"),
            Duration::from_secs(60),
            async || match host.scrape().await.get(HEALTHY, &[("clusterName", "prod")]) {
                Some(v) if v == expected => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await
    };
    healthy(1.0).await;
    raise_corrupt(&etcd).await;
    healthy(0.0).await;
    assert_the_failing_check_is_logged(&host, version).await;
}

/// Raises a CORRUPT alarm on the first member.
pub(crate) async fn raise_corrupt(etcd: &EtcdCluster) {
    let id = etcd.status()[0].0;
    let mut options = AlarmOptions::new();
    options.with_member(id);
    etcd.client()
        .await
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(options))
        .await
        .unwrap();
}

/// The log says why a member is unhealthy: the failing /readyz check
/// where the member serves /readyz (3.5+), /health's answer before.
pub(crate) async fn assert_the_failing_check_is_logged(host: &Host, version: Version) {
    let reason = wait_until("the reason in the log", Duration::from_secs(30), async || {
        let log = host.log();
        log.lines()
            .find_map(|l| l.split_once("is unhealthy: ").map(|(_, r)| r.to_string()))
            .ok_or(log)
    })
    .await;
    if version >= Version::V3_5 {
        assert!(reason.starts_with("data_corruption"), "{reason}");
    } else {
        assert!(reason.contains("CORRUPT") || reason.contains("false"), "{reason}");
    }
}
on_every_etcd!(a_corrupt_member_is_unhealthy_with_the_failing_check_named);

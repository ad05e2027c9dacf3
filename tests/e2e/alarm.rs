//! alarm.wasm: real NOSPACE from a tiny quota, and CORRUPT/NOSPACE raised
//! and cleared through the Maintenance Alarm API.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};

use crate::harness::etcd::{EtcdCluster, Options, Version};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const ALARM: &str = "inspection_etcd_endpoint_alarm";

async fn start_host(etcd: &EtcdCluster) -> Host {
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("alarm.yaml", inspection_manifest("prod", "alarm", 1)),
    ];
    Host::start(&[plugin_file("bundled", "alarm")], &manifests, &[]).await
}

fn endpoint(etcd: &EtcdCluster, index: usize) -> String {
    let url = &etcd.members[index].client_url;
    if etcd.members.len() > 1 {
        url.trim_start_matches("http://").to_string()
    } else {
        "127.0.0.1".to_string()
    }
}

/// Waits until every (member, type) series has the expected value.
async fn expect(host: &Host, expected: &[(String, &str, f64)]) {
    wait_until(&format!("alarms {expected:?}"), Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        for (endpoint, kind, value) in expected {
            let got = scrape.get(
                ALARM,
                &[("clusterName", "prod"), ("endpoint", endpoint), ("alarmType", kind)],
            );
            if got != Some(*value) {
                return Err(format!("{endpoint}/{kind}: {got:?}"));
            }
        }
        Ok(())
    })
    .await;
}

async fn nospace_from_a_full_quota_reads_1_and_0_after_recovery(version: Version) {
    let etcd = EtcdCluster::start(Options::new(1).version(version).quota(2 << 20)).await;
    let host = start_host(&etcd).await;
    let ep = endpoint(&etcd, 0);
    expect(&host, &[(ep.clone(), "NOSPACE", 0.0), (ep.clone(), "CORRUPT", 0.0)]).await;

    let error = etcd.fill_quota().await;
    assert!(error.contains("database space exceeded"), "{error}");
    expect(&host, &[(ep.clone(), "NOSPACE", 1.0), (ep.clone(), "CORRUPT", 0.0)]).await;

    etcd.recover_from_nospace();
    expect(&host, &[(ep.clone(), "NOSPACE", 0.0), (ep, "CORRUPT", 0.0)]).await;
}
on_every_etcd!(nospace_from_a_full_quota_reads_1_and_0_after_recovery);

async fn a_cleared_alarm_returns_to_0_while_another_stays_1(version: Version) {
    let etcd = EtcdCluster::start(Options::new(3).version(version)).await;
    let host = start_host(&etcd).await;
    let ids = etcd.status();
    let (a, b) = (endpoint(&etcd, 0), endpoint(&etcd, 1));
    let mut client = etcd.client().await;
    let raise = |member: u64| {
        let mut options = AlarmOptions::new();
        options.with_member(member);
        options
    };
    client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(raise(ids[0].0)))
        .await
        .unwrap();
    client
        .alarm(AlarmAction::Activate, AlarmType::Nospace, Some(raise(ids[1].0)))
        .await
        .unwrap();
    let c = endpoint(&etcd, 2);
    expect(
        &host,
        &[
            (a.clone(), "CORRUPT", 1.0),
            (a.clone(), "NOSPACE", 0.0),
            (b.clone(), "NOSPACE", 1.0),
            (b.clone(), "CORRUPT", 0.0),
            (c.clone(), "NOSPACE", 0.0),
            (c.clone(), "CORRUPT", 0.0),
        ],
    )
    .await;

    client
        .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, Some(raise(ids[0].0)))
        .await
        .unwrap();
    expect(
        &host,
        &[
            (a.clone(), "CORRUPT", 0.0),
            (b.clone(), "NOSPACE", 1.0),
            (b, "CORRUPT", 0.0),
        ],
    )
    .await;
    let failed = host
        .scrape()
        .await
        .get("inspection_failed_num", &[("clusterName", "prod")]);
    assert_eq!(failed, None, "raised alarms are findings, not failed inspections");
}
on_every_etcd!(a_cleared_alarm_returns_to_0_while_another_stays_1);

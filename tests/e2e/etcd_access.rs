//! The host's etcd layer on its own, against a real member: ranges with
//! explicit ends, revisions and counts.

use std::collections::HashMap;

use etcd_inspector::etcd::{ClusterConnection, ConnectionSettings, Credentials};

use crate::harness::etcd::{member_metrics, EtcdCluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_honour_start_end_and_revision() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let mut client = etcd.client().await;
    for key in [
        "/registry/a.io/crds/x",
        "/registry/pods/ns/p0",
        "/registry/pods/ns/p1",
        "/zzz",
    ] {
        client.put(key, "v", None).await.unwrap();
    }
    let revision = etcd.status()[0].1;
    client.put("/registry/pods/ns/p2", "v", None).await.unwrap();
    let url = etcd.members[0].client_url.clone();
    let c = ClusterConnection::new(
        "t/c",
        vec![url],
        HashMap::new(),
        Credentials::default(),
        ConnectionSettings::default(),
    )
    .unwrap();
    c.refresh_members().await.unwrap();

    let keys = |v: Vec<(Vec<u8>, u64, u64, u64)>| {
        v.into_iter()
            .map(|k| String::from_utf8(k.0).unwrap())
            .collect::<Vec<_>>()
    };
    let all = c.keys((b"/registry/", b"/registry0"), 100, 0).await.unwrap();
    assert_eq!(
        keys(all),
        [
            "/registry/a.io/crds/x",
            "/registry/pods/ns/p0",
            "/registry/pods/ns/p1",
            "/registry/pods/ns/p2"
        ]
    );
    let after = c
        .keys((b"/registry/a.io/crds0", b"/registry0"), 100, revision)
        .await
        .unwrap();
    assert_eq!(keys(after), ["/registry/pods/ns/p0", "/registry/pods/ns/p1"]);
    let to_end = c.keys((b"/registry/pods/ns/p1", b""), 100, 0).await.unwrap();
    assert_eq!(keys(to_end), ["/registry/pods/ns/p1", "/registry/pods/ns/p2", "/zzz"]);
    assert_eq!(
        c.count(None, (b"/registry/pods/", b"/registry/pods0"), revision, false)
            .await
            .unwrap()
            .0,
        2
    );
    assert_eq!(c.count(None, (b"", b""), 0, true).await.unwrap().0, 5);
}

/// A read below the compact revision says where history starts, as the
/// plugin contract's `compacted(u64)` promises; so does HashKV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_read_carries_the_compact_revision() {
    use etcd_inspector::etcd::CallError;
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let mut client = etcd.client().await;
    for i in 0..5 {
        client.put(format!("/k{i}"), "v", None).await.unwrap();
    }
    let compacted_at = etcd.status()[0].1 as i64;
    client.put("/k9", "v", None).await.unwrap();
    client.compact(compacted_at, None).await.unwrap();
    let c = ClusterConnection::new(
        "t/c",
        vec![etcd.members[0].client_url.clone()],
        HashMap::new(),
        Credentials::default(),
        ConnectionSettings::default(),
    )
    .unwrap();
    let members = c.refresh_members().await.unwrap();
    let expected = CallError::Compacted(compacted_at as u64);
    assert_eq!(c.count(None, (b"/", b""), 2, false).await.unwrap_err(), expected);
    assert_eq!(c.keys((b"/", b""), 10, 2).await.unwrap_err(), expected);
    let (_, _, compact_revision, _) = c.hash_kv(&members[0].endpoint, 0).await.unwrap();
    assert_eq!(compact_revision, compacted_at as u64, "HashKV's compact revision");
}

/// A cluster's inspections start together and find the member list stale
/// together: they share one MemberList (counted by etcd itself), and when
/// the cluster does not answer they share one failure rather than each
/// waiting out its own timeout in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspections_starting_together_share_one_member_list() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let etcd = EtcdCluster::start(Options::new(1)).await;
    let url = etcd.members[0].client_url.clone();
    let member_lists = async || -> f64 {
        member_metrics(&url)
            .await
            .all("grpc_server_handled_total", &[("grpc_method", "MemberList")])
            .iter()
            .map(|(_, calls)| calls)
            .sum()
    };
    let together = async |c: &Arc<ClusterConnection>| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.recent_members(Duration::from_secs(60)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    };

    let c = Arc::new(
        ClusterConnection::new(
            "t/c",
            vec![url.clone()],
            HashMap::new(),
            Credentials::default(),
            ConnectionSettings::default(),
        )
        .unwrap(),
    );
    let before = member_lists().await;
    for answer in together(&c).await {
        assert_eq!(answer.unwrap().len(), 1);
    }
    assert_eq!(member_lists().await - before, 1.0, "four callers, one MemberList");
    together(&c).await;
    assert_eq!(member_lists().await - before, 1.0, "a fresh list is not read again");

    // An endpoint that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_secs(1);
    let dead = Arc::new(
        ClusterConnection::new(
            "t/dead",
            vec![format!("http://{}", silent.local_addr().unwrap())],
            HashMap::new(),
            Credentials::default(),
            ConnectionSettings {
                call_timeout: timeout,
                ..ConnectionSettings::default()
            },
        )
        .unwrap(),
    );
    let started = Instant::now();
    let answers = together(&dead).await;
    let first = answers[0].clone().unwrap_err();
    assert!(first.to_string().contains("no answer within 1s"), "{first}");
    for answer in answers {
        assert_eq!(answer.unwrap_err(), first, "one failure, shared");
    }
    // Asked in turn, the four would wait out four timeouts (4 s); the
    // connection being shared, nothing else tells the two apart.
    assert!(started.elapsed() < timeout * 3, "took {:?}", started.elapsed());
}

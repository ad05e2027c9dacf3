//! The host's etcd layer on its own, against a real member: ranges with
//! explicit ends, revisions and counts.

use std::collections::HashMap;

use etcd_inspector::etcd::{ClusterConnection, ConnectionSettings, Credentials};

use crate::harness::etcd::{EtcdCluster, Options};

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

//! The status page in headless Chromium: a person reading it sees a frozen
//! member as unhealthy and a rejected plugin with the reason, while the
//! good version keeps serving.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::browser::read_page;
use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_a_stopped_member_and_a_rejected_plugin() {
    let etcd = EtcdCluster::start(Options::new(3)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("healthy.yaml", inspection_manifest("prod", "healthy", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &["--etcd-timeout", "1", "--plugin-rescan-interval", "1"],
    )
    .await;
    let url = format!("{}/", host.base_url);
    let frozen = (etcd.leader_index() + 1) % 3;
    let frozen_url = etcd.members[frozen].client_url.clone();

    wait_until(
        "every member healthy on the page",
        Duration::from_secs(60),
        async || {
            let (text, _) = read_page(&url)?;
            (text.matches("healthy").count() >= 3 && !text.contains("UNHEALTHY"))
                .then_some(())
                .ok_or(text)
        },
    )
    .await;

    // A stopped member, and a broken version of the healthy plugin's file.
    etcd.signal(frozen, Signal::SIGSTOP);
    std::fs::write(host.dir.path().join("plugins/healthy.wasm"), b"not wasm at all").unwrap();
    let (text, dom) = wait_until("the page shows both", Duration::from_secs(60), async || {
        let (text, dom) = read_page(&url)?;
        let member_row = format!("m{frozen} {frozen_url} UNHEALTHY");
        let rejected = text.contains("rejected") && text.contains("not a WebAssembly file");
        (text.contains(&member_row) && rejected)
            .then(|| (text.clone(), dom))
            .ok_or(text)
    })
    .await;
    assert!(
        text.contains("newest version rejected; the previous one serves"),
        "{text}"
    );
    assert!(
        text.contains("default/prod: ok"),
        "healthy still runs on the cluster: {text}"
    );
    assert!(text.contains("default/prod"), "{text}");
    assert!(!dom.contains("<script"), "no JavaScript: {dom}");
    assert!(dom.contains(r#"http-equiv="refresh""#), "it refreshes itself: {dom}");
    etcd.signal(frozen, Signal::SIGCONT);
}

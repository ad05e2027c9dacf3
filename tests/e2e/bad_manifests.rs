//! Bad manifests: each error names the cluster and the field, the other
//! clusters keep being inspected, and fixing or removing a file takes effect
//! without a restart.

use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_reported_by_cluster_and_field_and_the_rest_runs() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let url = etcd.members[0].client_url.clone();
    let typo = cluster_manifest("typo", &[("importedAddr", &url), ("featureGates", "healthy=true")])
        .replace("clusterType: imported", "clusterType: improted");
    let manifests = [
        (
            "good.yaml",
            cluster_manifest("good", &[("importedAddr", &url), ("featureGates", "healthy=true")]),
        ),
        ("typo.yaml", typo),
        (
            "nourl.yaml",
            cluster_manifest(
                "nourl",
                &[("importedAddr", "not a url"), ("featureGates", "healthy=true")],
            ),
        ),
        (
            "nocerts.yaml",
            cluster_manifest(
                "nocerts",
                &[
                    ("importedAddr", &url),
                    ("certName", "no-such-dir"),
                    ("featureGates", "healthy=true"),
                ],
            ),
        ),
        ("i.yaml", inspection_manifest("good", "healthy", 1)),
    ];
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &["--rescan-interval", "0.5"],
    )
    .await;

    wait_until("good is inspected", Duration::from_secs(60), async || {
        match host.scrape().await.get(HEALTHY, &[("clusterName", "good")]) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let no_such_dir = host.manifest_dir().join("no-such-dir");
    let expected = [
        "cluster default/typo: spec.clusterType: unknown value \"improted\", expected \"imported\"".to_string(),
        "cluster default/nourl: metadata.annotations.importedAddr: \"not a url\" is not a URL".to_string(),
        format!(
            "cluster default/nocerts: metadata.annotations.certName: {}: not found or not a directory",
            no_such_dir.display()
        ),
    ];
    let log = host.log();
    let status = host.json("/api/status").await;
    let errors: Vec<String> = status["configErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for e in &expected {
        assert!(log.contains(e.as_str()), "log lacks {e:?}:\n{log}");
        assert!(
            errors.iter().any(|got| got.starts_with(e.as_str())),
            "status lacks {e:?}: {errors:?}"
        );
    }
    let scrape = host.scrape().await;
    for bad in ["typo", "nourl", "nocerts"] {
        assert_eq!(
            scrape.all(HEALTHY, &[("clusterName", bad)]),
            vec![],
            "{bad} must not be inspected"
        );
    }

    // Fixing a manifest starts its cluster; removing one deletes its series.
    std::fs::write(
        host.manifest_dir().join("typo.yaml"),
        cluster_manifest("typo", &[("importedAddr", &url), ("featureGates", "healthy=true")]),
    )
    .unwrap();
    std::fs::remove_file(host.manifest_dir().join("good.yaml")).unwrap();
    wait_until("typo inspected and good gone", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let typo = scrape.get(HEALTHY, &[("clusterName", "typo")]);
        let good = scrape.all(HEALTHY, &[("clusterName", "good")]);
        if typo == Some(1.0) && good.is_empty() {
            Ok(())
        } else {
            Err(format!("typo={typo:?} good={good:?}"))
        }
    })
    .await;
}

/// Hostile files in the manifest directory: a FIFO as a certName's ca.crt
/// (which once froze the host) and an oversized one are refused at once
/// with the path named; the good cluster and /health go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_a_huge_file_is_refused_and_the_host_keeps_serving() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let url = etcd.members[0].client_url.clone();
    let manifests = [(
        "good.yaml",
        cluster_manifest("good", &[("importedAddr", &url), ("featureGates", "healthy=true")]),
    )];
    let host = Host::start(
        &[plugin_file("bundled", "healthy")],
        &manifests,
        &["--rescan-interval", "0.5"],
    )
    .await;
    let dir = host.manifest_dir();
    for name in ["fifo-certs", "huge-certs"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
    }
    let fifo = dir.join("fifo-certs/ca.crt");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let huge = dir.join("huge-certs/ca.crt");
    std::fs::File::create(&huge).unwrap().set_len(2 << 20).unwrap();
    for (name, certs) in [("fifo", "fifo-certs"), ("huge", "huge-certs")] {
        let manifest = cluster_manifest(
            name,
            &[
                ("importedAddr", &url),
                ("certName", certs),
                ("featureGates", "healthy=true"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.yaml")), manifest).unwrap();
    }
    let expected = [
        format!("{}: not a regular file (a FIFO)", fifo.display()),
        format!(
            "{}: {} bytes is more than the 1048576 accepted",
            huge.display(),
            2 << 20
        ),
    ];
    wait_until(
        "both refused, good still inspected",
        Duration::from_secs(60),
        async || {
            let status = host.json("/api/status").await;
            let errors = status["configErrors"].to_string();
            let good = host.scrape().await.get(HEALTHY, &[("clusterName", "good")]);
            if expected.iter().all(|e| errors.contains(e)) && good == Some(1.0) {
                Ok(())
            } else {
                Err(format!("{errors} good={good:?}"))
            }
        },
    )
    .await;
    assert_eq!(host.get("/health").await.unwrap(), "ok");
}

//! Plugins from a real OCI registry: `plugin push`, a pull with htpasswd
//! logins over TLS, a moved tag picked up, a digest mismatch refused while
//! the good version serves, and a pinned digest served from the cache with
//! the registry gone.

use std::process::Command;
use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::registry::Registry;
use crate::harness::{plugin_file, wait_until};
use crate::plugin_lifecycle::{new_build, plugin_status, sha256};

const PASSWORD: &str = "pl4gins-s3cret";

fn push(
    registry: &Registry,
    file: &std::path::Path,
    reference: &str,
    config: &std::path::Path,
) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-inspector"))
        .args(["plugin", "push", file.to_str().unwrap(), reference])
        .args(["--registry-config", config.to_str().unwrap()])
        .args(["--registry-ca", registry.ca_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_pulled_from_a_registry_by_tag_and_digest() {
    let mut registry = Registry::start("ci", PASSWORD).await;
    let good_login = registry.docker_config("good.json", "ci", PASSWORD);
    let bad_login = registry.docker_config("bad.json", "ci", "wrong-password");
    let work = tempfile::tempdir().unwrap();
    let healthy = std::fs::read(plugin_file("bundled", "healthy")).unwrap();
    let versions: Vec<Vec<u8>> = ["v2", "v3"].iter().map(|t| new_build(&healthy, t)).collect();
    let files: Vec<_> = [&healthy, &versions[0], &versions[1]]
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = work.path().join(format!("healthy-{i}.wasm"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let stable = registry.reference("plugins/healthy:stable");

    // Push: refused without the right login, then published and pinned.
    let err = push(&registry, &files[0], &stable, &bad_login).unwrap_err();
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
    let v1 = push(&registry, &files[0], &stable, &good_login).unwrap();
    assert!(v1.starts_with(&format!("{stable}@sha256:")), "{v1}");
    let v1_digest = v1.rsplit_once('@').unwrap().1.to_string();

    // The host follows the tag, first with a wrong password.
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let config = work.path().join("plugins.yaml");
    let source = |reference: &str| format!("plugins:\n  healthy:\n    source: \"{reference}\"\n");
    std::fs::write(&config, source(&stable)).unwrap();
    let live_login = work.path().join("docker-config.json");
    std::fs::copy(&bad_login, &live_login).unwrap();
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("healthy.yaml", inspection_manifest("prod", "healthy", 1)),
    ];
    let flags = [
        "--plugin-config",
        config.to_str().unwrap(),
        "--registry-config",
        live_login.to_str().unwrap(),
        "--registry-ca",
        registry.ca_file.to_str().unwrap(),
        "--plugin-oci-poll-interval",
        "1",
    ];
    let host = Host::start(&[], &manifests, &flags).await;
    let status = async |check: &dyn Fn(&serde_json::Value) -> bool| {
        let status = plugin_status(&host, "/healthy.wasm").await.unwrap_or_default();
        if check(&status) {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    };
    let refused = wait_until("the wrong login is reported", Duration::from_secs(30), async || {
        status(&|s| s["source"]["error"]["reason"] == "oci_unauthorized").await
    })
    .await;
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["source"]["reference"], stable, "{refused}");

    // The login is fixed on disk: read again at the next poll.
    std::fs::copy(&good_login, &live_login).unwrap();
    let serving = wait_until("v1 serves from the registry", Duration::from_secs(30), async || {
        status(&|s| s["serving"]["sha256"] == sha256(&healthy) && s["source"]["error"].is_null()).await
    })
    .await;
    assert_eq!(serving["source"]["digest"], v1_digest, "{serving}");
    wait_until("healthy inspects", Duration::from_secs(30), async || {
        host.scrape()
            .await
            .get("inspection_etcd_endpoint_healthy", &[("clusterName", "prod")])
            .ok_or("no sample".to_string())
    })
    .await;

    // The tag moves: the new version serves without anything else changing.
    let v2 = push(&registry, &files[1], &stable, &good_login).unwrap();
    let v2_digest = v2.rsplit_once('@').unwrap().1.to_string();
    wait_until("the moved tag is pulled", Duration::from_secs(30), async || {
        status(&|s| s["serving"]["sha256"] == sha256(&versions[0]) && s["source"]["digest"] == v2_digest).await
    })
    .await;

    // v3's layer is altered in the registry's storage; pinning it is refused
    // and v2 keeps serving.
    let v3 = push(
        &registry,
        &files[2],
        &registry.reference("plugins/healthy:v3"),
        &good_login,
    )
    .unwrap();
    registry.tamper_blob(&format!("sha256:{}", sha256(&versions[1])));
    std::fs::write(&config, source(&v3)).unwrap();
    let mismatch = wait_until("the altered artefact is refused", Duration::from_secs(30), async || {
        status(&|s| s["source"]["error"]["reason"] == "oci_digest_mismatch").await
    })
    .await;
    assert_eq!(
        mismatch["serving"]["sha256"],
        sha256(&versions[0]),
        "v2 keeps serving: {mismatch}"
    );
    assert_eq!(mismatch["state"], "active", "{mismatch}");
    let scrape = host.scrape().await;
    assert_eq!(
        scrape.get(
            "etcd_inspector_plugin_load_errors_total",
            &[("reason", "oci_digest_mismatch")]
        ),
        Some(1.0)
    );

    // Pinned to v1's digest with the registry gone: served from the cache.
    registry.stop();
    std::fs::write(&config, source(&v1)).unwrap();
    wait_until("v1 serves from the cache", Duration::from_secs(30), async || {
        status(&|s| s["serving"]["sha256"] == sha256(&healthy) && s["source"]["digest"] == v1_digest).await
    })
    .await;
    assert!(!host.log().contains(PASSWORD), "no password in the log");
    assert!(!host.log().contains("wrong-password"), "no password in the log");
    let page = host.get("/").await.unwrap();
    assert!(page.contains(&v1), "the page names the source: {page}");
}

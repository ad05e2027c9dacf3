//! `etcd-inspector plugin check|run` on real artefacts, and the frozen
//! plugin built against the first released contract.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::cluster_manifest;
use crate::harness::plugin_file;

fn inspector(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-inspector"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn compat_fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/compat/healthy-0.1.0.wasm"
    ))
}

/// Built against 0.1.2: exports `watcher` but not `packed-watcher`.
#[test]
fn a_watching_plugin_from_before_packed_events_still_gets_its_events() {
    let fixture = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/compat/request-0.1.2.wasm"
    ));
    let digest = etcd_inspector::runtime::sha256_hex(&std::fs::read(&fixture).unwrap());
    assert_eq!(
        digest, "5850575f4dc317bf7703eeba38ff1ea35aa728212226636b1b9738ca08bccb6f",
        "the fixture is frozen"
    );
    let (ok, out, err) = inspector(&["plugin", "check", fixture.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("contract:  etcd-inspector:plugin@0.1.2"), "{out}");
    // The events round goes through `watcher.on-events`, unpacked.
    assert!(
        out.contains("events     ok on a fake 3-member etcd 3.6 cluster: 2 samples"),
        "{out}"
    );
}

#[test]
fn check_describes_runs_on_a_fake_cluster_and_rejects_with_the_reason() {
    let db_quota = plugin_file("examples", "db-quota");
    let (ok, out, _) = inspector(&["plugin", "check", db_quota.to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("name:      db-quota"), "{out}");
    assert!(out.contains("contract:  etcd-inspector:plugin@0.1.3"), "{out}");
    assert!(
        out.contains("example_db_quota_usage_ratio gauge {clusterName,endpoint}"),
        "{out}"
    );

    // Run once against the fake cluster, and its samples taken.
    assert!(
        out.contains("inspect    ok on a fake 3-member etcd 3.6 cluster: 6 samples"),
        "{out}"
    );
    let request = plugin_file("bundled", "request");
    let (ok, out, err) = inspector(&["plugin", "check", request.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("census     ok on a fake"), "{out}");
    assert!(out.contains("events     ok on a fake"), "{out}");

    // Loads and describes itself well, but the host would reject every
    // round: the check fails, saying why in the host's words.
    let mislabel = plugin_file("fixtures", "mislabel");
    let (ok, out, err) = inspector(&["plugin", "check", mislabel.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(
            "inspect on a fake cluster: inspection failed: plugin_error: samples rejected: \
             sample of \"mislabel_db_bytes\": label \"member\" missing; \
             labels [\"endpoint\"] sent, [\"member\"] declared in describe()"
        ),
        "{err}"
    );
    let panicker = plugin_file("fixtures", "panicker");
    let (ok, _, err) = inspector(&["plugin", "check", panicker.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("inspection failed: trap:"), "{err}");
    assert!(err.contains("deliberate panic while inspecting fake"), "{err}");

    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"definitely not wasm").unwrap();
    let (ok, _, err) = inspector(&["plugin", "check", junk.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("rejected: not a WebAssembly file (bad magic bytes)"),
        "{err}"
    );
    assert!(!err.contains("backtrace"), "a clear error, not a backtrace: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inspects_a_real_cluster_and_the_first_contract_still_runs() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("cluster.yaml");
    std::fs::write(
        &manifest,
        cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();

    let db_quota = plugin_file("examples", "db-quota");
    let (ok, out, err) = inspector(&["plugin", "run", db_quota.to_str().unwrap(), "--manifest", manifest]);
    assert!(ok, "{err}");
    assert!(
        out.contains("example_db_size_bytes{clusterName=\"prod\",endpoint=\"127.0.0.1\"}"),
        "{out}"
    );

    // Built against etcd-inspector:plugin@0.1.0 and frozen: it must keep working.
    let fixture = compat_fixture();
    let digest = etcd_inspector::runtime::sha256_hex(&std::fs::read(&fixture).unwrap());
    assert_eq!(
        digest, "bb550f96ac9b170e34f8bfdfe708576926cd233961a9290963e4695937137420",
        "the fixture is frozen"
    );
    let (ok, out, err) = inspector(&["plugin", "check", fixture.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("contract:  etcd-inspector:plugin@0.1.0"), "{out}");
    let (ok, out, err) = inspector(&["plugin", "run", fixture.to_str().unwrap(), "--manifest", manifest]);
    assert!(ok, "{err}");
    assert!(
        out.contains("inspection_etcd_endpoint_healthy{clusterName=\"prod\",endpoint=\"127.0.0.1\"} 1"),
        "{out}"
    );
}

//! Hostile plugins next to healthy: each fails cleanly and healthy keeps
//! producing metrics.

use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_cleanly_and_healthy_keeps_serving() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let junk_dir = tempfile::tempdir().unwrap();
    let junk = junk_dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not WebAssembly").unwrap();
    let core = junk_dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let plugins = [
        plugin_file("bundled", "healthy"),
        plugin_file("fixtures", "spin"),
        plugin_file("fixtures", "membomb"),
        plugin_file("fixtures", "panicker"),
        junk,
        core,
    ];
    let features = ["healthy", "spin", "membomb", "panicker"];
    let mut manifests = vec![(
        "cluster.yaml",
        cluster_manifest(
            "prod",
            &[
                ("importedAddr", &etcd.members[0].client_url),
                ("featureGates", "healthy=true,spin=true,membomb=true,panicker=true"),
            ],
        ),
    )];
    let names = ["i0.yaml", "i1.yaml", "i2.yaml", "i3.yaml"];
    for (file, feature) in names.iter().zip(features) {
        manifests.push((file, inspection_manifest("prod", feature, 2)));
    }
    let host = Host::start(
        &plugins,
        &manifests,
        &["--plugin-timeout", "1", "--plugin-memory-mib", "16"],
    )
    .await;

    // Rejected at load, with the reason, without stopping the others.
    let statuses = host.json("/plugins").await;
    let reason = |file: &str| {
        statuses
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["file"].as_str().unwrap().ends_with(file))
            .unwrap()["last_rejected"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(reason("junk.wasm"), "not a WebAssembly file (bad magic bytes)");
    assert!(
        reason("core.wasm").contains("a core WebAssembly module, not a component"),
        "{}",
        reason("core.wasm")
    );
    let scrape = host.scrape().await;
    assert_eq!(
        scrape.get("etcd_inspector_plugin_load_errors_total", &[("reason", "not_wasm")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.get("etcd_inspector_plugin_load_errors_total", &[("reason", "core_module")]),
        Some(1.0)
    );

    let expected = [("spin", "timeout"), ("membomb", "oom"), ("panicker", "trap")];
    let healthy_before = host
        .scrape()
        .await
        .get(
            "etcd_inspector_plugin_invocations_total",
            &[("plugin", "healthy"), ("outcome", "ok")],
        )
        .unwrap_or(0.0);
    wait_until(
        "every hostile plugin failed twice while healthy kept running",
        Duration::from_secs(60),
        async || {
            let scrape = host.scrape().await;
            for (plugin, outcome) in expected {
                let n = scrape.get(
                    "etcd_inspector_plugin_invocations_total",
                    &[("plugin", plugin), ("outcome", outcome)],
                );
                if n.unwrap_or(0.0) < 2.0 {
                    return Err(format!("{plugin}/{outcome}: {n:?}"));
                }
                let failed = scrape.get(
                    "inspection_failed_num",
                    &[("clusterName", "prod"), ("inspectionType", plugin)],
                );
                if failed.unwrap_or(0.0) < 2.0 {
                    return Err(format!("inspection_failed_num {plugin}: {failed:?}"));
                }
            }
            let healthy_ok = scrape.get(
                "etcd_inspector_plugin_invocations_total",
                &[("plugin", "healthy"), ("outcome", "ok")],
            );
            if healthy_ok.unwrap_or(0.0) < healthy_before + 2.0 {
                return Err(format!("healthy ok calls {healthy_ok:?}"));
            }
            match scrape.get("inspection_etcd_endpoint_healthy", &[("clusterName", "prod")]) {
                Some(1.0) => Ok(()),
                other => Err(format!("healthy gauge {other:?}")),
            }
        },
    )
    .await;

    let scrape = host.scrape().await;
    // The infinite loop is stopped at its 1 s deadline, not at the default
    // 20 s (the upper bound is generous: a loaded machine delays the interrupt).
    let sum = scrape
        .get(
            "etcd_inspector_plugin_invocation_duration_seconds_sum",
            &[("plugin", "spin")],
        )
        .unwrap();
    let count = scrape
        .get(
            "etcd_inspector_plugin_invocation_duration_seconds_count",
            &[("plugin", "spin")],
        )
        .unwrap();
    let mean = sum / count;
    assert!(
        (0.95..5.0).contains(&mean),
        "spin calls took {mean:.3}s on average; the deadline is 1s"
    );
    assert_eq!(
        scrape.get(
            "etcd_inspector_plugin_invocations_total",
            &[("plugin", "spin"), ("outcome", "ok")]
        ),
        None
    );

    let log = host.log();
    for needle in [
        "interrupted at its deadline",
        "memory limit reached",
        "deliberate panic while inspecting prod",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    assert_eq!(host.get("/health").await.unwrap(), "ok");
}

/// A plugin that lists the keyspace in a loop is stopped by its per-round
/// etcd budget: the round fails saying which budget ran out, nothing of it
/// is committed, and refusals are counted. Both budgets, re-read live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_plugin_runs_out_of_its_etcd_budget() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let mut client = etcd.client().await;
    for i in 0..50 {
        client
            .put(format!("/greedy/key-{i:03}"), "v".repeat(100), None)
            .await
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("plugins.yaml");
    std::fs::write(&config, "plugins:\n  greedy:\n    etcdCallsPerRound: 20\n").unwrap();
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("greedy.yaml", inspection_manifest("prod", "greedy", 1)),
    ];
    let flags = [
        "--plugin-config",
        config.to_str().unwrap(),
        "--plugin-rescan-interval",
        "1",
    ];
    let host = Host::start(&[plugin_file("fixtures", "greedy")], &manifests, &flags).await;
    let refused = async |budget: &str, message: &str| {
        wait_until(
            &format!("the {budget} budget refuses"),
            Duration::from_secs(60),
            async || {
                let status = host.json("/api/status").await;
                let run = status["clusters"][0]["features"]["greedy"].clone();
                let refusals = host.scrape().await.get(
                    "etcd_inspector_plugin_budget_refusals_total",
                    &[("plugin", "greedy"), ("budget", budget)],
                );
                let said = run["message"].as_str().is_some_and(|m| m == message);
                if run["outcome"] == "budget_exceeded" && said && refusals >= Some(1.0) {
                    Ok(())
                } else {
                    Err(format!("{run} {refusals:?}"))
                }
            },
        )
        .await
    };
    refused(
        "calls",
        "etcd call budget exhausted: 20 calls per round (plugin setting etcdCallsPerRound)",
    )
    .await;
    std::fs::write(&config, "plugins:\n  greedy:\n    etcdBytesPerRound: 20000\n").unwrap();
    refused(
        "bytes",
        "etcd byte budget exhausted: 20000 bytes read per round (plugin setting etcdBytesPerRound)",
    )
    .await;
    let scrape = host.scrape().await;
    assert!(
        scrape.all("greedy_pages", &[]).is_empty(),
        "a refused round commits nothing"
    );
    assert!(scrape.get("inspection_failed_num", &[("inspectionType", "greedy")]) >= Some(2.0));
}

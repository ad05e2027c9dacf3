//! Plugins replaced while the host runs: kubelet-style `..data` swaps, bad
//! versions, removal, contract versions, the precompile cache, pins and
//! the circuit breaker.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::etcd::{EtcdCluster, Options};
use crate::harness::host::{cluster_manifest, inspection_manifest, Host};
use crate::harness::{plugin_file, wait_until};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";

/// A plugin directory laid out as kubelet lays out a ConfigMap volume:
/// `name -> ..data/name`, `..data -> ..<version>/`, swapped atomically.
struct ConfigMapDir {
    root: PathBuf,
    generation: usize,
}

impl ConfigMapDir {
    fn new(root: &Path, files: &[(&str, Vec<u8>)]) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let mut dir = ConfigMapDir {
            root: root.to_path_buf(),
            generation: 0,
        };
        dir.publish(files);
        dir
    }

    /// Writes a new generation and swaps `..data` to it in one rename.
    fn publish(&mut self, files: &[(&str, Vec<u8>)]) {
        self.generation += 1;
        let version = format!("..2026_11_26_{:04}", self.generation);
        std::fs::create_dir(self.root.join(&version)).unwrap();
        for (name, bytes) in files {
            std::fs::write(self.root.join(&version).join(name), bytes).unwrap();
            let link = self.root.join(name);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        let tmp = self.root.join("..data_tmp");
        symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        // Top-level links to files that are gone are removed, as kubelet does.
        for entry in std::fs::read_dir(&self.root).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// The same component with a custom section appended: a new artefact
/// (another sha256) that behaves the same.
pub fn new_build(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"etcd-inspector-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes only");
    let mut out = bytes.to_vec();
    out.extend([0u8, size as u8, name.len() as u8]);
    out.extend(name);
    out.extend(payload);
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    etcd_inspector::runtime::sha256_hex(bytes)
}

pub async fn plugin_status(host: &Host, file_suffix: &str) -> Option<serde_json::Value> {
    let all = host.json("/plugins").await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().ends_with(file_suffix))
        .cloned()
}

async fn wait_healthy_serving(host: &Host) {
    wait_until("healthy serving", Duration::from_secs(60), async || {
        host.scrape()
            .await
            .get(HEALTHY, &[("clusterName", "prod")])
            .ok_or("none".to_string())
    })
    .await;
}

fn healthy_cluster(url: &str) -> [(&'static str, String); 2] {
    [
        ("cluster.yaml", cluster_manifest("prod", &[("importedAddr", url)])),
        ("healthy.yaml", inspection_manifest("prod", "healthy", 1)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// How fast a swap serves is the bench's (bench C); this asserts that it
/// serves, and that not one inspection fails on the way.
async fn a_configmap_style_swap_serves_the_new_version_without_a_failed_inspection() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let original = std::fs::read(plugin_file("bundled", "healthy")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    let mut volume = ConfigMapDir::new(&plugins, &[("healthy.wasm", original.clone())]);
    let dir = plugins.to_str().unwrap().to_string();
    let host = Host::start(
        &[],
        &healthy_cluster(&etcd.members[0].client_url),
        &["--plugin-dir", &dir],
    )
    .await;
    wait_healthy_serving(&host).await;

    // A new version arrives the way kubelet delivers a ConfigMap update.
    let v2 = new_build(&original, "v2");
    volume.publish(&[("healthy.wasm", v2.clone())]);
    wait_until("the new version serves", Duration::from_secs(60), async || {
        let status = plugin_status(&host, "/healthy.wasm").await.unwrap_or_default();
        if status["serving"]["sha256"] == sha256(&v2) && status["state"] == "active" {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    })
    .await;
    let before = host.scrape().await;
    let ok = |s: &crate::harness::metrics::Scrape| {
        s.get(
            "etcd_inspector_plugin_invocations_total",
            &[("plugin", "healthy"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };
    wait_until("inspections go on", Duration::from_secs(60), async || {
        if ok(&host.scrape().await) >= ok(&before) + 2.0 {
            Ok(())
        } else {
            Err("no new runs".into())
        }
    })
    .await;
    let scrape = host.scrape().await;
    assert_eq!(
        scrape.get("etcd_inspector_plugin_reloads_total", &[("plugin", "healthy")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.get("inspection_failed_num", &[]),
        None,
        "not one inspection failed"
    );
    let failed_calls: Vec<_> = scrape
        .all("etcd_inspector_plugin_invocations_total", &[("plugin", "healthy")])
        .into_iter()
        .filter(|(labels, _)| labels["outcome"] != "ok")
        .collect();
    assert!(failed_calls.is_empty(), "{failed_calls:?}");

    // A corrupt version: the previous one keeps serving, and the failure shows.
    volume.publish(&[("healthy.wasm", b"\0asm\x0d\0\x01\0 truncated".to_vec())]);
    let status = wait_until("the corrupt version is rejected", Duration::from_secs(60), async || {
        let status = plugin_status(&host, "/healthy.wasm").await.unwrap_or_default();
        if status["state"] == "serving_previous" {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    })
    .await;
    assert_eq!(
        status["serving"]["sha256"],
        sha256(&v2),
        "the good version keeps serving"
    );
    let rejected = &status["last_rejected"];
    assert!(
        rejected["reason"].as_str().unwrap().starts_with("does not compile"),
        "{status}"
    );
    assert_eq!(rejected["sha256"], sha256(b"\0asm\x0d\0\x01\0 truncated"), "{status}");
    assert_eq!(status["clusters"]["default/prod"]["health"], "ok", "{status}");
    let runs = ok(&host.scrape().await);
    wait_until("healthy still runs", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let compile_errors = scrape.get("etcd_inspector_plugin_load_errors_total", &[("reason", "compile")]);
        if ok(&scrape) >= runs + 2.0 && compile_errors == Some(1.0) {
            Ok(())
        } else {
            Err(format!("{compile_errors:?}"))
        }
    })
    .await;

    // Removed: unloaded, and its series are deleted.
    volume.publish(&[]);
    wait_until("healthy removed with its series", Duration::from_secs(60), async || {
        let scrape = host.scrape().await;
        let series = scrape.all(HEALTHY, &[]).len() + scrape.all("etcd_inspector_plugin_loaded", &[]).len();
        let status = plugin_status(&host, "/healthy.wasm").await;
        if series == 0 && status.is_none() {
            Ok(())
        } else {
            Err(format!("{series} series, {status:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_versions_are_checked_by_semver() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let manifests = [(
        "cluster.yaml",
        cluster_manifest(
            "prod",
            &[
                ("importedAddr", &etcd.members[0].client_url),
                ("featureGates", "patch=true"),
            ],
        ),
    )];
    let plugins = [
        plugin_file("fixtures", "wit-next"),
        plugin_file("fixtures", "wit-patch"),
    ];
    let host = Host::start(&plugins, &manifests, &[]).await;
    let next = plugin_status(&host, "/wit-next.wasm").await.unwrap();
    assert_eq!(next["state"], "failed");
    assert_eq!(next["serving"], serde_json::Value::Null);
    assert_eq!(
        next["last_rejected"]["reason"],
        "built against etcd-inspector:plugin@0.2.0; this host serves etcd-inspector:plugin@0.1.x"
    );
    let patch = plugin_status(&host, "/wit-patch.wasm").await.unwrap();
    assert_eq!(
        (patch["state"].as_str(), patch["serving"]["wit_version"].as_str()),
        (Some("active"), Some("0.1.9"))
    );
    wait_until("the 0.1.9 plugin runs", Duration::from_secs(60), async || {
        match host.scrape().await.get("patch_runs", &[("clusterName", "prod")]) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_entry_is_recompiled() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let manifests = healthy_cluster(&etcd.members[0].client_url);
    let plugins = [plugin_file("bundled", "healthy")];
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };
    {
        let _first = Host::start(&plugins, &manifests, &["--plugin-cache-dir", &cache_dir]).await;
    }
    let written = entries();
    assert_eq!(written.len(), 1, "one precompiled entry: {written:?}");
    let good = std::fs::read(&written[0]).unwrap();
    std::fs::write(&written[0], b"not a precompiled component").unwrap();

    let host = Host::start(&plugins, &manifests, &["--plugin-cache-dir", &cache_dir]).await;
    let status = plugin_status(&host, "/healthy.wasm").await.unwrap();
    assert_eq!(status["state"], "active", "{status}");
    assert!(host.log().contains("precompile cache entry unusable"), "{}", host.log());
    assert_eq!(
        std::fs::read(&written[0]).unwrap().len(),
        good.len(),
        "the entry is written again"
    );
    wait_healthy_serving(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_the_circuit_breaker_come_from_the_plugin_settings() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("plugins.yaml");
    let wrong_pin = "0".repeat(64);
    std::fs::write(
        &config,
        format!("plugins:\n  healthy:\n    sha256: \"{wrong_pin}\"\n  spin:\n    timeoutSeconds: 0.3\n    maxConsecutiveTraps: 2\n"),
    )
    .unwrap();
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest(
                "prod",
                &[
                    ("importedAddr", &etcd.members[0].client_url),
                    ("featureGates", "healthy=true"),
                ],
            ),
        ),
        ("spin.yaml", inspection_manifest("prod", "spin", 1)),
    ];
    let plugins = [plugin_file("bundled", "healthy"), plugin_file("fixtures", "spin")];
    let flags = [
        "--plugin-config",
        config.to_str().unwrap(),
        "--plugin-rescan-interval",
        "1",
    ];
    let host = Host::start(&plugins, &manifests, &flags).await;
    let healthy = plugin_status(&host, "/healthy.wasm").await.unwrap();
    assert_eq!(healthy["state"], "failed");
    assert!(
        healthy["last_rejected"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("does not match the pin of plugin \"healthy\" ({wrong_pin})")),
        "{healthy}"
    );

    // Two timeouts (0.3 s each, not the default 20 s), then calls pause.
    wait_until("the breaker opens", Duration::from_secs(60), async || {
        let status = host.json("/api/status").await;
        let spin = status["clusters"][0]["features"]["spin"]["outcome"].clone();
        if spin == "circuit_open" {
            Ok(())
        } else {
            Err(format!("{spin}"))
        }
    })
    .await;
    // Loaded is not working: /plugins says the spin plugin is active and
    // that its circuit is open on the cluster.
    let spin = plugin_status(&host, "/spin.wasm").await.unwrap();
    assert_eq!(spin["state"], "active", "{spin}");
    assert_eq!(spin["clusters"]["default/prod"]["health"], "circuit_open", "{spin}");
    assert_eq!(spin["rounds"]["circuit_open"], 1, "{spin}");
    assert_eq!(spin["rounds"]["ok"], 0, "{spin}");
    assert_eq!(
        spin["clusters"]["default/prod"]["last_ok_unix_ms"],
        serde_json::Value::Null
    );
    let scrape = host.scrape().await;
    let timeouts = scrape.get(
        "etcd_inspector_plugin_invocations_total",
        &[("plugin", "spin"), ("outcome", "timeout")],
    );
    assert!(
        timeouts.is_some_and(|n| n >= 2.0),
        "the breaker opens after two traps: {timeouts:?}"
    );
    // What an alert sees: rounds refused while the circuit is open.
    wait_until("circuit_open counted", Duration::from_secs(60), async || {
        let refused = host.scrape().await.get(
            "etcd_inspector_plugin_invocations_total",
            &[("plugin", "spin"), ("outcome", "circuit_open")],
        );
        refused.filter(|n| *n >= 1.0).ok_or(format!("{refused:?}"))
    })
    .await;
    let mean = scrape
        .get(
            "etcd_inspector_plugin_invocation_duration_seconds_sum",
            &[("plugin", "spin")],
        )
        .unwrap()
        / 2.0;
    // The per-plugin 0.3 s applies, not the default 20 s (generous above:
    // a loaded machine delays the interrupt, not by seconds).
    assert!((0.3..5.0).contains(&mean), "the per-plugin timeout applies: {mean}");
    assert!(host.log().contains("repeated traps: calls paused"));

    // Settings are re-read: pinning the right digest loads healthy, no restart.
    let right = sha256(&std::fs::read(plugin_file("bundled", "healthy")).unwrap());
    std::fs::write(&config, format!("plugins:\n  healthy:\n    sha256: \"{right}\"\n")).unwrap();
    wait_until(
        "healthy loads under the corrected pin",
        Duration::from_secs(60),
        async || {
            let status = plugin_status(&host, "/healthy.wasm").await.unwrap_or_default();
            if status["state"] == "active" {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;
}

/// `/plugins` and the status page say how each plugin's rounds go on each
/// cluster: a loaded plugin failing everywhere is not "active and fine",
/// and series kept by `onFailure: keep` are called stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_report_their_rounds_per_cluster_and_stale_series() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let manifests = [
        (
            "cluster.yaml",
            cluster_manifest("prod", &[("importedAddr", &etcd.members[0].client_url)]),
        ),
        ("alarm.yaml", inspection_manifest("prod", "alarm", 1)),
    ];
    let plugins = [plugin_file("bundled", "alarm")];
    let host = Host::start(&plugins, &manifests, &["--etcd-timeout", "0.5"]).await;
    let round = async |health: &str, stale: bool| {
        let status = plugin_status(&host, "/alarm.wasm").await.unwrap_or_default();
        let prod = &status["clusters"]["default/prod"];
        if prod["health"] == health && prod["stale_series_kept"] == stale {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    };
    let status = wait_until("alarm ok", Duration::from_secs(60), async || round("ok", false).await).await;
    assert_eq!(status["rounds"]["ok"], 1, "{status}");
    assert_eq!(status["clusters"]["default/prod"]["consecutive_failures"], 0);

    // The only member freezes: every round fails; the last good values stay
    // exported (onFailure: keep, the default) and are said to be stale.
    etcd.signal(0, nix::sys::signal::Signal::SIGSTOP);
    let status = wait_until("alarm failing", Duration::from_secs(60), async || {
        round("failing", true).await
    })
    .await;
    assert_eq!(status["state"], "active", "loaded, but failing: {status}");
    assert_eq!(status["rounds"]["failing"], 1, "{status}");
    assert_eq!(status["rounds"]["stale_series_kept"], 1, "{status}");
    let prod = &status["clusters"]["default/prod"];
    assert!(prod["consecutive_failures"].as_u64().unwrap() >= 1, "{status}");
    assert!(prod["last_ok_unix_ms"].as_u64().is_some(), "{status}");
    let kept = host
        .scrape()
        .await
        .all("inspection_etcd_endpoint_alarm", &[("clusterName", "prod")]);
    assert_eq!(kept.len(), 2, "the kept series are still exported: {kept:?}");
    let page = host.get("/").await.unwrap();
    assert!(page.contains("default/prod: failing"), "{page}");
    assert!(page.contains("series kept stale"), "{page}");

    etcd.signal(0, nix::sys::signal::Signal::SIGCONT);
    wait_until("alarm ok again", Duration::from_secs(60), async || {
        round("ok", false).await
    })
    .await;
}

/// A pin follows the name a plugin declares, not its file name: another
/// build that calls itself `healthy` from a file that sorts first is
/// refused, and the pinned artefact serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_name_cannot_be_taken_from_another_file() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let work = tempfile::tempdir().unwrap();
    let real = std::fs::read(plugin_file("bundled", "healthy")).unwrap();
    let impostor = work.path().join("aaa.wasm");
    std::fs::write(&impostor, new_build(&real, "impostor")).unwrap();
    let config = work.path().join("plugins.yaml");
    std::fs::write(
        &config,
        format!("plugins:\n  healthy:\n    sha256: \"{}\"\n", sha256(&real)),
    )
    .unwrap();
    let flags = ["--plugin-config", config.to_str().unwrap()];
    let plugins = [impostor, plugin_file("bundled", "healthy")];
    let host = Host::start(&plugins, &healthy_cluster(&etcd.members[0].client_url), &flags).await;
    wait_healthy_serving(&host).await;
    let impostor = plugin_status(&host, "/aaa.wasm").await.unwrap();
    assert_eq!(impostor["state"], "failed", "{impostor}");
    assert!(
        impostor["last_rejected"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match the pin of plugin \"healthy\""),
        "{impostor}"
    );
    let healthy = plugin_status(&host, "/healthy.wasm").await.unwrap();
    assert_eq!(healthy["state"], "active", "{healthy}");
    assert_eq!(healthy["serving"]["sha256"], sha256(&real));
}

/// A node that cannot reserve the instance pool's address space still runs
/// plugins: the host falls back to allocating instances on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_address_space_for_the_pool_plugins_run_on_demand() {
    let etcd = EtcdCluster::start(Options::new(1)).await;
    let manifests = healthy_cluster(&etcd.members[0].client_url);
    // The default pool reserves hundreds of GiB; 32 GiB leaves room for a
    // few on-demand instances (about 4 GiB each) only.
    let host = Host::start_in_address_space(32 << 30, &[plugin_file("bundled", "healthy")], &manifests).await;
    wait_until("healthy reads 1", Duration::from_secs(60), async || {
        match host.scrape().await.get(HEALTHY, &[("clusterName", "prod")]) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        host.log().contains("cannot reserve the instance pool"),
        "{}",
        host.log()
    );
}

/// Pooled slots are reused call after call with the pages a call wrote
/// kept resident (reset in place where the kernel has PAGEMAP_SCAN), and
/// every call still starts from the plugin's own image: the noop fixture
/// fails a call that sees an earlier call's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_slots_keep_pages_resident_and_every_call_starts_fresh() {
    use etcd_inspector::etcd::FakeEtcd;
    use etcd_inspector::runtime::{CallLimits, Runtime, Snapshot};

    let runtime = Runtime::with_pooling(CallLimits::default(), Some(2)).unwrap();
    let noop = runtime
        .load(std::fs::read(plugin_file("fixtures", "noop")).unwrap())
        .await
        .unwrap();
    let etcd = std::sync::Arc::new(FakeEtcd::default());
    for call in 0..20 {
        let snapshot = Snapshot {
            name: "c".into(),
            namespace: "ns".into(),
            members: etcd.members(),
            params: vec![],
            log_gate: None,
            began: std::time::Instant::now(),
        };
        let out = runtime
            .inspect(&noop, etcd.clone(), snapshot, None, runtime.limits())
            .await
            .unwrap_or_else(|e| panic!("call {call}: {}", e.message));
        assert_eq!(out.samples[0].value, etcd.members().len() as f64);
    }
    let resident = runtime.pool_resident_bytes().expect("a pooled runtime");
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        // The slots' written pages (stack, data, heap), bounded by the
        // host's 2 MiB per memory and 64 KiB per table (two slots: four
        // memories, eight tables).
        assert!(resident > 0 && resident <= 4 * (2 << 20) + 8 * (64 << 10), "{resident}");
    } else {
        assert_eq!(resident, 0);
    }
}

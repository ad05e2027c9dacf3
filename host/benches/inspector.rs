//! Benchmarks against the DESIGN targets, each with its baseline in the
//! same run, printed as ratios (never asserted). `make bench` runs this
//! against a local 3-member etcd and writes bench/RESULTS.md.
//!
//! A. Per-call host overhead (instantiate + call + commit) of the noop
//!    fixture and of each bundled plugin making no etcd call, pooling and
//!    on-demand allocation, against noop's work done natively. Target ≤ 50 µs.
//! B. One inspection round of healthy, alarm and consistency against a real
//!    cluster, wasm against the same etcd calls made natively, pooling and
//!    on-demand. Target ≤ 1.10×.
//! C. Hot reload: file replaced → new version serving, and inspections
//!    failed meanwhile. Target ≤ 2 s, zero failures.
//! D. request: the same event batches through the wasm plugin and its
//!    code compiled natively (CPU per event, target ≤ 2×); then the whole
//!    host path while a writer drives etcd as hard as it can: events/s,
//!    host CPU per event, counts checked against the writes.
//! E. The naive alternative (etcdctl endpoint health, endpoint status and
//!    alarm list per cluster in a loop) against the host making the same
//!    checks, N = 10 and 100: wall and CPU ratios.
//! F. Scale (BENCH_SCALE=1): N clusters × the 4 bundled plugins, all on the
//!    local etcd, at 30 s and at a 5 s stress interval: CPU share of one
//!    core, RSS, schedule lag, missed runs. Target at 1000 × 4 × 30 s:
//!    no missed runs, CPU ≤ 25 %, RSS ≤ 256 MiB.
//! H. HashKV on etcd 3.6 (BENCH_ETCD36 names its binary; scripts/bench.sh
//!    builds it): on one store with 250 000 revisions, HashKV at the latest
//!    compaction (answered from the hash etcd keeps) against HashKV at the
//!    latest revision (a scan of the history), as consistency used to ask.
//!
//! BENCH_ONLY=B,D (say) runs just those sections, and replaces only those
//! sections of bench/RESULTS.md.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_inspector::cluster::{ClusterConfig, ClusterKey, FeatureSettings};
use etcd_inspector::controllers::{SchedulerSettings, Supervisor, BATCH_EVENTS};
use etcd_inspector::etcd::{CallError, ClusterConnection, ConnectionSettings, Credentials, MemberInfo, WatchEvent};
use etcd_inspector::metrics::{CommitMode, Metrics, SampleValue};
use etcd_inspector::runtime::{watch_plugin_dir, CallLimits, LoadedPlugin, PluginRegistry, Runtime, Snapshot};

/// The host's default pool: 64 concurrent inspections + 16 loading.
const HOST_SLOTS: u32 = 80;

/// A runtime configured as the host runs by default.
fn host_runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(Runtime::with_pooling(
        CallLimits::default(),
        Some(HOST_SLOTS),
    )?))
}

/// The bundled plugins under a supervisor, as the host runs them, and
/// their runtime.
async fn supervised_host(metrics: &Arc<Metrics>) -> anyhow::Result<(Supervisor, Arc<Runtime>)> {
    let runtime = host_runtime()?;
    let registry = Arc::new(PluginRegistry::new(runtime.clone(), metrics.clone()));
    registry.sync_dir(&plugins_dir().join("bundled")).await?;
    Ok((
        Supervisor::new(registry, metrics.clone(), SchedulerSettings::default()),
        runtime,
    ))
}

/// A cluster on the local etcd running `features` every `interval` (the
/// plugins' own when `None`), request watching `request_path`.
fn bench_cluster(
    name: &str,
    endpoints: &[String],
    features: &[&str],
    interval: Option<Duration>,
    request_path: &str,
) -> ClusterConfig {
    ClusterConfig {
        key: ClusterKey {
            namespace: "bench".into(),
            name: name.into(),
        },
        seeds: endpoints.to_vec(),
        rewrites: HashMap::new(),
        credentials: Credentials::default(),
        features: features
            .iter()
            .map(|f| (f.to_string(), FeatureSettings { interval }))
            .collect(),
        params: vec![("request".into(), format!(r#"{{"path":"{request_path}"}}"#))],
        warnings: vec![],
    }
}

fn plugins_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("plugins")
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (mean, at(0.5), at(0.99))
}

async fn load(runtime: &Runtime, kind: &str, name: &str) -> anyhow::Result<LoadedPlugin> {
    Ok(runtime
        .load(std::fs::read(plugins_dir().join(kind).join(format!("{name}.wasm")))?)
        .await?)
}

fn connection(endpoints: &[String]) -> anyhow::Result<Arc<ClusterConnection>> {
    Ok(Arc::new(ClusterConnection::new(
        "bench/c",
        endpoints.to_vec(),
        HashMap::new(),
        Credentials::default(),
        ConnectionSettings::default(),
    )?))
}

fn snapshot(members: Vec<MemberInfo>) -> Snapshot {
    Snapshot {
        name: "c".into(),
        namespace: "bench".into(),
        members,
        params: vec![],
        log_gate: None,
        began: std::time::Instant::now(),
    }
}

/// A: the host's own cost per call, for the noop fixture and each bundled
/// plugin (their binaries differ in size and imports). Members point at a
/// closed port and the plugins get no members, so no call reaches etcd.
async fn per_call(report: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = connection(&["http://127.0.0.1:9".into()])?;
    let member = MemberInfo {
        id: 1,
        name: "m0".into(),
        client_urls: vec!["http://127.0.0.1:9".into()],
        endpoint: "http://127.0.0.1:9".into(),
        host: "127.0.0.1".into(),
        is_learner: false,
    };
    let calls = 5000;
    // The same work as noop, natively: build the sample from the snapshot, commit it.
    let metrics = Metrics::new("");
    let runtime = Runtime::new(CallLimits::default())?;
    let noop = load(&runtime, "fixtures", "noop").await?;
    metrics.register_plugin(&noop.info.name, &noop.info.metrics)?;
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let snap = std::hint::black_box(snapshot(vec![member.clone(); 3]));
        let samples = vec![SampleValue {
            metric: "noop_members".into(),
            labels: vec![],
            value: snap.members.len() as f64,
        }];
        metrics.commit("noop", "c", &samples, CommitMode::Replace)?;
        native.push(t.elapsed());
    }
    let (native_mean, _, _) = stats(native);

    report.push("## A. Per-call host overhead: instantiate + call + commit, no etcd call\n".into());
    report.push(format!(
        "noop returns one sample from the snapshot (3 members); natively the same takes {native_mean:.2?}. \
         The bundled plugins get no members, so each returns at once (healthy, alarm and request with an \
         error, which is not committed): their rows are the fixed cost of their binaries.\n"
    ));
    report.push(
        "| plugin | allocation | plugin load | mean | p50 | p99 | mean / 50 µs target | mean / native noop |".into(),
    );
    report.push("|---|---|---|---|---|---|---|---|".into());
    for (kind, name) in [
        ("fixtures", "noop"),
        ("bundled", "healthy"),
        ("bundled", "alarm"),
        ("bundled", "consistency"),
        ("bundled", "request"),
    ] {
        for (allocation, pooling) in [("pooling (host default)", Some(HOST_SLOTS)), ("on-demand", None)] {
            let runtime = Runtime::with_pooling(CallLimits::default(), pooling)?;
            let started = Instant::now();
            let plugin = load(&runtime, kind, name).await?;
            let load_time = started.elapsed();
            let metrics = Metrics::new("");
            metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
            let members = if name == "noop" {
                vec![member.clone(); 3]
            } else {
                vec![]
            };
            let mut times = Vec::with_capacity(calls);
            for i in 0..calls + 500 {
                let t = Instant::now();
                let out = runtime
                    .inspect(
                        &plugin,
                        conn.clone(),
                        snapshot(members.clone()),
                        None,
                        &CallLimits::default(),
                    )
                    .await;
                if let Ok(out) = out {
                    metrics.commit(name, "c", &out.samples, CommitMode::Replace)?;
                }
                if i >= 500 {
                    times.push(t.elapsed()); // the first 500 warm caches up
                }
            }
            let (mean, p50, p99) = stats(times);
            report.push(format!(
                "| {name} | {allocation} | {load_time:.1?} | {mean:.1?} | {p50:.1?} | {p99:.1?} | {:.2} | {:.0}× |",
                mean.as_secs_f64() / 50e-6,
                mean.as_secs_f64() / native_mean.as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// B's baseline: the same etcd calls each plugin makes, made natively.
async fn native_round(kind: &str, conn: &ClusterConnection, members: &[MemberInfo]) {
    match kind {
        "healthy" => {
            for m in members {
                let _ = std::hint::black_box(conn.health(&m.endpoint).await);
            }
        }
        "alarm" => {
            let mut alarm_in_status = false;
            for m in members {
                if let Ok(s) = conn.status(&m.endpoint).await {
                    alarm_in_status |= s.errors.iter().any(|e| e.contains("alarm:"));
                }
            }
            if alarm_in_status {
                let _ = conn.alarm_list().await;
            }
        }
        _ => {
            let mut revisions = Vec::new();
            for m in members {
                if let Ok(s) = conn.status(&m.endpoint).await {
                    revisions.push(s.revision);
                }
            }
            let r = revisions.into_iter().min().unwrap_or(0);
            for m in members {
                let _ = conn.count(Some(&m.endpoint), (&[0], &[]), r, true).await;
            }
            // The plugin's `etcd::compact_revision`: a count at revision 1
            // of an empty range, then HashKV at the compact revision when
            // every member answers there, else at R.
            // The prefix `etcd::compact_revision` probes (sdk/src/lib.rs).
            let probe_start = b"\0etcd-inspector/compaction-probe/";
            let probe_end = etcd_inspector_sdk::prefix_end(probe_start);
            let probe: (&[u8], &[u8]) = (probe_start, &probe_end);
            let first = members.first().map(|m| m.endpoint.as_str());
            let compact = match conn.count(first, probe, 1, true).await {
                Err(CallError::Compacted(c)) if c > 0 => Some(c),
                _ => None,
            };
            let mut hashed = false;
            if let Some(c) = compact {
                let mut all = true;
                for m in members {
                    all &= conn.hash_kv(&m.endpoint, c).await.is_ok();
                }
                hashed = all;
            }
            if !hashed {
                for m in members {
                    let _ = std::hint::black_box(conn.hash_kv(&m.endpoint, r).await);
                }
            }
            for m in members {
                let _ = std::hint::black_box(conn.status(&m.endpoint).await);
            }
        }
    }
}

/// B: one round, wasm against native, interleaved so cluster drift hits
/// both, for each way of allocating instances.
async fn rounds(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    let conn = connection(endpoints)?;
    let members = conn.refresh_members().await?;
    report.push("\n## B. One inspection round on a real 3-member etcd: wasm against native\n".into());
    report.push(
        "| plugin | allocation | rounds | wasm mean / p50 | native mean / p50 | wasm − native (mean) | ratio of means (target ≤ 1.10) | ratio of p50s | CPU per round wasm / native | context switches per round wasm / native | page faults per round wasm / native |"
            .into(),
    );
    report.push("|---|---|---|---|---|---|---|---|---|---|---|".into());
    let n = 400;
    for (allocation, pooling) in [("pooling (host default)", Some(HOST_SLOTS)), ("on-demand", None)] {
        let runtime = Runtime::with_pooling(CallLimits::default(), pooling)?;
        let only = std::env::var("BENCH_B_PLUGINS").unwrap_or_default();
        for kind in ["healthy", "alarm", "consistency"] {
            if !only.is_empty() && !only.split(',').any(|p| p == kind) {
                continue;
            }
            let plugin = load(&runtime, "bundled", kind).await?;
            let mut state = None;
            let (mut wasm, mut native) = (Vec::new(), Vec::new());
            let (mut wasm_usage, mut native_usage) = (Usage::default(), Usage::default());
            for i in 0..n {
                // Alternate which goes first, so neither always finds the
                // cluster (and the idle worker threads) as the other left them.
                for wasm_turn in [i % 2 == 0, i % 2 == 1] {
                    let (t, before) = (Instant::now(), Usage::now());
                    if wasm_turn {
                        let out = runtime
                            .inspect(
                                &plugin,
                                conn.clone(),
                                snapshot(members.clone()),
                                state.clone(),
                                &CallLimits::default(),
                            )
                            .await;
                        wasm.push(t.elapsed());
                        wasm_usage.add_since(before);
                        // Like the host: a call that stores nothing keeps the previous state.
                        if let Some(stored) = out.ok().and_then(|o| o.state) {
                            state = Some(stored);
                        }
                    } else {
                        native_round(kind, &conn, &members).await;
                        native.push(t.elapsed());
                        native_usage.add_since(before);
                    }
                }
            }
            let ((w, w50, _), (nat, nat50, _)) = (stats(wasm), stats(native));
            let per_round = |cpu: f64| Duration::from_secs_f64(cpu / n as f64);
            report.push(format!(
                "| {kind} | {allocation} | {n} | {w:.2?} / {w50:.2?} | {nat:.2?} / {nat50:.2?} | {:.0?} | {:.2} | {:.2} | {:.0?} / {:.0?} | {:.1} / {:.1} | {:.1} / {:.1} |",
                w.saturating_sub(nat),
                w.as_secs_f64() / nat.as_secs_f64(),
                w50.as_secs_f64() / nat50.as_secs_f64(),
                per_round(wasm_usage.cpu),
                per_round(native_usage.cpu),
                wasm_usage.switches / n as f64,
                native_usage.switches / n as f64,
                wasm_usage.faults / n as f64,
                native_usage.faults / n as f64,
            ));
        }
    }
    Ok(())
}

/// C: file replaced → new version serving, with inspections running.
async fn hot_reload(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = std::fs::read(plugins_dir().join("bundled/healthy.wasm"))?;
    std::fs::write(dir.path().join("healthy.wasm"), &original)?;
    let metrics = Arc::new(Metrics::new(""));
    let registry = Arc::new(PluginRegistry::new(host_runtime()?, metrics));
    registry.sync_dir(dir.path()).await?;
    tokio::spawn(watch_plugin_dir(
        registry.clone(),
        dir.path().to_path_buf(),
        Duration::from_secs(30),
    ));
    let conn = connection(endpoints)?;
    let members = conn.refresh_members().await?;
    let (failed, ran, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let inspections = {
        let (registry, failed, ran, stop) = (registry.clone(), failed.clone(), ran.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let plugin = registry.get("healthy").expect("healthy serves throughout");
                let snap = snapshot(members.clone());
                let out = registry
                    .runtime()
                    .inspect(&plugin, conn.clone(), snap, None, &CallLimits::default())
                    .await;
                if out.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                ran.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut times = Vec::new();
    for i in 0..5u8 {
        let mut next = original.clone();
        next.extend([0u8, 4, 1, b'v', i, 0]); // an empty-named custom section: a new artefact
        let sha = etcd_inspector::runtime::sha256_hex(&next);
        let tmp = dir.path().join(".healthy.tmp");
        std::fs::write(&tmp, &next)?;
        let t = Instant::now();
        std::fs::rename(&tmp, dir.path().join("healthy.wasm"))?;
        while registry.get("healthy").is_none_or(|p| p.sha256 != sha) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    inspections.await?;
    let max = *times.iter().max().unwrap();
    let (mean, _, _) = stats(times.clone());
    report.push("\n## C. Hot reload: file replaced → new version serving\n".into());
    report.push("| reloads | mean | max | target | inspections meanwhile | failed |".into());
    report.push("|---|---|---|---|---|---|".into());
    report.push(format!(
        "| {} | {mean:.0?} | {max:.0?} | ≤ 2 s | {} | {} |",
        times.len(),
        ran.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    ));
    Ok(())
}

/// D's synthetic batches: Kubernetes-like keys, creates, updates and deletes.
fn event_batches(batches: usize, per_batch: usize) -> Vec<Vec<WatchEvent>> {
    let resources = ["pods", "events", "configmaps", "apps/deployments", "leases"];
    let mut revision = 1_000u64;
    (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|i| {
                    revision += 1;
                    let n = b * per_batch + i;
                    let resource = resources[n % resources.len()];
                    let key = format!("/registry/{resource}/ns{}/obj-{}", n % 7, n / 3);
                    let (deleted, created) = match n % 3 {
                        0 => (false, revision),     // a create
                        1 => (false, revision / 2), // an update
                        _ => (true, revision / 2),  // a delete
                    };
                    WatchEvent {
                        deleted,
                        key: key.into_bytes(),
                        create_revision: created,
                        mod_revision: revision,
                    }
                })
                .collect()
        })
        .collect()
}

/// Summed CPU seconds of this process's threads named `name`.
fn threads_cpu_seconds(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ, fixed on Linux for /proc
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the parenthesised name: utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (field(11) + field(12)) / ticks
        })
        .sum()
}

/// D: the request plugin's event processing. First the same batches given
/// to the wasm plugin and to its own code compiled natively (CPU per event,
/// one thread); then the whole host path — watch, batches, plugin, commit —
/// while a writer drives the local etcd as hard as it can, with the counts
/// checked against what the writer did.
async fn watch_throughput(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    use etcd_inspector_sdk::testing::FakeCluster;
    report.push("\n## D. request: watch events, wasm against native\n".into());
    const EVENTS: usize = 100_000;

    let runtime = host_runtime()?;
    let plugin = load(&runtime, "bundled", "request").await?;
    let conn = connection(endpoints)?;
    // The same batches through the frozen 0.1.2 build, which exports only
    // `watcher`: what every event cost before `packed-watcher` (0.1.3).
    let unpacked_plugin = runtime
        .load(std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/compat/request-0.1.2.wasm"),
        )?)
        .await?;
    // The host's batch, and 1000 (its batch until 2026-12-05) to compare with
    // HISTORY.md. The derived whole-path figure below uses the host's.
    let mut plugin_per_event = None;
    for per_batch in [BATCH_EVENTS, 1000] {
        let batches = event_batches(EVENTS.div_ceil(per_batch), per_batch);
        let events: usize = batches.iter().map(Vec::len).sum();
        let run = async |plugin: &LoadedPlugin, metrics: &Metrics| -> anyhow::Result<(Duration, Option<Vec<u8>>)> {
            let mut state = None;
            let t = thread_cpu();
            for batch in &batches {
                let out = runtime
                    .on_events(
                        plugin,
                        conn.clone(),
                        snapshot(vec![]),
                        state.clone(),
                        batch.clone(),
                        &CallLimits::default(),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("request on_events: {e}"))?;
                metrics.commit("request", "c", &out.samples, CommitMode::Add)?;
                if out.state.is_some() {
                    state = out.state;
                }
            }
            Ok((thread_cpu() - t, state))
        };
        // Each path RUNS times, interleaved, the fastest run of each kept: a
        // single run of ~30 ms swung the ratio by ±30 % on this machine, and the
        // fastest of five still by ±10 % between processes.
        const RUNS: usize = 15;
        let (mut unpacked, mut wasm, mut native) = (Duration::MAX, Duration::MAX, Duration::MAX);
        let mut same = true;
        for _ in 0..RUNS {
            let unpacked_metrics = Metrics::new("");
            unpacked_metrics.register_plugin(&unpacked_plugin.info.name, &unpacked_plugin.info.metrics)?;
            let wasm_metrics = Metrics::new("");
            wasm_metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
            let (unpacked_time, _) = run(&unpacked_plugin, &unpacked_metrics).await?;
            let (wasm_time, state) = run(&plugin, &wasm_metrics).await?;
            unpacked = unpacked.min(unpacked_time);
            wasm = wasm.min(wasm_time);
            let native_metrics = Metrics::new("");
            native_metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
            let mut cluster = FakeCluster::new("c");
            if let Some(state) = &state {
                cluster = cluster.state(state);
            }
            let t = thread_cpu();
            for batch in &batches {
                let sdk_events = batch
                    .iter()
                    .map(|e| etcd_inspector_sdk::WatchEvent {
                        kind: if e.deleted {
                            etcd_inspector_sdk::EventKind::Delete
                        } else {
                            etcd_inspector_sdk::EventKind::Put
                        },
                        key: e.key.clone(),
                        create_revision: e.create_revision,
                        mod_revision: e.mod_revision,
                    })
                    .collect();
                // The plugin's own `on_events`, unpacked: native code has no
                // boundary to pack a batch for.
                let samples = cluster
                    .on_unpacked_events::<request::Request>(sdk_events)
                    .map_err(|e| anyhow::anyhow!("native request: {e}"))?;
                let samples: Vec<SampleValue> = samples
                    .0
                    .into_iter()
                    .map(|s| SampleValue {
                        metric: s.metric,
                        labels: s.labels,
                        value: s.value,
                    })
                    .collect();
                native_metrics.commit("request", "c", &samples, CommitMode::Add)?;
            }
            native = native.min(thread_cpu() - t);
            let (wasm_text, native_text) = (wasm_metrics.render(), native_metrics.render());
            same &= counter_sum(&wasm_text, "inspection_etcd_request_total")
                == counter_sum(&native_text, "inspection_etcd_request_total")
                && counter_sum(&wasm_text, "inspection_etcd_key_total")
                    == counter_sum(&native_text, "inspection_etcd_key_total");
            same &= counter_sum(&unpacked_metrics.render(), "inspection_etcd_request_total")
                == counter_sum(&native_text, "inspection_etcd_request_total");
        }
        let per_event = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / events as f64);
        report.push(format!(
            "Same {events} events in batches of {per_batch}, the thread's CPU time, fastest of {RUNS} runs each: wasm {:.2?} per event (packed-watcher), \
             native {:.2?}, ratio {:.2} (target ≤ 2); the 0.1.2 build (watcher, a list of records) {:.2?} per event, \
             ratio {:.2}; samples identical: {same}.\n",
            per_event(wasm),
            per_event(native),
            wasm.as_secs_f64() / native.as_secs_f64(),
            per_event(unpacked),
            unpacked.as_secs_f64() / native.as_secs_f64(),
        ));
        plugin_per_event.get_or_insert((per_event(wasm).as_secs_f64(), per_event(native).as_secs_f64()));
    }

    // The whole host path under a writer.
    let prefix = format!("/bench-e-{}/", std::process::id());
    let metrics = Arc::new(Metrics::new(""));
    let (supervisor, _) = supervised_host(&metrics).await?;
    supervisor.apply(
        vec![bench_cluster("e", endpoints, &["request"], None, &prefix)],
        &[],
        vec![],
    );
    // The census has run once the series exist (0 keys: no series yet), so wait for the watch.
    let census_done = Instant::now() + Duration::from_secs(10);
    while counter_sum(&metrics.render(), "etcd_inspector_plugin_invocations_total") < 1.0
        && Instant::now() < census_done
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = 10;
    let writer = std::thread::Builder::new().name("writer".into()).spawn({
        let endpoints = endpoints.to_vec();
        let prefix = prefix.clone();
        move || -> anyhow::Result<(u64, u64, f64)> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("writer")
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let client = etcd_client::Client::connect(&endpoints, None).await?;
                let stop = Instant::now() + Duration::from_secs(seconds);
                let tasks: Vec<_> = (0..32)
                    .map(|w| {
                        let mut kv = client.kv_client();
                        let prefix = prefix.clone();
                        tokio::spawn(async move {
                            let (mut writes, mut live) = (0u64, 0u64);
                            let mut i = 0u64;
                            // Each key is created, updated, then deleted (or, every
                            // other one, left): events of all three kinds.
                            while Instant::now() < stop {
                                let j = i / 2;
                                let resource = ["pods", "events", "leases"][(j % 3) as usize];
                                let key = format!("{prefix}{resource}/w{w}/k{j}");
                                if i % 4 == 3 {
                                    let deleted = kv.delete(key, None).await?.deleted() as u64;
                                    live -= deleted;
                                    writes += deleted; // deleting nothing makes no event
                                    i += 1;
                                    continue;
                                } else {
                                    let created = kv
                                        .put(key, "v", Some(etcd_client::PutOptions::new().with_prev_key()))
                                        .await?
                                        .prev_key()
                                        .is_none();
                                    live += u64::from(created);
                                }
                                writes += 1;
                                i += 1;
                            }
                            anyhow::Ok((writes, live))
                        })
                    })
                    .collect();
                let (mut writes, mut live) = (0, 0);
                for task in tasks {
                    let (w, l) = task.await??;
                    writes += w;
                    live += l;
                }
                // Read while the writer's threads are alive: a thread's CPU
                // leaves /proc with it, but stays in the process's total.
                Ok((writes, live, threads_cpu_seconds("writer")))
            })
        }
    })?;
    let (cpu0, writer0, t0) = (cpu_seconds(), threads_cpu_seconds("writer"), Instant::now());
    let mut writer = Some(writer);
    let (mut writes, mut live, mut written_in, mut writer_cpu) = (0.0, 0.0, Duration::ZERO, 0.0);
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    // Until the writer is done and the host has counted everything it wrote.
    let (processed, keys) = loop {
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            let (w, l, cpu) = writer
                .take()
                .unwrap()
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??;
            (writes, live, written_in, writer_cpu) = (w as f64, l as f64, t0.elapsed(), cpu - writer0);
        }
        let text = metrics.render();
        let processed = counter_sum(&text, "inspection_etcd_request_total");
        let keys = counter_sum(&text, "inspection_etcd_key_total");
        if writer.is_none() && processed >= writes || Instant::now() > deadline {
            break (processed, keys);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = t0.elapsed();
    let host_cpu = (cpu_seconds() - cpu0) - writer_cpu;
    supervisor.shutdown();
    // Leave the store as it was: a long history makes every later HashKV
    // (consistency, in F) scan it, and F would measure etcd, not the host.
    let mut client = etcd_client::Client::connect(endpoints, None).await?;
    client
        .delete(prefix.as_str(), Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await?;
    let revision = client.status().await?.header().map_or(0, |h| h.revision());
    client
        .compact(revision, Some(etcd_client::CompactionOptions::new().with_physical()))
        .await?;
    report.push(
        "| writer | writes (events) | events counted | keys now / counted | write rate | host caught up after | host CPU per event | host CPU (share of one core) |"
            .into(),
    );
    report.push("|---|---|---|---|---|---|---|---|".into());
    report.push(format!(
        "| 32 concurrent puts/deletes, {seconds} s | {writes} | {processed} | {live} / {keys} | {:.0}/s | {:.1?} | {:.1?} | {:.1} % |",
        writes / written_in.as_secs_f64(),
        wall.saturating_sub(written_in),
        Duration::from_secs_f64(host_cpu / writes.max(1.0)),
        100.0 * host_cpu / wall.as_secs_f64(),
    ));
    // The host path is the same either way but for the plugin's share.
    let host_per_event = host_cpu / writes.max(1.0);
    let (wasm_per_event, native_per_event) = plugin_per_event.unwrap_or_default();
    let native_path = host_per_event - wasm_per_event + native_per_event;
    report.push(format!(
        "\nThe whole path with the plugin's work done natively instead (derived: host CPU per event − wasm + native \
         processing per event): {:.1?} per event; wasm path / native path {:.2}.",
        Duration::from_secs_f64(native_path),
        host_per_event / native_path
    ));
    Ok(())
}

/// CPU seconds of the processes etcdctl ran as (the children waited for).
fn children_cpu_seconds() -> f64 {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// E: what many operators run today — etcdctl endpoint health, endpoint
/// status and alarm list per cluster in a loop — against the host making
/// the same checks (healthy and alarm, AlarmList every time) for N clusters,
/// in the steady state (connections open, as every interval after the first).
async fn naive_loop(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    report.push("\n## E. The naive alternative: an etcdctl loop against the host, same checks\n".into());
    report.push("| clusters | etcdctl loop: wall / CPU | host round: wall / CPU | wall ratio | CPU ratio |".into());
    report.push("|---|---|---|---|---|".into());
    let list = endpoints.join(",");
    let runtime = host_runtime()?;
    let healthy = Arc::new(load(&runtime, "bundled", "healthy").await?);
    let alarm = Arc::new(load(&runtime, "bundled", "alarm").await?);
    for n in [10, 100] {
        let (t, cpu) = (Instant::now(), children_cpu_seconds());
        for _ in 0..n {
            for args in [&["endpoint", "health"][..], &["endpoint", "status"], &["alarm", "list"]] {
                let status = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg("--endpoints")
                    .arg(&list)
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()?;
                anyhow::ensure!(status.success(), "etcdctl {args:?} failed");
            }
        }
        let (naive_wall, naive_cpu) = (t.elapsed(), children_cpu_seconds() - cpu);

        let connections = (0..n)
            .map(|_| connection(endpoints))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let members = connections[0].refresh_members().await?;
        // At most 64 calls at once, as the host's --max-concurrent-inspections.
        let permits = Arc::new(tokio::sync::Semaphore::new(64));
        let round = || {
            let mut calls = tokio::task::JoinSet::new();
            for conn in &connections {
                for plugin in [&healthy, &alarm] {
                    let (runtime, plugin, conn, members, permits) = (
                        runtime.clone(),
                        plugin.clone(),
                        conn.clone(),
                        members.clone(),
                        permits.clone(),
                    );
                    calls.spawn(async move {
                        let _permit = permits.acquire().await?;
                        runtime
                            .inspect(&plugin, conn, snapshot(members), None, &CallLimits::default())
                            .await
                            .map(|_| ())
                            .map_err(|e| anyhow::anyhow!("{}: {e}", plugin.info.name))
                    });
                }
            }
            calls.join_all()
        };
        for result in round().await {
            result?; // connects
        }
        let (t, cpu) = (Instant::now(), cpu_seconds());
        for result in round().await {
            result?;
        }
        let (host_wall, host_cpu) = (t.elapsed(), cpu_seconds() - cpu);
        report.push(format!(
            "| {n} | {naive_wall:.2?} / {:.2?} | {host_wall:.2?} / {:.2?} | {:.0}× | {:.0}× |",
            Duration::from_secs_f64(naive_cpu),
            Duration::from_secs_f64(host_cpu),
            naive_wall.as_secs_f64() / host_wall.as_secs_f64(),
            naive_cpu / host_cpu,
        ));
    }
    Ok(())
}

/// The families of a scrape, parsed with openmetrics-parser (as the e2e tests do).
fn parse(
    text: &str,
) -> Vec<openmetrics_parser::MetricFamily<openmetrics_parser::PrometheusType, openmetrics_parser::PrometheusValue>> {
    openmetrics_parser::prometheus::parse_prometheus(text)
        .map(|e| e.families.into_values().collect())
        .unwrap_or_default()
}

/// Cumulative (upper bound, count) buckets of one histogram, summed over labels.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut by_le: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for family in parse(text).into_iter().filter(|f| f.family_name == name) {
        for sample in family.iter_samples() {
            if let openmetrics_parser::PrometheusValue::Histogram(h) = &sample.value {
                for b in &h.buckets {
                    *by_le.entry(b.upper_bound.to_bits()).or_default() += b.count.as_f64();
                }
            }
        }
    }
    let mut out: Vec<(f64, f64)> = by_le.into_iter().map(|(le, c)| (f64::from_bits(le), c)).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound under which `q` of the observations (between two scrapes) fall.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> String {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            (
                *le,
                c - before.iter().find(|(l, _)| l == le).map(|(_, c)| *c).unwrap_or(0.0),
            )
        })
        .collect();
    let total = diff.last().map(|(_, c)| *c).unwrap_or(0.0);
    if total == 0.0 {
        return "-".into();
    }
    let bound = diff
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY);
    if bound.is_infinite() {
        "> 30 s".into()
    } else {
        format!("≤ {} ms", bound * 1000.0)
    }
}

fn counter_sum(text: &str, name: &str) -> f64 {
    use openmetrics_parser::PrometheusValue as V;
    parse(text)
        .iter()
        .filter(|f| f.family_name == name)
        .flat_map(|f| f.iter_samples())
        .filter_map(|s| match &s.value {
            V::Counter(c) => Some(c.value.as_f64()),
            V::Gauge(n) | V::Unknown(n) => Some(n.as_f64()),
            _ => None,
        })
        .sum()
}

/// CPU time of the calling thread: what a single-threaded run costs, without
/// the time other processes (etcd, the neighbours of this VM) took the core.
fn thread_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// What this process has used so far (or, summed, over some rounds), from
/// one getrusage: CPU seconds, context switches (voluntary and not), and
/// minor page faults (first touches of fresh pages).
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    switches: f64,
    faults: f64,
}

impl Usage {
    fn now() -> Self {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
        Usage {
            cpu: cpu_time(&usage),
            switches: (usage.voluntary_context_switches() + usage.involuntary_context_switches()) as f64,
            faults: usage.minor_page_faults() as f64,
        }
    }

    /// Adds what was used since `before`.
    fn add_since(&mut self, before: Usage) {
        let now = Usage::now();
        self.cpu += now.cpu - before.cpu;
        self.switches += now.switches - before.switches;
        self.faults += now.faults - before.faults;
    }
}

fn cpu_seconds() -> f64 {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

fn rusage_seconds(who: nix::sys::resource::UsageWho) -> f64 {
    cpu_time(&nix::sys::resource::getrusage(who).unwrap())
}

fn cpu_time(usage: &nix::sys::resource::Usage) -> f64 {
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(usage.user_time()) + t(usage.system_time())
}

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn scale(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    report.push("\n## F. Scale: N clusters × 4 plugins on one local etcd\n".into());
    report.push("| clusters | interval | window | runs | CPU (share of one core) | RSS now / peak | of it, idle instance slots | member channels open | lag p50 | lag p99 | missed runs |".into());
    report.push("|---|---|---|---|---|---|---|---|---|---|---|".into());
    // BENCH_SCALE_RUNS=1000:30:40 (clusters:interval:window, comma-separated)
    // picks runs, for iterating on one.
    let runs: Vec<(usize, u64, u64)> = match std::env::var("BENCH_SCALE_RUNS") {
        Ok(list) => list
            .split(',')
            .map(|run| {
                let parts: Vec<u64> = run.split(':').filter_map(|p| p.parse().ok()).collect();
                match parts[..] {
                    [n, interval, window] => Ok((n as usize, interval, window)),
                    _ => Err(anyhow::anyhow!(
                        "BENCH_SCALE_RUNS: expected clusters:interval:window, got {run:?}"
                    )),
                }
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![
            (10, 30, 40),
            (100, 30, 40),
            (1000, 30, 40),
            (10, 5, 15),
            (100, 5, 15),
            (1000, 5, 15),
        ],
    };
    for (n, interval, window) in runs {
        let metrics = Arc::new(Metrics::new(""));
        let (supervisor, runtime) = supervised_host(&metrics).await?;
        let every = Some(Duration::from_secs(interval));
        let features = ["healthy", "alarm", "consistency", "request"];
        let configs = (0..n)
            .map(|i| bench_cluster(&format!("c{i}"), endpoints, &features, every, "/bench/"))
            .collect();
        supervisor.apply(configs, &[], vec![]);
        // Every schedule has run once and knows when its next run is due.
        tokio::time::sleep(Duration::from_secs(interval + 2)).await;
        let (text0, cpu0, t0) = (metrics.render(), cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(window)).await;
        let (text1, cpu1, wall) = (metrics.render(), cpu_seconds(), t0.elapsed());
        // Read before this bench parses the scrapes: the parser's own
        // buffers (~27 MiB at 1000 clusters, heaptrack) are not the host's.
        let (rss_now, rss_peak) = (rss_mib("VmRSS:"), rss_mib("VmHWM:"));
        let slots_mib = runtime.pool_resident_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
        let lag = "etcd_inspector_schedule_lag_seconds";
        let (b0, b1) = (buckets(&text0, lag), buckets(&text1, lag));
        let runs = counter_sum(&text1, "etcd_inspector_plugin_invocations_total")
            - counter_sum(&text0, "etcd_inspector_plugin_invocations_total");
        let missed = counter_sum(&text1, "etcd_inspector_missed_runs_total")
            - counter_sum(&text0, "etcd_inspector_missed_runs_total");
        report.push(format!(
            "| {n} | {interval} s | {window} s | {runs} | {:.1} % | {:.0} / {:.0} MiB | {slots_mib:.1} MiB | {} | {} | {} | {missed} |",
            100.0 * (cpu1 - cpu0) / wall.as_secs_f64(),
            rss_now,
            rss_peak,
            counter_sum(&text1, "etcd_inspector_member_channels"),
            quantile(&b0, &b1, 0.5),
            quantile(&b0, &b1, 0.99),
        ));
        supervisor.shutdown();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// J: the real binary, several processes sharing one manifest set with
/// `--shard i/R` (the hashing Kubernetes replicas use), each measured from
/// the outside: CPU and RSS from /proc, runs, missed runs and lag from its
/// own /metrics.
async fn shards(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    report.push("\n## J. Clusters shared by processes: N clusters × 4 plugins at 30 s, `--shard i/R`\n".into());
    report.push("| clusters | processes | `--watch-mode` | `--worker-threads` | clusters each | runs in window (each) | CPU per process (share of one core) | RSS per process | lag p99 (worst) | missed runs |".into());
    report.push("|---|---|---|---|---|---|---|---|---|---|".into());
    // BENCH_SHARD_RUNS=3300:1,3300:1:rounds:1 (clusters:processes[:watch
    // mode[:worker threads]]). One worker is what a replica gets under the
    // Helm chart's CPU limit of 1; the default here is this machine's 2.
    let runs: Vec<(usize, usize, String, Option<String>)> = std::env::var("BENCH_SHARD_RUNS")
        .unwrap_or_else(|_| "3300:1,3300:1:rounds,3300:1:rounds:1,10000:3:rounds:1".into())
        .split(',')
        .filter_map(|run| {
            let mut fields = run.split(':');
            let n = fields.next()?.parse().ok()?;
            let replicas = fields.next()?.parse().ok()?;
            let mode = fields.next().unwrap_or("stream").to_string();
            Some((n, replicas, mode, fields.next().map(str::to_string)))
        })
        .collect();
    let (interval, warmup, window) = (30u64, 40u64, 40u64);
    for (n, replicas, mode, workers) in runs {
        let dir = tempfile::tempdir()?;
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests)?;
        let seeds = endpoints.join(",");
        // A prefix no other section writes: the steady state, not 10 000
        // censuses of D's leftover keys from one shared etcd at the start
        // (which made the first 10 000-cluster row miss 18 211 runs).
        let mut yaml = String::new();
        for i in 0..n {
            yaml.push_str(&format!(
                "---\napiVersion: etcd.clay.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: c{i}\n  namespace: bench\n  \
                 annotations:\n    importedAddr: \"{seeds}\"\n    featureGates: \"healthy=true,alarm=true,consistency=true,request=true\"\n    \
                 request: '{{\"path\":\"/bench-j/\"}}'\nspec:\n  clusterType: imported\n"
            ));
        }
        std::fs::write(manifests.join("clusters.yaml"), yaml)?;
        let mut children = Vec::new();
        for r in 0..replicas {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-inspector"));
            if let Some(workers) = &workers {
                command.args(["--worker-threads", workers]);
            }
            let child = command
                .arg("standalone")
                .arg("--manifests")
                .arg(&manifests)
                .arg("--plugin-dir")
                .arg(plugins_dir().join("bundled"))
                .args(["--shard", &format!("{r}/{replicas}")])
                .args(["--watch-mode", &mode])
                .args(["--rescan-interval", "300", "--listen", &format!("127.0.0.1:{port}")])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            children.push((child, format!("http://127.0.0.1:{port}/metrics")));
        }
        let client = reqwest::Client::new();
        let scrape = async |url: &str| -> String {
            match client.get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        };
        tokio::time::sleep(Duration::from_secs(interval + warmup - 30)).await;
        let mut before = Vec::new();
        for (child, url) in &children {
            before.push((scrape(url).await, process_cpu(child.id()), Instant::now()));
        }
        tokio::time::sleep(Duration::from_secs(window)).await;
        // Every process is read before any scrape is parsed: parsing one
        // process's ~9 MB of text takes the bench seconds to minutes, which
        // stretched the windows of the processes read after it (the first
        // 10 000-cluster rows counted 14 000 / 36 000 / 59 000 runs).
        let mut after = Vec::new();
        for ((child, url), (_, cpu0, t0)) in children.iter().zip(&before) {
            let text1 = scrape(url).await;
            let cpu = 100.0 * (process_cpu(child.id()) - cpu0) / t0.elapsed().as_secs_f64();
            after.push((text1, cpu, process_rss_mib(child.id())));
        }
        for (child, _) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (mut cpu, mut rss, mut runs, mut missed, mut lag) = (Vec::new(), Vec::new(), Vec::new(), 0.0, Vec::new());
        for ((text0, _, _), (text1, cpu_share, rss_mib)) in before.iter().zip(&after) {
            cpu.push(*cpu_share);
            rss.push(*rss_mib);
            let name = "etcd_inspector_plugin_invocations_total";
            runs.push(counter_sum(text1, name) - counter_sum(text0, name));
            missed += counter_sum(text1, "etcd_inspector_missed_runs_total")
                - counter_sum(text0, "etcd_inspector_missed_runs_total");
            let lag_name = "etcd_inspector_schedule_lag_seconds";
            lag.push(quantile(&buckets(text0, lag_name), &buckets(text1, lag_name), 0.99));
        }
        let list = |v: &[f64], unit: &str| {
            v.iter()
                .map(|x| format!("{x:.0}{unit}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let worst = lag.iter().max_by_key(|l| l.len()).cloned().unwrap_or_default();
        report.push(format!(
            "| {n} | {replicas} | {mode} | {} | ~{} | {} | {} | {} | {worst} | {missed} |",
            workers.as_deref().unwrap_or("default (2)"),
            n / replicas,
            list(&runs, ""),
            list(&cpu, " %"),
            list(&rss, " MiB"),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    report.push(format!(
        "\n{interval} s interval, measured over {window} s after {warmup} s; etcd is the local 3-member one, on the same two cores."
    ));
    Ok(())
}

/// utime + stime of a process, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ, fixed on Linux for /proc
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .map(|stat| {
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (field(11) + field(12)) / ticks
        })
        .unwrap_or(0.0)
}

fn process_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_default();
    let mut report = vec![format!(
        "# Benchmark results\n\nMachine: {}. Command: `make bench` (release build; {etcd}, 3 members on loopback).\n",
        machine()
    )];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    if wanted("A") {
        per_call(&mut report).await?;
    }
    match std::env::var("BENCH_ETCD_ENDPOINTS") {
        Ok(list) => {
            let endpoints: Vec<String> = list.split(',').map(str::to_string).collect();
            if wanted("B") {
                // On a worker thread, as the host's inspections run: from
                // the main thread every wake-up crossed threads.
                let endpoints = endpoints.clone();
                let section = tokio::spawn(async move {
                    let mut section = Vec::new();
                    rounds(&mut section, &endpoints).await.map(|()| section)
                })
                .await??;
                report.extend(section);
            }
            if wanted("C") {
                hot_reload(&mut report, &endpoints).await?;
            }
            if wanted("D") {
                watch_throughput(&mut report, &endpoints).await?;
            }
            if wanted("E") {
                naive_loop(&mut report, &endpoints).await?;
            }
            if std::env::var_os("BENCH_SCALE").is_some() && wanted("F") {
                if only == "F" {
                    scale(&mut report, &endpoints).await?;
                } else {
                    // In a process of its own: RSS is a high-water mark, and
                    // the sections before leave theirs.
                    let child = std::process::Command::new(std::env::current_exe()?)
                        .arg("--bench")
                        .env("BENCH_ONLY", "F")
                        .env_remove("BENCH_RESULTS")
                        .stderr(std::process::Stdio::inherit())
                        .output()?;
                    anyhow::ensure!(child.status.success(), "the scale run failed: {}", child.status);
                    let text = String::from_utf8_lossy(&child.stdout);
                    if let Some((_, section)) = sections(&text).into_iter().find(|(id, _)| id == "F") {
                        report.push(section.trim_end().to_string());
                    }
                }
            } else {
                report.push("\n(F, the scale run, skipped: BENCH_SCALE=1 make bench runs it, about 6 minutes)".into());
            }
            if std::env::var_os("BENCH_SCALE").is_some() && wanted("J") {
                shards(&mut report, &endpoints).await?;
            } else {
                report.push(
                    "\n(J, processes sharing clusters, skipped: BENCH_SCALE=1 make bench runs it, about 5 minutes)"
                        .into(),
                );
            }
        }
        Err(_) => report.push("\n(B to F skipped: set BENCH_ETCD_ENDPOINTS, as scripts/bench.sh does)".into()),
    }
    if wanted("K") {
        series_store(&mut report)?;
    }
    if wanted("H") {
        match std::env::var_os("BENCH_ETCD36") {
            Some(binary) => hashkv(&mut report, PathBuf::from(binary)).await?,
            None => {
                report.push("\n(H skipped: set BENCH_ETCD36 to an etcd 3.6 binary, as scripts/bench.sh does)".into())
            }
        }
    }
    if wanted("I") {
        match std::env::var_os("BENCH_ETCD36") {
            Some(binary) => round_costs(&mut report, PathBuf::from(binary)).await?,
            None => {
                report.push("\n(I skipped: set BENCH_ETCD36 to an etcd 3.6 binary, as scripts/bench.sh does)".into())
            }
        }
    }
    let text = report.join("\n") + "\n";
    print!("{text}");
    if let Some(path) = std::env::var_os("BENCH_RESULTS") {
        let text = match std::fs::read_to_string(&path) {
            // A partial run keeps the sections it did not run.
            Ok(old) if !only.is_empty() => merge_sections(&old, &text),
            _ => text,
        };
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// A report's `## X.` sections as (X, text from its heading). "(F skipped
/// …)" notes are left out: they follow whichever section ran before them.
fn sections(text: &str) -> Vec<(String, String)> {
    text.split("\n## ")
        .skip(1)
        .map(|s| {
            let body: Vec<&str> = s
                .lines()
                .filter(|l| !(l.starts_with('(') && l.contains("skipped")))
                .collect();
            (
                s.split('.').next().unwrap_or_default().to_string(),
                format!("\n## {}", body.join("\n")),
            )
        })
        .collect()
}

/// `old` with each `## X.` section that `new` has replaced by `new`'s.
fn merge_sections(old: &str, new: &str) -> String {
    let head = old.split("\n## ").next().unwrap_or_default().to_string();
    let fresh = sections(new);
    let mut merged: Vec<(String, String)> = sections(old);
    for (id, body) in fresh {
        match merged.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1 = body,
            None => merged.push((id, body)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = head;
    for (_, body) in merged {
        text.push_str(body.trim_end_matches('\n'));
        text.push('\n');
    }
    text
}

/// K: the plugin series of N clusters × the four bundled inspections (35
/// series a cluster, as they report them on a 3-member cluster) in the
/// host's store, against the same series in `prometheus::GaugeVec`, the
/// crate's own families (what the host used before): resident memory, two
/// rounds of commits, one rendering. No etcd.
fn series_store(report: &mut Vec<String>) -> anyhow::Result<()> {
    use etcd_inspector::metrics::{MetricKind, MetricSpec};
    let clusters: usize = std::env::var("BENCH_SERIES_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let member = [
        "inspection_etcd_member_hashkv",
        "inspection_etcd_member_key_total",
        "inspection_etcd_member_raft_applied_index",
        "inspection_etcd_member_raft_index",
        "inspection_etcd_member_reachable",
        "inspection_etcd_member_revision",
    ];
    let whole = [
        "inspection_etcd_consistency_revision",
        "inspection_etcd_hashkv_consistent",
        "inspection_etcd_hashkv_not_comparable",
        "inspection_etcd_hashkv_revision",
        "inspection_etcd_node_diff_total",
        "inspection_etcd_node_raft_applied_index_diff_total",
        "inspection_etcd_node_raft_index_diff_total",
        "inspection_etcd_node_revision_diff_total",
    ];
    let endpoints = ["127.0.0.1:52379", "127.0.0.1:52381", "127.0.0.1:52383"];
    // (plugin, metric, labels) of one cluster's round.
    type Labels<'a> = Vec<(&'a str, String)>;
    let mut round: Vec<(&str, &str, Labels)> = Vec::new();
    for name in member {
        for m in ["m0", "m1", "m2"] {
            round.push(("consistency", name, vec![("member", m.to_string())]));
        }
    }
    round.extend(whole.iter().map(|name| ("consistency", *name, Vec::new())));
    for e in endpoints {
        for alarm in ["CORRUPT", "NOSPACE"] {
            let labels = vec![("alarmType", alarm.to_string()), ("endpoint", e.to_string())];
            round.push(("alarm", "inspection_etcd_endpoint_alarm", labels));
        }
        round.push((
            "healthy",
            "inspection_etcd_endpoint_healthy",
            vec![("endpoint", e.to_string())],
        ));
    }
    let mut specs: HashMap<&str, Vec<MetricSpec>> = HashMap::new();
    for (plugin, metric, labels) in &round {
        let list = specs.entry(plugin).or_default();
        if !list.iter().any(|s| s.name == *metric) {
            list.push(MetricSpec {
                name: metric.to_string(),
                help: format!("{metric}, as the plugin describes it"),
                kind: MetricKind::Gauge,
                labels: labels.iter().map(|(k, _)| k.to_string()).collect(),
            });
        }
    }
    // Resident memory: both stores stay alive until both are measured, so
    // neither reuses pages the other freed.
    let allocated = || -> anyhow::Result<usize> {
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        let pages: usize = statm.split_whitespace().nth(1).unwrap_or("0").parse()?;
        Ok(pages * 4096)
    };
    let series = clusters * round.len();

    // The host's store, through Metrics::commit as a round commits.
    let before = allocated()?;
    let metrics = Metrics::new("");
    for (plugin, list) in &specs {
        metrics.register_plugin(plugin, list)?;
    }
    let started = Instant::now();
    for value in [1.0, 2.0] {
        for c in 0..clusters {
            let cluster = format!("c{c}");
            for plugin in ["consistency", "alarm", "healthy"] {
                let samples: Vec<SampleValue> = round
                    .iter()
                    .filter(|(p, _, _)| *p == plugin)
                    .map(|(_, metric, labels)| SampleValue {
                        metric: metric.to_string(),
                        labels: labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                        value,
                    })
                    .collect();
                metrics.commit(plugin, &cluster, &samples, CommitMode::Replace)?;
            }
        }
    }
    let host_commit = started.elapsed() / 2;
    let host_bytes = allocated()?.saturating_sub(before);
    let started = Instant::now();
    let host_text = metrics.render();
    let host_render = started.elapsed();

    // The same series in the crate's families, set as its callers set them.
    let before = allocated()?;
    let registry = prometheus::Registry::new();
    let mut families: HashMap<&str, prometheus::GaugeVec> = HashMap::new();
    for spec in specs.values().flatten() {
        let mut labels = vec!["clusterName"];
        labels.extend(spec.labels.iter().map(String::as_str));
        let family = prometheus::GaugeVec::new(prometheus::Opts::new(spec.name.clone(), spec.help.clone()), &labels)?;
        registry.register(Box::new(family.clone()))?;
        families.insert(spec.name.as_str(), family);
    }
    let started = Instant::now();
    for value in [1.0, 2.0] {
        for c in 0..clusters {
            let cluster = format!("c{c}");
            for (_, metric, labels) in &round {
                let mut values = vec![cluster.as_str()];
                values.extend(labels.iter().map(|(_, v)| v.as_str()));
                families[metric].with_label_values(&values).set(value);
            }
        }
    }
    let crate_commit = started.elapsed() / 2;
    let crate_bytes = allocated()?.saturating_sub(before);
    let started = Instant::now();
    let mut out = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out)?;
    let crate_render = started.elapsed();
    drop(metrics);
    let same = {
        let mut a: Vec<&str> = host_text.lines().filter(|l| l.starts_with("inspection_")).collect();
        let text = String::from_utf8(out)?;
        let mut b: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("inspection_"))
            .map(str::to_string)
            .collect();
        a.sort_unstable();
        b.sort_unstable();
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x == y.as_str())
    };

    report.push(format!(
        "\n## K. Plugin series: the host's store against `prometheus::GaugeVec`, {clusters} clusters × 4 inspections ({series} series)\n"
    ));
    report.push(
        "| store | bytes per series (resident) | memory | one round of commits (all clusters) | one rendering |".into(),
    );
    report.push("|---|---|---|---|---|".into());
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    report.push(format!(
        "| host (`Metrics`) | {} | {:.1} MiB | {host_commit:.2?} | {host_render:.2?} |",
        host_bytes / series,
        mib(host_bytes)
    ));
    report.push(format!(
        "| `prometheus::GaugeVec` | {} | {:.1} MiB | {crate_commit:.2?} | {crate_render:.2?} |",
        crate_bytes / series,
        mib(crate_bytes)
    ));
    report.push(format!(
        "\nhost / GaugeVec: memory {:.2}, rendering {:.2}; the host's commit also checks each sample against its declaration and the per-cluster caps. Same sample lines: {same}. Command: `BENCH_ONLY=K make bench`.",
        host_bytes as f64 / crate_bytes.max(1) as f64,
        host_render.as_secs_f64() / crate_render.as_secs_f64().max(1e-9),
    ));
    Ok(())
}

/// H: HashKV at the latest compaction against HashKV at the latest revision,
/// on one etcd 3.6 member holding 250 000 revisions of history.
async fn hashkv(report: &mut Vec<String>, binary: PathBuf) -> anyhow::Result<()> {
    use futures::StreamExt;
    const REVISIONS: usize = 250_000;
    let dir = tempfile::tempdir()?;
    let port = |l: std::net::TcpListener| l.local_addr().map(|a| a.port());
    let (client_port, peer_port) = (
        port(std::net::TcpListener::bind("127.0.0.1:0")?)?,
        port(std::net::TcpListener::bind("127.0.0.1:0")?)?,
    );
    let url = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut child = std::process::Command::new(&binary)
        .args(["--name", "h", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("h={peer}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = loop {
            if let Ok(mut c) = etcd_client::Client::connect([url.as_str()], None).await {
                if c.status().await.is_ok() {
                    break c;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "etcd 3.6 did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let version = client.status().await?.version().to_string();
        // 250 000 writes over 1 000 keys, 64 in flight.
        let written = futures::stream::iter(0..REVISIONS)
            .map(|i| {
                let mut c = client.clone();
                async move { c.put(format!("/bench/hashkv/{}", i % 1000), i.to_string(), None).await }
            })
            .buffer_unordered(64)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        anyhow::ensure!(written == REVISIONS, "only {written} of {REVISIONS} writes succeeded");
        // Compact early in the history: the store keeps everything after it,
        // and etcd keeps the hash it computed at the compaction.
        let compact = 1_000;
        client.compact(compact, None).await?;
        let latest = client.status().await?.header().map_or(0, |h| h.revision());
        let conn = connection(std::slice::from_ref(&url))?;
        let time = async |revision: u64, n: usize| -> anyhow::Result<Vec<Duration>> {
            let mut times = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                conn.hash_kv(&url, revision).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                times.push(t.elapsed());
            }
            times.sort();
            Ok(times)
        };
        // The compaction runs in the background; its hash is kept once done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cached = time(compact as u64, 20).await?;
        let scanned = time(latest as u64, 5).await?;
        Ok((version, latest, cached, scanned))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (version, latest, cached, scanned) = result?;
    let median = |t: &[Duration]| t[t.len() / 2];
    report.push(format!(
        "\n## H. HashKV on etcd {version}: at the latest compaction against at the latest revision\n"
    ));
    report.push(format!(
        "One member, {REVISIONS} writes over 1 000 keys (revision {latest}), compacted at revision 1 000; HashKV through the host's connection. Command: `BENCH_ONLY=H make bench`."
    ));
    report.push("\n| HashKV at | calls | median | max |\n|---|---|---|---|".into());
    report.push(format!(
        "| the compaction (1 000: etcd's kept hash) | {} | {:.2?} | {:.2?} |",
        cached.len(),
        median(&cached),
        cached[cached.len() - 1]
    ));
    report.push(format!(
        "| the latest revision ({latest}: a scan of the history) | {} | {:.2?} | {:.2?} |",
        scanned.len(),
        median(&scanned),
        scanned[scanned.len() - 1]
    ));
    report.push(format!(
        "\nRatio of medians, latest / compaction: {:.0}×",
        median(&scanned).as_secs_f64() / median(&cached).as_secs_f64()
    ));
    Ok(())
}

/// I: what one round of each inspection of issue 14 costs on a 3-member
/// etcd 3.6 serving clients over TLS with client certificates (as a
/// Kubernetes etcd does), with 100 000 leases: the plugin's size, the etcd
/// calls and answer bytes of a round (as the budget counts them) and its
/// time through the runtime, as the scheduler calls it.
async fn round_costs(report: &mut Vec<String>, binary: PathBuf) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    const LEASES: usize = 100_000;
    const ROUNDS: usize = 50;
    let dir = tempfile::tempdir()?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "bench-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf("etcd")?;
    let (client_cert, client_key) = leaf("bench")?;
    for (name, body) in [
        ("ca.crt", &ca_pem),
        ("server.crt", &server_cert),
        ("server.key", &server_key),
    ] {
        std::fs::write(dir.path().join(name), body)?;
    }
    let port = || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((port()?, port()?))).collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("i{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let url = format!("https://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        children.push(
            std::process::Command::new(&binary)
                .args(["--name", &format!("i{i}"), "--data-dir"])
                .arg(dir.path().join(format!("i{i}")))
                .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-token",
                    "bench-i",
                ])
                .arg("--cert-file")
                .arg(dir.path().join("server.crt"))
                .arg("--key-file")
                .arg(dir.path().join("server.key"))
                .arg("--trusted-ca-file")
                .arg(dir.path().join("ca.crt"))
                .arg("--client-cert-auth")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        );
    }
    let result = async {
        let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("https://127.0.0.1:{c}")).collect();
        let credentials = Credentials {
            ca_pem: Some(ca_pem.clone().into_bytes()),
            identity: Some((client_cert.clone().into_bytes(), client_key.clone().into_bytes())),
            ..Credentials::default()
        };
        let conn = Arc::new(ClusterConnection::new(
            "bench/i",
            endpoints.clone(),
            HashMap::new(),
            credentials,
            ConnectionSettings::default(),
        )?);
        let deadline = Instant::now() + Duration::from_secs(60);
        let members = loop {
            match conn.refresh_members().await {
                Ok(m) if m.len() == 3 && conn.alarm_list().await.is_ok() => break m,
                _ => {}
            }
            anyhow::ensure!(Instant::now() < deadline, "etcd 3.6 with TLS did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let version = conn.status(&members[0].endpoint).await.map(|s| s.version).unwrap_or_default();
        grant_leases(&endpoints[0], &ca_pem, (&client_cert, &client_key), LEASES).await?;
        let runtime = Runtime::with_pooling(CallLimits::default(), Some(HOST_SLOTS))?;
        report.push(format!(
            "\n## I. One round of each issue-14 inspection on a 3-member etcd {version} over TLS, {LEASES} leases\n"
        ));
        report.push(
            "| plugin | wasm size | etcd calls per round | answer bytes per round | round mean / p50 / p99 |".into(),
        );
        report.push("|---|---|---|---|---|".into());
        for name in ["compaction", "latency", "quota", "membership", "certificates", "leases"] {
            let size = std::fs::metadata(plugins_dir().join("bundled").join(format!("{name}.wasm")))?.len();
            let plugin = load(&runtime, "bundled", name).await?;
            let (mut times, mut calls, mut bytes) = (Vec::new(), 0, 0);
            let mut state = None;
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let out = runtime
                    .inspect(&plugin, conn.clone(), snapshot(members.clone()), state.clone(), &CallLimits::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                times.push(t.elapsed());
                calls = out.etcd.calls;
                bytes = out.etcd.bytes;
                if out.state.is_some() {
                    state = out.state;
                }
            }
            let (mean, p50, p99) = stats(times);
            report.push(format!(
                "| {name} | {} KB | {calls} | {bytes} | {mean:.2?} / {p50:.2?} / {p99:.2?} |",
                size / 1000
            ));
        }
        report.push(format!(
            "\n{ROUNDS} rounds each, one after another, through `Runtime::inspect` with the host's pooling allocator. \
             leases asks about its default 500 leases a round (of {LEASES}); certificates makes one TLS handshake per member. \
             Command: `BENCH_ONLY=I make bench`."
        ));
        Ok(())
    }
    .await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Grants `n` leases (a tenth with a key) on the TLS member at `url`:
/// the bench writes with a client of its own, the host never does.
async fn grant_leases(url: &str, ca_pem: &str, identity: (&str, &str), n: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(ca_pem))
        .identity(etcd_client::Identity::from_pem(identity.0, identity.1));
    let options = etcd_client::ConnectOptions::new().with_tls(tls);
    let client = etcd_client::Client::connect([url], Some(options)).await?;
    let granted = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = client.clone();
            async move {
                let lease = c.lease_grant(3600, None).await?.id();
                if i % 10 == 0 {
                    let options = etcd_client::PutOptions::new().with_lease(lease);
                    c.put(format!("/bench/leased/{i}"), "x", Some(options)).await?;
                }
                Ok::<_, etcd_client::Error>(())
            }
        })
        .buffer_unordered(32)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    anyhow::ensure!(granted == n, "only {granted} of {n} leases granted");
    Ok(())
}

//! Benchmarks against the DESIGN targets, each with its baseline in the
//! same run, printed as ratios (never asserted). `make bench` runs this
//! against a local 3-member etcd and writes bench/RESULTS.md.
//!
//! A. Per-call host overhead (instantiate + call + commit) of a plugin that
//!    makes no etcd call, on-demand and pooling allocation, against the same
//!    work done natively. Target: ≤ 50 µs.
//! B. One inspection round of healthy, alarm and consistency against a real
//!    cluster, wasm against the same etcd calls made natively. Target ≤ 1.10×.
//! C. Hot reload: file replaced → new version serving, and inspections
//!    failed meanwhile. Target ≤ 2 s, zero failures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_inspector::etcd::{ClusterConnection, ConnectionSettings, Credentials, MemberInfo};
use etcd_inspector::metrics::{CommitMode, Metrics, SampleValue};
use etcd_inspector::runtime::{watch_plugin_dir, CallLimits, LoadedPlugin, PluginRegistry, Runtime, Snapshot};

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
    }
}

/// A: the host's own cost per call.
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
    let members = vec![member; 3];
    let calls = 5000;
    let mut rows = Vec::new();
    for (label, pooling) in [("on-demand", None), ("pooling", Some(64))] {
        let runtime = Runtime::with_pooling(CallLimits::default(), pooling)?;
        let started = Instant::now();
        let plugin = load(&runtime, "fixtures", "noop").await?;
        let load_time = started.elapsed();
        let metrics = Metrics::new("");
        metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
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
                .await?;
            metrics.commit("noop", "c", &out.samples, CommitMode::Replace)?;
            if i >= 500 {
                times.push(t.elapsed()); // the first 500 warm caches up
            }
        }
        rows.push((label, stats(times), load_time));
    }
    // The same work natively: build the sample from the snapshot, commit it.
    let metrics = Metrics::new("");
    let runtime = Runtime::new(CallLimits::default())?;
    let plugin = load(&runtime, "fixtures", "noop").await?;
    metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let snap = std::hint::black_box(snapshot(members.clone()));
        let samples = vec![SampleValue {
            metric: "noop_members".into(),
            labels: vec![],
            value: snap.members.len() as f64,
        }];
        metrics.commit("noop", "c", &samples, CommitMode::Replace)?;
        native.push(t.elapsed());
    }
    let (native_mean, _, _) = stats(native);
    report.push("## A. Per-call host overhead (noop plugin: instantiate + call + commit)\n".into());
    report.push("| allocation | plugin load | mean | p50 | p99 | mean / 50 µs target | mean / native |".into());
    report.push("|---|---|---|---|---|---|---|".into());
    for (label, (mean, p50, p99), load_time) in rows {
        report.push(format!(
            "| {label} | {load_time:.1?} | {mean:.1?} | {p50:.1?} | {p99:.1?} | {:.2} | {:.0}× (native {native_mean:.2?}) |",
            mean.as_secs_f64() / 50e-6,
            mean.as_secs_f64() / native_mean.as_secs_f64()
        ));
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
                let _ = conn.hash_kv(&m.endpoint, r).await;
            }
            for m in members {
                let _ = std::hint::black_box(conn.status(&m.endpoint).await);
            }
        }
    }
}

/// B: one round, wasm against native, interleaved so cluster drift hits both.
async fn rounds(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    let conn = connection(endpoints)?;
    let members = conn.refresh_members().await?;
    let runtime = Runtime::new(CallLimits::default())?;
    report.push("\n## B. One inspection round on a real 3-member etcd: wasm against native\n".into());
    report.push("| plugin | rounds | wasm mean | native mean | ratio (target ≤ 1.10) |".into());
    report.push("|---|---|---|---|---|".into());
    for kind in ["healthy", "alarm", "consistency"] {
        let plugin = load(&runtime, "bundled", kind).await?;
        let n = 200;
        let mut state = None;
        let (mut wasm, mut native) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
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
            // Like the host: a call that stores nothing keeps the previous state.
            if let Some(stored) = out.ok().and_then(|o| o.state) {
                state = Some(stored);
            }
            let t = Instant::now();
            native_round(kind, &conn, &members).await;
            native.push(t.elapsed());
        }
        let ((w, _, _), (nat, _, _)) = (stats(wasm), stats(native));
        report.push(format!(
            "| {kind} | {n} | {w:.2?} | {nat:.2?} | {:.2} |",
            w.as_secs_f64() / nat.as_secs_f64()
        ));
    }
    Ok(())
}

/// C: file replaced → new version serving, with inspections running.
async fn hot_reload(report: &mut Vec<String>, endpoints: &[String]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = std::fs::read(plugins_dir().join("bundled/healthy.wasm"))?;
    std::fs::write(dir.path().join("healthy.wasm"), &original)?;
    let metrics = Arc::new(Metrics::new(""));
    let registry = Arc::new(PluginRegistry::new(
        Arc::new(Runtime::new(CallLimits::default())?),
        metrics,
    ));
    registry.load_dir(dir.path()).await?;
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
    per_call(&mut report).await?;
    match std::env::var("BENCH_ETCD_ENDPOINTS") {
        Ok(list) => {
            let endpoints: Vec<String> = list.split(',').map(str::to_string).collect();
            rounds(&mut report, &endpoints).await?;
            hot_reload(&mut report, &endpoints).await?;
        }
        Err(_) => report.push("\n(B and C skipped: set BENCH_ETCD_ENDPOINTS, as scripts/bench.sh does)".into()),
    }
    let text = report.join("\n") + "\n";
    print!("{text}");
    if let Some(path) = std::env::var_os("BENCH_RESULTS") {
        std::fs::write(path, &text)?;
    }
    Ok(())
}

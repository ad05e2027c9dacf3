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
//! D. Scale (BENCH_SCALE=1): N clusters × the 4 bundled plugins, all on the
//!    local etcd, at 30 s and at a 5 s stress interval: CPU share of one
//!    core, RSS, schedule lag, missed runs. Target at 1000 × 4 × 30 s:
//!    no missed runs, CPU ≤ 25 %, RSS ≤ 256 MiB.

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

/// Cumulative (upper bound, count) buckets of one histogram, summed over labels.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut by_le: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{"))) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("+Inf");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by_le.entry(le.to_bits()).or_default() += count;
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
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
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
    use etcd_inspector::cluster::{ClusterConfig, ClusterKey, FeatureSettings};
    use etcd_inspector::controllers::{SchedulerSettings, Supervisor};
    report.push("\n## D. Scale: N clusters × 4 plugins on one local etcd\n".into());
    report.push("| clusters | interval | window | runs | CPU (share of one core) | RSS now / peak | lag p50 | lag p99 | missed runs |".into());
    report.push("|---|---|---|---|---|---|---|---|---|".into());
    for (n, interval, window) in [
        (10, 30, 40),
        (100, 30, 40),
        (1000, 30, 40),
        (10, 5, 15),
        (100, 5, 15),
        (1000, 5, 15),
    ] {
        let metrics = Arc::new(Metrics::new(""));
        let runtime = Arc::new(Runtime::new(CallLimits::default())?);
        let registry = Arc::new(PluginRegistry::new(runtime, metrics.clone()));
        registry.sync_dir(&plugins_dir().join("bundled")).await?;
        let supervisor = Supervisor::new(registry, metrics.clone(), SchedulerSettings::default());
        let every = Some(Duration::from_secs(interval));
        let configs = (0..n)
            .map(|i| ClusterConfig {
                key: ClusterKey {
                    namespace: "bench".into(),
                    name: format!("c{i}"),
                },
                seeds: endpoints.to_vec(),
                rewrites: HashMap::new(),
                credentials: Credentials::default(),
                features: ["healthy", "alarm", "consistency", "request"]
                    .iter()
                    .map(|f| (f.to_string(), FeatureSettings { interval: every }))
                    .collect(),
                params: vec![("request".into(), r#"{"path":"/bench/"}"#.into())],
                warnings: vec![],
            })
            .collect();
        supervisor.apply(configs, &[], vec![]);
        // Every schedule has run once and knows when its next run is due.
        tokio::time::sleep(Duration::from_secs(interval + 2)).await;
        let (text0, cpu0, t0) = (metrics.render(), cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(window)).await;
        let (text1, cpu1, wall) = (metrics.render(), cpu_seconds(), t0.elapsed());
        let lag = "etcd_inspector_schedule_lag_seconds";
        let (b0, b1) = (buckets(&text0, lag), buckets(&text1, lag));
        let runs = counter_sum(&text1, "etcd_inspector_plugin_invocations_total")
            - counter_sum(&text0, "etcd_inspector_plugin_invocations_total");
        let missed = counter_sum(&text1, "etcd_inspector_missed_runs_total")
            - counter_sum(&text0, "etcd_inspector_missed_runs_total");
        report.push(format!(
            "| {n} | {interval} s | {window} s | {runs} | {:.1} % | {:.0} / {:.0} MiB | {} | {} | {missed} |",
            100.0 * (cpu1 - cpu0) / wall.as_secs_f64(),
            rss_mib("VmRSS:"),
            rss_mib("VmHWM:"),
            quantile(&b0, &b1, 0.5),
            quantile(&b0, &b1, 0.99),
        ));
        supervisor.shutdown();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
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
            if std::env::var_os("BENCH_SCALE").is_some() {
                scale(&mut report, &endpoints).await?;
            } else {
                report.push("\n(D, the scale run, skipped: BENCH_SCALE=1 make bench runs it, about 5 minutes)".into());
            }
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

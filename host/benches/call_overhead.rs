//! Per-call host overhead: instantiate + call + commit of a plugin that does
//! no etcd call, in whatever profile this is built with (`cargo bench` =
//! release). Prints the numbers and the ratio against the design target.
//!
//! Run: scripts/build-plugins.sh && cargo bench -p etcd-inspector --bench call_overhead

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_inspector::etcd::{ClusterConnection, ConnectionSettings, Credentials, MemberInfo};
use etcd_inspector::metrics::{CommitMode, Metrics};
use etcd_inspector::runtime::{CallLimits, Runtime, Snapshot};

const TARGET: Duration = Duration::from_micros(50);

fn plugin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("plugins/fixtures").join(format!("{name}.wasm"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new(CallLimits::default())?;
    let bytes = std::fs::read(plugin("noop"))?;
    let started = Instant::now();
    let loaded = runtime.load(bytes).await?;
    let compile = started.elapsed();
    let metrics = Metrics::new("");
    metrics.register_plugin(&loaded.info.name, &loaded.info.metrics)?;
    let connection = Arc::new(ClusterConnection::new(
        "bench/c",
        vec!["http://127.0.0.1:9".into()],
        HashMap::new(),
        Credentials::default(),
        ConnectionSettings::default(),
    )?);
    let member = MemberInfo {
        id: 1,
        name: "m0".into(),
        client_urls: vec!["http://127.0.0.1:9".into()],
        endpoint: "http://127.0.0.1:9".into(),
        host: "127.0.0.1".into(),
        is_learner: false,
    };
    let snapshot = Snapshot {
        name: "c".into(),
        namespace: "bench".into(),
        members: vec![member; 3],
        params: vec![],
    };

    let mut samples = Vec::with_capacity(5000);
    for i in 0..5500 {
        let t = Instant::now();
        let out = runtime
            .inspect(
                &loaded,
                connection.clone(),
                snapshot.clone(),
                None,
                &CallLimits::default(),
            )
            .await?;
        metrics.commit("noop", "c", &out.samples, CommitMode::Replace)?;
        if i >= 500 {
            samples.push(t.elapsed()); // the first 500 warm caches up
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!("plugin load (compile + link + describe): {compile:?}");
    println!(
        "instantiate + call + commit over {} calls: mean {mean:?}, p50 {:?}, p99 {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    println!(
        "ratio of the mean to the 50 µs target: {:.2}",
        mean.as_secs_f64() / TARGET.as_secs_f64()
    );
    Ok(())
}

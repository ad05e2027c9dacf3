//! `etcd-inspector plugin check|run`: the real artefact, outside the
//! scheduler, for plugin authors.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::cluster::manifests;
use crate::controllers::invocation::{self, Invocation, Work};
use crate::etcd::ConnectionSettings;
use crate::metrics::{MetricKind, Metrics};
use crate::runtime::{LoadedPlugin, Outcome, Runtime};

/// Loads and validates a plugin as the host would; describes it.
pub async fn check(runtime: &Runtime, file: &Path) -> anyhow::Result<(LoadedPlugin, String)> {
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let plugin = runtime
        .load(bytes)
        .await
        .map_err(|e| anyhow::anyhow!("{}: rejected: {e}", file.display()))?;
    let info = &plugin.info;
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", file.display());
    let _ = writeln!(out, "  name:      {} (the feature name in featureGates)", info.name);
    let _ = writeln!(out, "  version:   {}", info.version);
    let _ = writeln!(out, "  contract:  etcd-inspector:plugin@{}", plugin.wit_version);
    let _ = writeln!(out, "  sha256:    {}", plugin.sha256);
    let _ = writeln!(out, "  interval:  {} s", info.default_interval_seconds);
    if let Some(prefix) = plugin.watch_prefix() {
        let _ = writeln!(out, "  watches:   {prefix:?}");
    }
    let _ = writeln!(out, "  metrics:");
    for m in &info.metrics {
        let kind = match m.kind {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        };
        let mut labels = vec!["clusterName".to_string()];
        labels.extend(m.labels.iter().cloned());
        let _ = writeln!(out, "    {} {kind} {{{}}}  {}", m.name, labels.join(","), m.help);
    }
    Ok((plugin, out))
}

/// One inspection of `file` against a cluster of `manifest`; returns the
/// samples in the Prometheus text format, after the host's checks.
pub async fn run(
    runtime: &Runtime,
    file: &Path,
    manifest: &Path,
    cluster: Option<&str>,
    connection: ConnectionSettings,
) -> anyhow::Result<String> {
    let (plugin, _) = check(runtime, file).await?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let set = manifests::read_files(&[manifest.to_path_buf()], base, true);
    for e in &set.errors {
        eprintln!("{e}");
    }
    let config = match cluster {
        Some(name) => set.clusters.into_iter().find(|c| c.key.name == name),
        None => set.clusters.into_iter().next(),
    };
    let Some(config) = config else {
        bail!(
            "{}: no usable EtcdCluster{}",
            manifest.display(),
            cluster.map(|c| format!(" named {c}")).unwrap_or_default()
        )
    };
    let conn = Arc::new(config.connect(connection)?);
    // What the host's census does before it starts a watch, at the prefix
    // the cluster's annotation sets.
    let work = match invocation::watch_prefix(&plugin, &config.params) {
        Some((prefix, warning)) => {
            if let Some(warning) = warning {
                eprintln!("{warning}");
            }
            let revision = conn.current_revision().await?;
            Work::Census { prefix, revision }
        }
        None => Work::Inspect,
    };
    let metrics = Metrics::new("");
    metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
    let done = Invocation {
        runtime,
        metrics: &metrics,
        plugin: &plugin,
        cluster: &config.key,
        connection: &conn,
        params: &config.params,
        limits: runtime.limits().clone(),
        state: None,
        log_gate: None,
    }
    .run(work)
    .await;
    if let Some(e) = &done.members_error {
        eprintln!("MemberList failed ({e}); using importedAddr");
    }
    if done.outcome != Outcome::Ok {
        bail!("inspection failed: {}: {}", done.outcome.as_str(), done.message);
    }
    let text = metrics.render();
    Ok(text
        .lines()
        .filter(|l| {
            !l.starts_with("etcd_inspector_")
                && !l.starts_with("# HELP etcd_inspector_")
                && !l.starts_with("# TYPE etcd_inspector_")
        })
        .map(|l| format!("{l}\n"))
        .collect())
}

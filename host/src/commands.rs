//! `etcd-inspector plugin check|run`: the real artefact, outside the
//! scheduler, for plugin authors. Both go through [`Invocation`], so the
//! samples are checked exactly as the host checks them.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::cluster::{manifests, ClusterKey};
use crate::controllers::invocation::{self, Invocation, Work};
use crate::etcd::{ConnectionSettings, EtcdReads, FakeEtcd, WatchEvent, FAKE_REVISION};
use crate::metrics::{MetricKind, Metrics};
use crate::runtime::{LoadedPlugin, Outcome, Runtime};

/// Loads and validates a plugin as the host would, describes it, and runs
/// it once against [`FakeEtcd`] (a census and a batch of events too, for a
/// watching plugin) with `params` as the cluster's annotations: a plugin
/// whose samples the host would reject fails here, not in production.
pub async fn check(
    runtime: &Runtime,
    file: &Path,
    params: &[(String, String)],
) -> anyhow::Result<(LoadedPlugin, String)> {
    let (plugin, mut out) = describe(runtime, file).await?;
    let fake: Arc<dyn EtcdReads> = Arc::new(FakeEtcd::default());
    let cluster = ClusterKey {
        namespace: "default".into(),
        name: "fake".into(),
    };
    let rounds = match invocation::watch_prefix(&plugin, params) {
        Some((prefix, _)) => {
            let key = format!("{prefix}etcd-inspector-check").into_bytes();
            let put = |deleted| WatchEvent {
                deleted,
                key: key.clone(),
                create_revision: FAKE_REVISION + 1,
                mod_revision: FAKE_REVISION + 1 + u64::from(deleted),
            };
            let census = Work::Census {
                prefix,
                revision: FAKE_REVISION,
            };
            vec![
                ("census", census),
                ("events", Work::Events(vec![put(false), put(true)])),
            ]
        }
        None => vec![("inspect", Work::Inspect { due: None })],
    };
    let metrics = Metrics::new("");
    metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
    for (what, work) in rounds {
        let samples = invoke(runtime, &metrics, &plugin, &cluster, &fake, params, work)
            .await
            .with_context(|| format!("{}: {what} on a fake cluster", file.display()))?;
        let _ = writeln!(out, "  {what:<9}  ok on a fake 3-member etcd 3.6 cluster: {samples}");
    }
    Ok((plugin, out))
}

/// Loads and validates a plugin as the host would; describes it.
async fn describe(runtime: &Runtime, file: &Path) -> anyhow::Result<(LoadedPlugin, String)> {
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
    let (plugin, _) = describe(runtime, file).await?;
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
        None => Work::Inspect { due: None },
    };
    let metrics = Metrics::new("");
    metrics.register_plugin(&plugin.info.name, &plugin.info.metrics)?;
    let conn: Arc<dyn EtcdReads> = conn;
    invoke(runtime, &metrics, &plugin, &config.key, &conn, &config.params, work).await?;
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

/// One call through the host's own path; the sample count, or why the host
/// would not take the round.
async fn invoke(
    runtime: &Runtime,
    metrics: &Metrics,
    plugin: &LoadedPlugin,
    cluster: &ClusterKey,
    connection: &Arc<dyn EtcdReads>,
    params: &[(String, String)],
    work: Work,
) -> anyhow::Result<String> {
    let done = Invocation {
        runtime,
        metrics,
        plugin,
        cluster,
        connection,
        params,
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
    Ok(done.message)
}

/// Publishes a checked plugin; returns `oci://…:tag@sha256:…`.
pub async fn push(
    settings: &crate::oci::RegistrySettings,
    credentials: crate::oci::source::Credentials,
    file: &Path,
    target: &crate::oci::OciRef,
) -> anyhow::Result<String> {
    let wasm = std::fs::read(file).with_context(|| file.display().to_string())?;
    let login = match credentials.load().await? {
        Some(config) => config.login(target.registry(), "registry credentials")?,
        None => None,
    };
    let client = settings.client()?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("plugin.wasm");
    let digest = crate::oci::push(&client, target, wasm, name, login.as_ref()).await?;
    let base = target.to_string();
    let base = base.split('@').next().unwrap_or(&base);
    Ok(format!("{base}@{digest}"))
}

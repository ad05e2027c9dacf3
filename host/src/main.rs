use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use etcd_inspector::controllers::standalone::ManifestSource;
use etcd_inspector::controllers::{SchedulerSettings, Supervisor};
use etcd_inspector::etcd::ConnectionSettings;
use etcd_inspector::http::{router, AppState};
use etcd_inspector::metrics::Metrics;
use etcd_inspector::runtime::{CallLimits, PluginRegistry, Runtime};

#[derive(Parser)]
#[command(
    name = "etcd-inspector",
    version,
    about = "Inspects etcd clusters with WebAssembly plugins and exports Prometheus metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the clusters described by EtcdCluster/EtcdInspection YAML files (no Kubernetes needed).
    Standalone(StandaloneArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricNames {
    /// etcd-metrics names: inspection_*
    Inspection,
    /// kstone names: kstone_inspection_*
    Kstone,
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// Directory of EtcdCluster and EtcdInspection YAML files.
    #[arg(long)]
    manifests: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
    /// How often the manifest directory is re-read, in seconds.
    #[arg(long, default_value_t = 5.0)]
    rescan_interval: f64,
}

#[derive(clap::Args)]
struct CommonArgs {
    /// Directory of plugin components (*.wasm).
    #[arg(long)]
    plugin_dir: PathBuf,
    /// Address for /metrics, /health, /plugins and the status page.
    #[arg(long, default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// Metric name family.
    #[arg(long, value_enum, default_value_t = MetricNames::Inspection)]
    metric_names: MetricNames,
    /// Wall-time limit of one plugin call, in seconds.
    #[arg(long, default_value_t = 20.0)]
    plugin_timeout: f64,
    /// Memory limit of one plugin call, in MiB.
    #[arg(long, default_value_t = 64)]
    plugin_memory_mib: usize,
    /// Timeout of one etcd call, in seconds.
    #[arg(long, default_value_t = 3.0)]
    etcd_timeout: f64,
    /// Inspections running at once across all clusters.
    #[arg(long, default_value_t = 64)]
    max_concurrent_inspections: usize,
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag}: expected a positive number of seconds, got {value}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    match Cli::parse().command {
        Command::Standalone(args) => standalone(args).await,
    }
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let prefix = match common.metric_names {
        MetricNames::Inspection => "",
        MetricNames::Kstone => "kstone_",
    };
    let metrics = Arc::new(Metrics::new(prefix));
    let limits = CallLimits {
        timeout: seconds("plugin-timeout", common.plugin_timeout)?,
        memory_bytes: common.plugin_memory_mib.max(1) << 20,
    };
    let runtime = Arc::new(Runtime::new(limits)?);
    let plugins = Arc::new(PluginRegistry::new(runtime, metrics.clone()));
    let loaded = plugins
        .load_dir(&common.plugin_dir)
        .await
        .with_context(|| format!("--plugin-dir {}", common.plugin_dir.display()))?;
    tracing::info!(loaded, dir = %common.plugin_dir.display(), "plugins loaded");

    let settings = SchedulerSettings {
        max_concurrent: common.max_concurrent_inspections,
        connection: ConnectionSettings {
            call_timeout: seconds("etcd-timeout", common.etcd_timeout)?,
        },
    };
    let supervisor = Arc::new(Supervisor::new(plugins.clone(), metrics.clone(), settings));
    anyhow::ensure!(
        args.manifests.is_dir(),
        "--manifests {}: not a directory",
        args.manifests.display()
    );
    let source = ManifestSource {
        dir: args.manifests.clone(),
        rescan: seconds("rescan-interval", args.rescan_interval)?,
    };

    let listener = tokio::net::TcpListener::bind(common.listen)
        .await
        .with_context(|| format!("--listen {}", common.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /health, /plugins and /");
    let app = router(AppState {
        metrics,
        plugins,
        supervisor: supervisor.clone(),
    });
    let sources = tokio::spawn(source.run(supervisor.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    sources.abort();
    supervisor.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

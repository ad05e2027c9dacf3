use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use etcd_inspector::controllers::kubernetes::{self, leader::LeaseTiming, KubeSettings, Role};
use etcd_inspector::controllers::standalone::ManifestSource;
use etcd_inspector::controllers::{SchedulerSettings, Supervisor};
use etcd_inspector::etcd::ConnectionSettings;
use etcd_inspector::http::{router, AppState};
use etcd_inspector::metrics::Metrics;
use etcd_inspector::runtime::settings::{SettingsFile, MAX_MEMORY_MIB};
use etcd_inspector::runtime::{watch_plugin_dir, CallLimits, PluginRegistry, Runtime};

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
    /// Kubernetes mode: the cluster and inspection controllers in one process.
    Run(KubeArgs),
    /// Kubernetes mode, the seed's cluster controller only.
    Etcdcluster(KubeArgs),
    /// Kubernetes mode, the seed's inspection controller only.
    Inspection(KubeArgs),
    /// Print the CustomResourceDefinitions (YAML).
    Crd,
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load and validate a plugin as the host would, and describe it.
    Check {
        /// The plugin component (.wasm).
        file: PathBuf,
    },
    /// Run one inspection against a real cluster and print the samples.
    Run {
        /// The plugin component (.wasm).
        file: PathBuf,
        /// A manifest with the EtcdCluster to inspect (certName relative to it).
        #[arg(long)]
        manifest: PathBuf,
        /// Which EtcdCluster of the manifest (default: the first).
        #[arg(long)]
        cluster: Option<String>,
        /// Timeout of one etcd call, in seconds.
        #[arg(long, default_value_t = 3.0)]
        etcd_timeout: f64,
    },
}

#[derive(clap::Args)]
struct KubeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// kubeconfig file (default: in-cluster, then ~/.kube/config).
    #[arg(long, short = 'k')]
    kubeconfig: Option<PathBuf>,
    /// Only EtcdClusters/EtcdInspections matching this label selector.
    #[arg(long = "label-selector", alias = "labelSelector")]
    label_selector: Option<String>,
    /// Lease used for leader election (default depends on the subcommand).
    #[arg(long)]
    lease_lock_name: Option<String>,
    #[arg(long, default_value = "kstone")]
    lease_lock_namespace: String,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15.0)]
    lease_duration: f64,
    /// Identity in the lease (default: hostname and a random suffix).
    #[arg(long)]
    identity: Option<String>,
    /// Allow certName to name a Secret in another namespace than the cluster's.
    #[arg(long)]
    allow_cross_namespace_secrets: bool,
    /// Load plugins from ConfigMaps matching this label selector (e.g.
    /// etcd-inspector.io/plugin=true): their *.wasm binaryData is written into --plugin-dir.
    #[arg(long)]
    plugin_configmaps: Option<String>,
    /// Namespace of the plugin ConfigMaps (default: --lease-lock-namespace).
    #[arg(long)]
    plugin_configmap_namespace: Option<String>,
    /// Seconds between observations of an unchanged cluster (and Secret re-reads).
    #[arg(long, default_value_t = 30.0)]
    resync_interval: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricNames {
    /// etcd-metrics names: inspection_*
    Inspection,
    /// kstone names: kstone_inspection_*
    Kstone,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InstanceAllocation {
    /// Reserved slots reused call after call (falls back to on-demand when
    /// the address space cannot be reserved).
    Pooling,
    /// Fresh memory mappings for every call.
    OnDemand,
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
    /// Let certName name directories outside --manifests (by default a
    /// manifest cannot point a cluster at credentials elsewhere on disk).
    #[arg(long)]
    allow_cert_dirs_outside_manifests: bool,
}

#[derive(clap::Args)]
struct CommonArgs {
    /// Directory of plugin components (*.wasm), watched for changes.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Per-plugin settings (YAML): timeout, memory, sha256 pin, failure policy.
    #[arg(long)]
    plugin_config: Option<PathBuf>,
    /// Directory for precompiled plugins (kept across restarts; written only by etcd-inspector).
    #[arg(long)]
    plugin_cache_dir: Option<PathBuf>,
    /// Seconds between full rescans of the plugin directory (changes are also watched).
    #[arg(long, default_value_t = 30.0)]
    plugin_rescan_interval: f64,
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
    /// Where plugin instances get their memory, tables and stacks.
    #[arg(long, value_enum, default_value_t = InstanceAllocation::Pooling)]
    instance_allocation: InstanceAllocation,
}

/// Instances alive at once beyond the inspections: plugins being loaded
/// (describe) while inspections run.
const LOADING_SLOTS: u32 = 16;

fn plugin_runtime(common: &CommonArgs, limits: CallLimits) -> anyhow::Result<Runtime> {
    if common.instance_allocation == InstanceAllocation::OnDemand {
        return Runtime::new(limits);
    }
    let slots = u32::try_from(common.max_concurrent_inspections.max(1))
        .unwrap_or(u32::MAX)
        .saturating_add(LOADING_SLOTS);
    Runtime::with_pooling(limits.clone(), Some(slots)).or_else(|e| {
        tracing::warn!(slots, "cannot reserve the instance pool ({e:#}); allocating on demand");
        Runtime::new(limits)
    })
}

/// A flag's seconds, bounded so that no deadline computed from it overflows.
fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    const MAX_SECONDS: f64 = 365.0 * 86400.0;
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && value <= MAX_SECONDS)
        .with_context(|| {
            format!("--{flag}: expected a number of seconds above 0 and at most {MAX_SECONDS}, got {value}")
        })
}

/// Errors end the process with their message and causes, never a backtrace.
fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    match Cli::parse().command {
        Command::Standalone(args) => standalone(args).await,
        Command::Run(args) => kubernetes(args, Role::All, "etcd-inspector").await,
        Command::Etcdcluster(args) => kubernetes(args, Role::Clusters, "clay-etcdcluster-controller").await,
        Command::Inspection(args) => kubernetes(args, Role::Inspections, "clay-etcdinspection-controller").await,
        Command::Plugin(command) => plugin_command(command).await,
        Command::Crd => {
            print!("{}", etcd_inspector::cluster::crd::crds_yaml()?);
            Ok(())
        }
    }
}

/// What every mode shares: metrics, plugins, the supervisor and the HTTP server.
struct Host {
    metrics: Arc<Metrics>,
    plugins: Arc<PluginRegistry>,
    supervisor: Arc<Supervisor>,
}

impl Host {
    async fn start(common: &CommonArgs, needs_plugins: bool) -> anyhow::Result<Host> {
        let prefix = match common.metric_names {
            MetricNames::Inspection => "",
            MetricNames::Kstone => "kstone_",
        };
        let metrics = Arc::new(Metrics::new(prefix));
        anyhow::ensure!(
            (1..=MAX_MEMORY_MIB).contains(&common.plugin_memory_mib),
            "--plugin-memory-mib: expected 1 to {MAX_MEMORY_MIB}, got {}",
            common.plugin_memory_mib
        );
        let limits = CallLimits {
            timeout: seconds("plugin-timeout", common.plugin_timeout)?,
            memory_bytes: common.plugin_memory_mib << 20,
            budget: Default::default(),
        };
        let mut runtime = plugin_runtime(common, limits)?;
        if let Some(dir) = &common.plugin_cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("--plugin-cache-dir {}", dir.display()))?;
            runtime = runtime.with_cache_dir(dir.clone());
        }
        let settings = match &common.plugin_config {
            Some(path) => SettingsFile::read(path).map_err(|e| anyhow::anyhow!("--plugin-config {e}"))?,
            None => SettingsFile::default(),
        };
        let mut registry = PluginRegistry::with_settings(Arc::new(runtime), metrics.clone(), settings);
        if let Some(path) = &common.plugin_config {
            registry = registry.with_settings_file(path.clone());
        }
        let plugins = Arc::new(registry);
        match &common.plugin_dir {
            Some(dir) => {
                let loaded = plugins
                    .sync_dir(dir)
                    .await
                    .with_context(|| format!("--plugin-dir {}", dir.display()))?;
                tracing::info!(loaded, dir = %dir.display(), "plugins loaded");
                let rescan = seconds("plugin-rescan-interval", common.plugin_rescan_interval)?;
                tokio::spawn(watch_plugin_dir(plugins.clone(), dir.clone(), rescan));
            }
            None => anyhow::ensure!(!needs_plugins, "--plugin-dir is required to run inspections"),
        }
        let connection = ConnectionSettings {
            call_timeout: seconds("etcd-timeout", common.etcd_timeout)?,
        };
        let settings = SchedulerSettings {
            max_concurrent: common.max_concurrent_inspections,
            connection,
        };
        let supervisor = Arc::new(Supervisor::new(plugins.clone(), metrics.clone(), settings));
        Ok(Host {
            metrics,
            plugins,
            supervisor,
        })
    }

    /// Serves HTTP until `work` ends; every `work` ends on SIGTERM/SIGINT
    /// after its own clean-up (the lease is released, series deleted).
    async fn serve(
        self,
        listen: SocketAddr,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}"))?;
        tracing::info!(address = %listener.local_addr()?, "serving /metrics, /health, /plugins and /");
        let app = router(AppState {
            metrics: self.metrics,
            plugins: self.plugins,
            supervisor: self.supervisor.clone(),
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            work.await;
            let _ = done_tx.send(());
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = done_rx.await;
            })
            .await?;
        self.supervisor.shutdown();
        Ok(())
    }
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let host = Host::start(&args.common, true).await?;
    anyhow::ensure!(
        args.manifests.is_dir(),
        "--manifests {}: not a directory",
        args.manifests.display()
    );
    let source = ManifestSource {
        dir: args.manifests.clone(),
        rescan: seconds("rescan-interval", args.rescan_interval)?,
        confine_cert_dirs: !args.allow_cert_dirs_outside_manifests,
    };
    let supervisor = host.supervisor.clone();
    let work = async move {
        tokio::select! {
            _ = source.run(supervisor) => {},
            _ = shutdown_signal() => {},
        }
    };
    host.serve(args.common.listen, work).await
}

async fn kubernetes(args: KubeArgs, role: Role, default_lease: &str) -> anyhow::Result<()> {
    let host = Host::start(&args.common, role != Role::Clusters).await?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok());
        format!("{}_{:016x}", hostname.unwrap_or_default().trim(), rand::random::<u64>())
    });
    let settings = KubeSettings {
        label_selector: args.label_selector.clone(),
        lease_name: args
            .lease_lock_name
            .clone()
            .unwrap_or_else(|| default_lease.to_string()),
        lease_namespace: args.lease_lock_namespace.clone(),
        lease_timing: LeaseTiming {
            duration: seconds("lease-duration", args.lease_duration)?,
            renew_every: seconds("lease-duration", args.lease_duration / 5.0)?,
        },
        identity,
        allow_cross_namespace_secrets: args.allow_cross_namespace_secrets,
        resync: seconds("resync-interval", args.resync_interval)?,
    };
    anyhow::ensure!(
        args.plugin_configmaps.is_none() || args.common.plugin_dir.is_some(),
        "--plugin-configmaps needs --plugin-dir: the directory its plugins are written to"
    );
    if let (Some(selector), Some(dir)) = (&args.plugin_configmaps, &args.common.plugin_dir) {
        let namespace = args
            .plugin_configmap_namespace
            .clone()
            .unwrap_or_else(|| args.lease_lock_namespace.clone());
        let source = kubernetes::plugin_source::run(
            client.clone(),
            namespace,
            selector.clone(),
            dir.clone(),
            host.plugins.clone(),
        );
        tokio::spawn(source);
    }
    let supervisor = host.supervisor.clone();
    let work = kubernetes::run(client, settings, role, supervisor, shutdown_signal());
    host.serve(args.common.listen, work).await
}
async fn plugin_command(command: PluginCommand) -> anyhow::Result<()> {
    let runtime = Runtime::new(CallLimits::default())?;
    match command {
        PluginCommand::Check { file } => {
            let (_, report) = etcd_inspector::commands::check(&runtime, &file).await?;
            print!("{report}");
        }
        PluginCommand::Run {
            file,
            manifest,
            cluster,
            etcd_timeout,
        } => {
            let connection = ConnectionSettings {
                call_timeout: seconds("etcd-timeout", etcd_timeout)?,
            };
            let out = etcd_inspector::commands::run(&runtime, &file, &manifest, cluster.as_deref(), connection).await?;
            print!("{out}");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn deploy(file: &str) -> String {
        std::fs::read_to_string(format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_deployment_and_image_arguments_are_accepted_by_the_cli() {
        let deployment: serde_yaml::Value = serde_yaml::from_str(&deploy("deployment.yaml")).unwrap();
        let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .unwrap();
        let args = args.iter().map(|a| a.as_str().unwrap().to_string());
        Cli::try_parse_from(std::iter::once("etcd-inspector".to_string()).chain(args)).unwrap();
        let cmd = deploy("Dockerfile")
            .lines()
            .find(|l| l.starts_with("CMD"))
            .unwrap()
            .to_string();
        let cmd: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD ")).unwrap();
        Cli::try_parse_from(std::iter::once("etcd-inspector".to_string()).chain(cmd)).unwrap();
    }

    #[test]
    fn every_kustomization_resource_exists_and_is_kubernetes_yaml() {
        let kustomization: serde_yaml::Value = serde_yaml::from_str(&deploy("kustomization.yaml")).unwrap();
        for resource in kustomization["resources"].as_sequence().unwrap() {
            let text = deploy(resource.as_str().unwrap());
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc).unwrap();
                assert!(
                    value["apiVersion"].is_string() && value["kind"].is_string(),
                    "{resource:?}: {value:?}"
                );
            }
        }
    }
}

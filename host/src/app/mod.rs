//! The host as the binary runs it: what every mode shares (metrics,
//! plugins, the supervisor, the HTTP server) wired from the command line.
//! In the library, so the bench and tests build the host the way the
//! binary does; `main.rs` only calls [`main`].

pub mod cli;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::controllers::kubernetes::{self, leader::LeaseTiming, KubeSettings, Role};
use crate::controllers::standalone::ManifestSource;
use crate::controllers::{SchedulerSettings, Supervisor, WatchMode};
use crate::etcd::ConnectionSettings;
use crate::http::{router, AppState};
use crate::metrics::Metrics;
use crate::oci::source::{Credentials, OciSources};
use crate::oci::{OciRef, RegistrySettings};
use crate::runtime::settings::{SettingsFile, MAX_MEMORY_MIB};
use crate::runtime::{watch_plugin_dir, CallLimits, PluginRegistry, Runtime};
use cli::{
    Cli, Command, CommonArgs, InstanceAllocation, KubeArgs, MetricNames, PluginCommand, RegistryArgs, StandaloneArgs,
    WatchModeArg,
};

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
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        builder.worker_threads(threads.into());
    }
    let runtime = builder.enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    match command {
        Command::Standalone(args) => standalone(args).await,
        Command::Run(args) => kubernetes(args, Role::All, "etcd-inspector").await,
        Command::Etcdcluster(args) => kubernetes(args, Role::Clusters, "clay-etcdcluster-controller").await,
        Command::Inspection(args) => kubernetes(args, Role::Inspections, "clay-etcdinspection-controller").await,
        Command::Plugin(command) => plugin_command(command).await,
        Command::Crd => {
            print!("{}", crate::cluster::crd::crds_yaml()?);
            Ok(())
        }
    }
}

/// What every mode shares: metrics, plugins, the supervisor and the HTTP server.
struct Host {
    metrics: Arc<Metrics>,
    plugins: Arc<PluginRegistry>,
    supervisor: Arc<Supervisor>,
    sources: Option<Arc<OciSources>>,
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
            idle_timeout: match common.etcd_idle_timeout {
                0.0 => None,
                idle => Some(seconds("etcd-idle-timeout", idle)?),
            },
        };
        let settings = SchedulerSettings {
            max_concurrent: common.max_concurrent_inspections,
            watch_mode: match common.watch_mode {
                WatchModeArg::Stream => WatchMode::Stream,
                WatchModeArg::Rounds => WatchMode::Rounds,
            },
            connection,
        };
        let supervisor = Arc::new(Supervisor::new(plugins.clone(), metrics.clone(), settings));
        Ok(Host {
            metrics,
            plugins,
            supervisor,
            sources: None,
        })
    }

    /// Starts polling the OCI plugin sources (flags and settings), after a
    /// first pass: plugins pinned by digest serve before any inspection.
    async fn start_oci(&mut self, common: &CommonArgs, credentials: Credentials) -> anyhow::Result<()> {
        let mut flags = Vec::new();
        for (name, text) in &common.plugin_oci {
            anyhow::ensure!(
                crate::runtime::settings::is_file_stem(name),
                "--plugin-oci {name}=…: the name must be usable as a file name (letters, digits, - and _)"
            );
            flags.push((
                name.clone(),
                OciRef::parse(text).map_err(|e| anyhow::anyhow!("--plugin-oci {e}"))?,
            ));
        }
        let from_settings = !self.plugins.oci_sources().is_empty();
        if flags.is_empty() && !from_settings && common.plugin_config.is_none() {
            return Ok(());
        }
        let Some(dir) = &common.plugin_dir else {
            anyhow::ensure!(
                flags.is_empty() && !from_settings,
                "OCI plugin sources need --plugin-dir: the directory they are written to"
            );
            return Ok(());
        };
        let sources = Arc::new(OciSources::new(
            registry_settings(&common.registry, common.etcd_timeout.max(10.0))?,
            credentials,
            flags,
            dir.clone(),
            self.plugins.clone(),
            seconds("plugin-oci-poll-interval", common.plugin_oci_poll_interval)?,
        ));
        sources.poll_all().await;
        let poller = sources.clone();
        tokio::spawn(async move {
            tokio::time::sleep(poller.poll).await;
            poller.run().await
        });
        self.sources = Some(sources);
        Ok(())
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
            sources: self.sources,
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

/// Registry access as the flags describe it.
fn registry_settings(args: &RegistryArgs, timeout_seconds: f64) -> anyhow::Result<RegistrySettings> {
    Ok(RegistrySettings {
        insecure: args.insecure_registry.clone(),
        ca_files: args.registry_ca.clone(),
        timeout: seconds("registry timeout", timeout_seconds)?,
    })
}

/// `--registry-config`, else docker's own file when there is one.
fn docker_config(args: &RegistryArgs) -> Credentials {
    let default = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"))
        .filter(|p| p.is_file());
    match args.registry_config.clone().or(default) {
        Some(path) => Credentials::DockerConfig(path),
        None => Credentials::None,
    }
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let mut host = Host::start(&args.common, true).await?;
    host.start_oci(&args.common, docker_config(&args.common.registry))
        .await?;
    anyhow::ensure!(
        args.manifests.is_dir(),
        "--manifests {}: not a directory",
        args.manifests.display()
    );
    let source = ManifestSource {
        dir: args.manifests.clone(),
        rescan: seconds("rescan-interval", args.rescan_interval)?,
        confine_cert_dirs: !args.allow_cert_dirs_outside_manifests,
        shard: args.shard,
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
    if let Some(bundled) = &args.bundled_plugins {
        let dir = args
            .common
            .plugin_dir
            .as_ref()
            .context("--bundled-plugins needs --plugin-dir: the directory they are copied to")?;
        let seeded = kubernetes::plugin_source::seed_bundled(bundled, dir)
            .with_context(|| format!("--bundled-plugins {}", bundled.display()))?;
        tracing::info!(seeded, from = %bundled.display(), "bundled plugins");
    }
    let mut host = Host::start(&args.common, role != Role::Clusters).await?;
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let credentials = match &args.registry_secret {
        Some(name) => Credentials::Secret {
            api: Box::new(kube::Api::namespaced(client.clone(), &args.lease_lock_namespace)),
            name: name.clone(),
        },
        None => docker_config(&args.common.registry),
    };
    host.start_oci(&args.common, credentials).await?;
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
        sharding: !args.leader_election,
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
            kubernetes::plugin_source::PluginDirs {
                dir: dir.clone(),
                bundled: args.bundled_plugins.clone(),
            },
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
        PluginCommand::Check { file, params } => {
            let (_, report) = crate::commands::check(&runtime, &file, &params).await?;
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
                ..Default::default()
            };
            let out = crate::commands::run(&runtime, &file, &manifest, cluster.as_deref(), connection).await?;
            print!("{out}");
        }
        PluginCommand::Push {
            file,
            reference,
            registry,
        } => {
            let (_, report) = crate::commands::check(&runtime, &file, &[]).await?;
            eprint!("{report}");
            let target = OciRef::parse(&reference)?;
            let settings = registry_settings(&registry, 60.0)?;
            let pushed = crate::commands::push(&settings, docker_config(&registry), &file, &target).await?;
            println!("{pushed}");
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

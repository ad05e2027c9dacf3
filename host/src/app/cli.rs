//! The command line: subcommands and flags (clap), and nothing else. The
//! seed's subcommands and flag names are kept (`etcdcluster`, `inspection`,
//! `--labelSelector`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::etcd::ConnectionSettings;

#[derive(Parser)]
#[command(
    name = "etcd-inspector",
    version,
    about = "Inspects etcd clusters with WebAssembly plugins and exports Prometheus metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Threads that run inspections, etcd I/O and the HTTP server. Default:
    /// the CPUs this process may use, a container's CPU limit included (the
    /// Helm chart's limit of 1 CPU gives 1). The host's work is many short
    /// waits: each extra thread adds wake-ups between threads (8 % of the
    /// host's CPU at 3300 clusters on 2 threads, bench/HISTORY.md), so more
    /// threads only pay off when one CPU is not enough.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum PluginCommand {
    /// Load and validate a plugin as the host would, describe it, and run it
    /// once against a fake cluster, checking its samples as the host does.
    Check {
        /// The plugin component (.wasm).
        file: PathBuf,
        /// An annotation of the fake cluster, passed to the plugin as a
        /// parameter (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
        params: Vec<(String, String)>,
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
        #[arg(long, default_value_t = ConnectionSettings::DEFAULT_CALL_TIMEOUT.as_secs_f64())]
        etcd_timeout: f64,
    },
    /// Check a plugin, then publish it to an OCI registry (CNCF wasm layout)
    /// and print the reference pinned by digest.
    Push {
        /// The plugin component (.wasm).
        file: PathBuf,
        /// Where to: oci://registry/repository:tag
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// How registries are reached (plugin sources and `plugin push`).
#[derive(clap::Args, Clone, Default)]
pub struct RegistryArgs {
    /// A docker config file with registry logins (`auths`; default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json when present).
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// A PEM file of a CA trusted for registries, besides the system's (repeatable).
    #[arg(long)]
    pub registry_ca: Vec<PathBuf>,
    /// A registry (host:port) reached over plain HTTP, without TLS (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))
}

#[derive(clap::Args)]
pub struct KubeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// kubeconfig file (default: in-cluster, then ~/.kube/config).
    #[arg(long, short = 'k')]
    pub kubeconfig: Option<PathBuf>,
    /// Only EtcdClusters/EtcdInspections matching this label selector.
    #[arg(long = "label-selector", alias = "labelSelector")]
    pub label_selector: Option<String>,
    /// The Lease of leader election, or with sharding the group name of the
    /// replicas' Leases (default depends on the subcommand).
    #[arg(long)]
    pub lease_lock_name: Option<String>,
    /// Only the Lease holder inspects, every cluster (the seed's model).
    /// Without it every replica inspects its share of the clusters.
    #[arg(long)]
    pub leader_election: bool,
    #[arg(long, default_value = "kstone")]
    pub lease_lock_namespace: String,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15.0)]
    pub lease_duration: f64,
    /// Identity in the lease (default: hostname and a random suffix).
    #[arg(long)]
    pub identity: Option<String>,
    /// Allow certName to name a Secret in another namespace than the cluster's.
    #[arg(long)]
    pub allow_cross_namespace_secrets: bool,
    /// Load plugins from ConfigMaps matching this label selector (e.g.
    /// etcd-inspector.io/plugin=true): their *.wasm binaryData is written into --plugin-dir.
    #[arg(long)]
    pub plugin_configmaps: Option<String>,
    /// The image's bundled plugins: copied into --plugin-dir at start, where
    /// a ConfigMap entry of the same file name overrides one; removing the
    /// entry brings the bundled version back.
    #[arg(long)]
    pub bundled_plugins: Option<PathBuf>,
    /// Namespace of the plugin ConfigMaps (default: --lease-lock-namespace).
    #[arg(long)]
    pub plugin_configmap_namespace: Option<String>,
    /// Seconds between observations of an unchanged cluster (and Secret re-reads).
    #[arg(long, default_value_t = 30.0)]
    pub resync_interval: f64,
    /// A kubernetes.io/dockerconfigjson Secret (in --lease-lock-namespace)
    /// with the logins of the registries plugins are pulled from.
    #[arg(long)]
    pub registry_secret: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MetricNames {
    /// etcd-metrics names: inspection_*
    Inspection,
    /// kstone names: kstone_inspection_*
    Kstone,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InstanceAllocation {
    /// Reserved slots reused call after call (falls back to on-demand when
    /// the address space cannot be reserved).
    Pooling,
    /// Fresh memory mappings for every call.
    OnDemand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchModeArg {
    /// One watch per cluster, always open.
    Stream,
    /// A watch per cluster and round, closed once caught up.
    Rounds,
}

#[derive(clap::Args)]
pub struct StandaloneArgs {
    /// Directory of EtcdCluster and EtcdInspection YAML files.
    #[arg(long)]
    pub manifests: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// How often the manifest directory is re-read, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub rescan_interval: f64,
    /// Let certName name directories outside --manifests (by default a
    /// manifest cannot point a cluster at credentials elsewhere on disk).
    #[arg(long)]
    pub allow_cert_dirs_outside_manifests: bool,
    /// Inspect one share of the clusters: INDEX of COUNT hosts given the
    /// same manifests (e.g. 0/3, 1/3, 2/3). Adding a host moves about 1/COUNT.
    #[arg(long, value_name = "INDEX/COUNT", value_parser = crate::controllers::shard::StaticShard::parse)]
    pub shard: Option<crate::controllers::shard::StaticShard>,
}

#[derive(clap::Args)]
pub struct CommonArgs {
    /// Directory of plugin components (*.wasm), watched for changes.
    #[arg(long)]
    pub plugin_dir: Option<PathBuf>,
    /// Per-plugin settings (YAML): timeout, memory, sha256 pin, failure policy.
    #[arg(long)]
    pub plugin_config: Option<PathBuf>,
    /// Directory for precompiled plugins (kept across restarts; written only by etcd-inspector).
    #[arg(long)]
    pub plugin_cache_dir: Option<PathBuf>,
    /// Seconds between full rescans of the plugin directory (changes are also watched).
    #[arg(long, default_value_t = 30.0)]
    pub plugin_rescan_interval: f64,
    /// Address for /metrics, /health, /plugins and the status page.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Metric name family.
    #[arg(long, value_enum, default_value_t = MetricNames::Inspection)]
    pub metric_names: MetricNames,
    /// Wall-time limit of one plugin call, in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub plugin_timeout: f64,
    /// Memory limit of one plugin call, in MiB.
    #[arg(long, default_value_t = 64)]
    pub plugin_memory_mib: usize,
    /// Timeout of one etcd call, in seconds.
    #[arg(long, default_value_t = ConnectionSettings::DEFAULT_CALL_TIMEOUT.as_secs_f64())]
    pub etcd_timeout: f64,
    /// Close a member's gRPC channel after this many seconds unused, to
    /// reopen it at the next round (0: keep channels open). Channels stay
    /// when the cluster's next round is due within this time, and on
    /// clusters with username/password auth (reopening costs an Authenticate).
    #[arg(long, default_value_t = ConnectionSettings::DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    pub etcd_idle_timeout: f64,
    /// How plugins that follow changes (request) get them: `stream` keeps
    /// a watch open per cluster and delivers events within 100 ms;
    /// `rounds` opens it once per interval for the events since the last
    /// round, so counts are up to an interval old but a cluster holds no
    /// member channel between rounds (for thousands of clusters a replica).
    #[arg(long, value_enum, default_value_t = WatchModeArg::Stream)]
    pub watch_mode: WatchModeArg,
    /// Inspections running at once across all clusters.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_inspections: usize,
    /// Where plugin instances get their memory, tables and stacks.
    #[arg(long, value_enum, default_value_t = InstanceAllocation::Pooling)]
    pub instance_allocation: InstanceAllocation,
    /// A plugin pulled from an OCI registry into --plugin-dir as NAME.wasm
    /// (repeatable; the `source` field of --plugin-config does the same).
    #[arg(long = "plugin-oci", value_name = "NAME=oci://REGISTRY/REPO[:TAG][@sha256:DIGEST]", value_parser = key_value)]
    pub plugin_oci: Vec<(String, String)>,
    /// Seconds between polls of OCI sources named by a tag (a moved tag is
    /// pulled; a digest is pulled once).
    #[arg(long, default_value_t = 60.0)]
    pub plugin_oci_poll_interval: f64,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
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
    fn worker_threads_is_taken_after_any_subcommand_and_must_be_at_least_one() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("etcd-inspector").chain(args.iter().copied()));
        let cli = parse(&["standalone", "--manifests", "m", "--worker-threads", "1"]).unwrap();
        assert_eq!(cli.worker_threads, Some(1));
        assert_eq!(parse(&["crd"]).unwrap().worker_threads, None);
        let error = parse(&["run", "--worker-threads", "0"]).err().unwrap().to_string();
        assert!(
            error.contains("--worker-threads") && error.contains("1..=1024"),
            "{error}"
        );
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

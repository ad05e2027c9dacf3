//! Runs the desired set of clusters: one connection per cluster and one
//! scheduled task per (cluster, feature). Whatever feeds it (manifest files,
//! the Kubernetes API) only says what should run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

use super::invocation::Params;
use super::job::{Job, WatchMode};
use crate::cluster::{ClusterConfig, ClusterKey, ConnectionPool, FeatureSettings};
use crate::etcd::{ClusterConnection, ConnectionSettings};
use crate::metrics::Metrics;
use crate::runtime::PluginRegistry;

/// Scheduling settings shared by all clusters.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    /// Inspections running at once, all clusters together.
    pub max_concurrent: usize,
    pub watch_mode: WatchMode,
    pub connection: ConnectionSettings,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            max_concurrent: 64,
            watch_mode: WatchMode::default(),
            connection: ConnectionSettings::default(),
        }
    }
}

/// The last run of one inspection, for the status page and `/plugins`.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub finished_unix_ms: u128,
    /// `ok`, a failure (`timeout`, `trap`, `plugin_error`, ...) or
    /// `circuit_open` (calls paused after repeated traps).
    pub outcome: &'static str,
    pub message: String,
    pub duration_ms: u128,
    /// Rounds failed in a row up to this one (0 after a success).
    pub consecutive_failures: u32,
    /// When a round last succeeded on this cluster (this version or another).
    pub last_ok_unix_ms: Option<u128>,
    /// The round failed and the series of the last good round are still
    /// exported (`onFailure: keep`): what Prometheus scrapes is that old.
    pub stale_series_kept: bool,
}

/// What the status page shows for a cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub endpoints: Vec<String>,
    pub members: Vec<String>,
    /// gRPC channels to its members open now (idle ones are closed).
    pub member_channels: usize,
    pub features: BTreeMap<String, Option<RunRecord>>,
    pub warnings: Vec<String>,
}

struct FeatureTask {
    settings: FeatureSettings,
    abort: AbortHandle,
}

struct ClusterEntry {
    config: ClusterConfig,
    connection: Arc<ClusterConnection>,
    /// The jobs read the cluster's parameters from here at every round.
    params: watch::Sender<Params>,
    tasks: HashMap<String, FeatureTask>,
    runs: Arc<Mutex<BTreeMap<String, RunRecord>>>,
}

pub struct Supervisor {
    plugins: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    watch_mode: WatchMode,
    /// Shared with whatever else talks to the clusters (the cluster controller).
    pool: Arc<ConnectionPool>,
    clusters: Mutex<HashMap<ClusterKey, ClusterEntry>>,
    errors: Mutex<Vec<String>>,
    /// Clusters refused by the last apply because their name is taken, with why.
    refused: Mutex<HashMap<ClusterKey, String>>,
}

impl Supervisor {
    pub fn new(plugins: Arc<PluginRegistry>, metrics: Arc<Metrics>, settings: SchedulerSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        let pool = Arc::new(ConnectionPool::new(settings.connection));
        pool.spawn_idle_sweeper(metrics.clone());
        Supervisor {
            plugins,
            metrics,
            permits,
            watch_mode: settings.watch_mode,
            pool,
            clusters: Mutex::default(),
            errors: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    /// Makes `desired` the running set. Clusters in `keep` (their new
    /// configuration was rejected) go on with the last good one; every
    /// other cluster not in `desired` is stopped and its series deleted.
    pub fn apply(&self, desired: Vec<ClusterConfig>, keep: &[ClusterKey], mut errors: Vec<String>) {
        let mut clusters = self.clusters.lock().unwrap();
        let (desired, refused) = unique_names(&clusters, desired, keep);
        errors.extend(refused.values().cloned());
        *self.refused.lock().unwrap() = refused;
        {
            let mut known = self.errors.lock().unwrap();
            for e in errors.iter().filter(|e| !known.contains(e)) {
                tracing::error!("configuration rejected: {e}");
            }
            *known = errors;
        }
        let wanted: HashSet<&ClusterKey> = desired.iter().map(|c| &c.key).chain(keep).collect();
        let gone: Vec<ClusterKey> = clusters.keys().filter(|k| !wanted.contains(k)).cloned().collect();
        for key in gone {
            if let Some(entry) = clusters.remove(&key) {
                tracing::info!(cluster = %key, "cluster removed");
                self.stop_all(entry);
            }
        }
        for config in desired {
            // Warnings are logged when a configuration is new or changed, not on every rescan.
            if clusters.get(&config.key).is_none_or(|e| e.config != config) {
                for warning in &config.warnings {
                    tracing::warn!(cluster = %config.key, "{warning}");
                }
            }
            let reuse = clusters
                .get(&config.key)
                .is_some_and(|e| e.config.same_connection(&config));
            if !reuse {
                if let Some(old) = clusters.remove(&config.key) {
                    tracing::info!(cluster = %config.key, "cluster connection settings changed; reconnecting");
                    self.stop_all(old);
                }
                match self.new_entry(&config) {
                    Ok(entry) => {
                        tracing::info!(cluster = %config.key, endpoints = ?config.seeds, "cluster added");
                        clusters.insert(config.key.clone(), entry);
                    }
                    Err(e) => {
                        let message = format!("cluster {}: metadata.annotations.certName: {e}", config.key);
                        tracing::error!("configuration rejected: {message}");
                        self.errors.lock().unwrap().push(message);
                        continue;
                    }
                }
            }
            let entry = clusters.get_mut(&config.key).expect("entry present");
            if entry.config.params != config.params {
                entry.params.send_replace(Arc::new(config.params.clone()));
            }
            self.sync_features(entry, &config);
            entry.config = config;
        }
    }

    /// The connections of the running clusters, for others to share.
    pub fn connections(&self) -> &Arc<ConnectionPool> {
        &self.pool
    }

    /// Why the last [`Self::apply`] refused `key`, if it refused it for a
    /// cluster name another namespace uses (the cluster controller shows it
    /// in the cluster's status).
    pub fn refusal(&self, key: &ClusterKey) -> Option<String> {
        self.refused.lock().unwrap().get(key).cloned()
    }

    /// Configuration errors from the last [`Self::apply`].
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn views(&self) -> Vec<ClusterView> {
        let clusters = self.clusters.lock().unwrap();
        let mut views: Vec<ClusterView> = clusters
            .values()
            .map(|e| {
                let runs = e.runs.lock().unwrap();
                ClusterView {
                    cluster: e.config.key.to_string(),
                    endpoints: e.config.seeds.clone(),
                    members: e
                        .connection
                        .members()
                        .iter()
                        .map(|m| format!("{} {}", m.name, m.endpoint))
                        .collect(),
                    member_channels: e.connection.open_channels(),
                    features: e.tasks.keys().map(|f| (f.clone(), runs.get(f).cloned())).collect(),
                    warnings: e.config.warnings.clone(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        views
    }

    /// Stops every cluster and deletes its series.
    pub fn shutdown(&self) {
        let mut clusters = self.clusters.lock().unwrap();
        for (_, entry) in clusters.drain() {
            self.stop_all(entry);
        }
    }

    fn new_entry(&self, config: &ClusterConfig) -> Result<ClusterEntry, crate::etcd::TlsError> {
        Ok(ClusterEntry {
            config: config.clone(),
            connection: self.pool.get(config)?,
            params: watch::Sender::new(Arc::new(config.params.clone())),
            tasks: HashMap::new(),
            runs: Arc::default(),
        })
    }

    fn sync_features(&self, entry: &mut ClusterEntry, config: &ClusterConfig) {
        let name = &config.key.name;
        let stale: Vec<String> = entry
            .tasks
            .iter()
            .filter(|(f, t)| config.features.get(*f) != Some(&t.settings))
            .map(|(f, _)| f.clone())
            .collect();
        for feature in stale {
            let task = entry.tasks.remove(&feature).expect("listed");
            task.abort.abort();
            if !config.features.contains_key(&feature) {
                tracing::info!(cluster = %config.key, feature, "inspection stopped");
                self.metrics.forget(&feature, name);
                entry.runs.lock().unwrap().remove(&feature);
            }
        }
        for (feature, settings) in &config.features {
            if entry.tasks.contains_key(feature) {
                continue;
            }
            let job = Job {
                cluster: config.key.clone(),
                feature: feature.clone(),
                interval: settings.interval,
                watch_mode: self.watch_mode,
                params: entry.params.subscribe(),
                connection: entry.connection.clone(),
                plugins: self.plugins.clone(),
                metrics: self.metrics.clone(),
                permits: self.permits.clone(),
                runs: entry.runs.clone(),
                state: Mutex::new(None),
                breaker: Mutex::default(),
                failures: Mutex::default(),
                members_failures: Mutex::default(),
                watch_failures: Mutex::default(),
                plugin_logs: Arc::default(),
            };
            let abort = tokio::spawn(job.run()).abort_handle();
            entry.tasks.insert(
                feature.clone(),
                FeatureTask {
                    settings: settings.clone(),
                    abort,
                },
            );
        }
    }

    fn stop_all(&self, entry: ClusterEntry) {
        for (feature, task) in entry.tasks {
            task.abort.abort();
            self.metrics.forget(&feature, &entry.config.key.name);
        }
    }
}

/// Series carry `clusterName` only (the seed's label set, D18), so two
/// namespaces may not share a cluster name: one's commits would delete the
/// other's series. The cluster running already keeps its name; among
/// newcomers the first wins. Returns the accepted ones, and why each
/// refused one was refused.
fn unique_names(
    running: &HashMap<ClusterKey, ClusterEntry>,
    desired: Vec<ClusterConfig>,
    keep: &[ClusterKey],
) -> (Vec<ClusterConfig>, HashMap<ClusterKey, String>) {
    let wanted: HashSet<&ClusterKey> = desired.iter().map(|c| &c.key).chain(keep.iter()).collect();
    let mut owners: HashMap<String, ClusterKey> = running
        .keys()
        .filter(|k| wanted.contains(k))
        .map(|k| (k.name.clone(), k.clone()))
        .collect();
    let mut accepted = Vec::with_capacity(desired.len());
    let mut refused = HashMap::new();
    for config in desired {
        match owners.get(&config.key.name) {
            Some(owner) if *owner != config.key => {
                let error = crate::cluster::ConfigError {
                    cluster: config.key.to_string(),
                    field: "metadata.name".into(),
                    message: format!(
                        "clusterName {:?} is already used by cluster {owner}; series are labelled by clusterName only, so names must be unique across namespaces",
                        config.key.name
                    ),
                };
                refused.insert(config.key.clone(), error.to_string());
            }
            _ => {
                owners.insert(config.key.name.clone(), config.key.clone());
                accepted.push(config);
            }
        }
    }
    (accepted, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::crd::{EtcdCluster, EtcdClusterSpec};
    use crate::runtime::{CallLimits, Runtime};

    fn config(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> ClusterConfig {
        let mut cluster = EtcdCluster::new(
            name,
            EtcdClusterSpec {
                cluster_type: "imported".into(),
                ..Default::default()
            },
        );
        cluster.metadata.namespace = Some(namespace.into());
        let mut all = vec![("importedAddr", "http://127.0.0.1:9"), ("featureGates", "healthy=true")];
        all.extend(annotations);
        cluster.metadata.annotations = Some(all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        ClusterConfig::from_resources(&cluster, &[], |_| Ok(Default::default())).unwrap()
    }

    fn supervisor() -> Supervisor {
        let metrics = Arc::new(Metrics::new(""));
        let runtime = Arc::new(Runtime::new(CallLimits::default()).unwrap());
        let plugins = Arc::new(PluginRegistry::new(runtime, metrics.clone()));
        Supervisor::new(plugins, metrics, SchedulerSettings::default())
    }

    fn running(s: &Supervisor) -> Vec<String> {
        s.views().into_iter().map(|v| v.cluster).collect()
    }

    /// The same rule in both modes (both feed this supervisor): a name
    /// another namespace runs under is refused, and what runs keeps running.
    #[tokio::test]
    async fn a_cluster_name_taken_in_another_namespace_is_refused_and_the_running_one_stays() {
        let s = supervisor();
        s.apply(vec![config("team-b", "prod", &[])], &[], vec![]);
        // A newcomer that sorts first does not take the name over.
        s.apply(
            vec![config("team-a", "prod", &[]), config("team-b", "prod", &[])],
            &[],
            vec![],
        );
        assert_eq!(running(&s), ["team-b/prod"]);
        let key = |ns: &str| config(ns, "prod", &[]).key;
        assert!(s.refusal(&key("team-a")).is_some() && s.refusal(&key("team-b")).is_none());
        let errors = s.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "cluster team-a/prod: metadata.name: clusterName \"prod\" is already used by cluster team-b/prod"
            ),
            "{errors:?}"
        );
        // Among newcomers the first wins.
        let s = supervisor();
        s.apply(vec![config("x", "c", &[]), config("y", "c", &[])], &[], vec![]);
        assert_eq!(running(&s), ["x/c"]);
        // Once the holder is gone the name is free.
        s.apply(vec![config("y", "c", &[])], &[], vec![]);
        assert_eq!(running(&s), ["y/c"]);
        assert!(s.errors().is_empty());
    }

    /// Jobs read the parameters from the cluster's channel, so an edited
    /// annotation reaches their next round without a restart.
    #[tokio::test]
    async fn an_edited_annotation_reaches_the_running_jobs() {
        let s = supervisor();
        s.apply(vec![config("ns", "c", &[("etcd-inspector.io/x", "1")])], &[], vec![]);
        let job_params = {
            let clusters = s.clusters.lock().unwrap();
            clusters.values().next().unwrap().params.subscribe()
        };
        s.apply(vec![config("ns", "c", &[("etcd-inspector.io/x", "2")])], &[], vec![]);
        let params = job_params.borrow().clone();
        assert!(
            params.contains(&("etcd-inspector.io/x".into(), "2".into())),
            "{params:?}"
        );
    }
}

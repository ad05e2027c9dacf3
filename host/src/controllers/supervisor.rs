//! Runs the desired set of clusters: one connection per cluster and one
//! scheduled task per (cluster, feature). Whatever feeds it (manifest files,
//! the Kubernetes API) only says what should run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::job::Job;
use crate::cluster::{ClusterConfig, ClusterKey, FeatureSettings};
use crate::etcd::{ClusterConnection, ConnectionSettings};
use crate::metrics::Metrics;
use crate::runtime::PluginRegistry;

/// Scheduling settings shared by all clusters.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    /// Inspections running at once, all clusters together.
    pub max_concurrent: usize,
    pub connection: ConnectionSettings,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            max_concurrent: 64,
            connection: ConnectionSettings::default(),
        }
    }
}

/// The last run of one inspection, for the status page.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub finished_unix_ms: u128,
    pub outcome: &'static str,
    pub message: String,
    pub duration_ms: u128,
}

/// What the status page shows for a cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub endpoints: Vec<String>,
    pub members: Vec<String>,
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
    tasks: HashMap<String, FeatureTask>,
    runs: Arc<Mutex<BTreeMap<String, RunRecord>>>,
}

pub struct Supervisor {
    plugins: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    settings: SchedulerSettings,
    permits: Arc<Semaphore>,
    clusters: Mutex<HashMap<ClusterKey, ClusterEntry>>,
    errors: Mutex<Vec<String>>,
}

impl Supervisor {
    pub fn new(plugins: Arc<PluginRegistry>, metrics: Arc<Metrics>, settings: SchedulerSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Supervisor {
            plugins,
            metrics,
            settings,
            permits,
            clusters: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    /// Makes `desired` the running set. Clusters in `keep` (their new
    /// configuration was rejected) go on with the last good one; every
    /// other cluster not in `desired` is stopped and its series deleted.
    pub fn apply(&self, desired: Vec<ClusterConfig>, keep: &[ClusterKey], errors: Vec<String>) {
        {
            let mut known = self.errors.lock().unwrap();
            for e in errors.iter().filter(|e| !known.contains(e)) {
                tracing::error!("configuration rejected: {e}");
            }
            *known = errors;
        }
        let mut clusters = self.clusters.lock().unwrap();
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
            self.sync_features(entry, &config);
            entry.config = config;
        }
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
        let connection = config.connect(self.settings.connection.clone())?;
        Ok(ClusterEntry {
            config: config.clone(),
            connection: Arc::new(connection),
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
                params: config.params.clone(),
                connection: entry.connection.clone(),
                plugins: self.plugins.clone(),
                metrics: self.metrics.clone(),
                permits: self.permits.clone(),
                runs: entry.runs.clone(),
                state: Mutex::new(None),
                breaker: Mutex::default(),
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

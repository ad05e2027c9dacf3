//! Runs the desired set of clusters: one connection per cluster and one
//! scheduled task per (cluster, feature). Whatever feeds it (manifest files,
//! the Kubernetes API) only says what should run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::cluster::{ClusterConfig, ClusterKey, FeatureSettings};
use crate::etcd::{ClusterConnection, ConnectionSettings, MemberInfo};
use crate::metrics::{CommitMode, Metrics};
use crate::runtime::{Outcome, PluginRegistry, Snapshot};

/// Interval of a feature whose plugin is not loaded (yet).
const MISSING_PLUGIN_RETRY: Duration = Duration::from_secs(5);

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
            for warning in &config.warnings {
                tracing::warn!(cluster = %config.key, "{warning}");
            }
            let reuse = clusters
                .get(&config.key)
                .is_some_and(|e| same_connection(&e.config, &config));
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
        let connection = ClusterConnection::new(
            &config.key.to_string(),
            config.seeds.clone(),
            config.rewrites.clone(),
            config.credentials.clone(),
            self.settings.connection.clone(),
        )?;
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

fn same_connection(a: &ClusterConfig, b: &ClusterConfig) -> bool {
    a.seeds == b.seeds && a.rewrites == b.rewrites && a.credentials == b.credentials
}

/// One (cluster, feature) schedule.
struct Job {
    cluster: ClusterKey,
    feature: String,
    interval: Option<Duration>,
    params: Vec<(String, String)>,
    connection: Arc<ClusterConnection>,
    plugins: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    runs: Arc<Mutex<BTreeMap<String, RunRecord>>>,
    /// The plugin's `state` for this cluster; lives as long as the schedule.
    state: Mutex<Option<Vec<u8>>>,
}

impl Job {
    async fn run(self) {
        // Spread the first runs so many clusters do not start in lockstep.
        let first = self
            .interval
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let spread = first.mul_f64(rand::rng().random_range(0.0..1.0));
        tokio::time::sleep(spread).await;
        let mut missing_logged = false;
        loop {
            let started = tokio::time::Instant::now();
            let interval = match self.plugins.get(&self.feature) {
                Some(plugin) => {
                    missing_logged = false;
                    let interval = self
                        .interval
                        .unwrap_or(Duration::from_secs(plugin.info.default_interval_seconds.into()));
                    self.run_once(&plugin).await;
                    interval
                }
                None => {
                    if !missing_logged {
                        tracing::warn!(cluster = %self.cluster, feature = %self.feature, "no plugin serves this feature; waiting for one");
                        missing_logged = true;
                    }
                    MISSING_PLUGIN_RETRY
                }
            };
            // ±10 % jitter; the next run is timed from this run's start.
            let jitter = rand::rng().random_range(0.9..1.1);
            tokio::time::sleep_until(started + interval.mul_f64(jitter)).await;
        }
    }

    async fn run_once(&self, plugin: &crate::runtime::LoadedPlugin) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let started = Instant::now();
        let members = self.members().await;
        let snapshot = Snapshot {
            name: self.cluster.name.clone(),
            namespace: self.cluster.namespace.clone(),
            members,
            params: self.params.clone(),
        };
        let runtime = self.plugins.runtime();
        let state = self.state.lock().unwrap().clone();
        let result = runtime.inspect(plugin, self.connection.clone(), snapshot, state).await;
        let elapsed = started.elapsed();
        let (outcome, message) = match result {
            Ok(done) => match self
                .metrics
                .commit(&self.feature, &self.cluster.name, &done.samples, CommitMode::Replace)
            {
                Ok(()) => {
                    if let Some(state) = done.state {
                        *self.state.lock().unwrap() = Some(state);
                    }
                    (Outcome::Ok, format!("{} samples", done.samples.len()))
                }
                Err(e) => (Outcome::PluginError, format!("samples rejected: {e}")),
            },
            Err(failure) => (failure.outcome, failure.message),
        };
        self.metrics
            .invocation(&self.feature, outcome.as_str(), elapsed.as_secs_f64());
        if outcome != Outcome::Ok {
            self.metrics.inspection_failed(&self.cluster.name, &self.feature);
            tracing::warn!(cluster = %self.cluster, feature = %self.feature, outcome = outcome.as_str(), "inspection failed: {message}");
        } else {
            tracing::debug!(cluster = %self.cluster, feature = %self.feature, ?elapsed, "inspection done: {message}");
        }
        let record = RunRecord {
            finished_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
            outcome: outcome.as_str(),
            message,
            duration_ms: elapsed.as_millis(),
        };
        self.runs.lock().unwrap().insert(self.feature.clone(), record);
    }

    /// Current members; the last known ones when MemberList fails; the
    /// `importedAddr` endpoints when none was ever known, so a probe can
    /// still report them (and why they fail).
    async fn members(&self) -> Vec<MemberInfo> {
        match self.connection.refresh_members().await {
            Ok(members) if !members.is_empty() => members,
            result => {
                if let Err(e) = result {
                    tracing::warn!(cluster = %self.cluster, "MemberList failed: {e}");
                }
                let known = self.connection.members();
                if !known.is_empty() {
                    return known;
                }
                self.connection.seed_members()
            }
        }
    }
}

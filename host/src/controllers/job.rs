//! One (cluster, feature) schedule. A plugin that only inspects runs every
//! interval; a plugin that consumes watch events gets a census at a
//! revision R, then the events after R in batches, and a fresh census
//! whenever the history it relies on is gone (compaction, a failed batch)
//! and every interval as a cross-check (D8, D20).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant as TokioInstant;

use super::invocation::{watch_prefix, Invocation, Params, Work};
use super::RunRecord;
use crate::cluster::ClusterKey;
use crate::etcd::{ClusterConnection, EtcdReads, WatchEvent, WatchUpdate};
use crate::log_state::{LogState, RepeatGate};
use crate::metrics::Metrics;
use crate::runtime::settings::OnFailure;
use crate::runtime::{LoadedPlugin, Outcome, PluginRegistry};

/// Interval of a feature whose plugin is not loaded (yet).
const MISSING_PLUGIN_RETRY: Duration = Duration::from_secs(5);
/// Longest wait before a census or watch is tried again after a failure.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Events are delivered when this many are pending or the batch is this old.
/// Each call costs ~35 µs whatever its size (a fresh instance, its reset):
/// 1000 events made that ~35 ns of the ~90 ns per event (bench D); 4096
/// make it ~9 ns. A batch fills before `BATCH_DELAY` only above ~40 000
/// events/s, so the size changes nothing below that rate, and it stays far
/// below what a plugin's memory holds (~400 KiB packed for Kubernetes keys).
pub const BATCH_EVENTS: usize = 4096;
const BATCH_DELAY: Duration = Duration::from_millis(100);
/// How often a round's watch asks etcd for progress until it answers;
/// etcd brings a watch that reads history up to date every 100 ms.
const PROGRESS_REQUEST_EVERY: Duration = Duration::from_millis(100);

/// How a watching plugin gets its events (`--watch-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchMode {
    /// A watch open all the time: events reach the plugin within
    /// `BATCH_DELAY`, and the cluster keeps a member channel open.
    #[default]
    Stream,
    /// A watch opened once per interval for the events since the last
    /// round: counts are up to an interval old, and between rounds the
    /// cluster holds no channel (~70-100 KiB less each; bench/HISTORY.md).
    Rounds,
}

/// How a round's watch ended.
enum CatchUp {
    /// Every event up to this revision was delivered.
    Done(u64),
    /// Stopped short, for the reason given, with events delivered up to
    /// the revision.
    Stopped(u64, String),
    /// The history from the start revision is compacted.
    Compacted(u64),
    /// A failed delivery and its census left nothing counted: start over.
    Lost,
}

pub(super) struct Job {
    pub cluster: ClusterKey,
    pub feature: String,
    pub interval: Option<Duration>,
    pub watch_mode: WatchMode,
    /// The cluster's current parameters: an edited annotation reaches the
    /// next round without restarting the schedule.
    pub params: watch::Receiver<Params>,
    pub connection: Arc<ClusterConnection>,
    pub plugins: Arc<PluginRegistry>,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Semaphore>,
    pub runs: Arc<Mutex<BTreeMap<String, RunRecord>>>,
    /// The plugin's `state` for this cluster; lives as long as the schedule.
    pub state: Mutex<Option<Vec<u8>>>,
    pub breaker: Mutex<Breaker>,
    /// Failures are logged when they start, every few minutes while they
    /// last, and when they end; each round's detail is at debug.
    pub failures: Mutex<LogState>,
    pub members_failures: Mutex<LogState>,
    pub watch_failures: Mutex<LogState>,
    /// The plugin's own log lines on this cluster, written once per change.
    pub plugin_logs: Arc<Mutex<RepeatGate>>,
}

/// Backs a plugin version off after repeated traps, timeouts or OOMs: each
/// call costs a fresh instance and up to a timeout, so a broken plugin is
/// retried at a growing interval instead of at every tick.
#[derive(Default)]
pub(super) struct Breaker {
    /// The plugin version the count is for (a new version starts afresh).
    version: String,
    consecutive: u32,
    open_until: Option<TokioInstant>,
}

/// Longest pause between two tries of a trapping plugin.
const MAX_PAUSE: Duration = Duration::from_secs(600);

impl Breaker {
    fn open_until(&mut self, plugin: &LoadedPlugin) -> Option<TokioInstant> {
        if self.version != plugin.sha256 {
            *self = Breaker {
                version: plugin.sha256.clone(),
                ..Default::default()
            };
        }
        self.open_until.filter(|t| *t > TokioInstant::now())
    }

    /// Counts an outcome; returns the pause when the breaker opens.
    fn record(
        &mut self,
        plugin: &LoadedPlugin,
        outcome: Outcome,
        threshold: u32,
        interval: Duration,
    ) -> Option<Duration> {
        if self.version != plugin.sha256 {
            *self = Breaker {
                version: plugin.sha256.clone(),
                ..Default::default()
            };
        }
        match outcome {
            Outcome::Trap | Outcome::Oom | Outcome::Timeout => self.consecutive += 1,
            _ => {
                self.consecutive = 0;
                self.open_until = None;
                return None;
            }
        }
        if threshold == 0 || self.consecutive < threshold {
            return None;
        }
        let doublings = (self.consecutive - threshold).min(16);
        let pause = interval.saturating_mul(1 << doublings).min(MAX_PAUSE);
        self.open_until = Some(TokioInstant::now() + pause);
        Some(pause)
    }
}

/// The first point of the grid `epoch + (phase + k) × interval` at least
/// half an interval after `started`.
fn next_on_grid(epoch: TokioInstant, phase: f64, interval: Duration, started: TokioInstant) -> TokioInstant {
    let interval = interval.max(Duration::from_millis(1));
    let earliest = started + interval / 2;
    let grid = epoch + interval.mul_f64(phase);
    let step = interval.as_nanos();
    let rounds = earliest.saturating_duration_since(grid).as_nanos().div_ceil(step);
    grid + Duration::from_nanos(u64::try_from(rounds * step).unwrap_or(u64::MAX))
}

impl Job {
    pub async fn run(self) {
        // Spread the first runs so many clusters do not start in lockstep;
        // a cluster's features start together (see `next_round`).
        let first = self
            .interval
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::time::sleep(first.mul_f64(self.phase())).await;
        let mut missing_logged = false;
        // When the next periodic run is due, to measure how late it starts.
        let mut next_due: Option<TokioInstant> = None;
        loop {
            let Some(plugin) = self.plugins.get(&self.feature) else {
                if !missing_logged {
                    tracing::warn!(cluster = %self.cluster, feature = %self.feature, "no plugin serves this feature; waiting for one");
                    missing_logged = true;
                }
                tokio::time::sleep(MISSING_PLUGIN_RETRY).await;
                continue;
            };
            missing_logged = false;
            match self.watch_prefix(&plugin) {
                // Boxed, like invoke: only watching jobs need its state.
                Some(prefix) => match self.watch_mode {
                    WatchMode::Stream => Box::pin(self.watch(&plugin, &prefix)).await,
                    WatchMode::Rounds => Box::pin(self.watch_in_rounds(&plugin, &prefix)).await,
                },
                None => {
                    let started = TokioInstant::now();
                    let due = next_due.take();
                    if let Some(due) = due {
                        self.metrics.schedule_lag(
                            &self.feature,
                            started.saturating_duration_since(due),
                            self.interval(&plugin),
                        );
                    }
                    let due = due.map(TokioInstant::into_std);
                    self.invoke(&plugin, Work::Inspect { due }).await;
                    let due = self.next_round(&plugin, started);
                    next_due = Some(due);
                    tokio::time::sleep_until(due).await;
                }
            }
        }
    }

    fn interval(&self, plugin: &LoadedPlugin) -> Duration {
        self.interval
            .unwrap_or(Duration::from_secs(plugin.info.default_interval_seconds.into()))
    }

    /// Where in each interval this cluster's rounds fall, as a fraction:
    /// spread evenly over clusters by a hash of its key (namespace and
    /// name), the same for all of a cluster's features.
    fn phase(&self) -> f64 {
        let mut hasher = std::hash::DefaultHasher::new();
        self.cluster.hash(&mut hasher);
        (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next round after one that started at `started`: the first
    /// point of the cluster's grid (its phase, then every interval) at
    /// least half an interval on. Rounds of one cluster's features with one
    /// interval thus fall together, so its member channels are used in one
    /// burst per interval and idle (and closed, `close_idle`) in between,
    /// rather than kept busy by features at independent times; clusters
    /// stay spread over the interval by their phases.
    fn next_round(&self, plugin: &LoadedPlugin, started: TokioInstant) -> TokioInstant {
        static EPOCH: std::sync::OnceLock<TokioInstant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(TokioInstant::now);
        let due = next_on_grid(epoch, self.phase(), self.interval(plugin), started);
        self.connection.expect_round(due.into_std());
        due
    }

    /// The prefix to watch with the cluster's current parameters.
    fn watch_prefix(&self, plugin: &LoadedPlugin) -> Option<String> {
        let (prefix, warning) = watch_prefix(plugin, &self.params.borrow())?;
        if let Some(warning) = warning {
            tracing::warn!(cluster = %self.cluster, feature = %self.feature, "{warning}");
        }
        Some(prefix)
    }

    /// Census, then events; returns only to let the caller pick up a new
    /// plugin version or a changed prefix.
    async fn watch(&self, plugin: &Arc<LoadedPlugin>, prefix: &str) {
        let mut retry = Duration::from_millis(200);
        // The revision up to which every event under the prefix is counted.
        let mut counted = match self.census(plugin, prefix, None).await {
            Some(revision) => revision,
            None => {
                tokio::time::sleep(self.interval(plugin).min(MAX_RETRY)).await;
                return;
            }
        };
        let mut recount_at = self.next_round(plugin, TokioInstant::now());
        let mut params = self.params.clone();
        params.mark_unchanged();
        loop {
            // Boxed (as are census's calls): this loop lives as long as the
            // watch, and these etcd calls' futures are KiBs each.
            let mut stream = match Box::pin(self.connection.watch(prefix.as_bytes(), counted + 1)).await {
                Ok(stream) => stream,
                Err(e) => {
                    if let Some(line) = self.watch_failures.lock().unwrap().failed(&e.to_string()) {
                        tracing::warn!(cluster = %self.cluster, feature = %self.feature, "watch failed to open: {line}");
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            if let Some(line) = self.watch_failures.lock().unwrap().succeeded() {
                tracing::info!(cluster = %self.cluster, feature = %self.feature, "watch open again {line}");
            }
            retry = Duration::from_millis(200);
            let mut pending: Vec<WatchEvent> = Vec::new();
            let mut batch_deadline: Option<TokioInstant> = None;
            let reason = loop {
                let deadline = batch_deadline.unwrap_or(recount_at).min(recount_at);
                let update = tokio::select! {
                    update = stream.next() => Some(update),
                    _ = tokio::time::sleep_until(deadline) => None, // a batch or the recount is due
                    changed = params.changed() => {
                        let moved = changed.is_ok() && self.watch_prefix(plugin).as_deref() != Some(prefix);
                        if moved {
                            // Pending events are of the old prefix: the census at the new one replaces them.
                            tracing::info!(cluster = %self.cluster, feature = %self.feature, "watched prefix changed; counting again");
                            return;
                        }
                        None
                    }
                };
                match update {
                    None => {}
                    Some(Ok(Some(WatchUpdate::Events(events)))) => {
                        batch_deadline.get_or_insert_with(|| TokioInstant::now() + BATCH_DELAY);
                        pending.extend(events);
                    }
                    // Every event up to `revision` has been received, and none is pending.
                    Some(Ok(Some(WatchUpdate::Progress(revision)))) if pending.is_empty() && revision > counted => {
                        counted = revision;
                    }
                    Some(Ok(Some(WatchUpdate::Progress(_)))) => {}
                    Some(Ok(Some(WatchUpdate::Compacted(compacted)))) => {
                        break format!("history compacted at {compacted}")
                    }
                    Some(Ok(None)) => break "watch closed by the server".to_string(),
                    Some(Err(e)) => break format!("watch failed: {e}"),
                }
                let due = batch_deadline.is_some_and(|d| TokioInstant::now() >= d);
                if pending.len() >= BATCH_EVENTS || (due && !pending.is_empty()) {
                    batch_deadline = None;
                    match self
                        .deliver(plugin, prefix, std::mem::take(&mut pending), counted)
                        .await
                    {
                        Some(revision) => counted = revision,
                        None => return,
                    }
                }
                if pending.is_empty() && TokioInstant::now() >= recount_at {
                    match self.census(plugin, prefix, Some(counted)).await {
                        Some(revision) => counted = revision,
                        None => return,
                    }
                    recount_at = self.next_round(plugin, TokioInstant::now());
                    if self.plugins.get(&self.feature).is_none_or(|p| !Arc::ptr_eq(&p, plugin)) {
                        return; // a new plugin version: start over with it
                    }
                }
            };
            // Deliver what was received before the stream ended.
            if !pending.is_empty() {
                match self.deliver(plugin, prefix, pending, counted).await {
                    Some(revision) => counted = revision,
                    None => return,
                }
            }
            tracing::info!(cluster = %self.cluster, feature = %self.feature, counted, "{reason}; resuming");
            if reason.starts_with("history compacted") {
                match self.census(plugin, prefix, None).await {
                    Some(revision) => counted = revision,
                    None => return,
                }
            }
        }
    }

    /// Census, then once per interval the events since the last round,
    /// from a watch opened for the round and closed once etcd says it has
    /// sent everything (`--watch-mode rounds`); then the census that
    /// cross-checks the counts, as [`Self::watch`] does every interval.
    /// Between rounds the cluster holds no watch, so its member channels
    /// close as idle. Returns, to start over, on a new plugin version or a
    /// changed prefix, which it notices at the next round.
    async fn watch_in_rounds(&self, plugin: &Arc<LoadedPlugin>, prefix: &str) {
        let Some(mut counted) = self.census(plugin, prefix, None).await else {
            tokio::time::sleep(self.interval(plugin).min(MAX_RETRY)).await;
            return;
        };
        loop {
            tokio::time::sleep_until(self.next_round(plugin, TokioInstant::now())).await;
            let same_plugin = self.plugins.get(&self.feature).is_some_and(|p| Arc::ptr_eq(&p, plugin));
            if !same_plugin || self.watch_prefix(plugin).as_deref() != Some(prefix) {
                return;
            }
            match Box::pin(self.catch_up(plugin, prefix, counted)).await {
                CatchUp::Done(revision) => {
                    counted = revision;
                    if let Some(line) = self.watch_failures.lock().unwrap().succeeded() {
                        tracing::info!(cluster = %self.cluster, feature = %self.feature, "watch answers again {line}");
                    }
                }
                CatchUp::Stopped(revision, reason) => {
                    counted = revision;
                    // The next round resumes from `counted`.
                    if let Some(line) = self.watch_failures.lock().unwrap().failed(&reason) {
                        tracing::warn!(cluster = %self.cluster, feature = %self.feature, counted, "{line}");
                    }
                    continue;
                }
                CatchUp::Compacted(compacted) => {
                    tracing::info!(cluster = %self.cluster, feature = %self.feature, counted, "history compacted at {compacted}; counting again");
                    match self.census(plugin, prefix, None).await {
                        Some(revision) => counted = revision,
                        None => return,
                    }
                    continue;
                }
                CatchUp::Lost => return,
            }
            // A failed census (logged by `census`) loses nothing: every event
            // up to `counted` is delivered, so, as after a stopped catch-up,
            // the next round resumes from there instead of counting afresh.
            if let Some(revision) = self.census(plugin, prefix, Some(counted)).await {
                counted = revision;
            }
        }
    }

    /// Delivers the events after `counted` from a watch opened for this
    /// call. Done when etcd reports progress: every event up to its
    /// current revision has been received.
    async fn catch_up(&self, plugin: &LoadedPlugin, prefix: &str, mut counted: u64) -> CatchUp {
        // etcd reports no progress on a watch that starts after its current
        // revision, so one is opened only when something has changed.
        match self.connection.current_revision().await {
            Ok(now) if now <= counted => return CatchUp::Done(counted),
            Ok(_) => {}
            Err(e) => return CatchUp::Stopped(counted, format!("cannot read the current revision: {e}")),
        }
        let mut stream = match self.connection.watch(prefix.as_bytes(), counted + 1).await {
            Ok(stream) => stream,
            Err(e) => return CatchUp::Stopped(counted, format!("watch failed to open: {e}")),
        };
        // etcd drops (or defers) a progress request while the watch is
        // still reading history, so ask again until one is answered; a
        // watch silent for a whole call timeout has failed.
        let mut ask = tokio::time::interval(PROGRESS_REQUEST_EVERY);
        let silent_for = self.connection.call_timeout();
        let mut heard = TokioInstant::now();
        let mut pending: Vec<WatchEvent> = Vec::new();
        loop {
            let update = tokio::select! {
                update = stream.next() => update,
                _ = ask.tick() => {
                    if heard.elapsed() > silent_for {
                        return self.stopped_short(plugin, prefix, pending, counted, format!("watch silent for {silent_for:?}")).await;
                    }
                    if let Err(e) = stream.request_progress().await {
                        return self.stopped_short(plugin, prefix, pending, counted, format!("watch failed: {e}")).await;
                    }
                    continue;
                }
            };
            heard = TokioInstant::now();
            match update {
                Ok(Some(WatchUpdate::Events(events))) => {
                    pending.extend(events);
                    if pending.len() >= BATCH_EVENTS {
                        match self
                            .deliver(plugin, prefix, std::mem::take(&mut pending), counted)
                            .await
                        {
                            Some(revision) => counted = revision,
                            None => return CatchUp::Lost,
                        }
                    }
                }
                Ok(Some(WatchUpdate::Progress(revision))) => {
                    if !pending.is_empty() {
                        match self.deliver(plugin, prefix, pending, counted).await {
                            Some(delivered) => counted = delivered,
                            None => return CatchUp::Lost,
                        }
                    }
                    return CatchUp::Done(counted.max(revision));
                }
                Ok(Some(WatchUpdate::Compacted(compacted))) => return CatchUp::Compacted(compacted),
                Ok(None) => {
                    return self
                        .stopped_short(plugin, prefix, pending, counted, "watch closed by the server".into())
                        .await
                }
                Err(e) => {
                    return self
                        .stopped_short(plugin, prefix, pending, counted, format!("watch failed: {e}"))
                        .await
                }
            }
        }
    }

    /// A round's watch ended before etcd reported progress: what arrived
    /// is still delivered, and the next round resumes after it.
    async fn stopped_short(
        &self,
        plugin: &LoadedPlugin,
        prefix: &str,
        pending: Vec<WatchEvent>,
        counted: u64,
        reason: String,
    ) -> CatchUp {
        if pending.is_empty() {
            return CatchUp::Stopped(counted, reason);
        }
        match self.deliver(plugin, prefix, pending, counted).await {
            Some(revision) => CatchUp::Stopped(revision, reason),
            None => CatchUp::Lost,
        }
    }

    /// Hands a batch of events to the plugin. Returns the revision counted
    /// up to now: the batch's last, or, when the call failed and the counts
    /// missed the batch, that of a census at it; `None` when that failed too.
    async fn deliver(&self, plugin: &LoadedPlugin, prefix: &str, batch: Vec<WatchEvent>, counted: u64) -> Option<u64> {
        let last = batch.iter().map(|e| e.mod_revision).max().unwrap_or(counted);
        if self.invoke(plugin, Work::Events(batch)).await {
            Some(last)
        } else {
            self.census(plugin, prefix, Some(last)).await
        }
    }

    /// Counts at `revision` (the current one when `None`, or when the
    /// requested one is compacted). Returns the revision counted at.
    async fn census(&self, plugin: &LoadedPlugin, prefix: &str, revision: Option<u64>) -> Option<u64> {
        let revision = match revision {
            Some(r) => r,
            None => match Box::pin(self.connection.current_revision()).await {
                Ok(r) => r,
                Err(e) => {
                    self.record_failure(
                        "etcd_error",
                        format!("cannot read the current revision: {e}"),
                        Duration::ZERO,
                    );
                    return None;
                }
            },
        };
        if self
            .invoke(
                plugin,
                Work::Census {
                    prefix: prefix.to_string(),
                    revision,
                },
            )
            .await
        {
            return Some(revision);
        }
        // A census at an old revision fails once it is compacted: count now.
        match Box::pin(self.connection.current_revision()).await {
            Ok(now) if now != revision => self
                .invoke(
                    plugin,
                    Work::Census {
                        prefix: prefix.to_string(),
                        revision: now,
                    },
                )
                .await
                .then_some(now),
            _ => None,
        }
    }

    /// One call of the plugin, its commit and its accounting. True on success.
    ///
    /// Boxed: a call's future (wasmtime, etcd and HTTP state) is several KiB,
    /// and unboxed it would be part of every job's task for its whole life,
    /// although a job spends nearly all of it asleep between calls.
    async fn invoke(&self, plugin: &LoadedPlugin, work: Work) -> bool {
        Box::pin(self.invoke_now(plugin, work)).await
    }

    async fn invoke_now(&self, plugin: &LoadedPlugin, work: Work) -> bool {
        let settings = self.plugins.settings(&self.feature);
        if let Some(until) = self.breaker.lock().unwrap().open_until(plugin) {
            let left = until.saturating_duration_since(TokioInstant::now());
            self.metrics.circuit_open(&plugin.info.name);
            self.record_failure(
                "circuit_open",
                format!("calls paused after repeated traps; next try in {left:?}"),
                Duration::ZERO,
            );
            return false;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let runtime = self.plugins.runtime();
        let params = self.params.borrow().clone();
        let state = self.state.lock().unwrap().clone();
        let connection: Arc<dyn EtcdReads> = self.connection.clone();
        let done = Invocation {
            runtime,
            metrics: &self.metrics,
            plugin,
            cluster: &self.cluster,
            connection: &connection,
            params: &params,
            limits: settings.limits(runtime.limits()),
            state,
            log_gate: Some(self.plugin_logs.clone()),
        }
        .run(work)
        .await;
        match done.members_error {
            Some(e) => {
                if let Some(line) = self.members_failures.lock().unwrap().failed(&e) {
                    tracing::warn!(cluster = %self.cluster, feature = %self.feature, "MemberList failed, inspecting the last known members: {line}");
                }
            }
            None => {
                if let Some(line) = self.members_failures.lock().unwrap().succeeded() {
                    tracing::info!(cluster = %self.cluster, feature = %self.feature, "MemberList answers again {line}");
                }
            }
        }
        let (outcome, message, elapsed) = (done.outcome, done.message, done.elapsed);
        if let Some(state) = done.state {
            *self.state.lock().unwrap() = Some(state);
        }
        let interval = self.interval(plugin);
        if let Some(pause) =
            self.breaker
                .lock()
                .unwrap()
                .record(plugin, outcome, settings.max_consecutive_traps(), interval)
        {
            tracing::warn!(cluster = %self.cluster, feature = %self.feature, ?pause, "repeated traps: calls paused");
        }
        if outcome == Outcome::Ok {
            tracing::debug!(cluster = %self.cluster, feature = %self.feature, ?elapsed, "inspection done: {message}");
            if let Some(line) = self.failures.lock().unwrap().succeeded() {
                tracing::info!(cluster = %self.cluster, feature = %self.feature, "inspection succeeds again {line}");
            }
            self.record(outcome.as_str(), message, elapsed);
            true
        } else {
            if settings.on_failure == OnFailure::Drop {
                self.metrics.drop_series(&self.feature, &self.cluster.name);
            }
            self.record_failure(outcome.as_str(), message, elapsed);
            false
        }
    }

    /// A failed inspection: counted, shown on the status page, and logged
    /// when failing starts (and every few minutes while it lasts).
    fn record_failure(&self, outcome: &'static str, message: String, elapsed: Duration) {
        self.metrics.inspection_failed(&self.cluster.name, &self.feature);
        match self.failures.lock().unwrap().failed(&message) {
            Some(line) => {
                tracing::warn!(cluster = %self.cluster, feature = %self.feature, outcome, "inspection failed: {line}")
            }
            None => {
                tracing::debug!(cluster = %self.cluster, feature = %self.feature, outcome, "inspection failed: {message}")
            }
        }
        self.record(outcome, message, elapsed);
    }

    fn record(&self, outcome: &'static str, message: String, elapsed: Duration) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let ok = outcome == Outcome::Ok.as_str();
        // `onFailure: drop` has already deleted them by now; what is left
        // is what `keep` holds, whatever the setting says.
        let kept = !ok && self.metrics.series_count(&self.feature, &self.cluster.name) > 0;
        let mut runs = self.runs.lock().unwrap();
        let previous = runs.get(&self.feature);
        let record = RunRecord {
            finished_unix_ms: now,
            outcome,
            message,
            duration_ms: elapsed.as_millis(),
            consecutive_failures: match (ok, previous) {
                (true, _) => 0,
                (false, Some(p)) => p.consecutive_failures.saturating_add(1),
                (false, None) => 1,
            },
            last_ok_unix_ms: if ok {
                Some(now)
            } else {
                previous.and_then(|p| p.last_ok_unix_ms)
            },
            stale_series_kept: kept,
        };
        runs.insert(self.feature.clone(), record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{ConnectionSettings, Credentials};
    use crate::runtime::{CallLimits, Runtime};

    /// Features of one cluster that ran at different moments next run
    /// together, on the cluster's grid, and then every interval.
    #[test]
    fn rounds_fall_on_the_cluster_grid() {
        let epoch = TokioInstant::now();
        let interval = Duration::from_secs(30);
        let grid = epoch + Duration::from_secs(9); // phase 0.3
        let next = |started| next_on_grid(epoch, 0.3, interval, started);
        let early = next(epoch + Duration::from_secs(1));
        let late = next(epoch + Duration::from_secs(20));
        assert_eq!(early, grid + interval, "at least half an interval after the first run");
        assert_eq!(late, grid + interval);
        assert_eq!(next(early), grid + interval * 2, "then every interval");
        // A round that started a little late keeps the grid.
        assert_eq!(next(early + Duration::from_millis(40)), grid + interval * 2);
        // One late by more than half an interval skips to the next point.
        assert_eq!(next(early + Duration::from_secs(16)), grid + interval * 3);
    }

    /// Thousands of jobs sleep at any moment; each task holds its future
    /// at its largest state, so the calls it makes must live on the heap.
    #[test]
    fn an_idle_job_is_small() {
        let metrics = Arc::new(Metrics::new(""));
        let runtime = Arc::new(Runtime::new(CallLimits::default()).unwrap());
        let connection = ClusterConnection::new(
            "ns/c",
            vec!["http://127.0.0.1:9".into()],
            Default::default(),
            Credentials::default(),
            ConnectionSettings::default(),
        )
        .unwrap();
        let job = Job {
            cluster: ClusterKey {
                namespace: "ns".into(),
                name: "c".into(),
            },
            feature: "healthy".into(),
            interval: None,
            watch_mode: WatchMode::Rounds,
            params: watch::channel(Params::default()).1,
            connection: Arc::new(connection),
            plugins: Arc::new(PluginRegistry::new(runtime, metrics.clone())),
            metrics,
            permits: Arc::new(Semaphore::new(1)),
            runs: Arc::default(),
            state: Mutex::new(None),
            breaker: Mutex::default(),
            failures: Mutex::default(),
            members_failures: Mutex::default(),
            watch_failures: Mutex::default(),
            plugin_logs: Arc::default(),
        };
        let size = std::mem::size_of_val(&job.run());
        assert!(size <= 1024, "a job's task holds {size} bytes");
    }
}

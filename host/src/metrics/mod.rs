//! The Prometheus registry: plugin-owned families (seed names and types),
//! the failed-inspection counter, and the host's own metrics.
//!
//! Rules a plugin cannot bypass: the host injects `clusterName`; only
//! declared metrics and labels are accepted; a round is committed whole or
//! not at all; series a plugin stopped reporting are deleted; a (plugin,
//! cluster) pair holds at most [`MAX_SERIES_PER_PLUGIN_CLUSTER`] series.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use thiserror::Error;

/// Label the host adds to every plugin series.
pub const CLUSTER_LABEL: &str = "clusterName";
/// Bound on the series one plugin may hold for one cluster.
pub const MAX_SERIES_PER_PLUGIN_CLUSTER: usize = 10_000;
/// Longest label value a plugin may set (a Kubernetes resource name with its
/// group is under 300 bytes).
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Bound on the names and label values of all series one plugin holds for
/// one cluster: with the series cap, what a plugin can make the host keep.
pub const MAX_SERIES_BYTES_PER_PLUGIN_CLUSTER: usize = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Counter,
}

/// A metric as a plugin declares it (labels exclude `clusterName`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub labels: Vec<String>,
}

/// One value reported by a plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleValue {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// How a batch of samples is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// An inspection round: gauges not reported this time are deleted.
    Replace,
    /// An event batch: every value is added (gauges may go down), nothing
    /// is deleted.
    Add,
}

#[derive(Debug, Error, PartialEq)]
pub enum MetricsError {
    #[error("metric {metric:?}: {reason}")]
    Declaration { metric: String, reason: String },
    #[error("metric {metric:?} is already owned by plugin {owner:?}")]
    Owned { metric: String, owner: String },
    #[error("sample of {metric:?}: {reason}")]
    Sample { metric: String, reason: String },
    #[error("too many series: {count} > {MAX_SERIES_PER_PLUGIN_CLUSTER} for one cluster")]
    TooManySeries { count: usize },
    #[error("series too large: {bytes} bytes of names and label values > {MAX_SERIES_BYTES_PER_PLUGIN_CLUSTER} for one cluster")]
    SeriesTooLarge { bytes: usize },
}

enum Family {
    Gauge(GaugeVec),
    Counter(CounterVec),
}

struct OwnedFamily {
    owner: String,
    spec: MetricSpec,
    family: Family,
}

type SeriesKey = (String, Vec<String>); // metric name, label values (clusterName first)

#[derive(Default)]
struct State {
    families: HashMap<String, OwnedFamily>,
    /// Series each (plugin, cluster) currently holds.
    series: HashMap<(String, String), BTreeSet<SeriesKey>>,
}

/// The host's metrics registry.
pub struct Metrics {
    registry: Registry,
    prefix: String,
    state: Mutex<State>,
    failed: IntCounterVec,
    invocations: IntCounterVec,
    invocation_seconds: HistogramVec,
    load_errors: IntCounterVec,
    loaded: GaugeVec,
    reloads: IntCounterVec,
    schedule_lag: HistogramVec,
    missed_runs: IntCounterVec,
    budget_refusals: IntCounterVec,
}

impl Metrics {
    /// `prefix` is prepended to plugin metric names and to
    /// `inspection_failed_num` (`"kstone_"` gives kstone's names).
    pub fn new(prefix: &str) -> Self {
        let registry = Registry::new();
        let failed = IntCounterVec::new(
            Opts::new(
                format!("{prefix}inspection_failed_num"),
                "The total Number of failed inspection",
            ),
            &[CLUSTER_LABEL, "inspectionType"],
        )
        .expect("valid metric");
        let invocations = IntCounterVec::new(
            Opts::new("etcd_inspector_plugin_invocations_total", "Plugin calls by outcome"),
            &["plugin", "outcome"],
        )
        .expect("valid metric");
        let invocation_seconds = HistogramVec::new(
            HistogramOpts::new(
                "etcd_inspector_plugin_invocation_duration_seconds",
                "Plugin call duration",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0]),
            &["plugin"],
        )
        .expect("valid metric");
        let load_errors = IntCounterVec::new(
            Opts::new(
                "etcd_inspector_plugin_load_errors_total",
                "Plugin files rejected at load",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let loaded = GaugeVec::new(
            Opts::new("etcd_inspector_plugin_loaded", "1 for each plugin version serving"),
            &["plugin", "version"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "etcd_inspector_plugin_reloads_total",
                "Times a plugin was replaced by a new version",
            ),
            &["plugin"],
        )
        .expect("valid metric");
        let schedule_lag = HistogramVec::new(
            HistogramOpts::new(
                "etcd_inspector_schedule_lag_seconds",
                "How late a periodic inspection started",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            &["plugin"],
        )
        .expect("valid metric");
        let missed_runs = IntCounterVec::new(
            Opts::new(
                "etcd_inspector_missed_runs_total",
                "Periodic inspections skipped because one ran a whole interval late",
            ),
            &["plugin"],
        )
        .expect("valid metric");
        let budget_refusals = IntCounterVec::new(
            Opts::new(
                "etcd_inspector_plugin_budget_refusals_total",
                "Plugin rounds refused further etcd calls because their per-round budget ran out",
            ),
            &["plugin", "budget"],
        )
        .expect("valid metric");
        for c in [
            Box::new(failed.clone()) as Box<dyn Collector>,
            Box::new(budget_refusals.clone()),
            Box::new(schedule_lag.clone()),
            Box::new(missed_runs.clone()),
            Box::new(loaded.clone()),
            Box::new(reloads.clone()),
            Box::new(invocations.clone()),
            Box::new(invocation_seconds.clone()),
            Box::new(load_errors.clone()),
        ] {
            registry.register(c).expect("host metrics register once");
        }
        Metrics {
            registry,
            prefix: prefix.to_string(),
            state: Mutex::default(),
            failed,
            invocations,
            invocation_seconds,
            load_errors,
            loaded,
            reloads,
            schedule_lag,
            missed_runs,
            budget_refusals,
        }
    }

    /// Registers the metrics `plugin` declares, and unregisters (with their
    /// series) those it declared before and no longer does. Fails without
    /// changing anything if a name or label is invalid or owned by another
    /// plugin.
    pub fn register_plugin(&self, plugin: &str, specs: &[MetricSpec]) -> Result<(), MetricsError> {
        let mut state = self.state.lock().unwrap();
        for spec in specs {
            validate_spec(spec)?;
            if let Some(existing) = state.families.get(&spec.name) {
                if existing.owner != plugin {
                    return Err(MetricsError::Owned {
                        metric: spec.name.clone(),
                        owner: existing.owner.clone(),
                    });
                }
            }
        }
        for spec in specs {
            if state.families.get(&spec.name).is_some_and(|f| f.spec == *spec) {
                continue;
            }
            if let Some(old) = state.families.remove(&spec.name) {
                self.unregister(&old.family);
            }
            let full_name = format!("{}{}", self.prefix, spec.name);
            let mut labels = vec![CLUSTER_LABEL];
            labels.extend(spec.labels.iter().map(String::as_str));
            let opts = Opts::new(full_name, spec.help.clone());
            let family = match spec.kind {
                MetricKind::Gauge => Family::Gauge(GaugeVec::new(opts, &labels).map_err(|e| decl(spec, e))?),
                MetricKind::Counter => Family::Counter(CounterVec::new(opts, &labels).map_err(|e| decl(spec, e))?),
            };
            let registered = match &family {
                Family::Gauge(g) => self.registry.register(Box::new(g.clone())),
                Family::Counter(c) => self.registry.register(Box::new(c.clone())),
            };
            registered.map_err(|e| decl(spec, e))?;
            state.families.insert(
                spec.name.clone(),
                OwnedFamily {
                    owner: plugin.to_string(),
                    spec: spec.clone(),
                    family,
                },
            );
        }
        let dropped: Vec<String> = state
            .families
            .iter()
            .filter(|(name, f)| f.owner == plugin && !specs.iter().any(|s| &s.name == *name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in dropped {
            if let Some(f) = state.families.remove(&name) {
                self.unregister(&f.family);
            }
            for series in state.series.values_mut() {
                series.retain(|(metric, _)| *metric != name);
            }
        }
        Ok(())
    }

    /// Applies one successful call's samples for (plugin, cluster), or
    /// nothing if any sample breaks the rules.
    pub fn commit(
        &self,
        plugin: &str,
        cluster: &str,
        samples: &[SampleValue],
        mode: CommitMode,
    ) -> Result<(), MetricsError> {
        let mut state = self.state.lock().unwrap();
        let mut keys = Vec::with_capacity(samples.len());
        for sample in samples {
            let fam = state
                .families
                .get(&sample.metric)
                .filter(|f| f.owner == plugin)
                .ok_or_else(|| sample_err(sample, "not declared by this plugin in describe()".into()))?;
            if !sample.value.is_finite() {
                return Err(sample_err(sample, format!("value {} is not finite", sample.value)));
            }
            if fam.spec.kind == MetricKind::Counter && sample.value < 0.0 {
                return Err(sample_err(sample, "a counter cannot decrease".into()));
            }
            let mut values = vec![cluster.to_string()];
            for name in &fam.spec.labels {
                let value = sample
                    .labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .ok_or_else(|| sample_err(sample, format!("label {name:?} missing")))?;
                if value.1.len() > MAX_LABEL_VALUE_BYTES {
                    return Err(sample_err(
                        sample,
                        format!(
                            "label {name:?} is {} bytes long; at most {MAX_LABEL_VALUE_BYTES}",
                            value.1.len()
                        ),
                    ));
                }
                values.push(value.1.clone());
            }
            if let Some((extra, _)) = sample.labels.iter().find(|(k, _)| !fam.spec.labels.contains(k)) {
                return Err(sample_err(
                    sample,
                    format!(
                        "label {extra:?} not declared (declared: {:?}; clusterName is set by the host)",
                        fam.spec.labels
                    ),
                ));
            }
            keys.push((sample.metric.clone(), values));
        }
        let pair = (plugin.to_string(), cluster.to_string());
        let previous = state.series.get(&pair).cloned().unwrap_or_default();
        let mut next: BTreeSet<SeriesKey> = match mode {
            CommitMode::Replace => previous
                .iter()
                .filter(|(m, _)| {
                    state
                        .families
                        .get(m)
                        .is_some_and(|f| f.spec.kind == MetricKind::Counter)
                })
                .cloned()
                .collect(),
            CommitMode::Add => previous.clone(),
        };
        next.extend(keys.iter().cloned());
        if next.len() > MAX_SERIES_PER_PLUGIN_CLUSTER {
            return Err(MetricsError::TooManySeries { count: next.len() });
        }
        let bytes: usize = next
            .iter()
            .map(|(m, values)| m.len() + values.iter().map(String::len).sum::<usize>())
            .sum();
        if bytes > MAX_SERIES_BYTES_PER_PLUGIN_CLUSTER {
            return Err(MetricsError::SeriesTooLarge { bytes });
        }

        for (sample, (metric, values)) in samples.iter().zip(&keys) {
            let labels: Vec<&str> = values.iter().map(String::as_str).collect();
            match (&state.families[metric].family, mode) {
                (Family::Gauge(g), CommitMode::Replace) => g.with_label_values(&labels).set(sample.value),
                (Family::Gauge(g), CommitMode::Add) => g.with_label_values(&labels).add(sample.value),
                (Family::Counter(c), _) => c.with_label_values(&labels).inc_by(sample.value),
            }
        }
        for (metric, values) in previous.difference(&next) {
            if let Some(f) = state.families.get(metric) {
                remove_series(&f.family, values);
            }
        }
        state.series.insert(pair, next);
        Ok(())
    }

    /// Deletes every series `plugin` holds for `cluster` (feature disabled,
    /// cluster removed), including its failed-inspection counter.
    pub fn forget(&self, plugin: &str, cluster: &str) {
        self.drop_series(plugin, cluster);
        let _ = self.failed.remove_label_values(&[cluster, plugin]);
    }

    /// Deletes the series `plugin` holds for `cluster`, keeping the
    /// failed-inspection counter (a failing plugin set to `onFailure: drop`).
    pub fn drop_series(&self, plugin: &str, cluster: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(series) = state.series.remove(&(plugin.to_string(), cluster.to_string())) {
            for (metric, values) in series {
                if let Some(f) = state.families.get(&metric) {
                    remove_series(&f.family, &values);
                }
            }
        }
    }

    /// Marks a plugin version as serving (or no longer).
    pub fn plugin_loaded(&self, plugin: &str, version: &str, serving: bool) {
        if serving {
            self.loaded.with_label_values(&[plugin, version]).set(1.0);
        } else {
            let _ = self.loaded.remove_label_values(&[plugin, version]);
        }
    }

    /// Records how late a periodic run started; a whole interval late
    /// means runs were missed.
    pub fn schedule_lag(&self, plugin: &str, lag: std::time::Duration, interval: std::time::Duration) {
        self.schedule_lag
            .with_label_values(&[plugin])
            .observe(lag.as_secs_f64());
        let missed = (lag.as_secs_f64() / interval.as_secs_f64().max(1e-3)).floor() as u64;
        if missed > 0 {
            self.missed_runs.with_label_values(&[plugin]).inc_by(missed);
        }
    }

    /// Counts a plugin replaced by a new version.
    pub fn plugin_reloaded(&self, plugin: &str) {
        self.reloads.with_label_values(&[plugin]).inc();
    }

    /// Removes a plugin's families altogether (plugin unloaded).
    pub fn unregister_plugin(&self, plugin: &str) {
        let mut state = self.state.lock().unwrap();
        state.series.retain(|(p, _), _| p != plugin);
        let owned: Vec<String> = state
            .families
            .iter()
            .filter(|(_, f)| f.owner == plugin)
            .map(|(n, _)| n.clone())
            .collect();
        for name in owned {
            if let Some(f) = state.families.remove(&name) {
                self.unregister(&f.family);
            }
        }
    }

    /// Counts a failed inspection (the seed's `inspection_failed_num`).
    pub fn inspection_failed(&self, cluster: &str, feature: &str) {
        self.failed.with_label_values(&[cluster, feature]).inc();
    }

    /// Records one plugin call's outcome and duration.
    pub fn invocation(&self, plugin: &str, outcome: &str, seconds: f64) {
        self.invocations.with_label_values(&[plugin, outcome]).inc();
        self.invocation_seconds.with_label_values(&[plugin]).observe(seconds);
    }

    /// Counts a round that ran out of its etcd budget (`calls` or `bytes`).
    pub fn budget_refusal(&self, plugin: &str, budget: &str) {
        self.budget_refusals.with_label_values(&[plugin, budget]).inc();
    }

    /// Counts a plugin file rejected at load.
    pub fn load_error(&self, reason: &str) {
        self.load_errors.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }

    fn unregister(&self, family: &Family) {
        let _ = match family {
            Family::Gauge(g) => self.registry.unregister(Box::new(g.clone())),
            Family::Counter(c) => self.registry.unregister(Box::new(c.clone())),
        };
    }
}

fn remove_series(family: &Family, values: &[String]) {
    let labels: Vec<&str> = values.iter().map(String::as_str).collect();
    let _ = match family {
        Family::Gauge(g) => g.remove_label_values(&labels),
        Family::Counter(c) => c.remove_label_values(&labels),
    };
}

fn decl(spec: &MetricSpec, e: prometheus::Error) -> MetricsError {
    MetricsError::Declaration {
        metric: spec.name.clone(),
        reason: e.to_string(),
    }
}

fn sample_err(sample: &SampleValue, reason: String) -> MetricsError {
    MetricsError::Sample {
        metric: sample.metric.clone(),
        reason,
    }
}

fn valid_name(name: &str, allow_colon: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (allow_colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':'))
}

/// Checks one declared metric as the registry will register it: a plugin
/// that passes this at load cannot fail registration for its names or labels.
pub fn validate_spec(spec: &MetricSpec) -> Result<(), MetricsError> {
    let bad = |reason: String| MetricsError::Declaration {
        metric: spec.name.clone(),
        reason,
    };
    if !valid_name(&spec.name, true) {
        return Err(bad("not a valid Prometheus metric name".into()));
    }
    if spec.name.starts_with("etcd_inspector_") || spec.name == "inspection_failed_num" {
        return Err(bad("the name is reserved for the host".into()));
    }
    let mut seen = BTreeSet::new();
    for label in &spec.labels {
        if !valid_name(label, false) || label.starts_with("__") {
            return Err(bad(format!("label {label:?} is not a valid Prometheus label name")));
        }
        if label == CLUSTER_LABEL {
            return Err(bad("label clusterName is added by the host; do not declare it".into()));
        }
        if !seen.insert(label) {
            return Err(bad(format!("label {label:?} declared twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &str, labels: &[&str]) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            help: "h".into(),
            kind: MetricKind::Gauge,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn sample(metric: &str, labels: &[(&str, &str)], value: f64) -> SampleValue {
        SampleValue {
            metric: metric.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
        }
    }

    #[test]
    fn replace_deletes_vanished_series_and_keeps_other_clusters() {
        let m = Metrics::new("");
        m.register_plugin("p", &[gauge("g", &["endpoint"])]).unwrap();
        m.commit(
            "p",
            "a",
            &[
                sample("g", &[("endpoint", "x")], 1.0),
                sample("g", &[("endpoint", "y")], 1.0),
            ],
            CommitMode::Replace,
        )
        .unwrap();
        m.commit("p", "b", &[sample("g", &[("endpoint", "x")], 2.0)], CommitMode::Replace)
            .unwrap();
        m.commit("p", "a", &[sample("g", &[("endpoint", "x")], 0.0)], CommitMode::Replace)
            .unwrap();
        let text = m.render();
        assert!(text.contains("g{clusterName=\"a\",endpoint=\"x\"} 0"), "{text}");
        assert!(!text.contains("endpoint=\"y\""), "{text}");
        assert!(text.contains("g{clusterName=\"b\",endpoint=\"x\"} 2"), "{text}");
    }

    #[test]
    fn add_moves_gauges_and_counters_and_replace_keeps_counters() {
        let m = Metrics::new("");
        let counter = MetricSpec {
            kind: MetricKind::Counter,
            ..gauge("c", &[])
        };
        m.register_plugin("p", &[gauge("g", &[]), counter]).unwrap();
        m.commit("p", "a", &[sample("g", &[], 10.0)], CommitMode::Replace)
            .unwrap();
        m.commit(
            "p",
            "a",
            &[sample("g", &[], -3.0), sample("c", &[], 2.0)],
            CommitMode::Add,
        )
        .unwrap();
        m.commit("p", "a", &[sample("c", &[], 1.0)], CommitMode::Add).unwrap();
        let text = m.render();
        assert!(text.contains("g{clusterName=\"a\"} 7"), "{text}");
        assert!(text.contains("c{clusterName=\"a\"} 3"), "{text}");
        m.commit("p", "a", &[sample("g", &[], 5.0)], CommitMode::Replace)
            .unwrap();
        let text = m.render();
        assert!(
            text.contains("g{clusterName=\"a\"} 5") && text.contains("c{clusterName=\"a\"} 3"),
            "{text}"
        );
        assert!(m.commit("p", "a", &[sample("c", &[], -1.0)], CommitMode::Add).is_err());
    }

    #[test]
    fn a_bad_sample_commits_nothing() {
        let m = Metrics::new("");
        m.register_plugin("p", &[gauge("g", &["endpoint"])]).unwrap();
        let err = m
            .commit(
                "p",
                "a",
                &[
                    sample("g", &[("endpoint", "x")], 1.0),
                    sample("g", &[("other", "x")], 1.0),
                ],
                CommitMode::Replace,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "sample of \"g\": label \"endpoint\" missing");
        assert!(!m.render().contains("clusterName=\"a\""));
        let err = m
            .commit("p", "a", &[sample("undeclared", &[], 1.0)], CommitMode::Replace)
            .unwrap_err();
        assert!(err.to_string().contains("not declared"), "{err}");
    }

    #[test]
    fn plugins_cannot_take_each_others_metrics_or_the_cluster_label() {
        let m = Metrics::new("");
        m.register_plugin("p", &[gauge("g", &[])]).unwrap();
        assert_eq!(
            m.register_plugin("q", &[gauge("g", &[])]).unwrap_err(),
            MetricsError::Owned {
                metric: "g".into(),
                owner: "p".into()
            }
        );
        assert!(m.register_plugin("q", &[gauge("h", &["clusterName"])]).is_err());
        assert!(m
            .commit("q", "a", &[sample("g", &[], 1.0)], CommitMode::Replace)
            .is_err());
    }

    /// What a plugin can make the host keep is bounded: long label values
    /// are refused, and so is a set of series too large in total, counters
    /// (which persist across rounds) included.
    #[test]
    fn label_values_and_series_bytes_are_capped() {
        let m = Metrics::new("");
        let counter = MetricSpec {
            kind: MetricKind::Counter,
            ..gauge("c", &["id"])
        };
        m.register_plugin("p", &[counter]).unwrap();
        let long = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let err = m
            .commit("p", "a", &[sample("c", &[("id", &long)], 1.0)], CommitMode::Add)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sample of \"c\": label \"id\" is 1025 bytes long; at most 1024"
        );
        // 1000-byte values: about 2000 series fit, the rest are refused.
        let value = |i: usize| format!("{i:0>1000}");
        let mut committed = 0;
        let err = loop {
            let s = sample("c", &[("id", &value(committed))], 1.0);
            match m.commit("p", "a", &[s], CommitMode::Add) {
                Ok(()) => committed += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MetricsError::SeriesTooLarge { .. }), "{err}");
        assert!((2000..2100).contains(&committed), "{committed}");
    }

    #[test]
    fn a_family_no_version_declares_any_more_is_unregistered() {
        let m = Metrics::new("");
        m.register_plugin("p", &[gauge("old_g", &[]), gauge("kept", &[])])
            .unwrap();
        m.commit(
            "p",
            "a",
            &[sample("old_g", &[], 1.0), sample("kept", &[], 2.0)],
            CommitMode::Replace,
        )
        .unwrap();
        m.register_plugin("p", &[gauge("kept", &[])]).unwrap();
        let text = m.render();
        assert!(!text.contains("old_g"), "{text}");
        assert!(text.contains("kept{clusterName=\"a\"} 2"), "{text}");
        // Another plugin may take the name now, and p's next round does not
        // try to delete a series it no longer owns.
        m.register_plugin("q", &[gauge("old_g", &[])]).unwrap();
        m.commit("p", "a", &[sample("kept", &[], 3.0)], CommitMode::Replace)
            .unwrap();
        assert!(m.render().contains("kept{clusterName=\"a\"} 3"));
    }

    #[test]
    fn forget_removes_series_and_failure_counter_and_prefix_applies() {
        let m = Metrics::new("kstone_");
        m.register_plugin("p", &[gauge("inspection_x", &[])]).unwrap();
        m.commit("p", "a", &[sample("inspection_x", &[], 1.0)], CommitMode::Replace)
            .unwrap();
        m.inspection_failed("a", "p");
        let text = m.render();
        assert!(text.contains("kstone_inspection_x{clusterName=\"a\"} 1"), "{text}");
        assert!(
            text.contains("kstone_inspection_failed_num{clusterName=\"a\",inspectionType=\"p\"} 1"),
            "{text}"
        );
        m.forget("p", "a");
        let text = m.render();
        assert!(!text.contains("clusterName=\"a\""), "{text}");
    }
}

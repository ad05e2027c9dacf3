//! The Prometheus registry: plugin-owned families (seed names and types),
//! the failed-inspection counter, and the host's own metrics.
//!
//! Rules a plugin cannot bypass: the host injects `clusterName`; only
//! declared metrics and labels are accepted; a round is committed whole or
//! not at all; series a plugin stopped reporting are deleted; a (plugin,
//! cluster) pair holds at most [`MAX_SERIES_PER_PLUGIN_CLUSTER`] series.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use thiserror::Error;

mod families;
mod host;

pub use families::validate_spec;

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

/// One cluster's series of a family: the values of the family's own labels
/// (in declaration order) and the value, sorted by the labels. A slice, not
/// a map: most families hold one to a few series per cluster, and a
/// B-tree's smallest node is ~280 bytes.
type ClusterSeries = Box<[(LabelValues, f64)]>;
type LabelValues = Box<[Box<str>]>;

struct OwnedFamily {
    owner: String,
    spec: MetricSpec,
    /// Kept here rather than in a `prometheus::GaugeVec`, whose every series
    /// carries its own copy of the family's descriptor and label names: 762
    /// bytes a series there, and 105 000 series at 3000 clusters
    /// (bench/HISTORY.md).
    series: BTreeMap<Box<str>, ClusterSeries>,
}

#[derive(Default)]
struct State {
    families: HashMap<String, OwnedFamily>,
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
    member_channels: prometheus::IntGauge,
    tls_handshakes: IntCounterVec,
    answers_shared: prometheus::IntCounter,
    pool_resident: prometheus::IntGauge,
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
        let member_channels = prometheus::IntGauge::new(
            "etcd_inspector_member_channels",
            "gRPC channels to etcd members open now (idle ones are closed; --etcd-idle-timeout)",
        )
        .expect("valid metric");
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "etcd_inspector_tls_handshakes_total",
                "TLS handshakes of member channels: full (certificate signatures) or resumed",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let answers_shared = prometheus::IntCounter::new(
            "etcd_inspector_etcd_answers_shared_total",
            "Member Status answers a plugin call took from another call's ask made after its own previous etcd call",
        )
        .expect("valid metric");
        let pool_resident = prometheus::IntGauge::new(
            "etcd_inspector_instance_pool_resident_bytes",
            "Plugin instance memory that idle pool slots keep resident between calls",
        )
        .expect("valid metric");
        for c in [
            Box::new(failed.clone()) as Box<dyn Collector>,
            Box::new(member_channels.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(answers_shared.clone()),
            Box::new(pool_resident.clone()),
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
            member_channels,
            tls_handshakes,
            answers_shared,
            pool_resident,
        }
    }

    /// The Prometheus text exposition of everything: the host's own
    /// metrics, then the plugins' families.
    pub fn render(&self) -> String {
        self.sync_etcd_counters();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        let mut text = String::from_utf8(out).expect("exposition is UTF-8");
        self.render_plugin_families(&mut text);
        text
    }
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

    /// Plugin families are written by the host's own encoder: the exact
    /// text the `prometheus` crate wrote before (families by name, labels by
    /// name with clusterName among them, escaping), and nothing for a family
    /// without series.
    #[test]
    fn plugin_families_render_in_the_text_format() {
        let m = Metrics::new("kstone_");
        let mut help = gauge("b_gauge", &["zone", "alarmType"]);
        help.help = "Line one\nback\\slash \"quoted\"".into();
        let counter = MetricSpec {
            kind: MetricKind::Counter,
            ..gauge("a_total", &[])
        };
        m.register_plugin("p", &[help, counter, gauge("c_empty", &[])]).unwrap();
        m.commit(
            "p",
            "y",
            &[
                sample("b_gauge", &[("zone", "q\"uo\\te\nnl"), ("alarmType", "NOSPACE")], 1.5),
                sample("b_gauge", &[("zone", "a"), ("alarmType", "CORRUPT")], -2.0),
                sample("a_total", &[], 3.0),
            ],
            CommitMode::Replace,
        )
        .unwrap();
        m.commit(
            "p",
            "x",
            &[sample("b_gauge", &[("zone", "a"), ("alarmType", "X")], 1e21)],
            CommitMode::Replace,
        )
        .unwrap();
        let text = m.render();
        let plugin_part = &text[text.find("# HELP kstone_a_total").expect("a_total rendered")..];
        assert_eq!(
            plugin_part,
            "# HELP kstone_a_total h\n# TYPE kstone_a_total counter\nkstone_a_total{clusterName=\"y\"} 3\n\
             # HELP kstone_b_gauge Line one\\nback\\\\slash \"quoted\"\n# TYPE kstone_b_gauge gauge\n\
             kstone_b_gauge{alarmType=\"X\",clusterName=\"x\",zone=\"a\"} 1000000000000000000000\n\
             kstone_b_gauge{alarmType=\"CORRUPT\",clusterName=\"y\",zone=\"a\"} -2\n\
             kstone_b_gauge{alarmType=\"NOSPACE\",clusterName=\"y\",zone=\"q\\\"uo\\\\te\\nnl\"} 1.5\n"
        );
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
        assert_eq!(
            err.to_string(),
            "sample of \"g\": label \"endpoint\" missing; labels [\"other\"] sent, [\"endpoint\"] declared in describe() \
             (clusterName is set by the host)"
        );
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
        // 1000-byte values, 100 new series a round: about 2000 fit, then a
        // round is refused whole.
        let value = |i: usize| format!("{i:0>1000}");
        let mut committed = 0;
        let err = loop {
            let round: Vec<SampleValue> = (committed..committed + 100)
                .map(|i| sample("c", &[("id", &value(i))], 1.0))
                .collect();
            match m.commit("p", "a", &round, CommitMode::Add) {
                Ok(()) => committed += 100,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MetricsError::SeriesTooLarge { .. }), "{err}");
        assert!((1900..2100).contains(&committed), "{committed}");
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

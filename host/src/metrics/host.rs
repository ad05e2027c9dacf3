//! The host's own instruments: plugin invocations and their outcomes,
//! loads and reloads, schedule lag, budget refusals, failed inspections.

use super::Metrics;

impl Metrics {
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

    /// How many member channels are open across all clusters.
    pub fn member_channels(&self, open: usize) {
        self.member_channels.set(open as i64);
    }

    /// Brings the TLS handshake and shared answer counters up to the etcd
    /// layer's own counts, which it keeps without a handle on the metrics.
    pub(super) fn sync_etcd_counters(&self) {
        let (full, resumed) = crate::etcd::tls_handshakes();
        for (kind, count) in [("full", full), ("resumed", resumed)] {
            let counter = self.tls_handshakes.with_label_values(&[kind]);
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        let shared = crate::etcd::answers_shared();
        self.answers_shared
            .inc_by(shared.saturating_sub(self.answers_shared.get()));
    }

    /// How much memory idle instance slots keep resident (pooling only).
    pub fn instance_pool_resident(&self, bytes: usize) {
        self.pool_resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a plugin replaced by a new version.
    pub fn plugin_reloaded(&self, plugin: &str) {
        self.reloads.with_label_values(&[plugin]).inc();
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

    /// Counts a round not called because the plugin's circuit is open (after
    /// repeated traps), as outcome `circuit_open`: no call, so no duration.
    pub fn circuit_open(&self, plugin: &str) {
        self.invocations.with_label_values(&[plugin, "circuit_open"]).inc();
    }

    /// Counts a round that ran out of its etcd budget (`calls` or `bytes`).
    pub fn budget_refusal(&self, plugin: &str, budget: &str) {
        self.budget_refusals.with_label_values(&[plugin, budget]).inc();
    }

    /// Counts a plugin file rejected at load.
    pub fn load_error(&self, reason: &str) {
        self.load_errors.with_label_values(&[reason]).inc();
    }
}

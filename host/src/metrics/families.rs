//! Plugin-owned families: registration as a plugin declares them, and
//! the commit of a round's samples under the host's rules.

use std::collections::BTreeSet;

use prometheus::{CounterVec, GaugeVec, Opts};

use super::*;

impl Metrics {
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
                let value = sample.labels.iter().find(|(k, _)| k == name).ok_or_else(|| {
                    sample_err(
                        sample,
                        format!("label {name:?} missing; {}", label_lists(sample, &fam.spec.labels)),
                    )
                })?;
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
                        "label {extra:?} not declared; {}",
                        label_lists(sample, &fam.spec.labels)
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

    /// The current values of the gauge `metric` (its declared name) for
    /// `cluster`, each with its labels other than clusterName: what the
    /// status page shows of an inspection's findings.
    pub fn gauge_series(&self, cluster: &str, metric: &str) -> Vec<(Vec<(String, String)>, f64)> {
        let state = self.state.lock().unwrap();
        let Some(family) = state.families.get(metric) else {
            return Vec::new();
        };
        let Family::Gauge(gauges) = &family.family else {
            return Vec::new();
        };
        let mut found: Vec<(Vec<(String, String)>, f64)> = state
            .series
            .iter()
            .filter(|((_, c), _)| c == cluster)
            .flat_map(|(_, keys)| keys.iter())
            .filter(|(m, _)| m == metric)
            .filter_map(|(_, values)| {
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let value = gauges.get_metric_with_label_values(&refs).ok()?.get();
                let labels = family.spec.labels.iter().cloned().zip(values.iter().skip(1).cloned());
                Some((labels.collect(), value))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// How many series `plugin` holds for `cluster` now.
    pub fn series_count(&self, plugin: &str, cluster: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .series
            .get(&(plugin.to_string(), cluster.to_string()))
            .map_or(0, |s| s.len())
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

/// Both sides of a label mismatch, in the words of the SDK's test harness.
fn label_lists(sample: &SampleValue, declared: &[String]) -> String {
    let sent: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
    format!("labels {sent:?} sent, {declared:?} declared in describe() (clusterName is set by the host)")
}

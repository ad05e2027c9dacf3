//! Plugin-owned families: registration as a plugin declares them, the
//! commit of a round's samples under the host's rules, and their text
//! exposition.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::*;

impl Metrics {
    /// Registers the metrics `plugin` declares, and unregisters (with their
    /// series) those it declared before and no longer does. Fails without
    /// changing anything if a name or label is invalid or owned by another
    /// plugin.
    pub fn register_plugin(&self, plugin: &str, specs: &[MetricSpec]) -> Result<(), MetricsError> {
        let mut state = self.state.lock().unwrap();
        let mut names = BTreeSet::new();
        for spec in specs {
            validate_spec(spec)?;
            if !names.insert(&spec.name) {
                return Err(MetricsError::Declaration {
                    metric: spec.name.clone(),
                    reason: "declared twice".into(),
                });
            }
            if let Some(existing) = state.families.get(&spec.name) {
                if existing.owner != plugin {
                    return Err(MetricsError::Owned {
                        metric: spec.name.clone(),
                        owner: existing.owner.clone(),
                    });
                }
            }
        }
        // A family whose declaration changed starts empty: its old series
        // have other labels or another type.
        state
            .families
            .retain(|name, f| f.owner != plugin || specs.iter().any(|s| s.name == *name && *s == f.spec));
        for spec in specs {
            state.families.entry(spec.name.clone()).or_insert_with(|| OwnedFamily {
                owner: plugin.to_string(),
                spec: spec.clone(),
                series: BTreeMap::new(),
            });
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
        // What the pair will hold, family by family, built aside and
        // swapped in only when every sample and both caps pass.
        let mut next: HashMap<&str, BTreeMap<LabelValues, f64>> = state
            .families
            .iter()
            .filter(|(_, f)| f.owner == plugin)
            .map(|(name, f)| {
                let kept = match (mode, f.spec.kind) {
                    (CommitMode::Add, _) | (CommitMode::Replace, MetricKind::Counter) => {
                        f.series.get(cluster).into_iter().flatten().cloned().collect()
                    }
                    (CommitMode::Replace, MetricKind::Gauge) => BTreeMap::new(),
                };
                (name.as_str(), kept)
            })
            .collect();
        for sample in samples {
            let (name, fam) = state
                .families
                .get_key_value(&sample.metric)
                .filter(|(_, f)| f.owner == plugin)
                .ok_or_else(|| sample_err(sample, "not declared by this plugin in describe()".into()))?;
            if !sample.value.is_finite() {
                return Err(sample_err(sample, format!("value {} is not finite", sample.value)));
            }
            if fam.spec.kind == MetricKind::Counter && sample.value < 0.0 {
                return Err(sample_err(sample, "a counter cannot decrease".into()));
            }
            let key = label_values(sample, &fam.spec.labels)?;
            let series = next
                .get_mut(name.as_str())
                .expect("every family of the plugin is in next");
            match (fam.spec.kind, mode) {
                (MetricKind::Gauge, CommitMode::Replace) => {
                    series.insert(key, sample.value);
                }
                _ => *series.entry(key).or_default() += sample.value,
            }
        }
        let count: usize = next.values().map(BTreeMap::len).sum();
        if count > MAX_SERIES_PER_PLUGIN_CLUSTER {
            return Err(MetricsError::TooManySeries { count });
        }
        let bytes: usize = next
            .iter()
            .flat_map(|(name, series)| series.keys().map(move |values| (name, values)))
            .map(|(name, values)| name.len() + cluster.len() + values.iter().map(|v| v.len()).sum::<usize>())
            .sum();
        if bytes > MAX_SERIES_BYTES_PER_PLUGIN_CLUSTER {
            return Err(MetricsError::SeriesTooLarge { bytes });
        }
        let next: Vec<(String, ClusterSeries)> = next
            .into_iter()
            .map(|(n, s)| (n.to_string(), s.into_iter().collect()))
            .collect();
        for (name, series) in next {
            let family = state
                .families
                .get_mut(&name)
                .expect("families do not change under the lock");
            if series.is_empty() {
                family.series.remove(cluster);
            } else if let Some(held) = family.series.get_mut(cluster) {
                *held = series;
            } else {
                family.series.insert(cluster.into(), series);
            }
        }
        Ok(())
    }

    /// The current values of the gauge `metric` (its declared name) for
    /// `cluster`, each with its labels other than clusterName: what the
    /// status page shows of an inspection's findings.
    pub fn gauge_series(&self, cluster: &str, metric: &str) -> Vec<(Vec<(String, String)>, f64)> {
        let state = self.state.lock().unwrap();
        let Some(family) = state.families.get(metric).filter(|f| f.spec.kind == MetricKind::Gauge) else {
            return Vec::new();
        };
        let mut found: Vec<(Vec<(String, String)>, f64)> = family
            .series
            .get(cluster)
            .into_iter()
            .flatten()
            .map(|(values, value)| {
                let labels = family
                    .spec
                    .labels
                    .iter()
                    .cloned()
                    .zip(values.iter().map(|v| v.to_string()));
                (labels.collect(), *value)
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// How many series `plugin` holds for `cluster` now.
    pub fn series_count(&self, plugin: &str, cluster: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .families
            .values()
            .filter(|f| f.owner == plugin)
            .filter_map(|f| f.series.get(cluster))
            .map(|s| s.len())
            .sum()
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
        for family in state.families.values_mut().filter(|f| f.owner == plugin) {
            family.series.remove(cluster);
        }
    }

    /// Removes a plugin's families altogether (plugin unloaded).
    pub fn unregister_plugin(&self, plugin: &str) {
        self.state.lock().unwrap().families.retain(|_, f| f.owner != plugin);
    }

    /// Appends the plugins' families in the text format, as the
    /// `prometheus` crate writes its own: families by name, labels by name
    /// within a series, values as Rust prints an `f64`.
    pub(super) fn render_plugin_families(&self, out: &mut String) {
        let state = self.state.lock().unwrap();
        let mut families: Vec<(&String, &OwnedFamily)> =
            state.families.iter().filter(|(_, f)| !f.series.is_empty()).collect();
        families.sort_by_key(|(name, _)| *name);
        for (name, family) in families {
            let full_name = format!("{}{name}", self.prefix);
            let kind = match family.spec.kind {
                MetricKind::Gauge => "gauge",
                MetricKind::Counter => "counter",
            };
            if !family.spec.help.is_empty() {
                let _ = writeln!(out, "# HELP {full_name} {}", escape(&family.spec.help, false));
            }
            let _ = writeln!(out, "# TYPE {full_name} {kind}");
            // clusterName takes its place among the declared labels by name.
            let mut order: Vec<(&str, Option<usize>)> = std::iter::once((CLUSTER_LABEL, None))
                .chain(
                    family
                        .spec
                        .labels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| (l.as_str(), Some(i))),
                )
                .collect();
            order.sort_by_key(|(label, _)| *label);
            for (cluster, series) in &family.series {
                for (values, value) in series.iter() {
                    out.push_str(&full_name);
                    for (i, (label, source)) in order.iter().enumerate() {
                        let v = source.map_or(&**cluster, |i| &*values[i]);
                        let _ = write!(out, "{}{label}=\"{}\"", if i == 0 { '{' } else { ',' }, escape(v, true));
                    }
                    let _ = writeln!(out, "}} {value}");
                }
            }
        }
    }
}

/// The values of a sample's labels in the family's declaration order, or
/// why they do not fit it.
fn label_values(sample: &SampleValue, declared: &[String]) -> Result<LabelValues, MetricsError> {
    let mut values = Vec::with_capacity(declared.len());
    for name in declared {
        let value = sample.labels.iter().find(|(k, _)| k == name).ok_or_else(|| {
            sample_err(
                sample,
                format!("label {name:?} missing; {}", label_lists(sample, declared)),
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
        values.push(value.1.as_str().into());
    }
    if let Some((extra, _)) = sample.labels.iter().find(|(k, _)| !declared.contains(k)) {
        return Err(sample_err(
            sample,
            format!("label {extra:?} not declared; {}", label_lists(sample, declared)),
        ));
    }
    Ok(values.into_boxed_slice())
}

/// Text-format escaping: backslash and newline always, the double quote in
/// label values.
fn escape(text: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let special: &[char] = if quote { &['\\', '\n', '"'] } else { &['\\', '\n'] };
    if !text.contains(special) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quote => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped.into()
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

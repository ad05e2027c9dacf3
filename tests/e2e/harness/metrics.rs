//! Reading the host's /metrics with prometheus-parse (the bench uses the
//! same crate): samples by name and labels.

use std::collections::BTreeMap;

use prometheus_parse::Value;

#[derive(Debug, Clone)]
pub struct Scrape {
    /// (name, labels, value) of every counter, gauge and untyped sample;
    /// a histogram shows as its `_sum` and `_count` samples.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format");
        let samples = parsed
            .samples
            .into_iter()
            .filter_map(|s| {
                let value = match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    Value::Histogram(_) | Value::Summary(_) => return None,
                };
                let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                Some((s.metric, labels, value))
            })
            .collect();
        Scrape { samples }
    }

    /// The value of the one series of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self.all(name, labels).into_iter().map(|(_, v)| v).collect();
        assert!(found.len() <= 1, "{name}{labels:?} matches {} series", found.len());
        found.first().copied()
    }

    /// Every series of `name` whose labels include `labels`.
    pub fn all(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

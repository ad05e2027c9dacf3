//! Reading the host's /metrics with openmetrics-parser (the bench uses the
//! same crate): samples by name and labels. Label values are unescaped, and
//! may hold `=` or `,` (a certificate's subject does).

use std::collections::BTreeMap;

use openmetrics_parser::PrometheusValue;

#[derive(Debug, Clone)]
pub struct Scrape {
    /// (name, labels, value) of every counter, gauge and untyped sample;
    /// a histogram shows as its `_sum` and `_count` samples.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text).expect("the Prometheus text format");
        let mut samples = Vec::new();
        for family in exposition.families.values() {
            for sample in family.iter_samples() {
                let labels: BTreeMap<String, String> = sample
                    .get_labelset()
                    .map(|set| set.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let name = &family.family_name;
                match &sample.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => {
                        samples.push((name.clone(), labels, n.as_f64()))
                    }
                    PrometheusValue::Counter(c) => samples.push((name.clone(), labels, c.value.as_f64())),
                    PrometheusValue::Histogram(h) => {
                        let sum = h.sum.as_ref().map_or(0.0, |s| s.as_f64());
                        samples.push((format!("{name}_sum"), labels.clone(), sum));
                        samples.push((format!("{name}_count"), labels, h.count.unwrap_or(0) as f64));
                    }
                    PrometheusValue::Summary(_) => {}
                }
            }
        }
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

//! A small parser for the Prometheus text format, enough to read samples.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Scrape {
    /// (name, sorted labels) → value
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    let mut remaining = body;
                    while let Some((key, rest)) = remaining.split_once("=\"") {
                        let mut value = String::new();
                        let mut chars = rest.char_indices();
                        let mut end = rest.len();
                        while let Some((i, c)) = chars.next() {
                            match c {
                                '\\' => {
                                    if let Some((_, n)) = chars.next() {
                                        value.push(if n == 'n' { '\n' } else { n });
                                    }
                                }
                                '"' => {
                                    end = i + 1;
                                    break;
                                }
                                c => value.push(c),
                            }
                        }
                        labels.insert(key.trim_start_matches(',').to_string(), value);
                        remaining = &rest[end..];
                    }
                    (name.to_string(), labels)
                }
            };
            samples.push((name, labels, value));
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

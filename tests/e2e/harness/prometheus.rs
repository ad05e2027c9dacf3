//! A real Prometheus server (Debian's package) on loopback that scrapes a
//! host every second and evaluates a test copy of the shipped alerting
//! rules: the same expressions, with every `for:` shortened so a test does
//! not wait minutes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, get_text, http_client, wait_until};

pub struct Prometheus {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Scrapes `target` (host:port) as job `etcd-inspector`.
    pub async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus/rules.yaml")).unwrap();
        let mut rules: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
        for group in rules["groups"].as_sequence_mut().unwrap() {
            group["interval"] = "1s".into();
            for rule in group["rules"].as_sequence_mut().unwrap() {
                if rule.get("for").is_some() {
                    rule["for"] = "2s".into();
                }
            }
        }
        std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(&rules).unwrap()).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: etcd-inspector\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus; make test does)");
        let prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
            client: http_client(),
        };
        wait_until("prometheus ready", Duration::from_secs(60), async || {
            prometheus.get("/-/ready").await.map(|_| ())
        })
        .await;
        prometheus
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        get_text(&self.client, &format!("{}{path}", self.url)).await
    }

    /// The alerts Prometheus holds now (its own API), as
    /// (alertname, state, labels).
    pub async fn alerts(&self) -> Vec<(String, String, Value)> {
        let Ok(body) = self.get("/api/v1/alerts").await else {
            return Vec::new();
        };
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }

    /// Waits until `alert` with `labels` (a subset) is firing, or, with
    /// `firing` false, until no such alert is held (resolved).
    pub async fn expect(&self, alert: &str, labels: &[(&str, &str)], firing: bool) {
        let what = format!("{alert}{labels:?} {}", if firing { "firing" } else { "resolved" });
        wait_until(&what, Duration::from_secs(90), async || {
            let alerts = self.alerts().await;
            let held = alerts
                .iter()
                .find(|(name, _, l)| name == alert && labels.iter().all(|(k, v)| l[*k] == *v));
            match (firing, held) {
                (true, Some((_, state, _))) if state == "firing" => Ok(()),
                (false, None) => Ok(()),
                _ => Err(format!("{alerts:?}")),
            }
        })
        .await;
    }

    /// Instant query; the result vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", promql);
        let body = get_text(&self.client, url.as_str()).await?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(body);
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

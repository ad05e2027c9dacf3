//! The alerting rules: the PrometheusRule ships the same groups as the
//! plain rules file, every alert has a runbook section, and every alert
//! passes its promtool unit tests (tests/prometheus/rules.test.yaml:
//! firing and not firing).

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

#[test]
fn the_prometheus_rule_carries_the_rules_file() {
    let plain = yaml("deploy/prometheus/rules.yaml");
    let operator = yaml("deploy/prometheus-rule.yaml");
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "deploy/prometheus-rule.yaml is stale: run `make rules`"
    );
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(repo("docs/runbook.md")).unwrap();
    let rules = yaml("deploy/prometheus/rules.yaml");
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            for key in ["summary", "description"] {
                assert!(rule["annotations"][key].is_string(), "{name}: {key}");
            }
            assert_eq!(
                rule["annotations"]["runbook"].as_str(),
                Some(format!("docs/runbook.md#{}", name.to_lowercase()).as_str()),
                "{name}: runbook"
            );
            assert!(
                runbook.contains(&format!("\n## {name}\n")),
                "docs/runbook.md has no section {name}"
            );
        }
    }
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool() {
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg("rules.test.yaml")
        .current_dir(repo("tests/prometheus"))
        .output()
        .expect("promtool (apt-get install prometheus; make test does)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Every alert of the rules file is exercised by the unit tests.
    let tests = std::fs::read_to_string(repo("tests/prometheus/rules.test.yaml")).unwrap();
    let rules = yaml("deploy/prometheus/rules.yaml");
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          - exp_labels"
                )),
                "{name} has no firing test"
            );
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts: []")),
                "{name} has no quiet test"
            );
        }
    }
}

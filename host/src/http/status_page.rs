//! The status page at `/`: what a person opens when something is red.
//! Plain HTML (maud escapes every value), no JavaScript, refreshed by the
//! browser every few seconds. It shows only what `/api/status` holds plus
//! the members' health and alarms the inspections found; credentials never
//! reach any of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{PluginReport, RoundHealth};
use crate::controllers::{ClusterView, RunRecord};
use crate::metrics::Metrics;
use crate::runtime::PluginState;

/// Seconds between the browser's reloads of the page.
const REFRESH_SECONDS: u32 = 10;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#176b1d;font-weight:600}.bad{color:#b00020;font-weight:600}.unknown{color:#8a6d00}\
code{font-size:.9em}.muted{color:#666}";

pub fn render(clusters: &[ClusterView], plugins: &[PluginReport], errors: &[String], metrics: &Metrics) -> Markup {
    let now = SystemTime::now();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { "etcd-inspector" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "etcd-inspector" }
                p.muted {
                    "Refreshes every " (REFRESH_SECONDS) " s. Scripts: "
                    a href="/api/status" { "/api/status" } ", " a href="/plugins" { "/plugins" } ", "
                    a href="/metrics" { "/metrics" } "."
                }
                @if !errors.is_empty() {
                    h2 { "Configuration errors" }
                    ul { @for e in errors { li.bad { (e) } } }
                }
                h2 { "Clusters (" (clusters.len()) ")" }
                @if clusters.is_empty() { p.muted { "No cluster is inspected." } }
                @for c in clusters { (cluster(c, metrics, now)) }
                h2 { "Plugins" }
                (plugin_table(plugins, now))
            }
        }
    }
}

fn cluster(c: &ClusterView, metrics: &Metrics, now: SystemTime) -> Markup {
    let name = c.cluster.rsplit('/').next().unwrap_or(&c.cluster);
    let health = metrics.gauge_series(name, "inspection_etcd_endpoint_healthy");
    let alarms: Vec<String> = metrics
        .gauge_series(name, "inspection_etcd_endpoint_alarm")
        .into_iter()
        .filter(|(_, v)| *v == 1.0)
        .map(|(labels, _)| labels.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join(" "))
        .collect();
    html! {
        h3 { (c.cluster) }
        @for w in &c.warnings { p.unknown { "Warning: " (w) } }
        @if !alarms.is_empty() {
            p.bad { "Alarms raised: " (alarms.join(", ")) }
        }
        table {
            tr { th { "member" } th { "endpoint" } th { "health (healthy inspection)" } }
            @if c.members.is_empty() {
                tr { td colspan="3" .unknown { "no member known yet (seeds: " (c.endpoints.join(", ")) ")" } }
            }
            @for m in &c.members {
                @let (member, endpoint) = m.split_once(' ').unwrap_or((m.as_str(), ""));
                tr {
                    td { (if member.is_empty() { "(not started)" } else { member }) }
                    td { code { (endpoint) } }
                    (member_health(&health, endpoint))
                }
            }
        }
        table {
            tr { th { "inspection" } th { "last outcome" } th { "duration" } th { "finished" } th { "message" } }
            @for (feature, run) in &c.features {
                tr {
                    td { (feature) }
                    @match run {
                        Some(r) => { (run_cells(r, now)) }
                        None => { td.unknown colspan="4" { "not run yet" } }
                    }
                }
            }
        }
    }
}

/// The healthy inspection labels a member by the host, or host:port where
/// members share a host.
fn member_health(health: &[(Vec<(String, String)>, f64)], endpoint: &str) -> Markup {
    let authority = endpoint.split("://").nth(1).unwrap_or(endpoint).trim_end_matches('/');
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let found = health.iter().find(|(labels, _)| {
        labels
            .iter()
            .any(|(k, v)| k == "endpoint" && (v == authority || v == host))
    });
    html! {
        @match found {
            Some((_, v)) if *v == 1.0 => td.ok { "healthy" },
            Some(_) => td.bad { "UNHEALTHY" },
            None => td.unknown { "unknown" },
        }
    }
}

fn run_cells(r: &RunRecord, now: SystemTime) -> Markup {
    let class = if r.outcome == "ok" { "ok" } else { "bad" };
    html! {
        td class=(class) {
            (r.outcome)
            @if r.consecutive_failures > 1 { " ×" (r.consecutive_failures) }
        }
        td { (r.duration_ms) " ms" }
        td { (ago(r.finished_unix_ms, now)) }
        td {
            (r.message)
            @if r.outcome != "ok" {
                br;
                span.muted {
                    @match r.last_ok_unix_ms {
                        Some(ms) => { "last success " (ago(ms, now)) }
                        None => { "never succeeded" }
                    }
                    @if r.stale_series_kept { "; its series are kept from then (onFailure: keep)" }
                }
            }
        }
    }
}

fn plugin_table(plugins: &[PluginReport], now: SystemTime) -> Markup {
    html! {
        table {
            tr { th { "plugin" } th { "file" } th { "state" } th { "serving" } th { "last rejected" } th { "rounds by cluster" } }
            @for p in plugins {
                @let s = &p.status;
                tr {
                    td { (s.name.as_deref().unwrap_or("-")) }
                    td { code { (s.file.rsplit('/').next().unwrap_or(&s.file)) } }
                    @match s.state {
                        PluginState::Active => td.ok { "active" },
                        PluginState::Pending => td.unknown { "loading" },
                        PluginState::ServingPrevious => td.unknown { "newest version rejected; the previous one serves" },
                        PluginState::Failed => td.bad { "rejected; nothing serves" },
                    }
                    td {
                        @if let Some(v) = &s.serving {
                            (v.version) " (contract " (v.wit_version) ") " code { (&v.sha256[..v.sha256.len().min(16)]) }
                            br; span.muted { "since " (ago(v.since_unix_ms, now)) }
                        } @else { "-" }
                        @if let Some(src) = &p.source {
                            br; span.muted { "from " code { (src.reference) } }
                        }
                    }
                    td {
                        @if let Some(e) = p.source.as_ref().and_then(|src| src.error.as_ref()) {
                            span.bad { "pull refused " (ago(e.at_unix_ms, now)) ": " (e.message) } br;
                        }
                        @if let Some(r) = &s.last_rejected {
                            code { (&r.sha256[..r.sha256.len().min(16)]) } " " (ago(r.at_unix_ms, now)) ": " (r.reason)
                        } @else { "-" }
                    }
                    td {
                        @if p.clusters.is_empty() { span.muted { "not enabled on any cluster" } }
                        @for (cluster, round) in &p.clusters {
                            @let class = match round.health {
                                RoundHealth::Ok => "ok",
                                RoundHealth::NotRun => "unknown",
                                _ => "bad",
                            };
                            span class=(class) { (cluster) ": " (round.health.as_str()) }
                            @if round.last.as_ref().is_some_and(|r| r.stale_series_kept) { span.muted { " (series kept stale)" } }
                            br;
                        }
                    }
                }
            }
        }
    }
}

/// "12 s ago", from a Unix time in milliseconds.
fn ago(unix_ms: u128, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms as u64);
    match now.duration_since(then) {
        Ok(d) if d.as_secs() < 120 => format!("{} s ago", d.as_secs()),
        Ok(d) if d.as_secs() < 7200 => format!("{} min ago", d.as_secs() / 60),
        Ok(d) => format!("{} h ago", d.as_secs() / 3600),
        Err(_) => "just now".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_members_matched_by_host_or_host_port() {
        let metrics = Metrics::new("");
        let view = ClusterView {
            cluster: "default/prod".into(),
            endpoints: vec![],
            members: vec!["m0 http://10.0.0.1:2379".into()],
            features: [(
                "healthy".to_string(),
                Some(RunRecord {
                    finished_unix_ms: 0,
                    outcome: "plugin_error",
                    message: "<script>alert(1)</script>".into(),
                    duration_ms: 3,
                    consecutive_failures: 1,
                    last_ok_unix_ms: None,
                    stale_series_kept: false,
                }),
            )]
            .into(),
            member_channels: 0,
            warnings: vec![],
        };
        let page = render(&[view], &[], &["cluster default/x: <bad>".into()], &metrics).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("&lt;bad&gt;"), "{page}");
        assert!(page.contains("unknown"), "no health series yet: {page}");
        let health = vec![(vec![("endpoint".to_string(), "10.0.0.1".to_string())], 0.0)];
        assert!(member_health(&health, "http://10.0.0.1:2379")
            .into_string()
            .contains("UNHEALTHY"));
        let health = vec![(vec![("endpoint".to_string(), "10.0.0.1:2379".to_string())], 1.0)];
        assert!(member_health(&health, "http://10.0.0.1:2379")
            .into_string()
            .contains("healthy"));
        assert!(member_health(&health, "http://10.0.0.2:2379")
            .into_string()
            .contains("unknown"));
    }
}

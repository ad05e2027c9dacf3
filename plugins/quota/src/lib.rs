//! `quota`: each member's database against its quota, how much of the file
//! is in use, whether defragmenting would help, and when the quota fills.
//!
//! The quota is the one etcd reports (3.6+, `etcd::status_details`); before
//! 3.6 it comes from the cluster annotation
//! `etcd-inspector.io/quota-backend-bytes` (default 2 GiB, etcd's).
//!
//! Defragmentation is recommended (`inspection_etcd_defrag_recommended`, one
//! series per rule) when
//! - `fragmentation`: at least 45 % of the file is free and it is at least
//!   100 MB (`etcd-inspector.io/defrag-min-size-bytes`; OpenShift's rule);
//! - `quota`: the file uses more than 80 % of the quota (etcd-defrag's rule);
//! - `free_space`: more than 200 MiB of the file is free (etcd-defrag's rule).
//!
//! Growth: every round keeps (time, file size) per member in the plugin's
//! state, thinned to 32 points over a window (6 h,
//! `etcd-inspector.io/quota-growth-window-seconds`). Once the points span a
//! quarter of the window (at most 5 minutes), the growth rate is the change
//! from the oldest point to now, and while it is positive the time until the
//! file reaches the quota is reported. etcd raises NOSPACE on the file size,
//! not on the bytes in use, so the file size is what is projected; a file
//! that shrank (a defragmentation) starts its history again.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, state, ClusterSnapshot, Plugin, PluginInfo, Sample};

const SIZE: &str = "inspection_etcd_db_size_bytes";
const IN_USE: &str = "inspection_etcd_db_size_in_use_bytes";
const QUOTA: &str = "inspection_etcd_db_quota_bytes";
const QUOTA_USAGE: &str = "inspection_etcd_db_quota_usage_ratio";
const IN_USE_RATIO: &str = "inspection_etcd_db_in_use_ratio";
const DEFRAG: &str = "inspection_etcd_defrag_recommended";
const GROWTH: &str = "inspection_etcd_db_growth_bytes_per_second";
const FULL_IN: &str = "inspection_etcd_db_quota_full_in_seconds";

const QUOTA_PARAM: &str = "etcd-inspector.io/quota-backend-bytes";
const MIN_SIZE_PARAM: &str = "etcd-inspector.io/defrag-min-size-bytes";
const WINDOW_PARAM: &str = "etcd-inspector.io/quota-growth-window-seconds";
const DEFAULT_QUOTA: u64 = 2 << 30;
const DEFAULT_MIN_SIZE: u64 = 100_000_000;
const DEFAULT_WINDOW: u64 = 6 * 3600;
const FREE_SPACE_LIMIT: u64 = 200 << 20;
/// Points kept per member: 32 × 16 bytes of text each stays far below the
/// 64 KiB of state even on large clusters.
const POINTS: usize = 32;

struct Quota;

impl Plugin for Quota {
    fn describe() -> PluginInfo {
        let per_member = |name, help| gauge(name, help, &["endpoint"]);
        PluginInfo::new("quota", env!("CARGO_PKG_VERSION"))
            .metric(per_member(SIZE, "Size of the member's database file, in bytes"))
            .metric(per_member(IN_USE, "Bytes of the member's database file in use"))
            .metric(per_member(QUOTA, "The member's backend quota, in bytes"))
            .metric(per_member(
                QUOTA_USAGE,
                "Database file size divided by the quota (ratio, 0-1)",
            ))
            .metric(per_member(
                IN_USE_RATIO,
                "Bytes in use divided by the file size (ratio, 0-1)",
            ))
            .metric(gauge(
                DEFRAG,
                "1 when this rule recommends defragmenting the member, else 0",
                &["endpoint", "rule"],
            ))
            .metric(per_member(
                GROWTH,
                "Growth of the database file in bytes per second over the rounds kept (negative: shrinking)",
            ))
            .metric(per_member(
                FULL_IN,
                "Seconds until the database file reaches the quota at its growth rate (only while it grows)",
            ))
            .interval_seconds(60)
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match snapshot.param(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("annotation {key}: {v:?} is not a whole number")),
            }
        };
        let configured = number(QUOTA_PARAM, DEFAULT_QUOTA)?;
        let min_size = number(MIN_SIZE_PARAM, DEFAULT_MIN_SIZE)?;
        let window = number(WINDOW_PARAM, DEFAULT_WINDOW)?.max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_string())?
            .as_secs_f64();
        let mut history = History::decode(state::load().as_deref().unwrap_or_default());
        let mut kept = History::default();
        let mut samples = Vec::new();
        let mut failures = Vec::new();
        for member in &snapshot.members {
            let status = match etcd::status(&member.endpoint) {
                Ok(s) => s,
                Err(e) => {
                    log::warn(&format!("member {}: {}", member.name, e.message()));
                    failures.push(member.name.clone());
                    // Its points wait for the next round that reaches it.
                    if let Some(points) = history.0.remove(&member.id) {
                        kept.0.insert(member.id, points);
                    }
                    continue;
                }
            };
            let reported = etcd::status_details(&member.endpoint)
                .ok()
                .and_then(|d| d.db_size_quota);
            let quota = reported.unwrap_or(configured).max(1);
            let endpoint = snapshot.endpoint_label(member);
            let gauge = |name: &str, value: f64| Sample::new(name, value).label("endpoint", endpoint.clone());
            let (size, in_use) = (status.db_size, status.db_size_in_use.min(status.db_size));
            let free = size - in_use;
            samples.push(gauge(SIZE, size as f64));
            samples.push(gauge(IN_USE, in_use as f64));
            samples.push(gauge(QUOTA, quota as f64));
            samples.push(gauge(QUOTA_USAGE, size as f64 / quota as f64));
            samples.push(gauge(
                IN_USE_RATIO,
                if size == 0 { 1.0 } else { in_use as f64 / size as f64 },
            ));
            let rules = [
                (
                    "fragmentation",
                    size >= min_size && size > 0 && free as f64 / size as f64 >= 0.45,
                ),
                ("quota", size as f64 > quota as f64 * 0.8),
                ("free_space", free > FREE_SPACE_LIMIT),
            ];
            for (rule, recommended) in rules {
                samples.push(gauge(DEFRAG, if recommended { 1.0 } else { 0.0 }).label("rule", rule));
            }

            let points = history.0.remove(&member.id).unwrap_or_default();
            let (points, rate) = growth(points, now, size, window);
            if let Some(rate) = rate {
                samples.push(gauge(GROWTH, rate));
                if rate > 0.0 {
                    samples.push(gauge(FULL_IN, quota.saturating_sub(size) as f64 / rate));
                }
            }
            kept.0.insert(member.id, points);
        }
        if samples.is_empty() {
            return Err(format!("no member answered Status ({})", failures.join(", ")));
        }
        if let Err(e) = state::store(kept.encode().as_bytes()) {
            log::warn(&format!("growth history not kept: {e}"));
        }
        Ok(samples)
    }
}

/// Adds this round's size to a member's points and returns the points to
/// keep and the growth rate in bytes per second, once the points span
/// enough of the window to mean something.
fn growth(mut points: Vec<(f64, u64)>, now: f64, size: u64, window: u64) -> (Vec<(f64, u64)>, Option<f64>) {
    let window = window as f64;
    if points.last().is_some_and(|&(_, last)| size < last) {
        points.clear();
    }
    points.retain(|&(t, _)| t <= now && now - t <= window);
    let rate = points.first().and_then(|&(t, old)| {
        let span = now - t;
        (span >= (window / 4.0).min(300.0) && span > 0.0).then(|| (size as f64 - old as f64) / span)
    });
    // Thinned so that POINTS of them cover the whole window.
    if points.last().is_none_or(|&(t, _)| now - t >= window / POINTS as f64) {
        points.push((now, size));
    }
    if points.len() > POINTS {
        points.drain(..points.len() - POINTS);
    }
    (points, rate)
}

/// (time in Unix seconds, file size) per member id, as kept in `state`.
#[derive(Default, Debug, PartialEq)]
struct History(BTreeMap<u64, Vec<(f64, u64)>>);

impl History {
    /// One line per point, `member time size`; what does not parse is
    /// dropped (the history starts again rather than failing the round).
    fn decode(bytes: &[u8]) -> History {
        let mut history = History::default();
        for line in String::from_utf8_lossy(bytes).lines() {
            let mut fields = line.split(' ');
            let parsed = (|| {
                let id = fields.next()?.parse().ok()?;
                let t = fields.next()?.parse().ok()?;
                let size = fields.next()?.parse().ok()?;
                Some((id, t, size))
            })();
            if let Some((id, t, size)) = parsed {
                history.0.entry(id).or_default().push((t, size));
            }
        }
        history
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        for (id, points) in &self.0 {
            for (t, size) in points {
                out.push_str(&format!("{id} {t:.0} {size}\n"));
            }
        }
        out
    }
}

export_plugin!(Quota);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    const MB: u64 = 1_000_000;

    fn now() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    #[test]
    fn each_rule_is_reported_per_member() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").db(200 * MB, 60 * MB)) // 70 % free, 140 MB
            .member(FakeMember::new(2, "m1").db(1800 * MB, 1700 * MB)) // 84 % of a 2 GiB quota
            .member(FakeMember::new(3, "m2").db(900 * MB, 500 * MB)) // 400 MB free
            .member(FakeMember::new(4, "m3").db(50 * MB, 10 * MB)); // fragmented but small
        let s = cluster.inspect::<Quota>().unwrap();
        let advice = |host: &str, rule: &str| s.value(DEFRAG, &[("endpoint", host), ("rule", rule)]);
        assert_eq!(advice("10.0.0.1", "fragmentation"), Some(1.0));
        assert_eq!(advice("10.0.0.1", "free_space"), Some(0.0));
        assert_eq!(advice("10.0.0.2", "quota"), Some(1.0));
        assert_eq!(advice("10.0.0.2", "fragmentation"), Some(0.0));
        assert_eq!(advice("10.0.0.3", "free_space"), Some(1.0));
        assert_eq!(advice("10.0.0.4", "fragmentation"), Some(0.0));
        assert_eq!(s.value(IN_USE_RATIO, &[("endpoint", "10.0.0.1")]), Some(0.3));
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.1")]), Some((2u64 << 30) as f64));
        // A first round has no growth to tell.
        assert_eq!(s.count(GROWTH), 0);
        assert_eq!(s.count(FULL_IN), 0);
    }

    #[test]
    fn a_quota_etcd_reports_wins_over_the_annotation_and_bad_values_say_so() {
        let s = FakeCluster::new("prod")
            .member(
                FakeMember::new(1, "m0")
                    .db(90 * MB, 80 * MB)
                    .reports_quota(300 * MB, "3.6.0"),
            )
            .member(FakeMember::new(2, "m1").db(90 * MB, 80 * MB))
            .param(QUOTA_PARAM, "100000000")
            .inspect::<Quota>()
            .unwrap();
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.1")]), Some(300e6));
        assert_eq!(s.value(QUOTA_USAGE, &[("endpoint", "10.0.0.1")]), Some(0.3));
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.2")]), Some(100e6));
        assert_eq!(
            s.value(DEFRAG, &[("endpoint", "10.0.0.2"), ("rule", "quota")]),
            Some(1.0)
        );
        let err = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .param(QUOTA_PARAM, "2Gi")
            .inspect::<Quota>()
            .unwrap_err();
        assert_eq!(
            err,
            "annotation etcd-inspector.io/quota-backend-bytes: \"2Gi\" is not a whole number"
        );
    }

    #[test]
    fn the_time_until_the_quota_fills_follows_the_growth_seen_across_rounds() {
        // 1 200 s ago the file was 1 MB smaller: 833 bytes a second, and
        // (100 MB - 21 MB) / 833 seconds to go.
        let earlier = format!("1 {:.0} {}\n", now() - 1200.0, 20 * MB);
        let cluster = FakeCluster::new("prod")
            .member(
                FakeMember::new(1, "m0")
                    .db(21 * MB, 21 * MB)
                    .reports_quota(100 * MB, "3.6.0"),
            )
            .member(FakeMember::new(2, "m1").db(21 * MB, 21 * MB))
            .state(earlier.as_bytes());
        let s = cluster.inspect::<Quota>().unwrap();
        let rate = s.value(GROWTH, &[("endpoint", "10.0.0.1")]).unwrap();
        assert!((rate - MB as f64 / 1200.0).abs() < 5.0, "{rate}");
        let full_in = s.value(FULL_IN, &[("endpoint", "10.0.0.1")]).unwrap();
        assert!((full_in - 79.0 * 1200.0).abs() < 200.0, "{full_in}");
        // m1 has no history yet.
        assert_eq!(s.value(GROWTH, &[("endpoint", "10.0.0.2")]), None);

        let (stored, _) = cluster.run_state::<Quota>();
        let kept = History::decode(&stored.unwrap());
        // Points are at least window / 32 (675 s) apart.
        assert_eq!(kept.0[&1].len(), 2, "the old point and this round's");
        assert_eq!(kept.0[&2].len(), 1);
    }

    #[test]
    fn a_shrunk_file_or_a_short_history_reports_no_projection() {
        let now = now();
        // Defragmented since: the history starts again.
        let (points, rate) = growth(vec![(now - 600.0, 50 * MB)], now, 20 * MB, DEFAULT_WINDOW);
        assert_eq!((points.len(), rate), (1, None));
        // Only 60 s of history: too short to project.
        let (_, rate) = growth(vec![(now - 60.0, 19 * MB)], now, 20 * MB, DEFAULT_WINDOW);
        assert_eq!(rate, None);
        // Steady: growth 0, no time to fill.
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").db(20 << 20, 18 << 20))
            .state(format!("1 {:.0} {}\n", now - 900.0, 20 << 20).as_bytes())
            .inspect::<Quota>()
            .unwrap();
        assert_eq!(s.value(GROWTH, &[("endpoint", "10.0.0.1")]), Some(0.0));
        assert_eq!(s.count(FULL_IN), 0);
    }

    #[test]
    fn points_are_thinned_to_cover_the_window() {
        let mut points = Vec::new();
        let start = 1_000_000.0;
        // A round every 10 s for 12 hours, growing 1 byte a second.
        for i in 0..4320 {
            let t = start + i as f64 * 10.0;
            points = growth(points, t, i * 10, DEFAULT_WINDOW).0;
        }
        assert!(points.len() <= POINTS);
        let span = points.last().unwrap().0 - points[0].0;
        assert!(
            span > DEFAULT_WINDOW as f64 * 0.9 && span <= DEFAULT_WINDOW as f64,
            "{span}"
        );
        let history = History([(7, points)].into_iter().collect());
        assert_eq!(History::decode(history.encode().as_bytes()), history);
        assert_eq!(History::decode(b"junk\n1 2\n"), History::default());
    }

    #[test]
    fn an_unreachable_member_does_not_hide_the_others() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, "m1").unreachable());
        let s = cluster.inspect::<Quota>().unwrap();
        assert!(s.value(SIZE, &[("endpoint", "10.0.0.1")]).is_some());
        assert!(s.value(SIZE, &[("endpoint", "10.0.0.2")]).is_none());
        let everyone_down = FakeCluster::new("prod").member(FakeMember::new(1, "m0").unreachable());
        assert!(everyone_down.inspect::<Quota>().is_err());
    }
}

//! db-quota: each member's database against its quota, how much of it is in
//! use, and whether defragmenting it would help.
//!
//! Defragmentation is recommended (`inspection_etcd_defrag_recommended`,
//! one series per rule) when
//! - `fragmentation`: at least 45 % of the file is free and it is at least
//!   100 MB (OpenShift's defrag controller);
//! - `quota`: the file uses more than 80 % of the quota (etcd-defrag);
//! - `free_space`: more than 200 MiB of the file is free (etcd-defrag).
//!
//! The quota is the one etcd reports (3.6+, `etcd::status_details`); etcd
//! before 3.6 does not, so there it comes from the cluster annotation
//! `etcd-inspector.io/quota-backend-bytes` (default 2 GiB, etcd's).

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, ClusterSnapshot, Plugin, PluginInfo, Sample};

const SIZE: &str = "inspection_etcd_db_size_bytes";
const IN_USE: &str = "inspection_etcd_db_size_in_use_bytes";
const QUOTA: &str = "inspection_etcd_db_quota_bytes";
const QUOTA_USAGE: &str = "inspection_etcd_db_quota_usage_ratio";
const IN_USE_RATIO: &str = "inspection_etcd_db_in_use_ratio";
const DEFRAG: &str = "inspection_etcd_defrag_recommended";

const QUOTA_PARAM: &str = "etcd-inspector.io/quota-backend-bytes";
const MIN_SIZE_PARAM: &str = "etcd-inspector.io/defrag-min-size-bytes";
const DEFAULT_QUOTA: u64 = 2 << 30;
const DEFAULT_MIN_SIZE: u64 = 100_000_000;
const FREE_SPACE_LIMIT: u64 = 200 << 20;

struct DbQuota;

impl Plugin for DbQuota {
    fn describe() -> PluginInfo {
        PluginInfo::new("db-quota", env!("CARGO_PKG_VERSION"))
            .metric(gauge(SIZE, "Size of the member's database file", &["endpoint"]))
            .metric(gauge(IN_USE, "Bytes of the database file in use", &["endpoint"]))
            .metric(gauge(QUOTA, "The member's backend quota", &["endpoint"]))
            .metric(gauge(QUOTA_USAGE, "Database size divided by quota", &["endpoint"]))
            .metric(gauge(
                IN_USE_RATIO,
                "Bytes in use divided by database size",
                &["endpoint"],
            ))
            .metric(gauge(
                DEFRAG,
                "1 when a defragmentation is recommended by this rule",
                &["endpoint", "rule"],
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
                    .map_err(|_| format!("annotation {key}: {v:?} is not a number of bytes")),
            }
        };
        let configured = number(QUOTA_PARAM, DEFAULT_QUOTA)?;
        let min_size = number(MIN_SIZE_PARAM, DEFAULT_MIN_SIZE)?;
        let mut samples = Vec::new();
        let mut failures = Vec::new();
        for member in &snapshot.members {
            let status = match etcd::status(&member.endpoint) {
                Ok(s) => s,
                Err(e) => {
                    log::warn(&format!("member {}: {}", member.name, e.message()));
                    failures.push(member.name.clone());
                    continue;
                }
            };
            let reported = etcd::status_details(&member.endpoint)
                .ok()
                .and_then(|d| d.db_size_quota);
            let quota = reported.unwrap_or(configured);
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
        }
        if samples.is_empty() {
            return Err(format!("no member answered Status ({})", failures.join(", ")));
        }
        Ok(samples)
    }
}

export_plugin!(DbQuota);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    const MB: u64 = 1_000_000;

    #[test]
    fn each_rule_is_reported_per_member() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").db(200 * MB, 60 * MB)) // 70 % free, 140 MB
            .member(FakeMember::new(2, "m1").db(1800 * MB, 1700 * MB)) // 84 % of a 2 GiB quota
            .member(FakeMember::new(3, "m2").db(900 * MB, 500 * MB)) // 400 MB free
            .member(FakeMember::new(4, "m3").db(50 * MB, 10 * MB)); // fragmented but small
        let s = cluster.inspect::<DbQuota>().unwrap();
        let advice = |host: &str, rule: &str| s.value(DEFRAG, &[("endpoint", host), ("rule", rule)]);
        assert_eq!(advice("10.0.0.1", "fragmentation"), Some(1.0));
        assert_eq!(advice("10.0.0.1", "free_space"), Some(0.0));
        assert_eq!(advice("10.0.0.2", "quota"), Some(1.0));
        assert_eq!(advice("10.0.0.2", "fragmentation"), Some(0.0));
        assert_eq!(advice("10.0.0.3", "free_space"), Some(1.0));
        assert_eq!(advice("10.0.0.4", "fragmentation"), Some(0.0));
        assert_eq!(s.value(IN_USE_RATIO, &[("endpoint", "10.0.0.1")]), Some(0.3));
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.1")]), Some((2u64 << 30) as f64));
    }

    #[test]
    fn the_quota_comes_from_the_annotation_and_bad_values_say_so() {
        let member = || FakeMember::new(1, "m0").db(90 * MB, 80 * MB);
        let s = FakeCluster::new("prod")
            .member(member())
            .param(QUOTA_PARAM, "100000000")
            .inspect::<DbQuota>()
            .unwrap();
        assert_eq!(s.value(QUOTA_USAGE, &[("endpoint", "10.0.0.1")]), Some(0.9));
        assert_eq!(
            s.value(DEFRAG, &[("endpoint", "10.0.0.1"), ("rule", "quota")]),
            Some(1.0)
        );
        let err = FakeCluster::new("prod")
            .member(member())
            .param(QUOTA_PARAM, "2Gi")
            .inspect::<DbQuota>()
            .unwrap_err();
        assert_eq!(
            err,
            "annotation etcd-inspector.io/quota-backend-bytes: \"2Gi\" is not a number of bytes"
        );
    }

    #[test]
    fn a_quota_etcd_reports_wins_over_the_annotation() {
        let s = FakeCluster::new("prod")
            .member(
                FakeMember::new(1, "m0")
                    .db(90 * MB, 80 * MB)
                    .reports_quota(300 * MB, "3.6.0"),
            )
            .member(FakeMember::new(2, "m1").db(90 * MB, 80 * MB))
            .param(QUOTA_PARAM, "100000000")
            .inspect::<DbQuota>()
            .unwrap();
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.1")]), Some(300e6));
        assert_eq!(s.value(QUOTA_USAGE, &[("endpoint", "10.0.0.1")]), Some(0.3));
        assert_eq!(s.value(QUOTA, &[("endpoint", "10.0.0.2")]), Some(100e6));
    }

    #[test]
    fn an_unreachable_member_does_not_hide_the_others() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, "m1").unreachable());
        let s = cluster.inspect::<DbQuota>().unwrap();
        assert!(s.value(SIZE, &[("endpoint", "10.0.0.1")]).is_some());
        assert!(s.value(SIZE, &[("endpoint", "10.0.0.2")]).is_none());
    }
}

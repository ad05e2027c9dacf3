//! db-quota: a teaching copy of the bundled `quota` plugin, written only
//! with the public SDK by following docs/writing-a-plugin.md. Each member's
//! database file against its quota: the quota etcd reports (3.6+,
//! `etcd::status_details`), else the cluster annotation
//! `etcd-inspector.io/quota-backend-bytes` (default 2 GiB, etcd's).
//!
//! The bundled plugin adds the space in use, defragmentation advice and the
//! time until the quota fills; its names start with `inspection_etcd_db_`,
//! this one's with `example_` so both can run side by side.

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, ClusterSnapshot, Plugin, PluginInfo, Sample};

const SIZE: &str = "example_db_size_bytes";
const QUOTA_USAGE: &str = "example_db_quota_usage_ratio";

const QUOTA_PARAM: &str = "etcd-inspector.io/quota-backend-bytes";
const DEFAULT_QUOTA: u64 = 2 << 30;

struct DbQuota;

impl Plugin for DbQuota {
    fn describe() -> PluginInfo {
        PluginInfo::new("db-quota", env!("CARGO_PKG_VERSION"))
            .metric(gauge(
                SIZE,
                "Size of the member's database file, in bytes",
                &["endpoint"],
            ))
            .metric(gauge(
                QUOTA_USAGE,
                "Database file size divided by the quota (ratio, 0-1)",
                &["endpoint"],
            ))
            .interval_seconds(60)
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let configured = match snapshot.param(QUOTA_PARAM) {
            None => DEFAULT_QUOTA,
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("annotation {QUOTA_PARAM}: {v:?} is not a number of bytes"))?,
        };
        let mut samples = Vec::new();
        for member in &snapshot.members {
            let status = match etcd::status(&member.endpoint) {
                Ok(s) => s,
                Err(e) => {
                    // One silent member must not hide the others.
                    log::warn(&format!("member {}: {}", member.name, e.message()));
                    continue;
                }
            };
            let quota = etcd::status_details(&member.endpoint)
                .ok()
                .and_then(|d| d.db_size_quota)
                .unwrap_or(configured)
                .max(1);
            let endpoint = snapshot.endpoint_label(member);
            samples.push(Sample::new(SIZE, status.db_size as f64).label("endpoint", endpoint.clone()));
            samples.push(Sample::new(QUOTA_USAGE, status.db_size as f64 / quota as f64).label("endpoint", endpoint));
        }
        if samples.is_empty() {
            return Err("no member answered Status".into());
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
    fn the_quota_comes_from_etcd_else_the_annotation() {
        let s = FakeCluster::new("prod")
            .member(
                FakeMember::new(1, "m0")
                    .db(90 * MB, 80 * MB)
                    .reports_quota(300 * MB, "3.6.0"),
            )
            .member(FakeMember::new(2, "m1").db(90 * MB, 80 * MB))
            .member(FakeMember::new(3, "m2").unreachable())
            .param(QUOTA_PARAM, "100000000")
            .inspect::<DbQuota>()
            .unwrap();
        assert_eq!(s.value(QUOTA_USAGE, &[("endpoint", "10.0.0.1")]), Some(0.3));
        assert_eq!(s.value(QUOTA_USAGE, &[("endpoint", "10.0.0.2")]), Some(0.9));
        assert_eq!(s.value(SIZE, &[("endpoint", "10.0.0.3")]), None);
    }

    #[test]
    fn a_bad_annotation_says_which_and_why() {
        let err = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .param(QUOTA_PARAM, "2Gi")
            .inspect::<DbQuota>()
            .unwrap_err();
        assert_eq!(
            err,
            "annotation etcd-inspector.io/quota-backend-bytes: \"2Gi\" is not a number of bytes"
        );
    }
}

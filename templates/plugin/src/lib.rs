//! my-inspection: one gauge per member with the etcd version it runs, so
//! version skew shows in `count by (version) (my_member_version_info)`.
//!
//! Test it natively:      cargo test
//! Build the component:   cargo build --release --target wasm32-wasip2
//! Check it:              etcd-inspector plugin check target/wasm32-wasip2/release/my_inspection.wasm

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, ClusterSnapshot, Plugin, PluginInfo, Sample};

const VERSION_INFO: &str = "my_member_version_info";

struct MyInspection;

impl Plugin for MyInspection {
    fn describe() -> PluginInfo {
        PluginInfo::new("my-inspection", env!("CARGO_PKG_VERSION"))
            .metric(gauge(VERSION_INFO, "1 for the etcd version each member runs", &["endpoint", "version"]))
            .interval_seconds(60)
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        for member in &snapshot.members {
            match etcd::status(&member.endpoint) {
                Ok(status) => samples.push(
                    Sample::new(VERSION_INFO, 1.0)
                        .label("endpoint", snapshot.endpoint_label(member))
                        .label("version", status.version),
                ),
                Err(e) => log::warn(&format!("{}: {}", member.name, e.message())),
            }
        }
        if samples.is_empty() {
            return Err("no member answered Status".into());
        }
        Ok(samples)
    }
}

export_plugin!(MyInspection);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    #[test]
    fn each_member_reports_its_version() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").version("3.5.17"))
            .member(FakeMember::new(2, "m1").version("3.5.9"))
            .member(FakeMember::new(3, "m2").unreachable());
        let samples = cluster.inspect::<MyInspection>().unwrap();
        assert_eq!(samples.value(VERSION_INFO, &[("endpoint", "10.0.0.1"), ("version", "3.5.17")]), Some(1.0));
        assert_eq!(samples.value(VERSION_INFO, &[("endpoint", "10.0.0.2"), ("version", "3.5.9")]), Some(1.0));
        assert_eq!(samples.count(VERSION_INFO), 2);
    }
}

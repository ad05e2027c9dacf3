//! The seed's `healthy` inspection: each member's HTTP `/health`, as
//! `inspection_etcd_endpoint_healthy{clusterName, endpoint} = 1 | 0`.

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, ClusterSnapshot, Plugin, PluginInfo, Sample};

const HEALTHY: &str = "inspection_etcd_endpoint_healthy";

struct Healthy;

impl Plugin for Healthy {
    fn describe() -> PluginInfo {
        PluginInfo::new("healthy", env!("CARGO_PKG_VERSION")).metric(gauge(
            HEALTHY,
            "The healthy of etcd member",
            &["endpoint"],
        ))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        if snapshot.members.is_empty() {
            return Err("the cluster has no known members".into());
        }
        let samples = snapshot
            .members
            .iter()
            .map(|member| {
                let healthy = match etcd::health(&member.endpoint) {
                    Ok(h) if h.healthy => true,
                    Ok(h) => {
                        log::warn(&format!(
                            "member {} ({}) is unhealthy: {}",
                            member.name, member.endpoint, h.reason
                        ));
                        false
                    }
                    Err(e) => {
                        log::warn(&format!(
                            "member {} ({}) health probe failed: {}",
                            member.name,
                            member.endpoint,
                            e.message()
                        ));
                        false
                    }
                };
                Sample::new(HEALTHY, if healthy { 1.0 } else { 0.0 }).label("endpoint", snapshot.endpoint_label(member))
            })
            .collect();
        Ok(samples)
    }
}

export_plugin!(Healthy);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    #[test]
    fn each_member_reports_its_own_health() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .member(FakeMember::new(2, "m1").unhealthy("NOSPACE"))
            .member(FakeMember::new(3, "m2").unreachable());
        let samples = cluster.inspect::<Healthy>().unwrap();
        assert_eq!(samples.value(HEALTHY, &[("endpoint", "10.0.0.1")]), Some(1.0));
        assert_eq!(samples.value(HEALTHY, &[("endpoint", "10.0.0.2")]), Some(0.0));
        assert_eq!(samples.value(HEALTHY, &[("endpoint", "10.0.0.3")]), Some(0.0));
    }

    #[test]
    fn a_cluster_without_members_is_a_failed_inspection() {
        assert!(FakeCluster::new("empty").inspect::<Healthy>().is_err());
    }
}

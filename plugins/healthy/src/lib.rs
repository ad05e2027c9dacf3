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

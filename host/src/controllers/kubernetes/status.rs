//! Pure reconcile logic of the cluster controller: from what was observed
//! to the status, labels and inspections a cluster should have. No I/O, so
//! it is unit-tested without any server.

use std::collections::BTreeMap;

use url::Url;

use crate::cluster::crd::{Condition, EtcdClusterStatus, MemberStatus};
use crate::etcd::{CallError, MemberHealth, MemberInfo, MemberStatus as EtcdStatus};

/// What the controller saw of one member.
#[derive(Clone, Debug)]
pub struct ObservedMember {
    pub info: MemberInfo,
    pub status: Result<EtcdStatus, String>,
    pub health: Result<MemberHealth, String>,
}

/// What the controller saw of a cluster this round.
#[derive(Clone, Debug)]
pub enum Observation {
    /// The configuration (spec, annotations, Secret) is unusable.
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// No member answered MemberList.
    Unreachable {
        error: CallError,
    },
    Members(Vec<ObservedMember>),
}

/// The status a cluster should have; `previous` keeps fields this round did
/// not look at (featureGatesStatus is set by the caller).
pub fn cluster_status(previous: &EtcdClusterStatus, seeds: &str, observation: &Observation) -> EtcdClusterStatus {
    let mut status = previous.clone();
    status.service_name = Some(seeds.to_string()).filter(|s| !s.is_empty());
    let (phase, ready, reason, message) = match observation {
        Observation::Invalid { reason, message } => ("Unknown", false, *reason, message.clone()),
        Observation::Unreachable { error } => {
            let reason = match error {
                CallError::Tls(_) => "TLSError",
                CallError::AuthFailed(_) | CallError::PermissionDenied(_) => "AuthenticationFailed",
                _ => "Unreachable",
            };
            ("Unknown", false, reason, error.to_string())
        }
        Observation::Members(observed) => {
            status.members = observed.iter().map(member_status).collect();
            let healthy = status.members.iter().filter(|m| m.status == "Running").count();
            status.ready_members = Some(format!("{healthy}/{}", status.members.len()));
            if healthy == status.members.len() && healthy > 0 {
                (
                    "Running",
                    true,
                    "AllMembersHealthy",
                    format!("{healthy} members healthy"),
                )
            } else {
                let sick: Vec<String> = status
                    .members
                    .iter()
                    .filter(|m| m.status != "Running")
                    .map(|m| format!("{} ({})", m.name, m.errors.join("; ")))
                    .collect();
                (
                    "UnHealthy",
                    false,
                    "MembersUnhealthy",
                    format!("not healthy: {}", sick.join(", ")),
                )
            }
        }
    };
    status.phase = Some(phase.to_string());
    let condition = Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
    };
    let changed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status != condition.status);
    let last_transition_time = if changed {
        Some(k8s_openapi::jiff::Timestamp::now().to_string())
    } else {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_transition_time.clone())
    };
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(Condition {
        last_transition_time,
        ..condition
    });
    status
}

/// The seed's MemberStatus, from this member's own Status and /health (D1).
pub fn member_status(observed: &ObservedMember) -> MemberStatus {
    let info = &observed.info;
    let first = info.client_urls.first().cloned().unwrap_or_default();
    let port = Url::parse(&first)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut errors = Vec::new();
    let (version, role) = match &observed.status {
        Ok(s) => {
            errors.extend(s.errors.iter().cloned());
            let role = if s.is_learner || info.is_learner {
                "Learner"
            } else if s.leader == info.id {
                "Leader"
            } else {
                "Follower"
            };
            (s.version.clone(), role)
        }
        Err(e) => {
            errors.push(e.clone());
            (String::new(), "UnKnown")
        }
    };
    let state = match &observed.health {
        Ok(h) if h.healthy => "Running",
        Ok(h) => {
            errors.push(h.reason.clone());
            "UnHealthy"
        }
        Err(e) => {
            errors.push(e.clone());
            "UnHealthy"
        }
    };
    MemberStatus {
        name: info.name.clone(),
        member_id: info.id.to_string(),
        status: state.into(),
        version,
        endpoint: info.host.clone(),
        port,
        client_url: first,
        extension_client_url: info.endpoint.clone(),
        role: role.into(),
        errors,
    }
}

/// What to do with each feature's EtcdInspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeatureAction {
    Ensure,
    Delete,
}

/// Features named in `featureGates` are enabled or disabled as they say;
/// inspections this cluster owns for features no longer named are deleted
/// (the seed treats a missing gate as disabled).
pub fn feature_actions(gates: &BTreeMap<String, bool>, owned: &[String]) -> BTreeMap<String, FeatureAction> {
    let mut actions: BTreeMap<String, FeatureAction> = gates
        .iter()
        .map(|(f, on)| {
            (
                f.clone(),
                if *on {
                    FeatureAction::Ensure
                } else {
                    FeatureAction::Delete
                },
            )
        })
        .collect();
    for f in owned {
        actions.entry(f.clone()).or_insert(FeatureAction::Delete);
    }
    actions
}

/// The seed's labels (§1.6): one per feature, clusterType and version.
pub fn cluster_labels(
    gates: &BTreeMap<String, bool>,
    cluster_type: &str,
    version: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = gates.iter().map(|(f, on)| (f.clone(), on.to_string())).collect();
    labels.insert("clusterType".into(), cluster_type.into());
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        labels.insert("version".into(), v.into());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, port: u16) -> MemberInfo {
        let url = format!("https://10.0.0.{id}:{port}");
        MemberInfo {
            id,
            name: name.into(),
            client_urls: vec![url.clone()],
            endpoint: url,
            host: format!("10.0.0.{id}"),
            is_learner: false,
        }
    }

    fn status(version: &str, leader: u64) -> EtcdStatus {
        EtcdStatus {
            member_id: 0,
            version: version.into(),
            db_size: 0,
            db_size_in_use: 0,
            leader,
            raft_index: 0,
            raft_term: 0,
            raft_applied_index: 0,
            revision: 0,
            is_learner: false,
            errors: vec![],
            ..Default::default()
        }
    }

    fn healthy() -> Result<MemberHealth, String> {
        Ok(MemberHealth {
            healthy: true,
            reason: String::new(),
        })
    }

    #[test]
    fn each_member_gets_its_own_version_and_role() {
        let observed = Observation::Members(vec![
            ObservedMember {
                info: member(1, "a", 2379),
                status: Ok(status("3.4.23", 1)),
                health: healthy(),
            },
            ObservedMember {
                info: member(2, "b", 2379),
                status: Ok(status("3.4.22", 1)),
                health: healthy(),
            },
        ]);
        let s = cluster_status(&Default::default(), "https://10.0.0.1:2379", &observed);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.ready_members.as_deref(), Some("2/2"));
        let summary: Vec<(&str, &str, &str, &str)> = s
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.version.as_str(), m.role.as_str(), m.port.as_str()))
            .collect();
        assert_eq!(
            summary,
            [("a", "3.4.23", "Leader", "2379"), ("b", "3.4.22", "Follower", "2379")]
        );
        assert_eq!(s.conditions[0].reason, "AllMembersHealthy");
    }

    #[test]
    fn a_down_member_makes_the_cluster_unhealthy_and_says_why() {
        let observed = Observation::Members(vec![
            ObservedMember {
                info: member(1, "a", 2379),
                status: Ok(status("3.4.23", 1)),
                health: healthy(),
            },
            ObservedMember {
                info: member(2, "b", 2379),
                status: Err("timeout: no answer within 3s".into()),
                health: Err("timeout".into()),
            },
        ]);
        let s = cluster_status(&Default::default(), "", &observed);
        assert_eq!(s.phase.as_deref(), Some("UnHealthy"));
        assert_eq!(
            (s.members[1].role.as_str(), s.members[1].status.as_str()),
            ("UnKnown", "UnHealthy")
        );
        assert!(
            s.conditions[0]
                .message
                .contains("b (timeout: no answer within 3s; timeout)"),
            "{:?}",
            s.conditions
        );
    }

    #[test]
    fn tls_and_auth_failures_are_named_in_the_condition() {
        let reason = |error: CallError| {
            let s = cluster_status(&Default::default(), "", &Observation::Unreachable { error });
            assert_eq!(s.conditions[0].status, "False");
            assert_eq!(s.phase.as_deref(), Some("Unknown"));
            (s.conditions[0].reason.clone(), s.conditions[0].message.clone())
        };
        assert_eq!(
            reason(CallError::Tls("invalid peer certificate: UnknownIssuer".into())),
            ("TLSError".into(), "TLS: invalid peer certificate: UnknownIssuer".into())
        );
        assert_eq!(reason(CallError::AuthFailed("wrong".into())).0, "AuthenticationFailed");
        // The words alone decide nothing: an unreachable member whose error
        // mentions a certificate is still unreachable.
        assert_eq!(
            reason(CallError::Unavailable("no certificate store here".into())).0,
            "Unreachable"
        );
    }

    #[test]
    fn features_follow_the_gates_and_orphans_are_removed() {
        let gates: BTreeMap<String, bool> = [("healthy".to_string(), true), ("alarm".to_string(), false)].into();
        let actions = feature_actions(&gates, &["request".to_string(), "healthy".to_string()]);
        assert_eq!(actions["healthy"], FeatureAction::Ensure);
        assert_eq!(actions["alarm"], FeatureAction::Delete);
        assert_eq!(actions["request"], FeatureAction::Delete);
        let labels = cluster_labels(&gates, "imported", Some("3.4.23"));
        assert_eq!(labels["healthy"], "true");
        assert_eq!(labels["alarm"], "false");
        assert_eq!(labels["clusterType"], "imported");
        assert_eq!(labels["version"], "3.4.23");
    }
}

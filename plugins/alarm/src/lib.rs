//! The seed's `alarm` inspection, corrected:
//! `inspection_etcd_endpoint_alarm{clusterName, endpoint, alarmType}` is set
//! for every (member, type) on every run — 1 while the alarm is active, 0
//! otherwise — so a cleared alarm returns to 0 while others stay (D9).
//!
//! AlarmList is a raft proposal and fails exactly when a cluster is in
//! trouble, so it is called only when a member's Status reports an alarm,
//! or every few minutes as a cross-check. Status is local and cheap.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_inspector_sdk::{
    etcd, export_plugin, gauge, log, state, Alarm, AlarmType, ClusterSnapshot, MemberStatus, Plugin, PluginInfo, Sample,
};

const ALARM: &str = "inspection_etcd_endpoint_alarm";
const TYPES: [(&str, AlarmType); 2] = [("NOSPACE", AlarmType::Nospace), ("CORRUPT", AlarmType::Corrupt)];
/// Seconds between AlarmList cross-checks when Status shows no alarm.
const LIST_INTERVAL_PARAM: &str = "etcd-inspector.io/alarm-list-interval-seconds";
const DEFAULT_LIST_INTERVAL: u64 = 300;

struct AlarmInspection;

impl Plugin for AlarmInspection {
    fn describe() -> PluginInfo {
        PluginInfo::new("alarm", env!("CARGO_PKG_VERSION")).metric(gauge(
            ALARM,
            "The alarm of etcd member",
            &["endpoint", "alarmType"],
        ))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let mut failures = Vec::new();
        let statuses: Vec<MemberStatus> = snapshot
            .members
            .iter()
            .filter_map(|m| match etcd::status(&m.endpoint) {
                Ok(s) => Some(s),
                Err(e) => {
                    failures.push(format!("{}: {}", m.endpoint, e.message()));
                    None
                }
            })
            .collect();
        if statuses.is_empty() {
            return Err(format!("no member answered Status: {}", failures.join("; ")));
        }
        let alarms = active_alarms(&snapshot, &statuses)?;
        let mut samples = Vec::new();
        for member in &snapshot.members {
            let endpoint = snapshot.endpoint_label(member);
            for (name, kind) in TYPES {
                let on = alarms
                    .iter()
                    .any(|a| a.alarm == kind && (a.member_id == member.id || a.member_id == 0));
                samples.push(
                    Sample::new(ALARM, if on { 1.0 } else { 0.0 })
                        .label("endpoint", endpoint.clone())
                        .label("alarmType", name),
                );
            }
        }
        Ok(samples)
    }
}

/// The active alarms: from AlarmList when it is due or Status shows one,
/// otherwise none (alarms are replicated, so every member's Status lists them).
fn active_alarms(snapshot: &ClusterSnapshot, statuses: &[MemberStatus]) -> Result<Vec<Alarm>, String> {
    let reported = from_status_errors(statuses);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let interval = snapshot
        .param(LIST_INTERVAL_PARAM)
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LIST_INTERVAL);
    let last_list = state::load_number::<u64>();
    let due = last_list.is_none_or(|t| now.saturating_sub(t) >= interval);
    if reported.is_empty() && !due {
        return Ok(Vec::new());
    }
    match etcd::alarm_list() {
        Ok(alarms) => {
            // Remember the cross-check only when it was the reason to call.
            if reported.is_empty() {
                state::store_number(now)?;
            }
            Ok(alarms)
        }
        Err(e) if !reported.is_empty() => {
            log::warn(&format!(
                "AlarmList failed ({}); using the alarms members report in Status",
                e.message()
            ));
            Ok(reported)
        }
        Err(e) => Err(format!("AlarmList failed: {}", e.message())),
    }
}

/// Status errors carry alarms as `memberID:<id> alarm:<TYPE>`.
fn from_status_errors(statuses: &[MemberStatus]) -> Vec<Alarm> {
    let mut alarms: Vec<Alarm> = Vec::new();
    for error in statuses.iter().flat_map(|s| s.errors.iter()) {
        let field = |name: &str| {
            error
                .split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        let kind = match field("alarm:").as_deref() {
            Some("NOSPACE") => AlarmType::Nospace,
            Some("CORRUPT") => AlarmType::Corrupt,
            _ => continue,
        };
        let member_id = field("memberID:").and_then(|v| v.parse().ok()).unwrap_or(0);
        if !alarms.iter().any(|a| a.member_id == member_id && a.alarm == kind) {
            alarms.push(Alarm { member_id, alarm: kind });
        }
    }
    alarms
}

export_plugin!(AlarmInspection);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    fn three() -> FakeCluster {
        FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .member(FakeMember::new(2, "m1"))
            .member(FakeMember::new(3, "m2"))
    }

    #[test]
    fn every_member_and_type_is_set_and_cluster_wide_alarms_show_everywhere() {
        let samples = three()
            .alarm(2, AlarmType::Corrupt)
            .alarm(0, AlarmType::Nospace)
            .inspect::<AlarmInspection>()
            .unwrap();
        assert_eq!(samples.count(ALARM), 6);
        assert_eq!(
            samples.value(ALARM, &[("endpoint", "10.0.0.2"), ("alarmType", "CORRUPT")]),
            Some(1.0)
        );
        assert_eq!(
            samples.value(ALARM, &[("endpoint", "10.0.0.1"), ("alarmType", "CORRUPT")]),
            Some(0.0)
        );
        for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert_eq!(
                samples.value(ALARM, &[("endpoint", host), ("alarmType", "NOSPACE")]),
                Some(1.0),
                "{host}"
            );
        }
    }

    #[test]
    fn alarm_list_is_called_only_when_due_or_when_status_shows_an_alarm() {
        // A recent cross-check in state and no alarm in Status: no AlarmList, all zero.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let samples = three()
            .state(now.to_string().as_bytes())
            .inspect::<AlarmInspection>()
            .unwrap();
        assert!(samples.0.iter().all(|s| s.value == 0.0));
        // No state yet: the cross-check runs and is remembered.
        let (state, _) = three().run_state::<AlarmInspection>();
        assert!(state.is_some(), "the AlarmList time is stored");
    }
}

//! `membership`: who is in the cluster, according to each member; learners
//! and how far behind they are; whether each member sees a leader and how
//! often leadership moves; which versions run.
//!
//! Per round and member: `member_list_at` (the member's own view, not
//! confirmed with the leader), `status` and `status_details`; no write, no
//! raft round trip.
//!
//! - `inspection_etcd_members{role}`: voters and learners, in the view of
//!   the first member that answered; `inspection_etcd_members_not_started`:
//!   members added but not started (no name, no client URL yet).
//! - `inspection_etcd_member_list_disagreement`: 1 when the members that
//!   answered do not list the same members (ids and learner flags);
//!   `inspection_etcd_member_list_size{member}` shows who sees what.
//! - `inspection_etcd_learner_raft_index_gap{member}`: the leader's raft
//!   index minus the learner's (raft entries behind).
//! - `inspection_etcd_member_has_leader{member}`, `inspection_etcd_raft_term`
//!   (the highest term any member reports) and
//!   `inspection_etcd_leader_changes_total` (a different leader than in the
//!   previous round).
//! - `inspection_etcd_member_version_info{member,version,storage_version}`
//!   (`storage_version` empty before 3.6), `inspection_etcd_version_skew`
//!   (distinct major.minor versions minus one) and, where etcd reports it
//!   (3.6+), `inspection_etcd_downgrade_enabled{target_version}`.

use std::collections::BTreeSet;

use etcd_inspector_sdk::{
    counter, etcd, export_plugin, gauge, log, state, ClusterSnapshot, Member, Plugin, PluginInfo, Sample,
};

const MEMBERS: &str = "inspection_etcd_members";
const NOT_STARTED: &str = "inspection_etcd_members_not_started";
const DISAGREEMENT: &str = "inspection_etcd_member_list_disagreement";
const LIST_SIZE: &str = "inspection_etcd_member_list_size";
const LEARNER_GAP: &str = "inspection_etcd_learner_raft_index_gap";
const HAS_LEADER: &str = "inspection_etcd_member_has_leader";
const TERM: &str = "inspection_etcd_raft_term";
const LEADER_CHANGES: &str = "inspection_etcd_leader_changes_total";
const VERSION: &str = "inspection_etcd_member_version_info";
const SKEW: &str = "inspection_etcd_version_skew";
const DOWNGRADE: &str = "inspection_etcd_downgrade_enabled";

struct Membership;

/// What one member answered this round.
struct Answer {
    label: String,
    /// Its member list as (id, is learner), sorted.
    view: Option<Vec<(u64, bool)>>,
    status: etcd_inspector_sdk::MemberStatus,
    storage_version: Option<String>,
    downgrade: Option<(bool, String)>,
}

impl Plugin for Membership {
    fn describe() -> PluginInfo {
        PluginInfo::new("membership", env!("CARGO_PKG_VERSION"))
            .metric(gauge(MEMBERS, "Members by raft role (voter or learner)", &["role"]))
            .metric(gauge(
                NOT_STARTED,
                "Members added to the cluster but never started",
                &[],
            ))
            .metric(gauge(
                DISAGREEMENT,
                "1 when members list different members (ids or learner flags), else 0",
                &[],
            ))
            .metric(gauge(
                LIST_SIZE,
                "Members in the member list this member answers",
                &["member"],
            ))
            .metric(gauge(
                LEARNER_GAP,
                "Raft entries the learner is behind the leader (leader's raft index minus the learner's)",
                &["member"],
            ))
            .metric(gauge(
                HAS_LEADER,
                "1 when the member knows a leader, else 0",
                &["member"],
            ))
            .metric(gauge(TERM, "Highest raft term any member reports", &[]))
            .metric(counter(
                LEADER_CHANGES,
                "Rounds that found a different leader than the round before",
                &[],
            ))
            .metric(gauge(
                VERSION,
                "1 for each member, labelled with its etcd version and storage version (empty before 3.6)",
                &["member", "version", "storage_version"],
            ))
            .metric(gauge(
                SKEW,
                "Distinct major.minor etcd versions among the members, minus one",
                &[],
            ))
            .metric(gauge(
                DOWNGRADE,
                "1 while a downgrade to target_version is enabled (etcd 3.6+), else 0",
                &["target_version"],
            ))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let mut answers = Vec::new();
        let mut first_view: Option<Vec<Member>> = None;
        for member in &snapshot.members {
            let label = snapshot.member_label(member);
            let status = match etcd::status(&member.endpoint) {
                Ok(s) => s,
                Err(e) => {
                    log::warn(&format!("member {label}: {}", e.message()));
                    continue;
                }
            };
            let view = match etcd::member_list_at(&member.endpoint) {
                Ok(list) => {
                    let mut ids: Vec<(u64, bool)> = list.iter().map(|m| (m.id, m.is_learner)).collect();
                    ids.sort_unstable();
                    first_view.get_or_insert(list);
                    Some(ids)
                }
                Err(e) => {
                    log::warn(&format!("member {label}: member list: {}", e.message()));
                    None
                }
            };
            let details = etcd::status_details(&member.endpoint).ok();
            answers.push(Answer {
                label,
                view,
                status,
                storage_version: details.as_ref().and_then(|d| d.storage_version.clone()),
                downgrade: details.and_then(|d| d.downgrade).map(|d| (d.enabled, d.target_version)),
            });
        }
        if answers.is_empty() {
            return Err("no member answered Status".into());
        }
        let mut samples = Vec::new();

        if let Some(list) = &first_view {
            let learners = list.iter().filter(|m| m.is_learner).count();
            samples.push(Sample::new(MEMBERS, (list.len() - learners) as f64).label("role", "voter"));
            samples.push(Sample::new(MEMBERS, learners as f64).label("role", "learner"));
            let not_started = list.iter().filter(|m| m.client_urls.is_empty()).count();
            samples.push(Sample::new(NOT_STARTED, not_started as f64));
        }
        let views: BTreeSet<&Vec<(u64, bool)>> = answers.iter().filter_map(|a| a.view.as_ref()).collect();
        if !views.is_empty() {
            samples.push(Sample::new(DISAGREEMENT, if views.len() > 1 { 1.0 } else { 0.0 }));
        }

        // The leader's raft index, as the leader itself reports it.
        let leader = answers.iter().map(|a| a.status.leader).find(|l| *l != 0);
        let leader_index = answers
            .iter()
            .find(|a| Some(a.status.member_id) == leader)
            .map(|a| a.status.raft_index);
        for a in &answers {
            if let Some(view) = &a.view {
                samples.push(Sample::new(LIST_SIZE, view.len() as f64).label("member", a.label.clone()));
            }
            let has_leader = a.status.leader != 0;
            samples.push(Sample::new(HAS_LEADER, if has_leader { 1.0 } else { 0.0 }).label("member", a.label.clone()));
            if a.status.is_learner {
                if let Some(index) = leader_index {
                    let gap = index.saturating_sub(a.status.raft_index);
                    samples.push(Sample::new(LEARNER_GAP, gap as f64).label("member", a.label.clone()));
                }
            }
            samples.push(
                Sample::new(VERSION, 1.0)
                    .label("member", a.label.clone())
                    .label("version", a.status.version.clone())
                    .label("storage_version", a.storage_version.clone().unwrap_or_default()),
            );
        }
        let minors: BTreeSet<String> = answers.iter().map(|a| major_minor(&a.status.version)).collect();
        samples.push(Sample::new(SKEW, minors.len().saturating_sub(1) as f64));
        if let Some((_, target)) = answers.iter().filter_map(|a| a.downgrade.as_ref()).find(|(on, _)| *on) {
            samples.push(Sample::new(DOWNGRADE, 1.0).label("target_version", target.clone()));
        } else if answers.iter().any(|a| a.downgrade.is_some()) {
            samples.push(Sample::new(DOWNGRADE, 0.0).label("target_version", ""));
        }

        let term = answers.iter().map(|a| a.status.raft_term).max().unwrap_or(0);
        samples.push(Sample::new(TERM, term as f64));
        let last_leader = state::load_number::<u64>();
        let changed = matches!((last_leader, leader), (Some(was), Some(now)) if was != 0 && was != now);
        samples.push(Sample::new(LEADER_CHANGES, if changed { 1.0 } else { 0.0 }));
        // Without a leader this round, remember the last one known.
        if let Some(now) = leader.or(last_leader) {
            if let Err(e) = state::store_number(now) {
                log::warn(&format!("leader not kept: {e}"));
            }
        }
        Ok(samples)
    }
}

/// `3.6` of `3.6.16`; the whole string when it has no second dot.
fn major_minor(version: &str) -> String {
    let mut parts = version.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => version.to_string(),
    }
}

export_plugin!(Membership);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    fn three() -> FakeCluster {
        FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader().progress(500, 1000, 1000))
            .member(FakeMember::new(2, "m1").progress(500, 1000, 1000))
            .member(FakeMember::new(3, "m2").progress(500, 1000, 1000))
    }

    #[test]
    fn a_healthy_cluster_agrees_has_a_leader_and_one_version() {
        let s = three().inspect::<Membership>().unwrap();
        assert_eq!(s.value(MEMBERS, &[("role", "voter")]), Some(3.0));
        assert_eq!(s.value(MEMBERS, &[("role", "learner")]), Some(0.0));
        assert_eq!(s.value(DISAGREEMENT, &[]), Some(0.0));
        assert_eq!(s.value(HAS_LEADER, &[("member", "m2")]), Some(1.0));
        assert_eq!(s.value(SKEW, &[]), Some(0.0));
        assert_eq!(s.value(LEADER_CHANGES, &[]), Some(0.0));
        assert_eq!(
            s.value(
                VERSION,
                &[("member", "m1"), ("version", "3.5.17"), ("storage_version", "")]
            ),
            Some(1.0)
        );
        assert_eq!(s.count(LEARNER_GAP), 0);
        assert_eq!(s.count(DOWNGRADE), 0, "3.5 reports no downgrade state");
    }

    #[test]
    fn a_member_that_missed_a_change_makes_the_lists_disagree() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .member(FakeMember::new(2, "m1"))
            .member(FakeMember::new(3, "m2").sees_members(&[1, 2]))
            .inspect::<Membership>()
            .unwrap();
        assert_eq!(s.value(DISAGREEMENT, &[]), Some(1.0));
        assert_eq!(s.value(LIST_SIZE, &[("member", "m2")]), Some(2.0));
        assert_eq!(s.value(LIST_SIZE, &[("member", "m0")]), Some(3.0));
    }

    #[test]
    fn a_learner_is_counted_and_its_gap_to_the_leader_measured() {
        let s = three()
            .member(FakeMember::new(4, "m3").learner().progress(100, 400, 400))
            .inspect::<Membership>()
            .unwrap();
        assert_eq!(s.value(MEMBERS, &[("role", "learner")]), Some(1.0));
        assert_eq!(s.value(MEMBERS, &[("role", "voter")]), Some(3.0));
        assert_eq!(s.value(LEARNER_GAP, &[("member", "m3")]), Some(600.0));
        assert_eq!(s.value(LEARNER_GAP, &[("member", "m1")]), None);
    }

    #[test]
    fn leaderless_members_and_a_new_leader_are_reported() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader().term(7))
            .member(FakeMember::new(2, "m1").without_leader().term(9))
            .state(b"2")
            .inspect::<Membership>()
            .unwrap();
        assert_eq!(s.value(HAS_LEADER, &[("member", "m1")]), Some(0.0));
        assert_eq!(s.value(HAS_LEADER, &[("member", "m0")]), Some(1.0));
        assert_eq!(s.value(TERM, &[]), Some(9.0));
        assert_eq!(s.value(LEADER_CHANGES, &[]), Some(1.0), "member 2 led last round");
        let (stored, _) = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .run_state::<Membership>();
        assert_eq!(stored.as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn mixed_versions_show_skew_storage_versions_and_a_downgrade() {
        let s = FakeCluster::new("prod")
            .member(
                FakeMember::new(1, "m0")
                    .leader()
                    .version("3.6.16")
                    .storage("3.6.0", "3.5"),
            )
            .member(FakeMember::new(2, "m1").version("3.5.35"))
            .member(FakeMember::new(3, "m2").unreachable())
            .inspect::<Membership>()
            .unwrap();
        assert_eq!(s.value(SKEW, &[]), Some(1.0));
        assert_eq!(
            s.value(
                VERSION,
                &[("member", "m0"), ("version", "3.6.16"), ("storage_version", "3.6.0")]
            ),
            Some(1.0)
        );
        assert_eq!(s.value(DOWNGRADE, &[("target_version", "3.5")]), Some(1.0));
        assert_eq!(s.value(HAS_LEADER, &[("member", "m2")]), None, "m2 did not answer");
        assert_eq!(major_minor("3.6.16"), "3.6");
        assert_eq!(major_minor("weird"), "weird");
    }

    #[test]
    fn no_answer_at_all_is_a_failed_round() {
        let cluster = FakeCluster::new("prod").member(FakeMember::new(1, "m0").unreachable());
        assert!(cluster.inspect::<Membership>().is_err());
    }
}

//! The seed's `consistency` inspection, computed so that an idle healthy
//! cluster reads 0 and a busy one shows no false difference (D3, D12):
//!
//! 1. Status from every member (round 1).
//! 2. A common revision R = the lowest member revision: every member has it.
//! 3. On each member, through its own connection: a serializable count-only
//!    range at R, and HashKV at the latest compaction where etcd 3.5+ keeps
//!    that hash in memory (R otherwise: see `hash_members`).
//! 4. Status from every member again (round 2), to bound raft lag.
//!
//! Gauges (seed names, `clusterName` only):
//! - `inspection_etcd_node_diff_total`: key count spread at R.
//! - `inspection_etcd_node_revision_diff_total`: the largest revision gap
//!   between two members that had applied the same raft index. Revision is
//!   a deterministic function of the applied log, so any gap is divergence
//!   (etcd #13766); a lagging member is not a gap.
//! - `inspection_etcd_node_raft_applied_index_diff_total`,
//!   `inspection_etcd_node_raft_index_diff_total`: a lower bound on real lag,
//!   `max(round-1 value) - min(round-2 value)`: reads taken at different
//!   moments never show a difference that did not exist at some instant.
//!
//! And what no tool ships: the HashKV comparison at R
//! (`inspection_etcd_hashkv_consistent` 1|0, only when every member could
//! be compared; `inspection_etcd_hashkv_not_comparable` 1 otherwise, never
//! reported as consistent), and per-member raw values with a `member` label.

use etcd_inspector_sdk::{
    etcd, export_plugin, gauge, log, state, ClusterSnapshot, EtcdError, KeyRange, KvHash, Member, MemberStatus, Plugin,
    PluginInfo, Sample,
};

const KEY_DIFF: &str = "inspection_etcd_node_diff_total";
const REVISION_DIFF: &str = "inspection_etcd_node_revision_diff_total";
const APPLIED_DIFF: &str = "inspection_etcd_node_raft_applied_index_diff_total";
const RAFT_DIFF: &str = "inspection_etcd_node_raft_index_diff_total";
const HASH_CONSISTENT: &str = "inspection_etcd_hashkv_consistent";
const HASH_NOT_COMPARABLE: &str = "inspection_etcd_hashkv_not_comparable";
const COMPARED_REVISION: &str = "inspection_etcd_consistency_revision";
const HASH_REVISION: &str = "inspection_etcd_hashkv_revision";
const MEMBER_REACHABLE: &str = "inspection_etcd_member_reachable";
const MEMBER_REVISION: &str = "inspection_etcd_member_revision";
const MEMBER_RAFT_INDEX: &str = "inspection_etcd_member_raft_index";
const MEMBER_APPLIED: &str = "inspection_etcd_member_raft_applied_index";
const MEMBER_KEYS: &str = "inspection_etcd_member_key_total";
const MEMBER_HASH: &str = "inspection_etcd_member_hashkv";

/// Count only keys under this prefix (default: every key).
const COUNT_PREFIX_PARAM: &str = "etcd-inspector.io/consistency-count-prefix";
/// "false" turns the HashKV comparison off (it scans each member's whole store).
const HASHKV_PARAM: &str = "etcd-inspector.io/consistency-hashkv";

struct Consistency;

/// What one member answered; `None` where a call failed.
struct Reading<'a> {
    member: &'a Member,
    label: String,
    first: MemberStatus,
    second: Option<MemberStatus>,
    keys: Option<u64>,
    hash: Option<KvHash>,
}

impl Plugin for Consistency {
    fn describe() -> PluginInfo {
        let cluster = |name: &str, help: &str| gauge(name, help, &[]);
        let member = |name: &str, help: &str| gauge(name, help, &["member"]);
        PluginInfo::new("consistency", env!("CARGO_PKG_VERSION"))
            .metric(cluster(KEY_DIFF, "total etcd node diff key"))
            .metric(cluster(REVISION_DIFF, "The revision difference between all member"))
            .metric(cluster(
                APPLIED_DIFF,
                "The raft applied index difference between all member",
            ))
            .metric(cluster(RAFT_DIFF, "The raft index difference between all member"))
            .metric(cluster(
                HASH_CONSISTENT,
                "1 if every member has the same HashKV at the compared revision, 0 if not",
            ))
            .metric(cluster(
                HASH_NOT_COMPARABLE,
                "1 if the HashKV comparison could not be made this round",
            ))
            .metric(cluster(
                COMPARED_REVISION,
                "The common revision members were compared at",
            ))
            .metric(cluster(
                HASH_REVISION,
                "The revision the compared HashKV values cover (the latest compaction on etcd 3.5+)",
            ))
            .metric(member(MEMBER_REACHABLE, "1 if the member answered Status this round"))
            .metric(member(MEMBER_REVISION, "The member's store revision"))
            .metric(member(MEMBER_RAFT_INDEX, "The member's raft (committed) index"))
            .metric(member(MEMBER_APPLIED, "The member's raft applied index"))
            .metric(member(MEMBER_KEYS, "Keys on the member at the compared revision"))
            .metric(member(MEMBER_HASH, "The member's HashKV at the compared revision"))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        let mut readings = Vec::new();
        let mut failures = Vec::new();
        for member in &snapshot.members {
            let label = snapshot.member_label(member);
            match etcd::status(&member.endpoint) {
                Ok(first) => {
                    readings.push(Reading {
                        member,
                        label,
                        first,
                        second: None,
                        keys: None,
                        hash: None,
                    });
                }
                Err(e) => {
                    log::warn(&format!("member {label}: Status failed: {}", e.message()));
                    failures.push(label.clone());
                    samples.push(Sample::new(MEMBER_REACHABLE, 0.0).label("member", label));
                }
            }
        }
        if readings.is_empty() {
            return Err(format!("no member answered Status ({})", failures.join(", ")));
        }
        let revision = readings.iter().map(|r| r.first.revision).min().unwrap_or(0);
        let prefix = snapshot.param(COUNT_PREFIX_PARAM).unwrap_or("");
        let hashing = snapshot.param(HASHKV_PARAM) != Some("false");
        for r in &mut readings {
            let endpoint = &r.member.endpoint;
            r.keys = etcd::count(Some(endpoint), &KeyRange::prefix(prefix), revision, true)
                .map(|c| c.count)
                .map_err(|e| {
                    log::warn(&format!(
                        "member {}: count at {revision} failed: {}",
                        r.label,
                        e.message()
                    ))
                })
                .ok();
        }
        if hashing {
            hash_members(&mut readings, revision);
        }
        for r in &mut readings {
            r.second = etcd::status(&r.member.endpoint).ok();
        }

        for r in &readings {
            let member = |name: &str, value: f64| Sample::new(name, value).label("member", r.label.clone());
            samples.push(member(MEMBER_REACHABLE, 1.0));
            let latest = r.second.as_ref().unwrap_or(&r.first);
            samples.push(member(MEMBER_REVISION, latest.revision as f64));
            samples.push(member(MEMBER_RAFT_INDEX, latest.raft_index as f64));
            samples.push(member(MEMBER_APPLIED, latest.raft_applied_index as f64));
            if let Some(keys) = r.keys {
                samples.push(member(MEMBER_KEYS, keys as f64));
            }
            if let Some(hash) = &r.hash {
                samples.push(member(MEMBER_HASH, hash.hash as f64));
            }
        }
        samples.push(Sample::new(COMPARED_REVISION, revision as f64));

        if readings.len() >= 2 {
            let counts: Vec<u64> = readings.iter().filter_map(|r| r.keys).collect();
            if counts.len() >= 2 {
                samples.push(Sample::new(KEY_DIFF, spread(&counts) as f64));
            }
            samples.push(Sample::new(
                REVISION_DIFF,
                revision_gap_at_equal_applied_index(&readings) as f64,
            ));
            samples.push(Sample::new(
                APPLIED_DIFF,
                lag_lower_bound(&readings, |s| s.raft_applied_index) as f64,
            ));
            samples.push(Sample::new(
                RAFT_DIFF,
                lag_lower_bound(&readings, |s| s.raft_index) as f64,
            ));
        }
        if hashing {
            match compare_hashes(&snapshot, &readings) {
                Some(consistent) => {
                    if let Some(hash) = readings.iter().find_map(|r| r.hash.as_ref()) {
                        samples.push(Sample::new(HASH_REVISION, hash.hash_revision as f64));
                    }
                    samples.push(Sample::new(HASH_CONSISTENT, if consistent { 1.0 } else { 0.0 }));
                    samples.push(Sample::new(HASH_NOT_COMPARABLE, 0.0));
                }
                None => samples.push(Sample::new(HASH_NOT_COMPARABLE, 1.0)),
            }
        }
        Ok(samples)
    }
}

fn spread(values: &[u64]) -> u64 {
    values.iter().max().unwrap_or(&0) - values.iter().min().unwrap_or(&0)
}

/// The largest revision gap between two members that had applied the same
/// raft index (0 when no two members can be compared). Status reads the
/// revision and the applied index at slightly different moments, so one
/// reading can straddle a write; a member's pair is trusted only when both
/// rounds read it identically (nothing changed in between), which removes
/// that false gap while a member that really diverged still shows.
fn revision_gap_at_equal_applied_index(readings: &[Reading]) -> u64 {
    let stable: Vec<&MemberStatus> = readings
        .iter()
        .filter_map(|r| {
            let second = r.second.as_ref()?;
            let same = second.raft_applied_index == r.first.raft_applied_index && second.revision == r.first.revision;
            same.then_some(second)
        })
        .collect();
    let mut gap = 0;
    for (i, a) in stable.iter().enumerate() {
        for b in &stable[i + 1..] {
            if a.raft_applied_index == b.raft_applied_index {
                gap = gap.max(a.revision.abs_diff(b.revision));
            }
        }
    }
    gap
}

/// A member read at `second` had *at least* that value then, and every
/// round-1 reading happened before it: so `max(first) - min(second)` is a
/// difference that really existed at one instant.
fn lag_lower_bound(readings: &[Reading], value: impl Fn(&MemberStatus) -> u64) -> u64 {
    let highest_first = readings.iter().map(|r| value(&r.first)).max().unwrap_or(0);
    let lowest_second = readings.iter().filter_map(|r| r.second.as_ref().map(&value)).min();
    lowest_second.map_or(0, |low| highest_first.saturating_sub(low))
}

/// HashKV of every member. etcd 3.5+ keeps the hash it computed at each of
/// its last compactions, so HashKV at the latest compact revision is
/// answered from memory, where any other revision scans the member's whole
/// store while holding its writers back (seconds on a large store). So the
/// members are hashed at the compact revision when all of them answer
/// there, and at the common revision R otherwise: never compacted, etcd 3.4
/// (which keeps no such hash and refuses HashKV at the compaction), or a
/// member restarted since and no longer holding that hash.
/// Learners refuse HashKV (they serve only Status and serializable reads),
/// so only voting members are hashed.
fn hash_members(readings: &mut [Reading], revision: u64) {
    let mut voters: Vec<&mut Reading> = readings.iter_mut().filter(|r| !r.member.is_learner).collect();
    let Some(first) = voters.first().map(|r| r.member.endpoint.clone()) else {
        return;
    };
    // The compaction the last round saw, if it kept one.
    let kept = state::load_number::<u64>();
    let keeps_hashes = voters.iter().all(|r| at_least_3_5(&r.first.version));
    if keeps_hashes {
        if let Some(compact) = latest_compaction(&first, kept).filter(|c| *c > 0) {
            let hashes: Vec<Option<KvHash>> = voters
                .iter()
                .map(|r| etcd::hash_kv(&r.member.endpoint, compact).ok())
                .collect();
            if hashes.iter().all(Option::is_some) {
                for (r, hash) in voters.iter_mut().zip(hashes) {
                    r.hash = hash;
                }
                remember_compaction(compact);
                return;
            }
        }
    }
    // etcd refuses HashKV at the compact revision itself before 3.5: on a
    // cluster idle since its last compaction the common revision is that
    // one, so hash the current revision (the same one on every member
    // while the cluster stays idle; compare_hashes checks that). Known
    // from the last round, the refusal is not even asked for: each one
    // also sends the host to find the compact revision (a Watch).
    let at = if !keeps_hashes && kept.is_some_and(|k| k >= revision) {
        0
    } else {
        revision
    };
    for r in &mut voters {
        r.hash = match etcd::hash_kv(&r.member.endpoint, at) {
            Err(EtcdError::Compacted(compact)) if at > 0 && compact >= revision => etcd::hash_kv(&r.member.endpoint, 0),
            other => other,
        }
        .map_err(|e| {
            log::warn(&format!(
                "member {}: HashKV at {revision} failed: {}",
                r.label,
                e.message()
            ))
        })
        .ok();
    }
    // A hash of the store (not a kept one) names the member's compaction
    // as of now: the next round need not look for it.
    if let Some(compact) = voters
        .iter()
        .filter_map(|r| r.hash.as_ref())
        .map(|h| h.compact_revision)
        .max()
    {
        remember_compaction(compact);
    }
}

/// The cluster's latest compact revision (0: none), asking etcd as little
/// as it can. Looking it up costs a Range and, once compacted, a Watch
/// (`etcd::compact_revision`) every round, while etcd compacts every few
/// minutes at most (kube-apiserver: every 5). So the compaction the last
/// round saw is kept in `state`:
/// - none seen: the round hashes at R, whose answers name the compaction;
/// - revision C: a count at C, which etcd refuses once it has compacted
///   past C, and the refusal names the newer compaction. HashKV alone
///   cannot tell: etcd answers at any of its last ten compactions.
///
/// Nothing kept yet (or the count failed otherwise): it is looked up.
fn latest_compaction(endpoint: &str, kept: Option<u64>) -> Option<u64> {
    match kept {
        Some(0) => Some(0),
        Some(compact) => match etcd::compacted_past(Some(endpoint), compact) {
            Ok(newer) => Some(newer.unwrap_or(compact)),
            Err(_) => etcd::compact_revision(Some(endpoint)).ok(),
        },
        None => etcd::compact_revision(Some(endpoint)).ok(),
    }
}

fn remember_compaction(compact: u64) {
    // Over the 64 KiB a plugin may keep: cannot happen for a number.
    let _ = state::store_number(compact);
}

/// True for etcd 3.5 and later (`3.5.21`, `3.6.0-alpha.0`).
fn at_least_3_5(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (3, 5)
}

/// `Some(consistent)` when every voting member answered HashKV with the same
/// compact revision; `None` when the comparison cannot be made.
fn compare_hashes(snapshot: &ClusterSnapshot, readings: &[Reading]) -> Option<bool> {
    let voters = snapshot.members.iter().filter(|m| !m.is_learner).count();
    let voting: Vec<&Reading> = readings.iter().filter(|r| !r.member.is_learner).collect();
    if voting.len() < voters || voting.len() < 2 {
        return None;
    }
    let hashes: Vec<&KvHash> = voting.iter().map(|r| r.hash.as_ref()).collect::<Option<_>>()?;
    let compact = hashes[0].compact_revision;
    if hashes.iter().any(|h| h.compact_revision != compact) {
        log::info("members have different compact revisions; HashKV not comparable this round");
        return None;
    }
    let hashed = hashes[0].hash_revision;
    if hashes.iter().any(|h| h.hash_revision != hashed) {
        log::info("members hashed different revisions; HashKV not comparable this round");
        return None;
    }
    let consistent = hashes.iter().all(|h| h.hash == hashes[0].hash);
    if !consistent {
        let detail: Vec<String> = readings
            .iter()
            .zip(&hashes)
            .map(|(r, h)| format!("{}={}", r.label, h.hash))
            .collect();
        log::error(&format!("HashKV mismatch: {}", detail.join(" ")));
    }
    Some(consistent)
}

export_plugin!(Consistency);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    #[test]
    fn a_revision_gap_at_the_same_applied_index_is_divergence() {
        let cluster = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").progress(500, 1000, 1000))
            .member(FakeMember::new(2, "m1").progress(503, 1000, 1000))
            .member(FakeMember::new(3, "m2").progress(490, 990, 990));
        let s = cluster.inspect::<Consistency>().unwrap();
        assert_eq!(s.value(REVISION_DIFF, &[]), Some(3.0));
        assert_eq!(s.value(APPLIED_DIFF, &[]), Some(10.0));
    }

    #[test]
    fn a_compacted_cluster_is_hashed_at_its_compaction_and_3_4_at_the_common_revision() {
        let cluster = |version: &str| {
            FakeCluster::new("prod")
                .member(FakeMember::new(1, "m0").version(version))
                .member(FakeMember::new(2, "m1").version(version))
                .compacted(420)
        };
        let s = cluster("3.6.16").inspect::<Consistency>().unwrap();
        assert_eq!(s.value(HASH_REVISION, &[]), Some(420.0));
        assert_eq!(s.value(HASH_CONSISTENT, &[]), Some(1.0));
        let s = cluster("3.4.23").inspect::<Consistency>().unwrap();
        assert_eq!(s.value(HASH_REVISION, &[]), Some(500.0));
        assert_eq!(s.value(HASH_CONSISTENT, &[]), Some(1.0));
        // Never compacted: the common revision.
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, "m1"))
            .inspect::<Consistency>()
            .unwrap();
        assert_eq!(s.value(HASH_REVISION, &[]), Some(500.0));
    }

    #[test]
    fn the_compaction_seen_last_round_is_checked_and_a_newer_one_followed() {
        let cluster = |kept: &[u8]| {
            FakeCluster::new("prod")
                .member(FakeMember::new(1, "m0"))
                .member(FakeMember::new(2, "m1"))
                .compacted(420)
                .state(kept)
        };
        let hashed_and_kept = |kept: &[u8]| {
            let cluster = cluster(kept);
            let s = cluster.inspect::<Consistency>().unwrap();
            assert_eq!(s.value(HASH_CONSISTENT, &[]), Some(1.0));
            let (state, _) = cluster.run_state::<Consistency>();
            (
                s.value(HASH_REVISION, &[]),
                state.map(|b| String::from_utf8(b).unwrap()),
            )
        };
        // Still the latest: hashed there.
        assert_eq!(hashed_and_kept(b"420"), (Some(420.0), Some("420".into())));
        // Compacted since: the refused count names the newer compaction.
        assert_eq!(hashed_and_kept(b"300"), (Some(420.0), Some("420".into())));
        // None seen last round: hashed at the common revision, whose
        // answers name the compaction for the next round.
        assert_eq!(hashed_and_kept(b"0"), (Some(500.0), Some("420".into())));
        // Garbage kept (an older plugin's state): looked up.
        assert_eq!(hashed_and_kept(b"x"), (Some(420.0), Some("420".into())));
    }

    #[test]
    fn different_hashes_are_a_mismatch_and_an_unreachable_member_is_not_comparable() {
        let two = |hash| {
            FakeCluster::new("prod")
                .member(FakeMember::new(1, "m0"))
                .member(FakeMember::new(2, "m1").hash(hash))
        };
        let s = two(8).inspect::<Consistency>().unwrap();
        assert_eq!(
            (s.value(HASH_CONSISTENT, &[]), s.value(HASH_NOT_COMPARABLE, &[])),
            (Some(0.0), Some(0.0))
        );
        let s = two(7).inspect::<Consistency>().unwrap();
        assert_eq!(s.value(HASH_CONSISTENT, &[]), Some(1.0));
        let s = two(7)
            .member(FakeMember::new(3, "m2").unreachable())
            .inspect::<Consistency>()
            .unwrap();
        assert_eq!(
            (s.value(HASH_CONSISTENT, &[]), s.value(HASH_NOT_COMPARABLE, &[])),
            (None, Some(1.0))
        );
        assert_eq!(s.value(MEMBER_REACHABLE, &[("member", "m2")]), Some(0.0));
    }

    #[test]
    fn a_learner_which_refuses_hashkv_leaves_the_voters_comparable() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .member(FakeMember::new(2, "m1"))
            .member(FakeMember::new(3, "m2").learner())
            .inspect::<Consistency>()
            .unwrap();
        assert_eq!(
            (s.value(HASH_CONSISTENT, &[]), s.value(HASH_NOT_COMPARABLE, &[])),
            (Some(1.0), Some(0.0))
        );
        assert_eq!(s.value(HASH_REVISION, &[]), Some(500.0));
        // Its other readings still count.
        assert_eq!(s.value(MEMBER_REACHABLE, &[("member", "m2")]), Some(1.0));
    }
}

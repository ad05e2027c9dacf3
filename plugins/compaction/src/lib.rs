//! `compaction`: how much history each cluster keeps. etcd keeps every
//! revision until it is compacted; without compaction (auto-compaction
//! off, a Kubernetes API server that stopped compacting) the database
//! grows until NOSPACE, and HashKV and defragmentation get slower. This
//! makes "nothing compacts" visible long before that:
//!
//! - `inspection_etcd_compact_revision`: the revision the cluster was last
//!   compacted at (0: never);
//! - `inspection_etcd_revisions_since_compaction`: the current revision
//!   minus that one, the history etcd holds.
//!
//! Per round: one Status per member (the highest revision is the
//! cluster's) and `etcd::compact_revision` (one count-only range that etcd
//! refuses with the compact revision before reading anything).

use etcd_inspector_sdk::{etcd, export_plugin, gauge, ClusterSnapshot, Plugin, PluginInfo, Sample};

const COMPACT_REVISION: &str = "inspection_etcd_compact_revision";
const SINCE_COMPACTION: &str = "inspection_etcd_revisions_since_compaction";

struct Compaction;

impl Plugin for Compaction {
    fn describe() -> PluginInfo {
        PluginInfo::new("compaction", env!("CARGO_PKG_VERSION"))
            .metric(gauge(
                COMPACT_REVISION,
                "The revision the cluster was last compacted at (a revision number; 0 if never)",
                &[],
            ))
            .metric(gauge(
                SINCE_COMPACTION,
                "Revisions written since the last compaction (a count of revisions)",
                &[],
            ))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        // The highest revision any member reports: the cluster's.
        let current = snapshot
            .members
            .iter()
            .filter_map(|m| etcd::status(&m.endpoint).ok())
            .map(|s| s.revision)
            .max()
            .ok_or("no member answered Status")?;
        let compacted =
            etcd::compact_revision(None).map_err(|e| format!("compact revision unknown: {}", e.message()))?;
        Ok(vec![
            Sample::new(COMPACT_REVISION, compacted as f64),
            Sample::new(SINCE_COMPACTION, current.saturating_sub(compacted) as f64),
        ])
    }
}

export_plugin!(Compaction);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    #[test]
    fn history_since_the_last_compaction_is_reported() {
        let cluster = |compact: u64| {
            FakeCluster::new("prod")
                .member(FakeMember::new(1, "m0").progress(900, 1000, 1000))
                .member(FakeMember::new(2, "m1").progress(880, 980, 980))
                .compacted(compact)
        };
        let s = cluster(600).inspect::<Compaction>().unwrap();
        assert_eq!(s.value(COMPACT_REVISION, &[]), Some(600.0));
        assert_eq!(s.value(SINCE_COMPACTION, &[]), Some(300.0));
        let s = cluster(0).inspect::<Compaction>().unwrap();
        assert_eq!(s.value(COMPACT_REVISION, &[]), Some(0.0));
        assert_eq!(s.value(SINCE_COMPACTION, &[]), Some(900.0));
    }

    #[test]
    fn no_answering_member_is_a_failed_round() {
        let cluster = FakeCluster::new("prod").member(FakeMember::new(1, "m0").unreachable());
        assert!(cluster.inspect::<Compaction>().is_err());
    }
}

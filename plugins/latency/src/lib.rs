//! `latency`: what a client of each member feels when it reads, without
//! writing anything. Per member, one serializable read (answered from the
//! member's own state) and one linearizable read (confirmed with the
//! leader), each a count-only read of a key that does not exist, timed by
//! the host:
//!
//! `inspection_etcd_read_latency_seconds{member, kind="serializable"|"linearizable"}`.
//!
//! A learner, which serves only serializable reads, has only those. A
//! member that does not answer loses its series for the round (and the log
//! says why); the round fails only when no member answered.

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, ClusterSnapshot, Plugin, PluginInfo, Sample};

const READ_LATENCY: &str = "inspection_etcd_read_latency_seconds";

struct Latency;

impl Plugin for Latency {
    fn describe() -> PluginInfo {
        PluginInfo::new("latency", env!("CARGO_PKG_VERSION")).metric(gauge(
            READ_LATENCY,
            "Seconds one count-only read of a missing key took on the member (kind: serializable or linearizable)",
            &["member", "kind"],
        ))
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        let mut failures = Vec::new();
        for member in &snapshot.members {
            let label = snapshot.member_label(member);
            // A learner serves only serializable reads.
            let kinds: &[(&str, bool)] = if member.is_learner {
                &[("serializable", true)]
            } else {
                &[("serializable", true), ("linearizable", false)]
            };
            for &(kind, serializable) in kinds {
                match etcd::read_latency(&member.endpoint, serializable) {
                    Ok(micros) => samples.push(
                        Sample::new(READ_LATENCY, micros as f64 / 1e6)
                            .label("member", label.clone())
                            .label("kind", kind),
                    ),
                    Err(e) => {
                        log::warn(&format!("member {label}: {kind} read failed: {}", e.message()));
                        failures.push(format!("{label} {kind}"));
                    }
                }
            }
        }
        if samples.is_empty() {
            return Err(format!("no read answered ({})", failures.join(", ")));
        }
        Ok(samples)
    }
}

export_plugin!(Latency);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    #[test]
    fn each_member_and_kind_is_timed_and_a_silent_member_left_out() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").latency(250, 1_500))
            .member(FakeMember::new(2, "m1").unreachable())
            .inspect::<Latency>()
            .unwrap();
        let value = |member: &str, kind: &str| s.value(READ_LATENCY, &[("member", member), ("kind", kind)]);
        assert_eq!(value("m0", "serializable"), Some(0.00025));
        assert_eq!(value("m0", "linearizable"), Some(0.0015));
        assert_eq!(value("m1", "linearizable"), None);
    }

    #[test]
    fn no_answer_at_all_is_a_failed_round() {
        let cluster = FakeCluster::new("prod").member(FakeMember::new(1, "m0").unreachable());
        assert!(cluster.inspect::<Latency>().is_err());
    }

    #[test]
    fn a_learner_is_timed_only_on_the_reads_it_serves() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .member(FakeMember::new(2, "m1").learner().latency(100, 0))
            .inspect::<Latency>()
            .unwrap();
        let value = |member: &str, kind: &str| s.value(READ_LATENCY, &[("member", member), ("kind", kind)]);
        assert_eq!(value("m1", "serializable"), Some(0.0001));
        assert_eq!(value("m1", "linearizable"), None);
        let (_, logs) = FakeCluster::new("prod")
            .member(FakeMember::new(2, "m1").learner())
            .run_state::<Latency>();
        assert!(logs.is_empty(), "a learner's refusal is not a failure: {logs:?}");
    }
}

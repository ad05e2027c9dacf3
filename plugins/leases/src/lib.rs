//! `leases`: how many leases the cluster holds, for how long they are
//! granted, and how many hold no key (a client that grants leases and never
//! uses them, or never revokes them, leaks).
//!
//! Per round: one `lease_ids` (every id, 8 bytes each) and at most
//! `etcd-inspector.io/leases-per-round` (default 500) `lease_time_to_live`
//! calls, whatever the number of leases. The leases asked about continue
//! from where the last round stopped (the last id is kept in the plugin's
//! state), so every lease is visited over ⌈leases / per-round⌉ rounds. From
//! that sample:
//!
//! - `inspection_etcd_leases`: every lease (exact).
//! - `inspection_etcd_leases_sampled`: leases asked about this round.
//! - `inspection_etcd_leases_by_granted_ttl{le}`: leases granted for at most
//!   `le` seconds (cumulative, `+Inf` is all), and
//!   `inspection_etcd_leases_without_keys`: leases with no key attached;
//!   both exact when every lease was sampled, else the sample's share
//!   scaled to the total.

use etcd_inspector_sdk::{etcd, export_plugin, gauge, log, state, ClusterSnapshot, Plugin, PluginInfo, Sample};

const LEASES: &str = "inspection_etcd_leases";
const SAMPLED: &str = "inspection_etcd_leases_sampled";
const BY_TTL: &str = "inspection_etcd_leases_by_granted_ttl";
const WITHOUT_KEYS: &str = "inspection_etcd_leases_without_keys";

const PER_ROUND_PARAM: &str = "etcd-inspector.io/leases-per-round";
const DEFAULT_PER_ROUND: usize = 500;
/// Granted TTL buckets in seconds: a minute, 5 minutes, 15 minutes, an hour
/// (Kubernetes' event leases), a day.
const BUCKETS: [i64; 5] = [60, 300, 900, 3600, 86_400];

struct Leases;

impl Plugin for Leases {
    fn describe() -> PluginInfo {
        PluginInfo::new("leases", env!("CARGO_PKG_VERSION"))
            .metric(gauge(LEASES, "Leases the cluster holds", &[]))
            .metric(gauge(SAMPLED, "Leases asked about (LeaseTimeToLive) this round", &[]))
            .metric(gauge(
                BY_TTL,
                "Leases granted for at most le seconds (cumulative; estimated from the round's sample)",
                &["le"],
            ))
            .metric(gauge(
                WITHOUT_KEYS,
                "Leases with no key attached (estimated from the round's sample)",
                &[],
            ))
            .interval_seconds(60)
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let per_round = match snapshot.param(PER_ROUND_PARAM) {
            None => DEFAULT_PER_ROUND,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(format!(
                        "annotation {PER_ROUND_PARAM}: {v:?} is not a whole number of at least 1"
                    ))
                }
            },
        };
        let ids = etcd::lease_ids().map_err(|e| format!("LeaseLeases: {}", e.message()))?;
        let after = state::load_number::<i64>();
        let chosen = next_batch(&ids, after, per_round);

        let mut granted = Vec::with_capacity(chosen.len());
        let mut without_keys = 0usize;
        let mut last = after;
        for &id in chosen {
            match etcd::lease_time_to_live(id, true) {
                // Expired or revoked since the list was read.
                Ok(lease) if lease.ttl < 0 => {}
                Ok(lease) => {
                    granted.push(lease.granted_ttl);
                    if lease.keys == 0 {
                        without_keys += 1;
                    }
                }
                Err(e) => {
                    log::warn(&format!("lease {id:x}: {}", e.message()));
                    break;
                }
            }
            last = Some(id);
        }
        if let Some(last) = last {
            if let Err(e) = state::store_number(last) {
                log::warn(&format!("position not kept: {e}"));
            }
        }

        let total = ids.len();
        let mut samples = vec![
            Sample::new(LEASES, total as f64),
            Sample::new(SAMPLED, granted.len() as f64),
        ];
        if granted.is_empty() && total > 0 {
            // Nothing to estimate from this round: no distribution rather than a wrong one.
            return Ok(samples);
        }
        let scale = |n: usize| {
            if granted.is_empty() {
                0.0
            } else {
                (n as f64 * total as f64 / granted.len() as f64).round()
            }
        };
        for le in BUCKETS {
            let n = granted.iter().filter(|&&ttl| ttl <= le).count();
            samples.push(Sample::new(BY_TTL, scale(n)).label("le", le.to_string()));
        }
        samples.push(Sample::new(BY_TTL, total as f64).label("le", "+Inf"));
        samples.push(Sample::new(WITHOUT_KEYS, scale(without_keys)));
        Ok(samples)
    }
}

/// Up to `n` ids following `after` in ascending order, wrapping around to
/// the smallest: a rotating window over every lease.
fn next_batch(ids: &[i64], after: Option<i64>, n: usize) -> &[i64] {
    if ids.len() <= n {
        return ids;
    }
    let start = after.map_or(0, |a| ids.partition_point(|&id| id <= a));
    let start = if start >= ids.len() { 0 } else { start };
    &ids[start..(start + n).min(ids.len())]
}

export_plugin!(Leases);

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};

    fn cluster() -> FakeCluster {
        FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0").leader())
            .lease(1, 50, 60, 3)
            .lease(2, 200, 300, 0)
            .lease(3, 3000, 3600, 1)
            .lease(4, 3000, 3600, 0)
    }

    #[test]
    fn every_lease_is_counted_when_all_fit_in_a_round() {
        let s = cluster().inspect::<Leases>().unwrap();
        assert_eq!(s.value(LEASES, &[]), Some(4.0));
        assert_eq!(s.value(SAMPLED, &[]), Some(4.0));
        assert_eq!(s.value(BY_TTL, &[("le", "60")]), Some(1.0));
        assert_eq!(s.value(BY_TTL, &[("le", "300")]), Some(2.0));
        assert_eq!(s.value(BY_TTL, &[("le", "900")]), Some(2.0));
        assert_eq!(s.value(BY_TTL, &[("le", "3600")]), Some(4.0));
        assert_eq!(s.value(BY_TTL, &[("le", "+Inf")]), Some(4.0));
        assert_eq!(s.value(WITHOUT_KEYS, &[]), Some(2.0));
    }

    #[test]
    fn a_round_asks_about_at_most_its_share_and_continues_where_the_last_stopped() {
        let c = cluster().param(PER_ROUND_PARAM, "2").state(b"1");
        let s = c.inspect::<Leases>().unwrap();
        assert_eq!(s.value(SAMPLED, &[]), Some(2.0));
        // Leases 2 and 3: one of two has no key, scaled to the 4 leases.
        assert_eq!(s.value(WITHOUT_KEYS, &[]), Some(2.0));
        assert_eq!(s.value(BY_TTL, &[("le", "300")]), Some(2.0));
        let (stored, _) = c.run_state::<Leases>();
        assert_eq!(stored.as_deref(), Some(&b"3"[..]));
        // After the last id, the window wraps around.
        assert_eq!(next_batch(&[1, 2, 3, 4], Some(4), 2), &[1, 2]);
        assert_eq!(next_batch(&[1, 2, 3, 4], Some(3), 2), &[4]);
        assert_eq!(next_batch(&[1, 2, 3, 4], None, 3), &[1, 2, 3]);
    }

    #[test]
    fn no_lease_is_zero_everywhere_and_a_bad_setting_says_which() {
        let s = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .inspect::<Leases>()
            .unwrap();
        assert_eq!(s.value(LEASES, &[]), Some(0.0));
        assert_eq!(s.value(WITHOUT_KEYS, &[]), Some(0.0));
        let err = cluster().param(PER_ROUND_PARAM, "0").inspect::<Leases>().unwrap_err();
        assert_eq!(
            err,
            "annotation etcd-inspector.io/leases-per-round: \"0\" is not a whole number of at least 1"
        );
    }
}

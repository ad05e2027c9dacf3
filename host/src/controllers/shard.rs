//! Which clusters this process inspects when several share the work:
//! rendezvous (highest random weight) hashing of each cluster over the
//! replicas. Every replica computes the same owner from the same replica
//! list without talking to the others; when a replica joins or leaves, only
//! the clusters it gains or held move (about 1/N), and the load evens out
//! without virtual nodes. The hash is SHA-256, so replicas of different
//! builds (a rolling upgrade) agree.

use sha2::{Digest, Sha256};

use crate::cluster::ClusterKey;

/// The replica of `replicas` that owns `key` (None when there is none).
pub fn owner<'a>(replicas: impl IntoIterator<Item = &'a str>, key: &ClusterKey) -> Option<&'a str> {
    replicas.into_iter().max_by_key(|r| weight(r, key))
}

/// By name alone, not namespace: clusters of one name in two namespaces
/// share a `clusterName` label, and the host refuses the second; they must
/// land on the same replica for that check to see both.
fn weight<'a>(replica: &'a str, key: &ClusterKey) -> (u64, &'a str) {
    let mut h = Sha256::new();
    for part in [replica, "\0", &key.name] {
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    // The replica name breaks a tie, so every replica picks the same one.
    (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")), replica)
}

/// `--shard INDEX/COUNT`: a fixed share of the clusters, for hosts run
/// without Kubernetes. The same hashing over `shard-0 … shard-(COUNT-1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticShard {
    pub index: u32,
    pub count: u32,
}

impl StaticShard {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/3)");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count || count > 1024 {
            return Err(bad());
        }
        Ok(StaticShard { index, count })
    }

    pub fn owns(&self, key: &ClusterKey) -> bool {
        let names: Vec<String> = (0..self.count).map(|i| format!("shard-{i}")).collect();
        owner(names.iter().map(String::as_str), key) == Some(names[self.index as usize].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<ClusterKey> {
        (0..n)
            .map(|i| ClusterKey {
                namespace: "tenants".into(),
                name: format!("cp-{i}"),
            })
            .collect()
    }

    #[test]
    fn a_joining_replica_takes_about_a_third_and_nothing_else_moves() {
        let keys = keys(3000);
        let two = ["replica-a", "replica-b"];
        let three = ["replica-a", "replica-b", "replica-c"];
        let mut moved = 0;
        for k in &keys {
            let before = owner(two, k).unwrap();
            let after = owner(three, k).unwrap();
            if before != after {
                assert_eq!(after, "replica-c", "a move goes to the new replica only");
                moved += 1;
            }
        }
        assert!((850..1150).contains(&moved), "about 1/3 of 3000 move: {moved}");
        // Leaving is the reverse: only the leaver's clusters move.
        for k in &keys {
            if owner(three, k) != Some("replica-c") {
                assert_eq!(owner(three, k), owner(two, k));
            }
        }
    }

    #[test]
    fn one_name_in_two_namespaces_has_one_owner() {
        let replicas = ["replica-a", "replica-b", "replica-c"];
        for i in 0..100 {
            let (a, b) = (
                ClusterKey {
                    namespace: "team-a".into(),
                    name: format!("etcd-{i}"),
                },
                ClusterKey {
                    namespace: "team-b".into(),
                    name: format!("etcd-{i}"),
                },
            );
            assert_eq!(owner(replicas, &a), owner(replicas, &b));
        }
    }

    #[test]
    fn static_shards_split_every_cluster_once() {
        let keys = keys(900);
        let shards: Vec<StaticShard> = (0..3).map(|i| StaticShard::parse(&format!("{i}/3")).unwrap()).collect();
        let mut counts = [0; 3];
        for k in &keys {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(k)).collect();
            assert_eq!(owners.len(), 1, "{k:?}: {owners:?}");
            counts[owners[0]] += 1;
        }
        assert!(counts.iter().all(|&c| (240..360).contains(&c)), "{counts:?}");
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(StaticShard::parse(bad).unwrap_err().contains("INDEX/COUNT"), "{bad}");
        }
    }
}

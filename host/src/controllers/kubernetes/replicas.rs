//! Sharding in Kubernetes, with Kubernetes as the only coordinator: every
//! replica holds a Lease of its own (labelled with the group, renewed like
//! a leader lease), lists the group's Leases, and inspects the clusters
//! that rendezvous hashing gives it among the live ones ([`super::super::shard`]).
//!
//! One Lease per replica rather than one per shard: there is nothing to
//! contend for (no conflicts, no shard count to choose or resize), a
//! replica's death is visible as its own Lease running out, and the hashing
//! already moves only ~1/N of the clusters when the set changes.
//!
//! No cluster is inspected by two replicas at once as long as clocks agree
//! within the margins below:
//! - a replica stops everything once its own renewal is older than 80 % of
//!   the lease duration, before the others consider it gone (100 %);
//! - a joining replica takes clusters only once its Lease is older than
//!   [`JOIN_GRACE_RENEWALS`] renewals, while the others give up the clusters
//!   it will take as soon as they see it: a replica inspects a cluster only
//!   when it owns it both among all live replicas and among the settled ones.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use super::leader::{is_live, lease_seconds, new_lease, LeaseTiming};
use crate::cluster::ClusterKey;
use crate::controllers::shard::owner;
use crate::log_state::LogState;

/// The label naming a replica Lease's group.
pub const GROUP_LABEL: &str = "etcd-inspector.io/replica-group";
/// Renewals a new replica waits before it takes clusters: the others see
/// it (and let its clusters go) at their next renewal.
const JOIN_GRACE_RENEWALS: u32 = 3;

/// The replicas as this one sees them.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    pub me: String,
    /// Until when this replica's own Lease is surely valid (80 % of the
    /// duration after its last renewal). Checked at every use, so a
    /// renewal loop stuck on a slow API server cannot keep it inspecting.
    pub valid_until: Option<Instant>,
    /// Replicas whose Lease has not run out (this one included).
    pub live: Vec<String>,
    /// Live replicas past their join grace.
    pub settled: Vec<String>,
}

impl Membership {
    /// A single replica owning everything (leader-election mode, tests).
    pub fn alone(me: &str) -> Self {
        Membership {
            me: me.into(),
            valid_until: Some(Instant::now() + Duration::from_secs(100 * 365 * 86_400)),
            live: vec![me.into()],
            settled: vec![me.into()],
        }
    }

    /// Whether this replica's Lease is valid now.
    pub fn active(&self) -> bool {
        self.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether this replica inspects `key` now.
    pub fn owns(&self, key: &ClusterKey) -> bool {
        let me = Some(self.me.as_str());
        self.active()
            && owner(self.live.iter().map(String::as_str), key) == me
            && owner(self.settled.iter().map(String::as_str), key) == me
    }

    /// The same replicas, whatever the validity: what the controllers
    /// react to (a renewal alone must not make them look at every cluster).
    fn same_replicas(&self, other: &Membership) -> bool {
        (self.me.as_str(), &self.live, &self.settled, self.active())
            == (other.me.as_str(), &other.live, &other.settled, other.active())
    }
}

pub struct Replicas {
    api: Api<Lease>,
    group: String,
    identity: String,
    lease_name: String,
    timing: LeaseTiming,
}

impl Replicas {
    pub fn new(client: Client, namespace: &str, group: &str, identity: &str, timing: LeaseTiming) -> Self {
        Replicas {
            api: Api::namespaced(client, namespace),
            group: group.into(),
            identity: identity.into(),
            lease_name: lease_name(group, identity),
            timing,
        }
    }

    /// Renews this replica's Lease and publishes the membership, forever.
    pub async fn run(&self, membership: watch::Sender<Membership>) {
        let mut last_renewal: Option<Instant> = None;
        // A lasting failure is logged when it starts and every few minutes.
        let (mut renewals, mut lists) = (LogState::default(), LogState::default());
        let mut ticks = self.timing.renewal_ticks();
        loop {
            ticks.tick().await;
            let now = Instant::now();
            // Bounds a hung request. A slow answer still counts: the
            // renewal time written is `now`, and validity runs from it.
            let patience = self.timing.duration;
            let renewed = match tokio::time::timeout(patience, self.renew(last_renewal.is_none())).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {patience:?}")),
            };
            match renewed {
                Ok(()) => {
                    last_renewal = Some(now);
                    if let Some(line) = renewals.succeeded() {
                        tracing::info!(lease = %self.lease_name, "replica lease renewed again {line}");
                    }
                }
                Err(e) => {
                    if let Some(line) = renewals.failed(&e) {
                        tracing::warn!(lease = %self.lease_name, "replica lease renewal failed: {line}");
                    }
                }
            }
            if last_renewal.is_some_and(|t| now.duration_since(t) >= self.timing.duration) {
                // Gone from the others' view: the next renewal is a new join.
                last_renewal = None;
            }
            let valid_until = last_renewal.map(|t| t + self.timing.duration.mul_f64(0.8));
            let listed = match tokio::time::timeout(patience, self.list()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {patience:?}")),
            };
            let next = match listed {
                Ok((live, settled)) => {
                    if let Some(line) = lists.succeeded() {
                        tracing::info!("replica leases listed again {line}");
                    }
                    Membership {
                        me: self.identity.clone(),
                        valid_until,
                        live,
                        settled,
                    }
                }
                Err(e) => {
                    if let Some(line) = lists.failed(&e) {
                        tracing::warn!("replica leases not listed: {line}");
                    }
                    Membership {
                        valid_until,
                        ..membership.borrow().clone()
                    }
                }
            };
            membership.send_if_modified(|current| {
                let changed = !current.same_replicas(&next);
                if changed {
                    tracing::info!(
                        identity = %self.identity,
                        active = next.active(),
                        live = ?next.live,
                        settled = next.settled.len(),
                        "replicas changed"
                    );
                }
                *current = next;
                changed
            });
        }
    }

    /// Deletes this replica's Lease: the others take its clusters at once.
    pub async fn release(&self) {
        let _ = self.api.delete(&self.lease_name, &DeleteParams::default()).await;
    }

    /// `joining`: this process has not renewed yet (or lost its Lease).
    async fn renew(&self, joining: bool) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let seconds = lease_seconds(&self.timing);
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let labels = [(GROUP_LABEL.to_string(), self.group.clone())].into();
            let lease = new_lease(&self.lease_name, &self.identity, seconds, now, Some(labels));
            return self.api.create(&PostParams::default(), &lease).await.map(|_| ());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        // Back after its Lease ran out (a restart with the same identity):
        // a join like any other, with its grace, not a continuation. A
        // late renewal of a Lease this process holds keeps its join time,
        // or a slow API server would make replicas rejoin over and over.
        let expired = !is_live(spec, now);
        if (joining && expired) || spec.holder_identity.as_deref() != Some(&self.identity) {
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        self.api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// (live, settled) identities, sorted.
    async fn list(&self) -> Result<(Vec<String>, Vec<String>), kube::Error> {
        let now = Timestamp::now();
        let grace = self.timing.renew_every * JOIN_GRACE_RENEWALS;
        let leases = self
            .api
            .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.group)))
            .await?;
        let (mut live, mut settled) = (Vec::new(), Vec::new());
        for lease in leases {
            let Some(spec) = lease.spec else { continue };
            let Some(identity) = spec.holder_identity.clone().filter(|i| !i.is_empty()) else {
                continue;
            };
            if !is_live(&spec, now) {
                continue;
            }
            let joined = spec.acquire_time.as_ref().map(|MicroTime(t)| *t).unwrap_or(now);
            if now.duration_since(joined).as_secs_f64() >= grace.as_secs_f64() {
                settled.push(identity.clone());
            }
            live.push(identity);
        }
        live.sort();
        settled.sort();
        Ok((live, settled))
    }
}

/// A Lease name (a DNS subdomain) for a replica of `group`.
fn lease_name(group: &str, identity: &str) -> String {
    let clean: String = identity
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!("{group}-replica-{}", clean.trim_matches('-'));
    if name.len() <= 253 {
        return name;
    }
    // Long identities: keep the name unique through a hash of the whole.
    format!(
        "{group}-replica-{}",
        &crate::runtime::sha256_hex(identity.as_bytes())[..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> ClusterKey {
        ClusterKey {
            namespace: "default".into(),
            name: format!("c{i}"),
        }
    }

    #[test]
    fn a_joining_replica_takes_nothing_until_settled_and_the_others_let_go_first() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let old = |me: &str| Membership {
            me: me.into(),
            valid_until: Some(Instant::now() + Duration::from_secs(60)),
            live: names(&["a", "b", "c"]),
            settled: names(&["a", "b"]),
        };
        let owners = |ms: &[Membership], k: &ClusterKey| ms.iter().filter(|m| m.owns(k)).count();
        let joining = [old("a"), old("b"), old("c")];
        let settled: Vec<Membership> = ["a", "b", "c"]
            .iter()
            .map(|me| Membership {
                settled: names(&["a", "b", "c"]),
                ..old(me)
            })
            .collect();
        let mut gap = 0;
        for i in 0..600 {
            let k = key(i);
            // While c joins nobody has two owners; c's future clusters wait.
            assert!(owners(&joining, &k) <= 1);
            gap += usize::from(owners(&joining, &k) == 0);
            assert_eq!(owners(&settled, &k), 1, "settled: exactly one owner");
        }
        assert!((120..280).contains(&gap), "about a third wait for c: {gap}");
        let expired = Membership {
            valid_until: Some(Instant::now() - Duration::from_millis(1)),
            ..Membership::alone("a")
        };
        assert!(!expired.owns(&key(1)), "a replica past its validity inspects nothing");
        let never = Membership {
            valid_until: None,
            ..Membership::alone("a")
        };
        assert!(!never.owns(&key(1)), "nor one that never renewed");
    }

    #[test]
    fn lease_names_are_dns_subdomains() {
        assert_eq!(
            lease_name("etcd-inspector", "Pod_7.x"),
            "etcd-inspector-replica-pod-7-x"
        );
        assert!(lease_name("g", &"x".repeat(400)).len() < 100);
    }
}

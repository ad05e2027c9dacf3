//! Lease leader election, the client-go algorithm: read the Lease; take it
//! when it is free, ours or expired, by replacing it with its
//! resourceVersion as a precondition (a conflict means someone else won).
//!
//! Written here rather than taken from kube-lease-manager (which fits kube
//! 5): that crate locks through server-side-apply field ownership, while
//! this needs only resourceVersion preconditions, which every API server —
//! and our test API server — implements the same way.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// How long a lease is valid without renewal, and how often it is renewed.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// When renewals start: every `renew_every` whatever the API server's
    /// latency. A sleep after each renewal stretched the period by the
    /// time of its calls, on a starved machine past 80 % of the lease, so
    /// a replica kept dropping out of its own set.
    pub fn renewal_ticks(&self) -> tokio::time::Interval {
        let mut ticks = tokio::time::interval(self.renew_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    }
}

impl Default for LeaseTiming {
    fn default() -> Self {
        // client-go's defaults are 15 s / 2 s retry; the seed used 60 s.
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
        }
    }

    /// Runs forever, publishing whether this process leads.
    pub async fn run(&self, leading: watch::Sender<bool>) {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        let mut ticks = self.timing.renewal_ticks();
        loop {
            ticks.tick().await;
            let now = tokio::time::Instant::now();
            let held = match self.try_acquire_or_renew().await {
                Ok(held) => {
                    if held {
                        last_renewal = Some(now);
                    }
                    held
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, "lease renewal failed: {e}");
                    // Keep leading only while the lease we hold is surely valid.
                    last_renewal.is_some_and(|t| now.duration_since(t) < self.timing.duration.mul_f64(0.8))
                }
            };
            if !held {
                last_renewal = None;
            }
            if *leading.borrow() != held {
                tracing::info!(lease = %self.name, identity = %self.identity, leading = held, "leadership changed");
                let _ = leading.send(held);
            }
        }
    }

    /// Gives the lease up so another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = lease_seconds(&self.timing);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = new_lease(&self.name, &self.identity, seconds, now, None);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(&self.identity);
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = !is_live(spec, now);
        if !(ours || free || expired) {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // `lease` carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A Lease's `leaseDurationSeconds` for `timing` (at least 1).
pub(super) fn lease_seconds(timing: &LeaseTiming) -> i32 {
    timing.duration.as_secs().max(1) as i32
}

/// A Lease held by `identity` from `now`, as first created.
pub(super) fn new_lease(
    name: &str,
    identity: &str,
    seconds: i32,
    now: Timestamp,
    labels: Option<std::collections::BTreeMap<String, String>>,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels,
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

/// Whether a Lease was renewed within its duration at `now`.
pub(super) fn is_live(spec: &LeaseSpec, now: Timestamp) -> bool {
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(d)) => now.duration_since(*renewed).as_secs_f64() <= f64::from(d),
        _ => false,
    }
}

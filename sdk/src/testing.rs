//! Test a plugin's logic natively under `cargo test`: no wasm toolchain, no
//! etcd. Describe a cluster — members, their Status and /health answers,
//! alarms, keys — run [`Plugin::inspect`] or [`Plugin::on_events`] against
//! it, and assert the samples. The samples are checked against the
//! plugin's own `describe()` the way the host checks them, so a sample the
//! host would reject fails the test with the host's reason.
//!
//! On native targets every [`crate::etcd`], [`crate::state`] and
//! [`crate::log`] call goes to the cluster being tested.
//!
//! ```
//! use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};
//! # use etcd_inspector_sdk::{etcd, gauge, ClusterSnapshot, Plugin, PluginInfo, Sample};
//! # struct Members;
//! # impl Plugin for Members {
//! #     fn describe() -> PluginInfo { PluginInfo::new("members", "0.1.0").metric(gauge("members_up", "h", &[])) }
//! #     fn inspect(s: ClusterSnapshot) -> Result<Vec<Sample>, String> {
//! #         let up = s.members.iter().filter(|m| etcd::status(&m.endpoint).is_ok()).count();
//! #         Ok(vec![Sample::new("members_up", up as f64)])
//! #     }
//! # }
//! let cluster = FakeCluster::new("prod")
//!     .member(FakeMember::new(1, "m0").leader())
//!     .member(FakeMember::new(2, "m1"))
//!     .member(FakeMember::new(3, "m2").unreachable());
//! let samples = cluster.inspect::<Members>().unwrap();
//! assert_eq!(samples.value("members_up", &[]), Some(2.0));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::{
    Alarm, AlarmType, Certificate, ClusterSnapshot, DowngradeInfo, EtcdError, KeyInfo, KeyRange, KvHash, LeaseInfo,
    Member, MemberHealth, MemberStatus, MemberStatusDetails, MetricKind, Plugin, PresentedCertificates, Sample,
    WatchEvent,
};

/// A member of a [`FakeCluster`] and what it answers.
#[derive(Clone, Debug)]
pub struct FakeMember {
    member: Member,
    status: Result<MemberStatus, EtcdError>,
    health: Result<MemberHealth, EtcdError>,
    hash: u32,
    details: MemberStatusDetails,
    /// Microseconds of a serializable and of a linearizable read.
    latency: (u64, u64),
    /// Ids of the members this one lists (`None`: the cluster's).
    sees: Option<Vec<u64>>,
    /// Knows no leader, whatever the others say.
    leaderless: bool,
    certificates: PresentedCertificates,
    /// Calls this member fails (`None`: every call addressed to it).
    failures: Vec<(Option<Call>, EtcdError)>,
    /// Its own compaction, where it differs from the cluster's.
    compact_revision: Option<u64>,
}

/// An etcd call of the contract, named to make it fail in a [`FakeMember`]
/// ([`FakeMember::fails`]) or a [`FakeCluster`] ([`FakeCluster::fails`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// [`crate::etcd::member_list`].
    MemberList,
    /// [`crate::etcd::status`].
    Status,
    /// [`crate::etcd::status_details`].
    StatusDetails,
    /// [`crate::etcd::health`].
    Health,
    /// [`crate::etcd::alarm_list`].
    AlarmList,
    /// [`crate::etcd::count`].
    Count,
    /// [`crate::etcd::keys`].
    Keys,
    /// [`crate::etcd::hash_kv`].
    HashKv,
    /// [`crate::etcd::read_latency`].
    ReadLatency,
    /// [`crate::etcd::member_list_at`].
    MemberListAt,
    /// [`crate::etcd::server_certificates`].
    ServerCertificates,
    /// [`crate::etcd::lease_ids`].
    LeaseIds,
    /// [`crate::etcd::lease_time_to_live`].
    LeaseTimeToLive,
}

impl FakeMember {
    /// A healthy follower at `https://10.0.0.<id>:2379`, version 3.5.17.
    pub fn new(id: u64, name: &str) -> Self {
        let endpoint = format!("https://10.0.0.{id}:2379");
        let member = Member {
            id,
            name: name.into(),
            client_urls: vec![endpoint.clone()],
            endpoint,
            host: format!("10.0.0.{id}"),
            is_learner: false,
        };
        let status = MemberStatus {
            member_id: id,
            version: "3.5.17".into(),
            db_size: 20 << 20,
            db_size_in_use: 18 << 20,
            leader: 0,
            raft_index: 1000,
            raft_term: 2,
            raft_applied_index: 1000,
            revision: 500,
            is_learner: false,
            errors: Vec::new(),
        };
        FakeMember {
            member,
            status: Ok(status),
            health: Ok(MemberHealth {
                healthy: true,
                reason: String::new(),
            }),
            hash: 7,
            latency: (300, 900),
            sees: None,
            leaderless: false,
            certificates: PresentedCertificates {
                chain: Vec::new(),
                verify_error: None,
            },
            failures: Vec::new(),
            compact_revision: None,
            details: MemberStatusDetails {
                member_id: id,
                db_size_quota: None,
                storage_version: None,
                downgrade: None,
            },
        }
    }

    /// This member leads (every member's Status names it as leader).
    pub fn leader(mut self) -> Self {
        if let Ok(s) = &mut self.status {
            s.leader = self.member.id;
        }
        self
    }

    /// Answers Status with this etcd version.
    pub fn version(mut self, version: &str) -> Self {
        if let Ok(s) = &mut self.status {
            s.version = version.into();
        }
        self
    }

    /// Database size and size in use, in bytes.
    pub fn db(mut self, size: u64, in_use: u64) -> Self {
        if let Ok(s) = &mut self.status {
            s.db_size = size;
            s.db_size_in_use = in_use;
        }
        self
    }

    /// Reports the Status fields of etcd 3.6+: this quota in bytes, the
    /// storage version and no downgrade (before that, `status_details`
    /// answers every field `None`).
    pub fn reports_quota(mut self, quota: u64, storage_version: &str) -> Self {
        self.details.db_size_quota = Some(quota);
        self.details.storage_version = Some(storage_version.into());
        self.details.downgrade = Some(DowngradeInfo {
            enabled: false,
            target_version: String::new(),
        });
        self
    }

    /// How long its serializable and linearizable reads take, in microseconds.
    pub fn latency(mut self, serializable_us: u64, linearizable_us: u64) -> Self {
        self.latency = (serializable_us, linearizable_us);
        self
    }

    /// Revision and raft indexes this member reports.
    pub fn progress(mut self, revision: u64, raft_index: u64, applied: u64) -> Self {
        if let Ok(s) = &mut self.status {
            s.revision = revision;
            s.raft_index = raft_index;
            s.raft_applied_index = applied;
        }
        self
    }

    /// The HashKV this member answers.
    pub fn hash(mut self, hash: u32) -> Self {
        self.hash = hash;
        self
    }

    /// /health answers `{"health":"false"}` with `reason`.
    pub fn unhealthy(mut self, reason: &str) -> Self {
        self.health = Ok(MemberHealth {
            healthy: false,
            reason: reason.into(),
        });
        self
    }

    /// A raft learner (in the member list and in its own Status). Like
    /// etcd's, it refuses HashKV and linearizable reads.
    pub fn learner(mut self) -> Self {
        self.member.is_learner = true;
        if let Ok(s) = &mut self.status {
            s.is_learner = true;
        }
        self
    }

    /// Its own member list (`member_list_at`) holds only these member ids,
    /// as a member that missed a membership change would answer.
    pub fn sees_members(mut self, ids: &[u64]) -> Self {
        self.sees = Some(ids.to_vec());
        self
    }

    /// Knows no leader (Status `leader` 0), whatever the others say.
    pub fn without_leader(mut self) -> Self {
        self.leaderless = true;
        if let Ok(s) = &mut self.status {
            s.leader = 0;
        }
        self
    }

    /// The raft term this member reports.
    pub fn term(mut self, term: u64) -> Self {
        if let Ok(s) = &mut self.status {
            s.raft_term = term;
        }
        self
    }

    /// Reports the storage version and a downgrade to `target` (etcd 3.6+;
    /// an empty `target`: no downgrade in progress).
    pub fn storage(mut self, storage_version: &str, downgrade_target: &str) -> Self {
        self.details.storage_version = Some(storage_version.into());
        self.details.downgrade = Some(DowngradeInfo {
            enabled: !downgrade_target.is_empty(),
            target_version: downgrade_target.into(),
        });
        self
    }

    /// Presents this certificate chain to clients (leaf first);
    /// `verify_error` is the host's verdict (`None`: trusted).
    pub fn certificates(mut self, chain: Vec<Certificate>, verify_error: Option<&str>) -> Self {
        self.certificates = PresentedCertificates {
            chain,
            verify_error: verify_error.map(str::to_string),
        };
        self
    }

    /// `call` addressed to this member fails with `error` (any variant:
    /// `Compacted`, `PermissionDenied`, `UnknownEndpoint`, ...); its other
    /// calls answer as before.
    pub fn fails(mut self, call: Call, error: EtcdError) -> Self {
        self.failures.push((Some(call), error));
        self
    }

    /// Every call addressed to this member fails with `error`.
    pub fn fails_every_call(mut self, error: EtcdError) -> Self {
        self.failures.push((None, error));
        self
    }

    /// This member's history is compacted at `revision`, whatever the
    /// cluster's (a member that has not applied the latest compaction, or
    /// one that applied a newer one): its `count` and `hash_kv` go by it.
    pub fn compacted(mut self, revision: u64) -> Self {
        self.compact_revision = Some(revision);
        self
    }

    /// Every call to this member times out.
    pub fn unreachable(mut self) -> Self {
        let e = EtcdError::Timeout(format!("{}: no answer", self.member.endpoint));
        self.status = Err(e.clone());
        self.health = Err(e);
        self
    }
}

/// A certificate for `subject` (as `CN=subject`) issued by `CN=test-ca`,
/// valid from `not_before` to `not_after` (Unix seconds), naming
/// `dns_names` and `ip_addresses`. Change its public fields for the rest.
pub fn certificate(
    subject: &str,
    not_before: i64,
    not_after: i64,
    dns_names: &[&str],
    ip_addresses: &[&str],
) -> Certificate {
    Certificate {
        subject: format!("CN={subject}"),
        issuer: "CN=test-ca".into(),
        serial: "01".into(),
        dns_names: dns_names.iter().map(|s| s.to_string()).collect(),
        ip_addresses: ip_addresses.iter().map(|s| s.to_string()).collect(),
        not_before,
        not_after,
        is_ca: false,
    }
}

/// A described cluster a plugin can be run against natively.
#[derive(Clone, Debug, Default)]
pub struct FakeCluster {
    name: String,
    members: Vec<FakeMember>,
    alarms: Vec<Alarm>,
    keys: BTreeMap<Vec<u8>, KeyInfo>,
    params: Vec<(String, String)>,
    state: Option<Vec<u8>>,
    logs: Vec<String>,
    compact_revision: u64,
    leases: BTreeMap<i64, LeaseInfo>,
    client_certificates: Vec<Certificate>,
    failures: Vec<(Call, EtcdError)>,
}

thread_local! {
    static CURRENT: RefCell<Option<FakeCluster>> = const { RefCell::new(None) };
}

impl FakeCluster {
    /// An empty cluster named `name` (the `clusterName` label).
    pub fn new(name: &str) -> Self {
        FakeCluster {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a member.
    pub fn member(mut self, member: FakeMember) -> Self {
        self.members.push(member);
        self
    }

    /// Raises an alarm (`member_id` 0: the whole cluster). Members' Status
    /// errors list it, as etcd's do.
    pub fn alarm(mut self, member_id: u64, alarm: AlarmType) -> Self {
        self.alarms.push(Alarm { member_id, alarm });
        self
    }

    /// Adds a key (created and last modified at `revision`).
    pub fn key(mut self, key: &str, revision: u64) -> Self {
        let info = KeyInfo {
            key: key.as_bytes().to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        };
        self.keys.insert(key.as_bytes().to_vec(), info);
        self
    }

    /// Compacts the history at `revision`: reads below it fail with
    /// [`EtcdError::Compacted`], and HashKV at exactly `revision` is
    /// answered from the hash etcd 3.5+ keeps of its compactions (members
    /// whose version starts with `3.4` refuse it, as etcd 3.4 does).
    pub fn compacted(mut self, revision: u64) -> Self {
        self.compact_revision = revision;
        self
    }

    /// Grants a lease with `ttl` seconds left of `granted_ttl`, with `keys`
    /// keys attached.
    pub fn lease(mut self, id: i64, ttl: i64, granted_ttl: i64, keys: u32) -> Self {
        self.leases.insert(
            id,
            LeaseInfo {
                id,
                ttl,
                granted_ttl,
                keys,
            },
        );
        self
    }

    /// `call` fails with `error` whichever member it is addressed to (the
    /// way to fail the calls that name no member: `MemberList`,
    /// `AlarmList`, `Keys`, `LeaseIds`, `LeaseTimeToLive`).
    pub fn fails(mut self, call: Call, error: EtcdError) -> Self {
        self.failures.push((call, error));
        self
    }

    /// The client certificate chain the host presents (leaf first).
    pub fn client_certificates(mut self, chain: Vec<Certificate>) -> Self {
        self.client_certificates = chain;
        self
    }

    /// Sets a parameter (a cluster annotation the host passes on).
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// What `state::load()` returns.
    pub fn state(mut self, bytes: &[u8]) -> Self {
        self.state = Some(bytes.to_vec());
        self
    }

    /// The snapshot the host would pass.
    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            name: self.name.clone(),
            namespace: "default".into(),
            members: self.members.iter().map(|m| m.member.clone()).collect(),
            params: self.params.clone(),
        }
    }

    /// Runs `P::inspect` against this cluster and checks the samples as the
    /// host would.
    pub fn inspect<P: Plugin>(&self) -> Result<Samples, String> {
        let snapshot = self.snapshot();
        let (result, _) = self.with_installed(|| P::inspect(snapshot));
        result.map(|s| Samples(check::<P>(s)))
    }

    /// Delivers `events` as a 0.1.3 host does (packed, to
    /// [`Plugin::on_event_batch`], which calls `on_events` unless the
    /// plugin overrides it) and checks the samples.
    pub fn on_events<P: Plugin>(&self, events: Vec<WatchEvent>) -> Result<Samples, String> {
        let snapshot = self.snapshot();
        let batch = crate::EventBatch::pack(&events);
        let (result, _) = self.with_installed(|| P::on_event_batch(snapshot, batch));
        result.map(|s| Samples(check::<P>(s)))
    }

    /// Delivers `events` unpacked to [`Plugin::on_events`], as hosts before
    /// 0.1.3 do, and checks the samples.
    pub fn on_unpacked_events<P: Plugin>(&self, events: Vec<WatchEvent>) -> Result<Samples, String> {
        let snapshot = self.snapshot();
        let (result, _) = self.with_installed(|| P::on_events(snapshot, events));
        result.map(|s| Samples(check::<P>(s)))
    }

    /// What the plugin stored with `state::store` in its last run, and its log.
    pub fn run_state<P: Plugin>(&self) -> (Option<Vec<u8>>, Vec<String>) {
        let snapshot = self.snapshot();
        let (_, after) = self.with_installed(|| P::inspect(snapshot));
        (after.state, after.logs)
    }

    fn with_installed<T>(&self, run: impl FnOnce() -> T) -> (T, FakeCluster) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let out = run();
        let after = CURRENT.with(|c| c.borrow_mut().take()).expect("installed");
        (out, after)
    }
}

fn check<P: Plugin>(samples: Vec<Sample>) -> Vec<Sample> {
    let info = P::describe();
    for s in &samples {
        let Some(desc) = info.metrics.iter().find(|m| m.name == s.metric) else {
            panic!(
                "sample of {:?}: not declared in describe(); the host would reject the whole round",
                s.metric
            );
        };
        let mut names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        let mut declared: Vec<&str> = desc.labels.iter().map(String::as_str).collect();
        declared.sort();
        assert!(
            names == declared,
            "sample of {:?}: labels {names:?} sent, {declared:?} declared in describe() \
             (clusterName is added by the host); the host would reject the whole round",
            s.metric
        );
        assert!(
            s.value.is_finite(),
            "sample of {:?}: value {} is not finite",
            s.metric,
            s.value
        );
        if desc.kind == MetricKind::Counter {
            assert!(s.value >= 0.0, "sample of {:?}: a counter cannot decrease", s.metric);
        }
    }
    samples
}

/// Samples a plugin returned, with lookups for assertions.
#[derive(Clone, Debug)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The value of the one sample of `metric` with exactly these labels.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        want.sort();
        self.0
            .iter()
            .find(|s| {
                let mut have = s.labels.clone();
                have.sort();
                s.metric == metric && have == want
            })
            .map(|s| s.value)
    }

    /// How many samples of `metric` there are.
    pub fn count(&self, metric: &str) -> usize {
        self.0.iter().filter(|s| s.metric == metric).count()
    }
}

fn with<T>(f: impl FnOnce(&mut FakeCluster) -> T) -> T {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let cluster = c
            .as_mut()
            .expect("no FakeCluster is installed: call the plugin through FakeCluster::inspect");
        f(cluster)
    })
}

fn member(c: &FakeCluster, endpoint: &str) -> Result<FakeMember, EtcdError> {
    c.members
        .iter()
        .find(|m| m.member.endpoint == endpoint)
        .cloned()
        .ok_or_else(|| EtcdError::UnknownEndpoint(endpoint.into()))
}

/// The failure set up for `call` (to `endpoint`, if it names a member).
fn failure(c: &FakeCluster, call: Call, endpoint: Option<&str>) -> Result<(), EtcdError> {
    if let Some((_, e)) = c.failures.iter().find(|(k, _)| *k == call) {
        return Err(e.clone());
    }
    let Some(m) = endpoint.and_then(|ep| c.members.iter().find(|m| m.member.endpoint == ep)) else {
        return Ok(());
    };
    match m.failures.iter().find(|(k, _)| k.is_none_or(|k| k == call)) {
        Some((_, e)) => Err(e.clone()),
        None => Ok(()),
    }
}

/// Native stand-ins for the host's imports (same signatures).
pub(crate) mod fake {
    pub mod etcd {
        use super::super::*;

        pub fn member_list() -> Result<Vec<Member>, EtcdError> {
            with(|c| {
                failure(c, Call::MemberList, None)?;
                Ok(c.members.iter().map(|m| m.member.clone()).collect())
            })
        }

        pub fn status(endpoint: &str) -> Result<MemberStatus, EtcdError> {
            with(|c| {
                failure(c, Call::Status, Some(endpoint))?;
                let mut status = member(c, endpoint)?.status?;
                for a in &c.alarms {
                    let kind = match a.alarm {
                        AlarmType::Nospace => "NOSPACE",
                        AlarmType::Corrupt => "CORRUPT",
                    };
                    status.errors.push(format!("memberID:{} alarm:{kind} ", a.member_id));
                }
                let leader = c
                    .members
                    .iter()
                    .find_map(|m| m.status.as_ref().ok().map(|s| s.leader).filter(|l| *l != 0));
                if let (Some(leader), false) = (leader, member(c, endpoint)?.leaderless) {
                    status.leader = leader;
                }
                Ok(status)
            })
        }

        pub fn status_details(endpoint: &str) -> Result<MemberStatusDetails, EtcdError> {
            with(|c| {
                failure(c, Call::StatusDetails, Some(endpoint))?;
                let m = member(c, endpoint)?;
                m.status?;
                Ok(m.details)
            })
        }

        pub fn read_latency(endpoint: &str, serializable: bool) -> Result<u64, EtcdError> {
            with(|c| {
                failure(c, Call::ReadLatency, Some(endpoint))?;
                let m = member(c, endpoint)?;
                m.status.as_ref().map_err(Clone::clone)?;
                if !serializable {
                    learners_refuse(&m)?;
                }
                Ok(if serializable { m.latency.0 } else { m.latency.1 })
            })
        }

        /// A learner serves only Status and serializable reads, as etcd's do.
        fn learners_refuse(m: &FakeMember) -> Result<(), EtcdError> {
            if m.member.is_learner {
                return Err(EtcdError::Other("etcdserver: rpc not supported for learner".into()));
            }
            Ok(())
        }

        pub fn member_list_at(endpoint: &str) -> Result<Vec<Member>, EtcdError> {
            with(|c| {
                failure(c, Call::MemberListAt, Some(endpoint))?;
                let m = member(c, endpoint)?;
                m.status?;
                Ok(c.members
                    .iter()
                    .filter(|other| m.sees.as_ref().is_none_or(|ids| ids.contains(&other.member.id)))
                    .map(|other| other.member.clone())
                    .collect())
            })
        }

        pub fn server_certificates(endpoint: &str) -> Result<PresentedCertificates, EtcdError> {
            with(|c| {
                failure(c, Call::ServerCertificates, Some(endpoint))?;
                let m = member(c, endpoint)?;
                m.status?;
                Ok(m.certificates)
            })
        }

        pub fn client_certificates() -> Vec<Certificate> {
            with(|c| c.client_certificates.clone())
        }

        pub fn lease_ids() -> Result<Vec<i64>, EtcdError> {
            with(|c| {
                failure(c, Call::LeaseIds, None)?;
                Ok(c.leases.keys().copied().collect())
            })
        }

        pub fn lease_time_to_live(id: i64, with_keys: bool) -> Result<LeaseInfo, EtcdError> {
            with(|c| {
                failure(c, Call::LeaseTimeToLive, None)?;
                let mut lease = c.leases.get(&id).cloned().unwrap_or(LeaseInfo {
                    id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: 0,
                });
                if !with_keys {
                    lease.keys = 0;
                }
                Ok(lease)
            })
        }

        pub fn alarm_list() -> Result<Vec<Alarm>, EtcdError> {
            with(|c| {
                failure(c, Call::AlarmList, None)?;
                Ok(c.alarms.clone())
            })
        }

        pub fn health(endpoint: &str) -> Result<MemberHealth, EtcdError> {
            with(|c| {
                failure(c, Call::Health, Some(endpoint))?;
                let health = member(c, endpoint)?.health?;
                Ok(if c.alarms.is_empty() {
                    health
                } else {
                    MemberHealth {
                        healthy: false,
                        reason: "ALARM ACTIVE".into(),
                    }
                })
            })
        }

        /// Reads at a revision the history no longer has.
        fn compacted(compact_revision: u64, revision: u64) -> Result<(), EtcdError> {
            if revision != 0 && revision < compact_revision {
                return Err(EtcdError::Compacted(compact_revision));
            }
            Ok(())
        }

        fn in_range(range: &KeyRange, key: &[u8]) -> bool {
            key >= range.start.as_slice() && (range.end.is_empty() || key < range.end.as_slice())
        }

        pub fn count(
            endpoint: Option<&str>,
            range: &KeyRange,
            revision: u64,
            _serializable: bool,
        ) -> Result<RangeCount, EtcdError> {
            with(|c| {
                failure(c, Call::Count, endpoint)?;
                let mut compact = c.compact_revision;
                if let Some(ep) = endpoint {
                    let m = member(c, ep)?;
                    m.status?;
                    compact = m.compact_revision.unwrap_or(compact);
                }
                compacted(compact, revision)?;
                let count = c
                    .keys
                    .values()
                    .filter(|k| in_range(range, &k.key) && (revision == 0 || k.create_revision <= revision))
                    .count();
                Ok(RangeCount {
                    count: count as u64,
                    revision,
                })
            })
        }

        pub fn keys(range: &KeyRange, limit: u32, revision: u64) -> Result<Vec<KeyInfo>, EtcdError> {
            with(|c| {
                failure(c, Call::Keys, None)?;
                compacted(c.compact_revision, revision)?;
                Ok(c.keys
                    .values()
                    .filter(|k| in_range(range, &k.key) && (revision == 0 || k.create_revision <= revision))
                    .take(limit as usize)
                    .cloned()
                    .collect())
            })
        }

        pub fn hash_kv(endpoint: &str, revision: u64) -> Result<KvHash, EtcdError> {
            with(|c| {
                failure(c, Call::HashKv, Some(endpoint))?;
                let m = member(c, endpoint)?;
                learners_refuse(&m)?;
                let status = m.status.clone()?;
                let compact = m.compact_revision.unwrap_or(c.compact_revision);
                let cached = compact > 0 && revision == compact && !status.version.starts_with("3.4");
                if !cached && revision <= compact {
                    return Err(EtcdError::Compacted(compact));
                }
                Ok(KvHash {
                    member_id: m.member.id,
                    hash: m.hash,
                    compact_revision: compact,
                    hash_revision: if revision == 0 { status.revision } else { revision },
                })
            })
        }

        use crate::RangeCount;
    }

    pub mod state {
        use super::super::with;

        pub fn load() -> Option<Vec<u8>> {
            with(|c| c.state.clone())
        }

        pub fn store(value: &[u8]) -> Result<(), String> {
            if value.len() > 64 * 1024 {
                return Err(format!(
                    "{} bytes is more than the 65536 a plugin may keep",
                    value.len()
                ));
            }
            with(|c| c.state = Some(value.to_vec()));
            Ok(())
        }
    }

    pub mod log {
        use super::super::with;

        pub fn log(level: &str, message: &str) {
            with(|c| c.logs.push(format!("{level}: {message}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gauge, PluginInfo};

    struct WrongLabels;

    impl Plugin for WrongLabels {
        fn describe() -> PluginInfo {
            PluginInfo::new("wrong", "0.1.0").metric(gauge("wrong_total", "h", &["member"]))
        }

        fn inspect(_: ClusterSnapshot) -> Result<Vec<Sample>, String> {
            Ok(vec![Sample::new("wrong_total", 1.0).label("endpoint", "x")])
        }
    }

    #[test]
    #[should_panic(
        expected = r#"sample of "wrong_total": labels ["endpoint"] sent, ["member"] declared in describe()"#
    )]
    fn a_label_mismatch_names_what_was_sent_and_what_is_declared() {
        let _ = FakeCluster::new("prod").inspect::<WrongLabels>();
    }

    #[test]
    fn a_learner_refuses_what_etcd_learners_refuse() {
        let cluster = FakeCluster::new("prod").member(FakeMember::new(1, "m0").learner());
        let (answers, _) = cluster.with_installed(|| {
            (
                fake::etcd::hash_kv("https://10.0.0.1:2379", 0).is_err(),
                fake::etcd::read_latency("https://10.0.0.1:2379", false).is_err(),
                fake::etcd::read_latency("https://10.0.0.1:2379", true).is_ok(),
                fake::etcd::status("https://10.0.0.1:2379").is_ok_and(|s| s.is_learner),
            )
        });
        assert_eq!(answers, (true, true, true, true));
    }

    /// Every record, enum and variant of the contract, and each of their
    /// fields and cases, carries a doc comment: wit-bindgen turns them into
    /// the rustdoc of the types a plugin sees.
    #[test]
    fn every_type_and_field_of_the_contract_is_documented() {
        let wit = include_str!("../wit/plugin.wit");
        let lines: Vec<&str> = wit.lines().map(str::trim).collect();
        let mut undocumented = Vec::new();
        for (i, line) in lines.iter().enumerate().skip(1) {
            let declares = ["record ", "enum ", "variant "].iter().any(|k| line.starts_with(k));
            let item = line.ends_with(',')
                && line.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && !line.starts_with("use ");
            if (declares || item) && !lines[i - 1].starts_with("///") {
                undocumented.push(format!("line {}: {line}", i + 1));
            }
        }
        assert!(
            undocumented.is_empty(),
            "undocumented in plugin.wit:\n{}",
            undocumented.join("\n")
        );
    }

    #[test]
    fn every_error_variant_can_be_set_per_member_and_call() {
        let errors = [
            EtcdError::Timeout("slow".into()),
            EtcdError::Unavailable("down".into()),
            EtcdError::Compacted(90),
            EtcdError::FutureRevision,
            EtcdError::PermissionDenied("no".into()),
            EtcdError::UnknownEndpoint("who".into()),
            EtcdError::Other("else".into()),
        ];
        for error in errors {
            let cluster = FakeCluster::new("prod")
                .member(FakeMember::new(1, "m0").fails(Call::HashKv, error.clone()))
                .member(FakeMember::new(2, "m1").fails_every_call(error.clone()))
                .fails(Call::AlarmList, error.clone());
            let (answers, _) = cluster.with_installed(|| {
                (
                    fake::etcd::hash_kv("https://10.0.0.1:2379", 0).err(),
                    fake::etcd::status("https://10.0.0.1:2379").is_ok(),
                    fake::etcd::health("https://10.0.0.2:2379").err(),
                    fake::etcd::count(Some("https://10.0.0.2:2379"), &KeyRange::prefix(b"/"), 0, true).err(),
                    fake::etcd::alarm_list().err(),
                    fake::etcd::member_list().is_ok(),
                )
            });
            let e = Some(format!("{error:?}"));
            let (hash, status, health, count, alarms, members) = answers;
            let shown = |r: Option<EtcdError>| r.map(|e| format!("{e:?}"));
            assert_eq!(
                (shown(hash), status, shown(health), shown(count), shown(alarms), members),
                (e.clone(), true, e.clone(), e.clone(), e, true)
            );
        }
    }

    #[test]
    fn a_member_compacted_apart_from_the_cluster_answers_by_its_own_compaction() {
        let cluster = FakeCluster::new("prod")
            .compacted(100)
            .key("/a", 150)
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, "m1").compacted(50));
        let (answers, _) = cluster.with_installed(|| {
            (
                fake::etcd::count(Some("https://10.0.0.1:2379"), &KeyRange::prefix(b"/"), 80, true).err(),
                fake::etcd::count(Some("https://10.0.0.2:2379"), &KeyRange::prefix(b"/"), 80, true).map(|c| c.count),
                fake::etcd::hash_kv("https://10.0.0.2:2379", 50).map(|h| h.compact_revision),
                fake::etcd::hash_kv("https://10.0.0.1:2379", 50).err(),
            )
        });
        let (before_own, own_count, own_hash, before_cluster) = answers;
        assert!(matches!(before_own, Some(EtcdError::Compacted(100))), "{before_own:?}");
        assert_eq!(own_count.ok(), Some(0));
        assert_eq!(own_hash.ok(), Some(50));
        assert!(
            matches!(before_cluster, Some(EtcdError::Compacted(100))),
            "{before_cluster:?}"
        );
    }

    #[test]
    fn a_packed_batch_reads_back_the_events_it_was_made_of() {
        let events = vec![
            WatchEvent {
                kind: crate::EventKind::Put,
                key: b"/registry/pods/a".to_vec(),
                create_revision: 5,
                mod_revision: 5,
            },
            WatchEvent {
                kind: crate::EventKind::Delete,
                key: Vec::new(),
                create_revision: 0,
                mod_revision: 6,
            },
            WatchEvent {
                kind: crate::EventKind::Put,
                key: b"/registry/pods/b".to_vec(),
                create_revision: 2,
                mod_revision: 7,
            },
        ];
        let batch = crate::EventBatch::pack(&events);
        assert_eq!(batch.len(), 3);
        let back: Vec<WatchEvent> = batch.iter().map(crate::EventRef::to_event).collect();
        assert_eq!(format!("{back:?}"), format!("{events:?}"));
        let malformed = crate::PackedEvents {
            keys: b"abc".to_vec(),
            key_ends: vec![4],
            kinds: vec![0],
            revisions: vec![1, 1],
        };
        assert!(crate::EventBatch::new(malformed).is_err(), "a key past the buffer");
    }

    #[test]
    fn a_member_is_labelled_by_name_or_else_by_endpoint() {
        let snapshot = FakeCluster::new("prod")
            .member(FakeMember::new(1, "m0"))
            .member(FakeMember::new(2, ""))
            .snapshot();
        assert_eq!(snapshot.member_label(&snapshot.members[0]), "m0");
        assert_eq!(snapshot.member_label(&snapshot.members[1]), "10.0.0.2");
    }
}

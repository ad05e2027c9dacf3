//! A healthy three-member etcd 3.6 cluster behind TLS, in memory: what
//! `plugin check` runs a plugin against so that a plugin whose samples the
//! host would reject fails the check, with no etcd at hand. Plausible
//! rather than rich: the point is that every call of the contract answers
//! as a real member would.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{CallError, CertificateInfo, EtcdReads, MemberHealth, MemberInfo, MemberStatus, ServerCertificates};

/// The revision the fake keyspace is at, and the one it is compacted at.
pub const FAKE_REVISION: u64 = 9_000;
const FAKE_COMPACT_REVISION: u64 = 8_500;
const LEADER: u64 = 0x8e9e_05c5_2164_694d;
const MEMBER_IDS: [u64; 3] = [LEADER, 0x91bc_3c39_8fb3_c146, 0xfd42_2379_fda5_0e66];

/// See the module documentation.
pub struct FakeEtcd {
    members: Vec<MemberInfo>,
    /// key → (create revision, mod revision, version)
    keys: BTreeMap<Vec<u8>, (u64, u64, u64)>,
    leases: BTreeMap<i64, (i64, i64, usize)>,
    now: i64,
}

impl Default for FakeEtcd {
    fn default() -> Self {
        let members = MEMBER_IDS
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let url = format!("https://10.0.0.{}:2379", i + 1);
                MemberInfo {
                    id,
                    name: format!("etcd-{i}"),
                    client_urls: vec![url.clone()],
                    endpoint: url,
                    host: format!("10.0.0.{}", i + 1),
                    is_learner: false,
                }
            })
            .collect();
        // A small Kubernetes keyspace, written between the compaction and now.
        let kinds = [
            ("pods/default/web-", 20),
            ("configmaps/kube-system/config-", 10),
            ("events/default/web.", 30),
            ("leases/kube-node-lease/node-", 3),
            ("services/specs/default/svc-", 4),
        ];
        let mut keys = BTreeMap::new();
        let mut revision = FAKE_COMPACT_REVISION - 200;
        for (kind, n) in kinds {
            for i in 0..n {
                revision += 7;
                let key = format!("/registry/{kind}{i}").into_bytes();
                keys.insert(key, (revision - 300, revision, 3));
            }
        }
        let leases = (0..5)
            .map(|i| (0x694d_7c1a_0000_0000 + i, 30 + i * 5, 60, (i as usize) % 2))
            .map(|(id, ttl, granted, keys)| (id, (ttl, granted, keys)))
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        FakeEtcd {
            members,
            keys,
            leases,
            now,
        }
    }
}

impl FakeEtcd {
    /// The members, as the host's snapshot presents them.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.clone()
    }

    fn member(&self, endpoint: &str) -> Result<&MemberInfo, CallError> {
        self.members
            .iter()
            .find(|m| m.endpoint == endpoint)
            .ok_or_else(|| CallError::UnknownEndpoint(endpoint.to_string()))
    }

    fn at(&self, revision: u64) -> Result<u64, CallError> {
        match revision {
            0 => Ok(FAKE_REVISION),
            r if r < FAKE_COMPACT_REVISION => Err(CallError::Compacted(FAKE_COMPACT_REVISION)),
            r if r > FAKE_REVISION => Err(CallError::FutureRevision),
            r => Ok(r),
        }
    }

    fn in_range<'a>(
        &'a self,
        (start, end): (&'a [u8], &'a [u8]),
        revision: u64,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a (u64, u64, u64))> + 'a {
        self.keys.iter().filter(move |(k, (created, _, _))| {
            k.as_slice() >= start && (end.is_empty() || k.as_slice() < end) && *created <= revision
        })
    }

    fn certificate(&self, subject: &str, names: &[&str], ips: &[&str]) -> CertificateInfo {
        const DAY: i64 = 86_400;
        CertificateInfo {
            subject: format!("CN={subject}"),
            issuer: "CN=etcd-ca".into(),
            serial: "1f:2e:3d:4c".into(),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            ip_addresses: ips.iter().map(|s| s.to_string()).collect(),
            not_before: self.now - 30 * DAY,
            not_after: self.now + 335 * DAY,
            is_ca: false,
        }
    }
}

#[async_trait]
impl EtcdReads for FakeEtcd {
    async fn members_or_fallback(&self, _: Duration) -> (Vec<MemberInfo>, Option<CallError>) {
        (self.members(), None)
    }

    async fn refresh_members(&self) -> Result<Vec<MemberInfo>, CallError> {
        Ok(self.members())
    }

    async fn status(&self, endpoint: &str) -> Result<MemberStatus, CallError> {
        let m = self.member(endpoint)?;
        Ok(MemberStatus {
            member_id: m.id,
            version: "3.6.16".into(),
            db_size: 24 << 20,
            db_size_in_use: 20 << 20,
            leader: LEADER,
            raft_index: 12_000,
            raft_term: 4,
            raft_applied_index: 12_000,
            revision: FAKE_REVISION,
            is_learner: false,
            errors: Vec::new(),
            db_size_quota: Some(2 << 30),
            storage_version: Some("3.6.0".into()),
            downgrade: Some((false, String::new())),
        })
    }

    async fn health(&self, endpoint: &str) -> Result<MemberHealth, CallError> {
        self.member(endpoint)?;
        Ok(MemberHealth {
            healthy: true,
            reason: String::new(),
        })
    }

    async fn alarm_list(&self) -> Result<Vec<(u64, String)>, CallError> {
        Ok(Vec::new())
    }

    async fn count(
        &self,
        endpoint: Option<&str>,
        range: (&[u8], &[u8]),
        revision: u64,
        _serializable: bool,
    ) -> Result<(u64, u64), CallError> {
        if let Some(endpoint) = endpoint {
            self.member(endpoint)?;
        }
        let at = self.at(revision)?;
        Ok((self.in_range(range, at).count() as u64, FAKE_REVISION))
    }

    async fn keys(
        &self,
        range: (&[u8], &[u8]),
        limit: u32,
        revision: u64,
    ) -> Result<Vec<(Vec<u8>, u64, u64, u64)>, CallError> {
        let at = self.at(revision)?;
        Ok(self
            .in_range(range, at)
            .take(limit as usize)
            .map(|(k, &(created, modified, version))| (k.clone(), created, modified, version))
            .collect())
    }

    async fn hash_kv(&self, endpoint: &str, revision: u64) -> Result<(u64, u32, u64, u64), CallError> {
        let id = self.member(endpoint)?.id;
        let at = match revision {
            FAKE_COMPACT_REVISION => FAKE_COMPACT_REVISION,
            r => self.at(r)?,
        };
        Ok((id, 0x5eed_c0de, FAKE_COMPACT_REVISION, at))
    }

    async fn read_latency(&self, endpoint: &str, serializable: bool) -> Result<Duration, CallError> {
        self.member(endpoint)?;
        Ok(Duration::from_micros(if serializable { 400 } else { 1_200 }))
    }

    async fn member_list_at(&self, endpoint: &str) -> Result<Vec<MemberInfo>, CallError> {
        self.member(endpoint)?;
        Ok(self.members())
    }

    async fn server_certificates(&self, endpoint: &str) -> Result<ServerCertificates, CallError> {
        let m = self.member(endpoint)?;
        let leaf = self.certificate(&m.name, &[&m.name, "localhost"], &[&m.host, "127.0.0.1"]);
        Ok(ServerCertificates {
            chain: vec![leaf],
            verify_error: None,
        })
    }

    fn client_certificates(&self) -> Vec<CertificateInfo> {
        vec![self.certificate("etcd-inspector", &[], &[])]
    }

    async fn lease_ids(&self) -> Result<Vec<i64>, CallError> {
        Ok(self.leases.keys().copied().collect())
    }

    async fn lease_time_to_live(&self, id: i64, with_keys: bool) -> Result<(i64, i64, usize), CallError> {
        Ok(match self.leases.get(&id) {
            Some(&(ttl, granted, keys)) => (ttl, granted, if with_keys { keys } else { 0 }),
            None => (-1, 0, 0),
        })
    }
}

//! What a plugin call reads from a cluster, as a trait: the real
//! [`ClusterConnection`] implements it, and so does [`super::FakeEtcd`], the
//! cluster `plugin check` runs a plugin against without any etcd.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    CallError, CertificateInfo, ClusterConnection, MemberHealth, MemberInfo, MemberStatus, ServerCertificates,
};

/// The read-only etcd calls of the plugin contract. Boxed futures (through
/// `async_trait`) cost nothing next to a network round trip and let the
/// runtime hold any cluster behind one `Arc<dyn EtcdReads>`.
#[async_trait]
pub trait EtcdReads: Send + Sync {
    /// The members an inspection runs against, and why the member list could
    /// not be read when it could not (the last known members are used).
    async fn members_or_fallback(&self, max_age: Duration) -> (Vec<MemberInfo>, Option<CallError>);
    async fn refresh_members(&self) -> Result<Vec<MemberInfo>, CallError>;
    async fn status(&self, endpoint: &str) -> Result<MemberStatus, CallError>;
    /// Status, or an answer to another caller's ask made at or after
    /// `since` (see `etcd::shared`), and when the answer came; the fake has
    /// no one to share with.
    async fn status_since(&self, endpoint: &str, _since: Instant) -> (Result<MemberStatus, CallError>, Instant) {
        (self.status(endpoint).await, Instant::now())
    }
    async fn health(&self, endpoint: &str) -> Result<MemberHealth, CallError>;
    async fn alarm_list(&self) -> Result<Vec<(u64, String)>, CallError>;
    /// (count, revision) of [start, end) at `revision` (0: the latest).
    async fn count(
        &self,
        endpoint: Option<&str>,
        range: (&[u8], &[u8]),
        revision: u64,
        serializable: bool,
    ) -> Result<(u64, u64), CallError>;
    /// (key, create revision, mod revision, version) of [start, end).
    async fn keys(
        &self,
        range: (&[u8], &[u8]),
        limit: u32,
        revision: u64,
    ) -> Result<Vec<(Vec<u8>, u64, u64, u64)>, CallError>;
    /// (member id, hash, compact revision, hash revision).
    async fn hash_kv(&self, endpoint: &str, revision: u64) -> Result<(u64, u32, u64, u64), CallError>;
    async fn read_latency(&self, endpoint: &str, serializable: bool) -> Result<Duration, CallError>;
    async fn member_list_at(&self, endpoint: &str) -> Result<Vec<MemberInfo>, CallError>;
    async fn server_certificates(&self, endpoint: &str) -> Result<ServerCertificates, CallError>;
    fn client_certificates(&self) -> Vec<CertificateInfo>;
    async fn lease_ids(&self) -> Result<Vec<i64>, CallError>;
    /// (ttl, granted ttl, keys attached when `with_keys`).
    async fn lease_time_to_live(&self, id: i64, with_keys: bool) -> Result<(i64, i64, usize), CallError>;
}

#[async_trait]
impl EtcdReads for ClusterConnection {
    async fn members_or_fallback(&self, max_age: Duration) -> (Vec<MemberInfo>, Option<CallError>) {
        ClusterConnection::members_or_fallback(self, max_age).await
    }
    async fn refresh_members(&self) -> Result<Vec<MemberInfo>, CallError> {
        ClusterConnection::refresh_members(self).await
    }
    async fn status(&self, endpoint: &str) -> Result<MemberStatus, CallError> {
        ClusterConnection::status(self, endpoint).await
    }
    async fn status_since(&self, endpoint: &str, since: Instant) -> (Result<MemberStatus, CallError>, Instant) {
        ClusterConnection::status_since(self, endpoint, since).await
    }
    async fn health(&self, endpoint: &str) -> Result<MemberHealth, CallError> {
        ClusterConnection::health(self, endpoint).await
    }
    async fn alarm_list(&self) -> Result<Vec<(u64, String)>, CallError> {
        ClusterConnection::alarm_list(self).await
    }
    async fn count(
        &self,
        endpoint: Option<&str>,
        range: (&[u8], &[u8]),
        revision: u64,
        serializable: bool,
    ) -> Result<(u64, u64), CallError> {
        ClusterConnection::count(self, endpoint, range, revision, serializable).await
    }
    async fn keys(
        &self,
        range: (&[u8], &[u8]),
        limit: u32,
        revision: u64,
    ) -> Result<Vec<(Vec<u8>, u64, u64, u64)>, CallError> {
        ClusterConnection::keys(self, range, limit, revision).await
    }
    async fn hash_kv(&self, endpoint: &str, revision: u64) -> Result<(u64, u32, u64, u64), CallError> {
        ClusterConnection::hash_kv(self, endpoint, revision).await
    }
    async fn read_latency(&self, endpoint: &str, serializable: bool) -> Result<Duration, CallError> {
        ClusterConnection::read_latency(self, endpoint, serializable).await
    }
    async fn member_list_at(&self, endpoint: &str) -> Result<Vec<MemberInfo>, CallError> {
        ClusterConnection::member_list_at(self, endpoint).await
    }
    async fn server_certificates(&self, endpoint: &str) -> Result<ServerCertificates, CallError> {
        ClusterConnection::server_certificates(self, endpoint).await
    }
    fn client_certificates(&self) -> Vec<CertificateInfo> {
        ClusterConnection::client_certificates(self)
    }
    async fn lease_ids(&self) -> Result<Vec<i64>, CallError> {
        ClusterConnection::lease_ids(self).await
    }
    async fn lease_time_to_live(&self, id: i64, with_keys: bool) -> Result<(i64, i64, usize), CallError> {
        ClusterConnection::lease_time_to_live(self, id, with_keys).await
    }
}

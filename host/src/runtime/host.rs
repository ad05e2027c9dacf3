//! The state of one plugin call (its `Store` data) and the host functions a
//! plugin imports: read-only etcd access and logging.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::etcd_inspector::plugin::{etcd, log, types};
use crate::etcd::{CallError, ClusterConnection};

/// Log lines one call may write; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept from a plugin.
const LOG_LINE_BYTES: usize = 2048;
/// Most keys one `keys` call returns, whatever the plugin asks.
const MAX_KEYS: u32 = 10_000;

/// Store data of one call. A new one is made for every call.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: String,
    pub(super) cluster: Option<(String, Arc<ClusterConnection>)>,
    pub(super) logs_left: u32,
    pub(super) logs_dropped: u32,
}

impl HostState {
    pub(super) fn new(
        plugin: &str,
        cluster: Option<(String, Arc<ClusterConnection>)>,
        wasi: WasiCtx,
        limits: StoreLimits,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            plugin: plugin.to_string(),
            cluster,
            logs_left: LOG_LINES_PER_CALL,
            logs_dropped: 0,
        }
    }

    fn connection(&self) -> Result<&ClusterConnection, types::EtcdError> {
        self.cluster
            .as_ref()
            .map(|(_, c)| c.as_ref())
            .ok_or_else(|| types::EtcdError::Unavailable("no cluster in this call (describe)".into()))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl From<CallError> for types::EtcdError {
    fn from(e: CallError) -> Self {
        use types::EtcdError as E;
        match e {
            CallError::Timeout(m) => E::Timeout(m),
            CallError::Unavailable(m) => E::Unavailable(m),
            CallError::Compacted(r) => E::Compacted(r),
            CallError::FutureRevision => E::FutureRevision,
            CallError::PermissionDenied(m) => E::PermissionDenied(m),
            CallError::UnknownEndpoint(m) => E::UnknownEndpoint(m),
            CallError::Other(m) => E::Other(m),
        }
    }
}

pub(super) fn to_wit_member(m: crate::etcd::MemberInfo) -> types::Member {
    types::Member {
        id: m.id,
        name: m.name,
        client_urls: m.client_urls,
        endpoint: m.endpoint,
        host: m.host,
        is_learner: m.is_learner,
    }
}

type EtcdResult<T> = wasmtime::Result<Result<T, types::EtcdError>>;

impl types::Host for HostState {}

impl etcd::Host for HostState {
    async fn member_list(&mut self) -> EtcdResult<Vec<types::Member>> {
        Ok(match self.connection() {
            Ok(c) => c
                .refresh_members()
                .await
                .map(|ms| ms.into_iter().map(to_wit_member).collect())
                .map_err(Into::into),
            Err(e) => Err(e),
        })
    }

    async fn status(&mut self, endpoint: String) -> EtcdResult<types::MemberStatus> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.status(&endpoint)
            .await
            .map_err(Into::into)
            .map(|s| types::MemberStatus {
                member_id: s.member_id,
                version: s.version,
                db_size: s.db_size,
                db_size_in_use: s.db_size_in_use,
                leader: s.leader,
                raft_index: s.raft_index,
                raft_term: s.raft_term,
                raft_applied_index: s.raft_applied_index,
                revision: s.revision,
                is_learner: s.is_learner,
                errors: s.errors,
            }))
    }

    async fn alarm_list(&mut self) -> EtcdResult<Vec<types::Alarm>> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.alarm_list().await.map_err(Into::into).map(|alarms| {
            alarms
                .into_iter()
                .filter_map(|(member_id, kind)| {
                    let alarm = match kind.as_str() {
                        "NOSPACE" => types::AlarmType::Nospace,
                        "CORRUPT" => types::AlarmType::Corrupt,
                        _ => return None,
                    };
                    Some(types::Alarm { member_id, alarm })
                })
                .collect()
        }))
    }

    async fn health(&mut self, endpoint: String) -> EtcdResult<types::MemberHealth> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.health(&endpoint)
            .await
            .map_err(Into::into)
            .map(|h| types::MemberHealth {
                healthy: h.healthy,
                reason: h.reason,
            }))
    }

    async fn count(
        &mut self,
        endpoint: Option<String>,
        prefix: Vec<u8>,
        revision: u64,
        serializable: bool,
    ) -> EtcdResult<types::RangeCount> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.count(endpoint.as_deref(), &prefix, revision, serializable)
            .await
            .map_err(Into::into)
            .map(|(count, revision)| types::RangeCount { count, revision }))
    }

    async fn keys(&mut self, prefix: Vec<u8>, limit: u32, revision: u64) -> EtcdResult<Vec<types::KeyInfo>> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.keys(&prefix, limit.clamp(1, MAX_KEYS), revision)
            .await
            .map_err(Into::into)
            .map(|keys| {
                keys.into_iter()
                    .map(|(key, create_revision, mod_revision, version)| types::KeyInfo {
                        key,
                        create_revision,
                        mod_revision,
                        version,
                    })
                    .collect()
            }))
    }

    async fn hash_kv(&mut self, endpoint: String, revision: u64) -> EtcdResult<types::KvHash> {
        let c = match self.connection() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(c.hash_kv(&endpoint, revision).await.map_err(Into::into).map(
            |(member_id, hash, compact_revision, hash_revision)| types::KvHash {
                member_id,
                hash,
                compact_revision,
                hash_revision,
            },
        ))
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if self.logs_left == 0 {
            self.logs_dropped += 1;
            return Ok(());
        }
        self.logs_left -= 1;
        let mut message = message;
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.as_str();
        let cluster = self.cluster.as_ref().map(|(name, _)| name.as_str()).unwrap_or("");
        match level {
            log::Level::Debug => tracing::debug!(plugin, cluster, "{message}"),
            log::Level::Info => tracing::info!(plugin, cluster, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, cluster, "{message}"),
            log::Level::Error => tracing::error!(plugin, cluster, "{message}"),
        }
        Ok(())
    }
}

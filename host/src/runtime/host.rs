//! The state of one plugin call (its `Store` data) and the host functions a
//! plugin imports: read-only etcd access and logging.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::etcd_inspector::plugin::{etcd, log, state, types};
use crate::etcd::{CallError, ClusterConnection};

/// Log lines one call may write; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept from a plugin.
const LOG_LINE_BYTES: usize = 2048;
/// Most keys one `keys` call returns, whatever the plugin asks.
const MAX_KEYS: u32 = 10_000;
/// Most bytes of `state` a plugin may keep per cluster.
const MAX_STATE_BYTES: usize = 64 * 1024;

/// Store data of one call. A new one is made for every call.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: String,
    pub(super) cluster: Option<(String, Arc<ClusterConnection>)>,
    pub(super) logs_left: u32,
    pub(super) logs_dropped: u32,
    /// What the last successful call stored, and what this one stores.
    pub(super) state_in: Option<Vec<u8>>,
    pub(super) state_out: Option<Vec<u8>>,
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
            state_in: None,
            state_out: None,
        }
    }

    fn connection(&self) -> Result<Arc<ClusterConnection>, types::EtcdError> {
        self.cluster
            .as_ref()
            .map(|(_, c)| c.clone())
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

pub(super) fn to_wit_event(e: crate::etcd::WatchEvent) -> types::WatchEvent {
    types::WatchEvent {
        kind: if e.deleted {
            types::EventKind::Delete
        } else {
            types::EventKind::Put
        },
        key: e.key,
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
    }
}

type EtcdResult<T> = wasmtime::Result<Result<T, types::EtcdError>>;

/// Runs one etcd call on the call's cluster and converts its answer. Takes
/// the connection, not the store data, which must not be held across awaits.
async fn on_cluster<R, T>(
    connection: Result<Arc<ClusterConnection>, types::EtcdError>,
    call: impl AsyncFnOnce(&ClusterConnection) -> Result<R, CallError>,
    convert: impl FnOnce(R) -> T,
) -> EtcdResult<T> {
    Ok(match connection {
        Ok(c) => call(&c).await.map(convert).map_err(Into::into),
        Err(e) => Err(e),
    })
}

impl types::Host for HostState {}

impl etcd::Host for HostState {
    async fn member_list(&mut self) -> EtcdResult<Vec<types::Member>> {
        on_cluster(
            self.connection(),
            async |c| c.refresh_members().await,
            |ms| ms.into_iter().map(to_wit_member).collect(),
        )
        .await
    }

    async fn status(&mut self, endpoint: String) -> EtcdResult<types::MemberStatus> {
        on_cluster(
            self.connection(),
            async |c| c.status(&endpoint).await,
            |s| types::MemberStatus {
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
            },
        )
        .await
    }

    async fn alarm_list(&mut self) -> EtcdResult<Vec<types::Alarm>> {
        on_cluster(
            self.connection(),
            async |c| c.alarm_list().await,
            |alarms| {
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
            },
        )
        .await
    }

    async fn health(&mut self, endpoint: String) -> EtcdResult<types::MemberHealth> {
        on_cluster(
            self.connection(),
            async |c| c.health(&endpoint).await,
            |h| types::MemberHealth {
                healthy: h.healthy,
                reason: h.reason,
            },
        )
        .await
    }

    async fn count(
        &mut self,
        endpoint: Option<String>,
        range: types::KeyRange,
        revision: u64,
        serializable: bool,
    ) -> EtcdResult<types::RangeCount> {
        on_cluster(
            self.connection(),
            async |c| {
                c.count(endpoint.as_deref(), (&range.start, &range.end), revision, serializable)
                    .await
            },
            |(count, revision)| types::RangeCount { count, revision },
        )
        .await
    }

    async fn keys(&mut self, range: types::KeyRange, limit: u32, revision: u64) -> EtcdResult<Vec<types::KeyInfo>> {
        on_cluster(
            self.connection(),
            async |c| {
                c.keys((&range.start, &range.end), limit.clamp(1, MAX_KEYS), revision)
                    .await
            },
            |keys| {
                keys.into_iter()
                    .map(|(key, create_revision, mod_revision, version)| types::KeyInfo {
                        key,
                        create_revision,
                        mod_revision,
                        version,
                    })
                    .collect()
            },
        )
        .await
    }

    async fn hash_kv(&mut self, endpoint: String, revision: u64) -> EtcdResult<types::KvHash> {
        on_cluster(
            self.connection(),
            async |c| c.hash_kv(&endpoint, revision).await,
            |(member_id, hash, compact_revision, hash_revision)| types::KvHash {
                member_id,
                hash,
                compact_revision,
                hash_revision,
            },
        )
        .await
    }
}

impl state::Host for HostState {
    async fn load(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.state_in.clone())
    }

    async fn store(&mut self, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if value.len() > MAX_STATE_BYTES {
            return Ok(Err(format!(
                "{} bytes is more than the {MAX_STATE_BYTES} a plugin may keep",
                value.len()
            )));
        }
        self.state_out = Some(value);
        Ok(Ok(()))
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

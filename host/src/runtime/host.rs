//! The state of one plugin call (its `Store` data) and the host functions a
//! plugin imports: read-only etcd access and logging.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::etcd_inspector::plugin::{etcd, log, state, types};
use super::EtcdBudget;
use crate::etcd::{CallError, EtcdReads};

/// Log lines one call may write; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 32;
/// Longest log line kept from a plugin.
const LOG_LINE_BYTES: usize = 2048;
/// Most keys one `keys` call returns, whatever the plugin asks.
const MAX_KEYS: u32 = 10_000;
/// Most bytes of `state` a plugin may keep per cluster.
const MAX_STATE_BYTES: usize = 64 * 1024;

/// Which part of a round's [`EtcdBudget`] ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    Calls,
    Bytes,
}

impl BudgetKind {
    /// The `budget` label of `etcd_inspector_plugin_budget_refusals_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::Calls => "calls",
            BudgetKind::Bytes => "bytes",
        }
    }

    /// What the plugin and the operator are told.
    pub fn message(self, budget: &EtcdBudget) -> String {
        match self {
            BudgetKind::Calls => format!(
                "etcd call budget exhausted: {} calls per round (plugin setting etcdCallsPerRound)",
                budget.calls
            ),
            BudgetKind::Bytes => format!(
                "etcd byte budget exhausted: {} bytes read per round (plugin setting etcdBytesPerRound)",
                budget.bytes
            ),
        }
    }
}

/// Store data of one call. A new one is made for every call.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) plugin: String,
    pub(super) cluster: Option<(String, Arc<dyn EtcdReads>)>,
    pub(super) logs_left: u32,
    pub(super) logs_dropped: u32,
    /// What the last successful call stored, and what this one stores.
    pub(super) state_in: Option<Vec<u8>>,
    pub(super) state_out: Option<Vec<u8>>,
    budget: EtcdBudget,
    calls_made: u64,
    bytes_read: u64,
    /// Set at the first refusal; every later etcd call is refused too.
    pub(super) budget_exhausted: Option<BudgetKind>,
    /// An etcd call of this round was refused for our credentials: the
    /// plugin saw part of the cluster, so the round is not committed.
    pub(super) refused: Option<String>,
    pub(super) log_gate: Option<Arc<std::sync::Mutex<crate::log_state::RepeatGate>>>,
    /// When this call's round began (its member list read included), then
    /// when its last etcd answer came: a Status another call asked for
    /// since then is as fresh as one this call would get (`etcd::shared`).
    fresh_since: Instant,
}

impl HostState {
    /// `began`: when the round this call serves began (see `fresh_since`).
    pub(super) fn new(
        began: Instant,
        plugin: &str,
        cluster: Option<(String, Arc<dyn EtcdReads>)>,
        wasi: WasiCtx,
        limits: StoreLimits,
        budget: EtcdBudget,
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
            budget,
            calls_made: 0,
            bytes_read: 0,
            budget_exhausted: None,
            refused: None,
            log_gate: None,
            fresh_since: began,
        }
    }

    /// The etcd calls made so far and the bytes of their answers.
    pub(super) fn etcd_use(&self) -> super::EtcdUse {
        super::EtcdUse {
            calls: self.calls_made,
            bytes: self.bytes_read,
        }
    }

    /// The connection for one more etcd call, if the round's budget allows it.
    fn connection(&mut self) -> Result<Arc<dyn EtcdReads>, types::EtcdError> {
        let connection = self
            .cluster
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or_else(|| types::EtcdError::Unavailable("no cluster in this call (describe)".into()))?;
        if self.budget_exhausted.is_none() && self.calls_made >= self.budget.calls {
            self.budget_exhausted = Some(BudgetKind::Calls);
        }
        if let Some(kind) = self.budget_exhausted {
            return Err(types::EtcdError::Other(kind.message(&self.budget)));
        }
        self.calls_made += 1;
        Ok(connection)
    }

    /// Counts what an answer hands the plugin; past the byte budget, the
    /// answer is withheld and the round is over.
    /// One Status (for `status` and `status-details`), shared with the
    /// cluster's other calls where it is fresh enough for this one.
    async fn member_status(&mut self, endpoint: &str) -> Result<crate::etcd::MemberStatus, types::EtcdError> {
        let connection = self.connection()?;
        let (answer, answered) = connection.status_since(endpoint, self.fresh_since).await;
        self.fresh_since = answered;
        answer.map_err(types::EtcdError::from)
    }

    fn charge<T: WireSize>(&mut self, answer: Result<T, types::EtcdError>) -> Result<T, types::EtcdError> {
        if let Err(types::EtcdError::PermissionDenied(m)) = &answer {
            self.refused.get_or_insert_with(|| m.clone());
        }
        let answer = answer?;
        self.bytes_read = self.bytes_read.saturating_add(answer.wire_size());
        if self.bytes_read > self.budget.bytes {
            self.budget_exhausted = Some(BudgetKind::Bytes);
            return Err(types::EtcdError::Other(BudgetKind::Bytes.message(&self.budget)));
        }
        Ok(answer)
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
            CallError::PermissionDenied(m) | CallError::AuthFailed(m) => E::PermissionDenied(m),
            CallError::Tls(m) => E::Unavailable(format!("TLS: {m}")),
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

fn to_wit_certificate(c: crate::etcd::CertificateInfo) -> types::Certificate {
    types::Certificate {
        subject: c.subject,
        issuer: c.issuer,
        serial: c.serial,
        dns_names: c.dns_names,
        ip_addresses: c.ip_addresses,
        not_before: c.not_before,
        not_after: c.not_after,
        is_ca: c.is_ca,
    }
}

/// A batch in the `packed-events` layout: four buffers, whatever the
/// number of events (the plugin's allocator is called four times, not once
/// per key).
pub(super) fn pack_events(events: Vec<crate::etcd::WatchEvent>) -> types::PackedEvents {
    let mut packed = types::PackedEvents {
        keys: Vec::with_capacity(events.iter().map(|e| e.key.len()).sum()),
        key_ends: Vec::with_capacity(events.len()),
        kinds: Vec::with_capacity(events.len()),
        revisions: Vec::with_capacity(events.len() * 2),
    };
    for e in events {
        packed.keys.extend_from_slice(&e.key);
        packed
            .key_ends
            .push(u32::try_from(packed.keys.len()).unwrap_or(u32::MAX));
        packed.kinds.push(u8::from(e.deleted));
        packed.revisions.extend([e.create_revision, e.mod_revision]);
    }
    packed
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

/// About how many bytes an answer carries: what the byte budget counts.
trait WireSize {
    fn wire_size(&self) -> u64;
}

impl<T: WireSize> WireSize for Vec<T> {
    fn wire_size(&self) -> u64 {
        self.iter().map(WireSize::wire_size).sum::<u64>() + 8
    }
}

impl WireSize for types::Member {
    fn wire_size(&self) -> u64 {
        let urls: usize = self.client_urls.iter().map(String::len).sum();
        (self.name.len() + urls + self.endpoint.len() + self.host.len() + 16) as u64
    }
}

impl WireSize for types::MemberStatus {
    fn wire_size(&self) -> u64 {
        (self.version.len() + self.errors.iter().map(String::len).sum::<usize>() + 80) as u64
    }
}

impl WireSize for types::MemberStatusDetails {
    fn wire_size(&self) -> u64 {
        let text = self.storage_version.as_ref().map_or(0, String::len)
            + self.downgrade.as_ref().map_or(0, |d| d.target_version.len());
        (text + 24) as u64
    }
}

impl WireSize for u64 {
    fn wire_size(&self) -> u64 {
        8
    }
}

impl WireSize for types::Alarm {
    fn wire_size(&self) -> u64 {
        12
    }
}

impl WireSize for types::MemberHealth {
    fn wire_size(&self) -> u64 {
        (self.reason.len() + 8) as u64
    }
}

impl WireSize for types::RangeCount {
    fn wire_size(&self) -> u64 {
        16
    }
}

impl WireSize for types::KeyInfo {
    fn wire_size(&self) -> u64 {
        (self.key.len() + 24) as u64
    }
}

impl WireSize for i64 {
    fn wire_size(&self) -> u64 {
        8
    }
}

impl WireSize for types::Certificate {
    fn wire_size(&self) -> u64 {
        let names: usize = self.dns_names.iter().chain(&self.ip_addresses).map(String::len).sum();
        (self.subject.len() + self.issuer.len() + self.serial.len() + names + 24) as u64
    }
}

impl WireSize for types::PresentedCertificates {
    fn wire_size(&self) -> u64 {
        self.chain.wire_size() + self.verify_error.as_ref().map_or(0, |e| e.len() as u64)
    }
}

impl WireSize for types::LeaseInfo {
    fn wire_size(&self) -> u64 {
        // etcd sends the names of the attached keys when asked for them;
        // the plugin sees only their number, but the member read them.
        28 + u64::from(self.keys) * 32
    }
}

impl WireSize for types::KvHash {
    fn wire_size(&self) -> u64 {
        28
    }
}

/// Runs one etcd call on the call's cluster and converts its answer. A
/// macro, not a function taking an async closure: the boxed futures of
/// `dyn EtcdReads` defeat the higher-ranked bounds such a closure needs.
macro_rules! on_cluster {
    ($state:ident, $c:ident => $call:expr, $convert:expr $(,)?) => {
        match $state.connection() {
            Ok($c) => {
                let answer = $call;
                $state.fresh_since = Instant::now();
                answer.map($convert).map_err(types::EtcdError::from)
            }
            Err(e) => Err(e),
        }
    };
}

impl types::Host for HostState {}

impl etcd::Host for HostState {
    async fn member_list(&mut self) -> EtcdResult<Vec<types::Member>> {
        let answer = on_cluster!(
            self,
            c => c.refresh_members().await,
            |ms| ms.into_iter().map(to_wit_member).collect(),
        );
        Ok(self.charge(answer))
    }

    async fn status(&mut self, endpoint: String) -> EtcdResult<types::MemberStatus> {
        let answer = self.member_status(&endpoint).await.map(|s| types::MemberStatus {
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
        });
        Ok(self.charge(answer))
    }

    async fn status_details(&mut self, endpoint: String) -> EtcdResult<types::MemberStatusDetails> {
        let answer = self.member_status(&endpoint).await.map(|s| types::MemberStatusDetails {
            member_id: s.member_id,
            db_size_quota: s.db_size_quota,
            storage_version: s.storage_version,
            downgrade: s.downgrade.map(|(enabled, target_version)| types::DowngradeInfo {
                enabled,
                target_version,
            }),
        });
        Ok(self.charge(answer))
    }

    async fn alarm_list(&mut self) -> EtcdResult<Vec<types::Alarm>> {
        let answer = on_cluster!(
            self,
            c => c.alarm_list().await,
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
        );
        Ok(self.charge(answer))
    }

    async fn health(&mut self, endpoint: String) -> EtcdResult<types::MemberHealth> {
        let answer = on_cluster!(
            self,
            c => c.health(&endpoint).await,
            |h| types::MemberHealth {
                healthy: h.healthy,
                reason: h.reason,
            },
        );
        Ok(self.charge(answer))
    }

    async fn count(
        &mut self,
        endpoint: Option<String>,
        range: types::KeyRange,
        revision: u64,
        serializable: bool,
    ) -> EtcdResult<types::RangeCount> {
        let answer = on_cluster!(
            self,
            c => {
                c.count(endpoint.as_deref(), (&range.start, &range.end), revision, serializable)
                    .await
            },
            |(count, revision)| types::RangeCount { count, revision },
        );
        Ok(self.charge(answer))
    }

    async fn read_latency(&mut self, endpoint: String, serializable: bool) -> EtcdResult<u64> {
        let answer = on_cluster!(
            self,
            c => c.read_latency(&endpoint, serializable).await,
            |elapsed| elapsed.as_micros() as u64,
        );
        Ok(self.charge(answer))
    }

    async fn member_list_at(&mut self, endpoint: String) -> EtcdResult<Vec<types::Member>> {
        let answer = on_cluster!(
            self,
            c => c.member_list_at(&endpoint).await,
            |ms| ms.into_iter().map(to_wit_member).collect(),
        );
        Ok(self.charge(answer))
    }

    async fn server_certificates(&mut self, endpoint: String) -> EtcdResult<types::PresentedCertificates> {
        let answer = on_cluster!(
            self,
            c => c.server_certificates(&endpoint).await,
            |s| types::PresentedCertificates {
                chain: s.chain.into_iter().map(to_wit_certificate).collect(),
                verify_error: s.verify_error,
            },
        );
        Ok(self.charge(answer))
    }

    async fn client_certificates(&mut self) -> wasmtime::Result<Vec<types::Certificate>> {
        // Read from the credentials in memory: no etcd call, nothing charged.
        Ok(self
            .cluster
            .as_ref()
            .map(|(_, c)| c.client_certificates())
            .unwrap_or_default()
            .into_iter()
            .map(to_wit_certificate)
            .collect())
    }

    async fn lease_ids(&mut self) -> EtcdResult<Vec<i64>> {
        let answer = on_cluster!(self, c => c.lease_ids().await, |ids| ids);
        Ok(self.charge(answer))
    }

    async fn lease_time_to_live(&mut self, id: i64, with_keys: bool) -> EtcdResult<types::LeaseInfo> {
        let answer = on_cluster!(
            self,
            c => c.lease_time_to_live(id, with_keys).await,
            |(ttl, granted_ttl, keys)| types::LeaseInfo {
                id,
                ttl,
                granted_ttl,
                keys: keys.min(u32::MAX as usize) as u32,
            },
        );
        Ok(self.charge(answer))
    }

    async fn keys(&mut self, range: types::KeyRange, limit: u32, revision: u64) -> EtcdResult<Vec<types::KeyInfo>> {
        let answer = on_cluster!(
            self,
            c => {
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
        );
        Ok(self.charge(answer))
    }

    async fn hash_kv(&mut self, endpoint: String, revision: u64) -> EtcdResult<types::KvHash> {
        let answer = on_cluster!(
            self,
            c => c.hash_kv(&endpoint, revision).await,
            |(member_id, hash, compact_revision, hash_revision)| types::KvHash {
                member_id,
                hash,
                compact_revision,
                hash_revision,
            },
        );
        Ok(self.charge(answer))
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
        let message = crate::text::one_line(&message, LOG_LINE_BYTES);
        let plugin = self.plugin.as_str();
        let cluster = self.cluster.as_ref().map(|(name, _)| name.as_str()).unwrap_or("");
        let repeat = level != log::Level::Debug
            && self
                .log_gate
                .as_ref()
                .is_some_and(|gate| !gate.lock().unwrap().admit(&message));
        if repeat {
            tracing::debug!(plugin, cluster, "{message}");
            return Ok(());
        }
        match level {
            log::Level::Debug => tracing::debug!(plugin, cluster, "{message}"),
            log::Level::Info => tracing::info!(plugin, cluster, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, cluster, "{message}"),
            log::Level::Error => tracing::error!(plugin, cluster, "{message}"),
        }
        Ok(())
    }
}

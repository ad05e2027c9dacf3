//! The wasmtime runtime: one engine, one linker, a fresh `Store` per call
//! from a cached `InstancePre`, and every call bounded in time and memory.

mod bindings;
mod call;
mod compile;
mod engine;
mod host;
mod plugin;
mod registry;
pub mod settings;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::Engine;

use crate::etcd::{EtcdReads, MemberInfo, WatchEvent};
use crate::metrics::SampleValue;
use bindings::{inspector, packed_watcher, types, watcher, WatchPlugin};
use call::{wasm_error_chain, Call, CallInput, Entry, Reply};
pub use host::BudgetKind;
use host::HostState;

pub use plugin::{sha256_hex, LoadError, LoadedPlugin, PluginInfo, WIT_LINE, WIT_PACKAGE};
pub use registry::{PluginRegistry, PluginState, PluginStatus, MAX_PLUGIN_BYTES};
pub use watch::watch_plugin_dir;

/// Bytes of a guest's stderr kept per call (panic messages land there).
const STDERR_BYTES: usize = 16 * 1024;
/// Longest failure message kept from a call (a plugin's error string or
/// its stderr): it is logged, shown on `/` and written into statuses.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Bound on `describe()` at load time.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits every plugin call runs under.
#[derive(Clone, Debug)]
pub struct CallLimits {
    /// Wall time for instantiate + call, host calls included.
    pub timeout: Duration,
    /// Linear memory a plugin may grow to.
    pub memory_bytes: usize,
    /// What one call may ask of etcd.
    pub budget: EtcdBudget,
}

/// What one round (one call) of a plugin may ask of etcd: a plugin that
/// lists the whole keyspace in a loop would otherwise load the cluster it
/// inspects for its whole deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdBudget {
    /// etcd calls (each host function that reaches etcd counts one).
    pub calls: u64,
    /// Bytes of etcd answers handed to the plugin (keys, statuses, …).
    pub bytes: u64,
}

impl Default for EtcdBudget {
    /// Generous for the bundled plugins: request's census of a large
    /// Kubernetes keyspace stays under its own cap of 20 000 calls.
    fn default() -> Self {
        EtcdBudget {
            calls: 25_000,
            bytes: 64 << 20,
        }
    }
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout: Duration::from_secs(20),
            memory_bytes: 64 << 20,
            budget: EtcdBudget::default(),
        }
    }
}

/// How a call ended; the `outcome` label of `etcd_inspector_plugin_invocations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    PluginError,
    Timeout,
    Oom,
    Trap,
    InstantiateError,
    /// The round ran out of its etcd budget; its samples were not committed.
    BudgetExceeded(BudgetKind),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::PluginError => "plugin_error",
            Outcome::Timeout => "timeout",
            Outcome::Oom => "oom",
            Outcome::Trap => "trap",
            Outcome::InstantiateError => "instantiate_error",
            Outcome::BudgetExceeded(_) => "budget_exceeded",
        }
    }
}

/// A call that did not return samples.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", outcome.as_str())]
pub struct CallFailure {
    pub outcome: Outcome,
    pub message: String,
}

/// A successful inspection: the samples to commit, and the state the
/// plugin stored (if it stored any) for its next call.
#[derive(Debug)]
pub struct Inspection {
    pub samples: Vec<SampleValue>,
    pub state: Option<Vec<u8>>,
    /// What the round asked of etcd (the bench reports it per plugin).
    pub etcd: EtcdUse,
}

/// etcd calls a plugin call made and the bytes of their answers, as the
/// round's budget counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdUse {
    pub calls: u64,
    pub bytes: u64,
}

/// What the host knows of a cluster at call time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub name: String,
    pub namespace: String,
    pub members: Vec<MemberInfo>,
    pub params: Vec<(String, String)>,
    /// What this plugin logged on this cluster in earlier calls: a line it
    /// repeats every round is written at debug between the gate's repeats.
    pub log_gate: Option<Arc<std::sync::Mutex<crate::log_state::RepeatGate>>>,
    /// When the round began (when it was due, or when its invocation
    /// started, the member list read included): a Status other calls of the
    /// cluster asked for since then may answer this call's first Status
    /// (`etcd::shared`).
    pub began: std::time::Instant,
}

/// The plugin runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: CallLimits,
    /// Precompiled artefacts, keyed by the wasm's sha256 and the engine.
    cache_dir: Option<std::path::PathBuf>,
}

impl Runtime {
    pub fn new(limits: CallLimits) -> anyhow::Result<Self> {
        Self::with_pooling(limits, None)
    }

    /// With `pooling`, instances come from that many pre-reserved slots
    /// (wasmtime's pooling allocator) instead of fresh allocations.
    pub fn with_pooling(limits: CallLimits, pooling: Option<u32>) -> anyhow::Result<Self> {
        let engine = engine::new_engine(pooling)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        WatchPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            cache_dir: None,
        })
    }

    /// Keeps precompiled artefacts in `dir` (only ever written by us).
    pub fn with_cache_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.cache_dir = Some(dir);
        self
    }

    /// Bytes that idle pooled instance slots keep resident (memories and
    /// tables), or None without the pooling allocator.
    pub fn pool_resident_bytes(&self) -> Option<usize> {
        self.engine
            .pooling_allocator_metrics()
            .map(|m| m.unused_memory_bytes_resident() + m.unused_table_bytes_resident())
    }

    /// The host's default call limits.
    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// Checks, compiles, links and describes a plugin. Nothing is published
    /// here: the caller decides whether the result replaces anything.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<LoadedPlugin, LoadError> {
        plugin::check_bytes(&bytes)?;
        let sha256 = sha256_hex(&bytes);
        let component = self.compile(bytes, &sha256).await?;
        let wit_version = plugin::check_wit_version(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(wasm_error_chain(&e)))?;
        let inspector = inspector::GuestIndices::new(&pre).map_err(|e| LoadError::Link(wasm_error_chain(&e)))?;
        let watcher = watcher::GuestIndices::new(&pre).ok();
        let packed_watcher = packed_watcher::GuestIndices::new(&pre).ok();
        let limits = CallLimits {
            timeout: DESCRIBE_TIMEOUT.min(self.limits.timeout),
            ..self.limits.clone()
        };
        let entry = Entry {
            pre: &pre,
            inspector: &inspector,
            watcher: None,
            packed_watcher: None,
        };
        let loading = CallInput {
            plugin: "(loading)".into(),
            cluster: None,
            state: None,
            log_gate: None,
            began: std::time::Instant::now(),
        };
        let info = match self.call(entry, loading, Call::Describe, &limits).await {
            Ok((Reply::Describe(info), _, _)) => plugin::check_info(info)?,
            Ok((Reply::Samples(_), _, _)) => unreachable!("describe returns a description"),
            Err(f) => return Err(LoadError::Describe(f.to_string())),
        };
        if !info.watch_prefixes.is_empty() && watcher.is_none() {
            return Err(LoadError::Invalid(
                "declares watch-prefixes but does not export the watcher interface".into(),
            ));
        }
        Ok(LoadedPlugin {
            info,
            sha256,
            wit_version,
            pre,
            inspector,
            watcher,
            packed_watcher,
        })
    }

    /// One inspection round of `plugin` against a cluster; `state` is what
    /// the plugin stored in its last successful call on this cluster.
    pub async fn inspect(
        &self,
        plugin: &LoadedPlugin,
        connection: Arc<dyn EtcdReads>,
        snapshot: Snapshot,
        state: Option<Vec<u8>>,
        limits: &CallLimits,
    ) -> Result<Inspection, CallFailure> {
        self.samples_call(plugin, connection, snapshot, state, None, limits)
            .await
    }

    /// Delivers a batch of watch events to a plugin that exports `watcher`.
    pub async fn on_events(
        &self,
        plugin: &LoadedPlugin,
        connection: Arc<dyn EtcdReads>,
        snapshot: Snapshot,
        state: Option<Vec<u8>>,
        events: Vec<WatchEvent>,
        limits: &CallLimits,
    ) -> Result<Inspection, CallFailure> {
        self.samples_call(plugin, connection, snapshot, state, Some(events), limits)
            .await
    }

    async fn samples_call(
        &self,
        plugin: &LoadedPlugin,
        connection: Arc<dyn EtcdReads>,
        snapshot: Snapshot,
        state: Option<Vec<u8>>,
        events: Option<Vec<WatchEvent>>,
        limits: &CallLimits,
    ) -> Result<Inspection, CallFailure> {
        let input = CallInput {
            plugin: plugin.info.name.clone(),
            cluster: Some((snapshot.name.clone(), connection)),
            state,
            log_gate: snapshot.log_gate,
            began: snapshot.began,
        };
        let wit_snapshot = types::ClusterSnapshot {
            name: snapshot.name,
            namespace: snapshot.namespace,
            members: snapshot.members.into_iter().map(host::to_wit_member).collect(),
            params: snapshot.params,
        };
        let call = match events {
            None => Call::Inspect(wit_snapshot),
            Some(events) if plugin.packed_watcher.is_some() => {
                Call::PackedEvents(wit_snapshot, host::pack_events(events))
            }
            Some(events) => Call::Events(wit_snapshot, events.into_iter().map(host::to_wit_event).collect()),
        };
        let entry = Entry {
            pre: &plugin.pre,
            inspector: &plugin.inspector,
            watcher: plugin.watcher.as_ref(),
            packed_watcher: plugin.packed_watcher.as_ref(),
        };
        let (reply, state, etcd) = self.call(entry, input, call, limits).await?;
        match reply {
            Reply::Samples(Ok(samples)) => Ok(Inspection {
                samples: samples
                    .into_iter()
                    .map(|s| SampleValue {
                        metric: s.metric,
                        labels: s.labels,
                        value: s.value,
                    })
                    .collect(),
                state,
                etcd,
            }),
            Reply::Samples(Err(message)) => Err(CallFailure {
                outcome: Outcome::PluginError,
                message: crate::text::one_line(&message, MAX_MESSAGE_BYTES),
            }),
            Reply::Describe(_) => unreachable!("inspect returns samples"),
        }
    }
}

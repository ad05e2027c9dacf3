//! The wasmtime runtime: one engine, one linker, a fresh `Store` per call
//! from a cached `InstancePre`, and every call bounded in time and memory.

mod bindings;
mod engine;
mod host;
mod plugin;
mod registry;
pub mod settings;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtx;

use crate::etcd::{ClusterConnection, MemberInfo, WatchEvent};
use crate::metrics::SampleValue;
use bindings::{inspector, types, watcher, WatchPlugin};
pub use host::BudgetKind;
use host::HostState;

pub use plugin::{sha256_hex, LoadError, LoadedPlugin, PluginInfo, WIT_LINE, WIT_PACKAGE};
pub use registry::{PluginRegistry, PluginState, PluginStatus};
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
}

enum Call {
    Describe,
    Inspect(types::ClusterSnapshot),
    Events(types::ClusterSnapshot, Vec<types::WatchEvent>),
}

enum Reply {
    Describe(types::PluginInfo),
    Samples(Result<Vec<types::Sample>, String>),
}

/// What a loaded plugin can be called through.
struct Entry<'a> {
    pre: &'a InstancePre<HostState>,
    inspector: &'a inspector::GuestIndices,
    watcher: Option<&'a watcher::GuestIndices>,
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
        let limits = CallLimits {
            timeout: DESCRIBE_TIMEOUT.min(self.limits.timeout),
            ..self.limits.clone()
        };
        let entry = Entry {
            pre: &pre,
            inspector: &inspector,
            watcher: None,
        };
        let info = match self
            .call(entry, "(loading)", None, None, Call::Describe, &limits, None)
            .await
        {
            Ok((Reply::Describe(info), _)) => plugin::check_info(info)?,
            Ok((Reply::Samples(_), _)) => unreachable!("describe returns a description"),
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
        })
    }

    /// The component for `bytes`: from the precompile cache when it has a
    /// usable entry, compiled (and cached) otherwise. An entry that does not
    /// deserialize — corrupt, truncated, or from another engine — is a miss.
    async fn compile(&self, bytes: Vec<u8>, sha256: &str) -> Result<Component, LoadError> {
        use std::hash::{Hash, Hasher};
        let cached = self.cache_dir.as_ref().map(|dir| {
            let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
            dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash.finish()))
        });
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the cache directory is written only by this process
            // (below), never from plugin sources; deserialize validates the
            // header and engine compatibility and fails cleanly otherwise.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "precompile cache entry unusable ({}); recompiling", wasm_error_chain(&e));
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let engine = self.engine.clone();
        // Compilation is CPU-bound (cranelift): keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(wasm_error_chain(&e)))?;
        if let Some(path) = cached {
            let write = component.serialize().map_err(|e| e.to_string()).and_then(|artefact| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, artefact)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = write {
                tracing::warn!(path = %path.display(), "cannot write the precompile cache: {e}");
            }
        }
        Ok(component)
    }

    /// One inspection round of `plugin` against a cluster; `state` is what
    /// the plugin stored in its last successful call on this cluster.
    pub async fn inspect(
        &self,
        plugin: &LoadedPlugin,
        connection: Arc<ClusterConnection>,
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
        connection: Arc<ClusterConnection>,
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
        connection: Arc<ClusterConnection>,
        snapshot: Snapshot,
        state: Option<Vec<u8>>,
        events: Option<Vec<WatchEvent>>,
        limits: &CallLimits,
    ) -> Result<Inspection, CallFailure> {
        let cluster = Some((snapshot.name.clone(), connection));
        let log_gate = snapshot.log_gate;
        let wit_snapshot = types::ClusterSnapshot {
            name: snapshot.name,
            namespace: snapshot.namespace,
            members: snapshot.members.into_iter().map(host::to_wit_member).collect(),
            params: snapshot.params,
        };
        let call = match events {
            None => Call::Inspect(wit_snapshot),
            Some(events) => Call::Events(wit_snapshot, events.into_iter().map(host::to_wit_event).collect()),
        };
        let entry = Entry {
            pre: &plugin.pre,
            inspector: &plugin.inspector,
            watcher: plugin.watcher.as_ref(),
        };
        let (reply, state) = self
            .call(entry, &plugin.info.name, cluster, state, call, limits, log_gate)
            .await?;
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
            }),
            Reply::Samples(Err(message)) => Err(CallFailure {
                outcome: Outcome::PluginError,
                message: crate::text::one_line(&message, MAX_MESSAGE_BYTES),
            }),
            Reply::Describe(_) => unreachable!("inspect returns samples"),
        }
    }

    async fn call(
        &self,
        entry: Entry<'_>,
        plugin: &str,
        cluster: Option<(String, Arc<ClusterConnection>)>,
        state: Option<Vec<u8>>,
        call: Call,
        limits: &CallLimits,
        log_gate: Option<Arc<std::sync::Mutex<crate::log_state::RepeatGate>>>,
    ) -> Result<(Reply, Option<Vec<u8>>), CallFailure> {
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        // No preopens, no env, no args, sockets denied: a plugin reaches the
        // world only through our imports.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(32)
            .tables(32)
            .memories(32)
            .trap_on_grow_failure(true)
            .build();
        let mut host_state = HostState::new(plugin, cluster, wasi, store_limits, limits.budget);
        host_state.state_in = state;
        host_state.log_gate = log_gate;
        let mut store = Store::new(&self.engine, host_state);
        store.limiter(|s| &mut s.limits);
        // The default deadline is "already expired". Yield to tokio every
        // tick so a computing guest never holds a worker thread, and
        // interrupt at the hard deadline.
        let hard_deadline = Instant::now() + limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= hard_deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let run = async {
            let instantiate_error = |e: wasmtime::Error| CallFailure {
                outcome: Outcome::InstantiateError,
                message: wasm_error_chain(&e),
            };
            let instance = entry
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(instantiate_error)?;
            let result = match call {
                Call::Describe => {
                    let guest = entry.inspector.load(&mut store, &instance).map_err(instantiate_error)?;
                    guest.call_describe(&mut store).await.map(Reply::Describe)
                }
                Call::Inspect(snapshot) => {
                    let guest = entry.inspector.load(&mut store, &instance).map_err(instantiate_error)?;
                    guest.call_inspect(&mut store, &snapshot).await.map(Reply::Samples)
                }
                Call::Events(snapshot, events) => {
                    let indices = entry.watcher.ok_or_else(|| CallFailure {
                        outcome: Outcome::PluginError,
                        message: "the plugin does not export the watcher interface".into(),
                    })?;
                    let guest = indices.load(&mut store, &instance).map_err(instantiate_error)?;
                    guest
                        .call_on_events(&mut store, &snapshot, &events)
                        .await
                        .map(Reply::Samples)
                }
            };
            result.map_err(|e| classify_trap(&e, &stderr))
        };
        // Epochs cannot interrupt a host call in progress; this bounds those too.
        let grace = Duration::from_millis(500);
        let reply = match tokio::time::timeout(limits.timeout + grace, run).await {
            Ok(reply) => reply,
            Err(_) => Err(CallFailure {
                outcome: Outcome::Timeout,
                message: format!("no answer within {:?}", limits.timeout),
            }),
        };
        let dropped = store.data().logs_dropped;
        if dropped > 0 {
            tracing::warn!(plugin, dropped, "plugin log lines dropped (rate limit)");
        }
        // A round that ran out of budget saw only part of the cluster: its
        // samples are not committed, whatever the plugin made of it.
        if let (Ok(_), Some(exhausted)) = (&reply, store.data().budget_exhausted) {
            return Err(CallFailure {
                outcome: Outcome::BudgetExceeded(exhausted),
                message: exhausted.message(&limits.budget),
            });
        }
        if let (Ok(_), Some(refused)) = (&reply, &store.data().refused) {
            return Err(CallFailure {
                outcome: Outcome::PluginError,
                message: crate::text::one_line(
                    &format!("etcd refused a call of this round (permission denied: {refused}); a partial round is not committed"),
                    MAX_MESSAGE_BYTES,
                ),
            });
        }
        reply.map(|r| (r, store.data_mut().state_out.take()))
    }
}

fn classify_trap(error: &wasmtime::Error, stderr: &MemoryOutputPipe) -> CallFailure {
    let chain = wasm_error_chain(error);
    let (outcome, message) = if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        (Outcome::Timeout, "interrupted at its deadline".to_string())
    } else if chain.contains("forcing trap when growing memory") {
        (Outcome::Oom, format!("memory limit reached ({chain})"))
    } else {
        (
            Outcome::Trap,
            error.downcast_ref::<Trap>().map(|t| t.to_string()).unwrap_or(chain),
        )
    };
    let output = String::from_utf8_lossy(&stderr.contents()).trim().to_string();
    let message = if output.is_empty() {
        message
    } else {
        format!("{message}; stderr: {output}")
    };
    CallFailure {
        outcome,
        message: crate::text::one_line(&message, MAX_MESSAGE_BYTES),
    }
}

/// A wasmtime error with its causes, skipping the backtrace noise.
fn wasm_error_chain(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let first_line = text.lines().next().unwrap_or("").to_string();
        if !first_line.is_empty() && !parts.iter().any(|p| p.contains(&first_line)) {
            parts.push(first_line);
        }
    }
    parts.join(": ")
}

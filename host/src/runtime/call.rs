//! One bounded call into a fresh instance: a new `Store` from the cached
//! `InstancePre`, an empty WASI context, memory and etcd limits, an epoch
//! deadline that yields to tokio every tick, and the outcome classified.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::InstancePre;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtx;

use super::bindings::{inspector, packed_watcher, types, watcher};
use super::host::HostState;
use super::EtcdUse;
use super::{CallFailure, CallLimits, Outcome, Runtime, MAX_MESSAGE_BYTES, STDERR_BYTES};
use crate::etcd::EtcdReads;
use crate::log_state::RepeatGate;

pub(super) enum Call {
    Describe,
    Inspect(types::ClusterSnapshot),
    Events(types::ClusterSnapshot, Vec<types::WatchEvent>),
    PackedEvents(types::ClusterSnapshot, types::PackedEvents),
}

pub(super) enum Reply {
    Describe(types::PluginInfo),
    Samples(Result<Vec<types::Sample>, String>),
}

/// What a loaded plugin can be called through.
pub(super) struct Entry<'a> {
    pub(super) pre: &'a InstancePre<HostState>,
    pub(super) inspector: &'a inspector::GuestIndices,
    pub(super) watcher: Option<&'a watcher::GuestIndices>,
    pub(super) packed_watcher: Option<&'a packed_watcher::GuestIndices>,
}

/// Who a call is for, and what it carries over from earlier calls.
pub(super) struct CallInput {
    pub plugin: String,
    pub cluster: Option<(String, Arc<dyn EtcdReads>)>,
    /// What the plugin stored in its last successful call on this cluster.
    pub state: Option<Vec<u8>>,
    pub log_gate: Option<Arc<Mutex<RepeatGate>>>,
    /// When the round this call serves began.
    pub began: Instant,
}

impl Runtime {
    pub(super) async fn call(
        &self,
        entry: Entry<'_>,
        input: CallInput,
        call: Call,
        limits: &CallLimits,
    ) -> Result<(Reply, Option<Vec<u8>>, EtcdUse), CallFailure> {
        let plugin = input.plugin.as_str();
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
        let mut host_state = HostState::new(input.began, plugin, input.cluster, wasi, store_limits, limits.budget);
        host_state.state_in = input.state;
        host_state.log_gate = input.log_gate;
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
                Call::PackedEvents(snapshot, events) => {
                    let indices = entry.packed_watcher.ok_or_else(|| CallFailure {
                        outcome: Outcome::PluginError,
                        message: "the plugin does not export the packed-watcher interface".into(),
                    })?;
                    let guest = indices.load(&mut store, &instance).map_err(instantiate_error)?;
                    guest
                        .call_on_packed_events(&mut store, &snapshot, &events)
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
        let used = store.data().etcd_use();
        reply.map(|r| (r, store.data_mut().state_out.take(), used))
    }
}

pub(super) fn classify_trap(error: &wasmtime::Error, stderr: &MemoryOutputPipe) -> CallFailure {
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
pub(super) fn wasm_error_chain(error: &wasmtime::Error) -> String {
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

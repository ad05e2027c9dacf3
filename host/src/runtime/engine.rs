//! The one wasmtime `Engine` of the process and its epoch ticker.

use std::time::Duration;

use wasmtime::{Config, Engine};

/// Epoch tick: the granularity of deadlines and of yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most bytes of a pooled linear memory kept resident after a call (only
/// the pages the call wrote). It bounds what idle slots hold: at most this
/// per memory slot, reported as `etcd_inspector_instance_pool_resident_bytes`.
/// The bundled plugins' and the template's initial memory
/// (`--initial-memory` in their `.cargo/config.toml`) is the same size.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// The same for tables (a plugin's tables are a few KiB).
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;

/// Builds the engine with epoch interruption and starts a ticker thread that
/// holds only a weak reference, so dropping the engine stops it.
pub fn new_engine(pooling: Option<u32>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Pre-reserved instance slots, reused call after call: no mmap/munmap
    // (and the TLB shootdowns they cost on every core) per call. It costs
    // address space only (4 GiB per memory slot, never touched unless used),
    // which some nodes limit; the caller falls back to on-demand then.
    // The per-call memory limit stays with the Store's limiter, so
    // memories may grow to wasmtime's default maximum here.
    if let Some(slots) = pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots);
        // A call's dirty pages are reset in place (memset), found by the
        // PAGEMAP_SCAN ioctl, instead of being dropped by madvise and
        // faulted in again by the next call: per-call overhead 25–35 µs →
        // 10–12 µs (bench A). Without the ioctl (Linux < 6.7) keeping pages
        // resident would memset the first bytes of every memory whether
        // used or not, so it stays off there.
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
        }
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    // Guests run inside tokio tasks; a deep guest stack must trap, not overflow ours.
    config.max_wasm_stack(512 * 1024);
    let engine = Engine::new(&config)?;
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })
        .expect("spawn epoch ticker");
    Ok(engine)
}

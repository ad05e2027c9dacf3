//! The one wasmtime `Engine` of the process and its epoch ticker.

use std::time::Duration;

use wasmtime::{Config, Engine};

/// Epoch tick: the granularity of deadlines and of yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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

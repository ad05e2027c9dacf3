//! etcd-inspector: monitors etcd clusters with inspections written as
//! WebAssembly components, and exports what they find as Prometheus metrics.
//!
//! - [`app`]: the command line and the wiring of every mode.
//! - [`cluster`]: the seed's CRDs and their validation; standalone manifests.
//! - [`etcd`]: connections, TLS and credentials (in memory only).
//! - [`runtime`]: wasmtime engine, plugin loading and bounded calls.
//! - [`metrics`]: the registry plugins report into.
//! - [`controllers`]: which clusters run, and their schedules.
//! - [`http`]: `/metrics`, `/health`, `/plugins`, `/`.
//! - [`log_state`]: conditions and plugin lines logged once per change.
//! - [`files`]: reading outside files safely (regular, capped, confined).
//! - [`text`]: outside text made safe for logs, Events and pages.
//! - [`oci`]: plugins pulled from OCI registries, verified by digest.
//! - [`commands`]: `plugin check` and `plugin run` for plugin authors.

pub mod app;
pub mod cluster;
pub mod commands;
pub mod controllers;
pub mod etcd;
pub mod files;
pub mod http;
pub mod log_state;
pub mod metrics;
pub mod oci;
pub mod runtime;
pub mod text;

/// jemalloc, for the binary, the tests and the bench alike: member channels
/// open and close by the thousand, and glibc's per-thread arenas kept what
/// they freed (1000 clusters: 291 MiB RSS with glibc, 242 MiB with jemalloc,
/// same channels; mimalloc 376 MiB; bench/HISTORY.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment still wins): freed pages go back to the system after a
/// second, by a background thread, instead of after 10 s and only when the
/// process allocates again; between rounds a closed channel's buffers are
/// returned rather than kept (1000 clusters: 275 -> 224 MiB).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

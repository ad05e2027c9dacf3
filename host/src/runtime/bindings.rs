//! Host-side bindings of `wit/` (world `watch-plugin`, a superset of
//! `inspection-plugin`). Exports are loaded interface by interface, so a
//! plugin without `watcher` links and runs as an inspection plugin.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "watch-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::etcd_inspector::plugin::types;
pub use self::exports::etcd_inspector::plugin::{inspector, packed_watcher, watcher};

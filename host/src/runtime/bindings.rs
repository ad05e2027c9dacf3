//! Host-side bindings of `wit/` (world `inspection-plugin`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "inspection-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::etcd_inspector::plugin::types;

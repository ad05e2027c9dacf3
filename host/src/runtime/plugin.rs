//! Loading one plugin file: checks, compilation, linking and `describe()`.

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::Engine;

use wasmtime::component::InstancePre;

use super::bindings::{inspector, packed_watcher, types, watcher};
use super::host::HostState;
use crate::metrics::{MetricKind, MetricSpec};

/// The WIT package this host serves, and the compatible line (0.1.x).
pub const WIT_PACKAGE: &str = "etcd-inspector:plugin";
pub const WIT_LINE: &str = "0.1";

/// A plugin's self-description, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub metrics: Vec<MetricSpec>,
    pub default_interval_seconds: u32,
    pub watch_prefixes: Vec<String>,
}

/// A compiled, linked and described plugin version, ready to instantiate.
/// Cheap to share: calls clone the `Arc` holding it, so a call in flight
/// finishes on the version it started with.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    pub sha256: String,
    /// Newest `etcd-inspector:plugin` version the component refers to.
    pub wit_version: String,
    pub(super) pre: InstancePre<HostState>,
    pub(super) inspector: inspector::GuestIndices,
    /// Present when the plugin exports `watcher` (consumes watch events).
    pub(super) watcher: Option<watcher::GuestIndices>,
    /// Present when it also exports `packed-watcher` (SDK 0.1.3+): events
    /// go over packed, a few copies per batch instead of one per key.
    pub(super) packed_watcher: Option<packed_watcher::GuestIndices>,
}

impl LoadedPlugin {
    /// The key prefix this plugin watches by default, if it consumes events.
    pub fn watch_prefix(&self) -> Option<&str> {
        self.watcher
            .as_ref()
            .and(self.info.watch_prefixes.first().map(String::as_str))
    }
}

/// Why a plugin file was rejected.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("not a WebAssembly file (bad magic bytes)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2`")]
    CoreModule,
    #[error("a precompiled native artefact; only .wasm components are accepted from the plugin directory")]
    Precompiled,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("built against {package}@{version}; this host serves {WIT_PACKAGE}@{WIT_LINE}.x")]
    WitVersion { package: String, version: String },
    #[error("cannot be linked: {0}")]
    Link(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("invalid description: {0}")]
    Invalid(String),
}

impl LoadError {
    /// Short label for `etcd_inspector_plugin_load_errors_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::NotWasm => "not_wasm",
            LoadError::CoreModule => "core_module",
            LoadError::Precompiled => "precompiled",
            LoadError::Compile(_) => "compile",
            LoadError::WitVersion { .. } => "wit_version",
            LoadError::Link(_) => "link",
            LoadError::Describe(_) => "describe",
            LoadError::Invalid(_) => "invalid_description",
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Cheap checks before compiling anything.
pub(super) fn check_bytes(bytes: &[u8]) -> Result<(), LoadError> {
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(LoadError::Precompiled);
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(()),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => Err(LoadError::CoreModule),
        _ => Err(LoadError::NotWasm),
    }
}

/// Refuses a component that imports or exports our package outside 0.1.x,
/// with a message naming the version (the linker's own error does not).
/// Returns the newest version seen.
pub(super) fn check_wit_version(engine: &Engine, component: &Component) -> Result<String, LoadError> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .chain(ty.exports(engine).map(|(n, _)| n.to_string()))
        .collect();
    let mut newest = String::new();
    for name in names {
        let Some(rest) = name.strip_prefix(WIT_PACKAGE) else {
            continue;
        };
        let version = rest.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
        let compatible = version.strip_prefix(WIT_LINE).is_some_and(|r| r.starts_with('.'));
        if !compatible {
            return Err(LoadError::WitVersion {
                package: WIT_PACKAGE.into(),
                version: version.into(),
            });
        }
        if newest.is_empty() || version_key(version) > version_key(&newest) {
            newest = version.to_string();
        }
    }
    Ok(newest)
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-']).map(|p| p.parse().unwrap_or(0)).collect()
}

/// Validates and converts what `describe()` returned.
pub(super) fn check_info(info: types::PluginInfo) -> Result<PluginInfo, LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 63
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !info.name.starts_with('-')
        && !info.name.ends_with('-');
    if !name_ok {
        return Err(LoadError::Invalid(format!(
            "name {:?}: expected a feature name of lowercase letters, digits and '-'",
            info.name
        )));
    }
    if info.version.is_empty() {
        return Err(LoadError::Invalid("version is empty".into()));
    }
    if info.watch_prefixes.len() > 1 {
        return Err(LoadError::Invalid(format!(
            "watch-prefixes: {} given, this host watches one prefix per plugin",
            info.watch_prefixes.len()
        )));
    }
    if info.default_interval_seconds == 0 {
        return Err(LoadError::Invalid("default-interval-seconds must be at least 1".into()));
    }
    let metrics: Vec<MetricSpec> = info
        .metrics
        .into_iter()
        .map(|m| MetricSpec {
            name: m.name,
            help: m.help,
            kind: match m.kind {
                types::MetricKind::Gauge => MetricKind::Gauge,
                types::MetricKind::Counter => MetricKind::Counter,
            },
            labels: m.labels,
        })
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for spec in &metrics {
        crate::metrics::validate_spec(spec).map_err(|e| LoadError::Invalid(e.to_string()))?;
        if !names.insert(&spec.name) {
            return Err(LoadError::Invalid(format!("metric {:?} declared twice", spec.name)));
        }
    }
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        metrics,
        default_interval_seconds: info.default_interval_seconds,
        watch_prefixes: info.watch_prefixes,
    })
}

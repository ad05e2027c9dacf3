//! Plugins from ConfigMaps through the API: every ConfigMap matching a label
//! selector has its `*.wasm` binaryData written into the plugin directory,
//! where the directory watcher loads it. A new version goes live in seconds,
//! not after kubelet's one to two minutes of volume sync. Runs on every
//! replica, so followers serve the same plugins. A ConfigMap holds at most
//! 1 MiB in total: larger plugins belong in a volume.
//!
//! When a written plugin is rejected, a Warning Event on its ConfigMap says
//! why, so users who can edit ConfigMaps but not read pod logs see it.
//!
//! With `--bundled-plugins` (the image's own plugins), the directory starts
//! with those; a ConfigMap entry of the same file name overrides one, and
//! removing the entry brings the bundled version back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::runtime::{sha256_hex, PluginRegistry, PluginState};

/// How often the ConfigMaps are compared with the directory.
const SYNC_EVERY: Duration = Duration::from_millis(500);

/// What this source wrote: file name → (ConfigMap, sha256).
type Written = BTreeMap<String, (ObjectReference, String)>;

/// Where plugins come from, and go.
pub struct PluginDirs {
    /// Written here; the registry watches it.
    pub dir: PathBuf,
    /// The image's bundled plugins, if any: the defaults ConfigMaps override.
    pub bundled: Option<PathBuf>,
}

/// Copies the bundled plugins into `dir`, each unless a file of its name is
/// there already. Returns how many were copied.
pub fn seed_bundled(bundled: &Path, dir: &Path) -> std::io::Result<usize> {
    let mut seeded = 0;
    for entry in std::fs::read_dir(bundled)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_plugin_name(&name) || !entry.file_type()?.is_file() || dir.join(&name).exists() {
            continue;
        }
        write_atomically(dir, &name, &std::fs::read(entry.path())?)?;
        seeded += 1;
    }
    Ok(seeded)
}

fn is_plugin_name(name: &str) -> bool {
    name.ends_with(".wasm") && !name.starts_with('.') && !name.contains('/')
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    crate::files::write_atomically(&dir.join(name), bytes)
}

pub async fn run(client: Client, namespace: String, selector: String, dirs: PluginDirs, registry: Arc<PluginRegistry>) {
    let dir = dirs.dir.clone();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default().labels(&selector)))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!("plugin ConfigMaps: {e}");
        }
    }));
    let _ = store.wait_until_ready().await;
    let reporter = Reporter {
        controller: "etcd-inspector".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let recorder = Recorder::new(client, reporter);
    let mut written = Written::new();
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        write_plugins(&store, &dirs, &mut written);
        report_rejections(&registry, &dir, &written, &recorder, &mut reported).await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

fn write_plugins(store: &Store<ConfigMap>, dirs: &PluginDirs, written: &mut Written) {
    let dir = dirs.dir.as_path();
    let mut maps = store.state();
    maps.sort_by_key(|m| m.name_any());
    let mut desired: BTreeMap<String, (ObjectReference, Vec<u8>)> = BTreeMap::new();
    for map in &maps {
        for (key, bytes) in map.binary_data.iter().flatten() {
            if !is_plugin_name(key) {
                continue;
            }
            if let Some((other, _)) = desired.get(key) {
                tracing::warn!(file = %key, "plugin ConfigMaps {} and {} both carry it; {} wins",
                    other.name.clone().unwrap_or_default(), map.name_any(), other.name.clone().unwrap_or_default());
                continue;
            }
            desired.insert(key.clone(), (map.object_ref(&()), bytes.0.clone()));
        }
    }
    for (name, (reference, bytes)) in &desired {
        let sha = sha256_hex(bytes);
        if written.get(name).is_some_and(|(_, s)| *s == sha) {
            continue;
        }
        match write_atomically(dir, name, bytes) {
            Ok(()) => {
                tracing::info!(file = %name, configmap = %reference.name.clone().unwrap_or_default(), %sha, "plugin written from ConfigMap");
                written.insert(name.clone(), (reference.clone(), sha));
            }
            Err(e) => tracing::error!(file = %name, "cannot write plugin into {}: {e}", dir.display()),
        }
    }
    let gone: Vec<String> = written.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
    for name in gone {
        written.remove(&name);
        let bundled = dirs.bundled.as_ref().map(|b| b.join(&name)).filter(|b| b.is_file());
        let result = match &bundled {
            Some(original) => std::fs::read(original).and_then(|bytes| write_atomically(dir, &name, &bytes)),
            None => std::fs::remove_file(dir.join(&name)),
        };
        match (result, bundled) {
            (Ok(()), Some(_)) => {
                tracing::info!(file = %name, "its ConfigMap entry is gone: the bundled version serves again")
            }
            (Ok(()), None) => tracing::info!(file = %name, "plugin removed: its ConfigMap entry is gone"),
            (Err(e), _) => tracing::warn!(file = %name, "cannot remove plugin: {e}"),
        }
    }
}

/// One Warning Event per rejected version written from a ConfigMap.
async fn report_rejections(
    registry: &PluginRegistry,
    dir: &Path,
    written: &Written,
    recorder: &Recorder,
    reported: &mut HashMap<String, String>,
) {
    for status in registry.statuses() {
        let (PluginState::Failed | PluginState::ServingPrevious, Some(rejected)) =
            (status.state, &status.last_rejected)
        else {
            continue;
        };
        let (reason, rejected_sha256) = (&rejected.reason, &rejected.sha256);
        let Some(name) = Path::new(&status.file).file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((reference, sha)) = written.get(name).filter(|_| Path::new(&status.file).starts_with(dir)) else {
            continue;
        };
        if sha != rejected_sha256 || reported.get(name) == Some(sha) {
            continue;
        }
        let serving = match &status.serving {
            Some(s) => format!("; version {} keeps serving", s.sha256),
            None => String::new(),
        };
        // Kubernetes refuses notes over 1 KiB; the reason carries guest stderr.
        let note = crate::text::one_line(&format!("{name}: {reason}{serving}"), 1000);
        let event = Event {
            type_: EventType::Warning,
            reason: "PluginRejected".into(),
            note: Some(note),
            action: "LoadPlugin".into(),
            secondary: None,
        };
        match recorder.publish(&event, reference).await {
            Ok(()) => {
                reported.insert(name.to_string(), sha.clone());
            }
            Err(e) => tracing::warn!(file = %name, "cannot publish an Event: {e}"),
        }
    }
}

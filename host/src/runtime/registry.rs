//! The set of active plugins, by feature name, and what happened to every
//! file offered to it. A directory is reconciled as a whole: new and changed
//! files are loaded (read through their top-level names, so kubelet's
//! `..data` link swap is seen), files that disappeared are unloaded with
//! their series, and a file that fails to load never replaces the version
//! that is serving.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::settings::{PluginSettings, SettingsFile};
use super::{LoadedPlugin, Runtime};
use crate::metrics::Metrics;

/// Largest plugin file read (the bundled ones are 60–110 KiB).
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// Where a file stands, in one word.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Seen, being loaded; nothing serves from this file yet.
    Pending,
    /// The newest version offered serves.
    Active,
    /// The newest version offered was rejected; an earlier one keeps serving.
    ServingPrevious,
    /// Rejected, and nothing serves from this file.
    Failed,
}

/// The version of a plugin that serves.
#[derive(Clone, Debug, Serialize)]
pub struct Serving {
    pub version: String,
    pub wit_version: String,
    pub sha256: String,
    /// When it started serving (Unix ms).
    pub since_unix_ms: u128,
}

/// The last version of a file that was refused, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    /// Empty when the file could not be read at all.
    pub sha256: String,
    pub reason: String,
    pub at_unix_ms: u128,
}

/// What `/plugins` and the status page show for one file.
#[derive(Clone, Debug, Serialize)]
pub struct PluginStatus {
    pub file: String,
    pub name: Option<String>,
    pub state: PluginState,
    pub serving: Option<Serving>,
    /// Kept after a later version serves: the last refusal is history an
    /// operator wants when a rollout "did nothing".
    pub last_rejected: Option<Rejection>,
}

struct FileState {
    status: PluginStatus,
    /// Digest (and pin) last tried, so an unchanged file is not reloaded.
    tried: String,
}

impl FileState {
    /// A file seen for the first time.
    fn new(file: &Path) -> Self {
        FileState {
            status: PluginStatus {
                file: file.display().to_string(),
                name: None,
                state: PluginState::Pending,
                serving: None,
                last_rejected: None,
            },
            tried: String::new(),
        }
    }
}

pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    settings: RwLock<SettingsFile>,
    /// Where the settings come from, re-read at every sync (`--plugin-config`).
    settings_path: Option<PathBuf>,
    active: RwLock<HashMap<String, (PathBuf, Arc<LoadedPlugin>)>>,
    files: Mutex<BTreeMap<PathBuf, FileState>>,
    /// Serialises reconciliations (watch events and rescans may overlap).
    sync: tokio::sync::Mutex<()>,
}

impl PluginRegistry {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self::with_settings(runtime, metrics, SettingsFile::default())
    }

    pub fn with_settings(runtime: Arc<Runtime>, metrics: Arc<Metrics>, settings: SettingsFile) -> Self {
        PluginRegistry {
            runtime,
            metrics,
            settings: RwLock::new(settings),
            settings_path: None,
            active: RwLock::default(),
            files: Mutex::default(),
            sync: tokio::sync::Mutex::new(()),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The current version of the plugin serving `feature`.
    pub fn get(&self, feature: &str) -> Option<Arc<LoadedPlugin>> {
        self.active.read().unwrap().get(feature).map(|(_, p)| p.clone())
    }

    /// Settings of a plugin (defaults where the settings file says nothing).
    pub fn settings(&self, feature: &str) -> PluginSettings {
        self.settings.read().unwrap().for_plugin(feature)
    }

    /// Re-reads `path` at every sync, so edited settings (a mounted
    /// ConfigMap, say) apply without a restart; a broken edit is logged and
    /// the last good settings stay.
    pub fn with_settings_file(mut self, path: PathBuf) -> Self {
        self.settings_path = Some(path);
        self
    }

    /// Re-reads `--plugin-config`, if set.
    pub fn reload_settings(&self) {
        let Some(path) = &self.settings_path else { return };
        match SettingsFile::read(path) {
            Ok(settings) => *self.settings.write().unwrap() = settings,
            Err(e) => tracing::error!("plugin settings not reloaded, the previous ones stay: {e}"),
        }
    }

    /// `(name, oci://…)` of every plugin whose settings name a `source`.
    pub fn oci_sources(&self) -> Vec<(String, String)> {
        let settings = self.settings.read().unwrap();
        settings
            .plugins
            .iter()
            .filter_map(|(name, s)| s.source.clone().map(|src| (name.clone(), src)))
            .collect()
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.files.lock().unwrap().values().map(|f| f.status.clone()).collect()
    }

    /// Reconciles the active set with the `*.wasm` files of `dir` (dotfiles
    /// and directories skipped, links followed). Returns how many plugins
    /// are active afterwards.
    pub async fn sync_dir(&self, dir: &Path) -> std::io::Result<usize> {
        let _one_at_a_time = self.sync.lock().await;
        self.reload_settings();
        let mut present: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.') && name.ends_with(".wasm") && p.is_file()
            })
            .collect();
        present.sort();
        let gone: Vec<PathBuf> = {
            let files = self.files.lock().unwrap();
            files
                .keys()
                .filter(|f| f.starts_with(dir) && !present.contains(f))
                .cloned()
                .collect()
        };
        for file in gone {
            self.unload(&file);
        }
        for file in present {
            self.load_file(&file).await;
        }
        Ok(self.active.read().unwrap().len())
    }

    /// Loads one file, if it or the pins changed since it was last tried,
    /// and publishes it if it is valid.
    pub async fn load_file(&self, file: &Path) {
        // Off the async workers, and only a regular file of bounded size.
        let path = file.to_path_buf();
        let read = tokio::task::spawn_blocking(move || crate::files::read_capped(&path, MAX_PLUGIN_BYTES)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return self.reject(file, "io", format!("cannot read: {e}"), String::new()),
            Err(e) => return self.reject(file, "io", format!("cannot read: {e}"), String::new()),
        };
        let sha256 = super::sha256_hex(&bytes);
        let tried = format!("{sha256}/{}", self.pins_fingerprint());
        if self.files.lock().unwrap().get(file).is_some_and(|f| f.tried == tried) {
            return;
        }
        // Refused before compiling anything when the file's known name is pinned…
        if let Some(message) = self.pin_mismatch(&self.known_name(file), &sha256) {
            return self.reject(file, "sha256_mismatch", message, tried);
        }
        self.mark_pending(file);
        let plugin = match self.runtime.load(bytes).await {
            Ok(plugin) => plugin,
            Err(e) => return self.reject(file, e.reason(), e.to_string(), tried),
        };
        // …and always by the name the plugin declares: a file cannot take a
        // pinned plugin's name with other bytes, whatever the file is called.
        if let Some(message) = self.pin_mismatch(&plugin.info.name, &sha256) {
            return self.reject(file, "sha256_mismatch", message, tried);
        }
        match self.publish(file, plugin) {
            Ok(()) => self.files.lock().unwrap().get_mut(file).expect("marked pending").tried = tried,
            Err((reason, message)) => self.reject(file, reason, message, tried),
        }
    }

    /// The name of the plugin this file served last, or its file stem.
    fn known_name(&self, file: &Path) -> String {
        let files = self.files.lock().unwrap();
        files
            .get(file)
            .and_then(|f| f.status.name.clone())
            .or_else(|| file.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// Why `sha256` may not serve as plugin `name`, if its pin says so.
    fn pin_mismatch(&self, name: &str, sha256: &str) -> Option<String> {
        let pin = self.settings(name).sha256?;
        (!pin.eq_ignore_ascii_case(sha256))
            .then(|| format!("sha256 {sha256} does not match the pin of plugin {name:?} ({pin})"))
    }

    /// Every pin of the settings: a file is tried again when any changes.
    fn pins_fingerprint(&self) -> String {
        let settings = self.settings.read().unwrap();
        let pins: Vec<String> = settings
            .plugins
            .iter()
            .filter_map(|(name, s)| s.sha256.as_ref().map(|p| format!("{name}={}", p.to_ascii_lowercase())))
            .collect();
        super::sha256_hex(pins.join(",").as_bytes())
    }

    fn mark_pending(&self, file: &Path) {
        let mut files = self.files.lock().unwrap();
        let entry = files.entry(file.to_path_buf()).or_insert_with(|| FileState::new(file));
        if entry.status.serving.is_none() {
            entry.status.state = PluginState::Pending;
        }
    }

    fn publish(&self, file: &Path, plugin: LoadedPlugin) -> Result<(), (&'static str, String)> {
        let mut active = self.active.write().unwrap();
        if let Some((other, _)) = active.get(&plugin.info.name).filter(|(f, _)| f != file) {
            return Err((
                "duplicate_name",
                format!(
                    "plugin name {:?} is already served by {}",
                    plugin.info.name,
                    other.display()
                ),
            ));
        }
        self.metrics
            .register_plugin(&plugin.info.name, &plugin.info.metrics)
            .map_err(|e| ("invalid_description", format!("invalid description: {e}")))?;
        // The file may now serve a plugin of another name: retire the old one.
        let previous: Vec<String> = active
            .iter()
            .filter(|(n, (f, _))| f == file && **n != plugin.info.name)
            .map(|(n, _)| n.clone())
            .collect();
        for name in previous {
            if let Some((_, old)) = active.remove(&name) {
                self.retire(&old);
            }
        }
        let plugin = Arc::new(plugin);
        let replaced = active.insert(plugin.info.name.clone(), (file.to_path_buf(), plugin.clone()));
        if let Some((_, old)) = &replaced {
            self.metrics.plugin_loaded(&old.info.name, &old.info.version, false);
            self.metrics.plugin_reloaded(&plugin.info.name);
        }
        self.metrics
            .plugin_loaded(&plugin.info.name, &plugin.info.version, true);
        tracing::info!(
            file = %file.display(),
            plugin = %plugin.info.name,
            version = %plugin.info.version,
            wit = %plugin.wit_version,
            sha256 = %plugin.sha256,
            replaced = replaced.is_some(),
            "plugin loaded"
        );
        let mut files = self.files.lock().unwrap();
        let entry = files.get_mut(file).expect("marked pending");
        entry.status.name = Some(plugin.info.name.clone());
        entry.status.state = PluginState::Active;
        entry.status.serving = Some(Serving {
            version: plugin.info.version.clone(),
            wit_version: plugin.wit_version.clone(),
            sha256: plugin.sha256.clone(),
            since_unix_ms: unix_ms(),
        });
        Ok(())
    }

    fn reject(&self, file: &Path, reason: &'static str, message: String, tried: String) {
        let serving = self
            .files
            .lock()
            .unwrap()
            .get(file)
            .and_then(|f| f.status.serving.as_ref().map(|s| s.sha256.clone()));
        match &serving {
            Some(sha) => {
                tracing::error!(file = %file.display(), reason, "plugin rejected, version {sha} keeps serving: {message}")
            }
            None => tracing::error!(file = %file.display(), reason, "plugin rejected: {message}"),
        }
        self.metrics.load_error(reason);
        let rejected = tried.split('/').next().unwrap_or_default().to_string();
        let mut files = self.files.lock().unwrap();
        let entry = files.entry(file.to_path_buf()).or_insert_with(|| FileState::new(file));
        entry.status.state = match serving {
            Some(_) => PluginState::ServingPrevious,
            None => PluginState::Failed,
        };
        entry.status.last_rejected = Some(Rejection {
            sha256: rejected,
            reason: message,
            at_unix_ms: unix_ms(),
        });
        entry.tried = tried;
    }

    /// A file disappeared: its plugin stops serving and its series go.
    fn unload(&self, file: &Path) {
        self.files.lock().unwrap().remove(file);
        let mut active = self.active.write().unwrap();
        let names: Vec<String> = active
            .iter()
            .filter(|(_, (f, _))| f == file)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some((_, plugin)) = active.remove(&name) {
                tracing::info!(file = %file.display(), plugin = %name, "plugin removed");
                self.retire(&plugin);
            }
        }
    }

    fn retire(&self, plugin: &LoadedPlugin) {
        self.metrics
            .plugin_loaded(&plugin.info.name, &plugin.info.version, false);
        self.metrics.unregister_plugin(&plugin.info.name);
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

//! The set of active plugins, by feature name, and what happened to every
//! file offered to it. A file that fails to load never replaces a working
//! plugin of the same name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::{LoadError, LoadedPlugin, Runtime};
use crate::metrics::Metrics;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PluginState {
    Active,
    Failed { reason: String },
}

/// What `/plugins` and the status page show for one file.
#[derive(Clone, Debug, Serialize)]
pub struct PluginStatus {
    pub file: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub wit_version: Option<String>,
    pub sha256: Option<String>,
    #[serde(flatten)]
    pub state: PluginState,
}

pub struct PluginRegistry {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    active: RwLock<HashMap<String, (PathBuf, Arc<LoadedPlugin>)>>,
    files: Mutex<BTreeMap<PathBuf, PluginStatus>>,
}

impl PluginRegistry {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        PluginRegistry {
            runtime,
            metrics,
            active: RwLock::default(),
            files: Mutex::default(),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The current version of the plugin serving `feature`.
    pub fn get(&self, feature: &str) -> Option<Arc<LoadedPlugin>> {
        self.active.read().unwrap().get(feature).map(|(_, p)| p.clone())
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.files.lock().unwrap().values().cloned().collect()
    }

    /// Loads every `*.wasm` in `dir` (dotfiles skipped). Returns how many
    /// are active afterwards.
    pub async fn load_dir(&self, dir: &Path) -> std::io::Result<usize> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.') && name.ends_with(".wasm") && p.is_file()
            })
            .collect();
        files.sort();
        for file in files {
            self.load_file(&file).await;
        }
        Ok(self.active.read().unwrap().len())
    }

    /// Loads one file and publishes it if it is valid.
    pub async fn load_file(&self, file: &Path) {
        let shown = file.display().to_string();
        let result = match std::fs::read(file) {
            Ok(bytes) => self.runtime.load(bytes).await.map_err(|e| (e.reason(), e.to_string())),
            Err(e) => Err(("io", format!("cannot read: {e}"))),
        };
        let result = result.and_then(|plugin| self.publish(file, plugin));
        let status = match result {
            Ok(plugin) => {
                tracing::info!(
                    file = %shown,
                    plugin = %plugin.info.name,
                    version = %plugin.info.version,
                    wit = %plugin.wit_version,
                    sha256 = %plugin.sha256,
                    "plugin loaded"
                );
                PluginStatus {
                    file: shown.clone(),
                    name: Some(plugin.info.name.clone()),
                    version: Some(plugin.info.version.clone()),
                    wit_version: Some(plugin.wit_version.clone()),
                    sha256: Some(plugin.sha256.clone()),
                    state: PluginState::Active,
                }
            }
            Err((reason, message)) => {
                tracing::error!(file = %shown, reason, "plugin rejected: {message}");
                self.metrics.load_error(reason);
                PluginStatus {
                    file: shown.clone(),
                    name: None,
                    version: None,
                    wit_version: None,
                    sha256: None,
                    state: PluginState::Failed { reason: message },
                }
            }
        };
        self.files.lock().unwrap().insert(file.to_path_buf(), status);
    }

    fn publish(&self, file: &Path, plugin: LoadedPlugin) -> Result<Arc<LoadedPlugin>, (&'static str, String)> {
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
            .map_err(|e| {
                (
                    LoadError::Invalid(String::new()).reason(),
                    format!("invalid description: {e}"),
                )
            })?;
        let plugin = Arc::new(plugin);
        active.insert(plugin.info.name.clone(), (file.to_path_buf(), plugin.clone()));
        Ok(plugin)
    }
}

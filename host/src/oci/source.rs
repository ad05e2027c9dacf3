//! The plugin source that polls registries: for each `NAME → oci://…`
//! (flags and the `source` field of the plugin settings), the artefact is
//! resolved (a tag: HEAD every poll; a digest: once), fetched through the
//! cache and written to `<plugin-dir>/NAME.wasm`, where the registry loads
//! it like any file. Nothing reaches the directory that did not match its
//! digest, so a refused pull leaves the version that serves in place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;

use super::{fetch, resolve, Cache, DockerConfig, OciError, OciRef, RegistrySettings};
use crate::runtime::PluginRegistry;

/// Where registry logins come from; read again at every poll, so a rotated
/// password or an edited Secret applies without a restart.
pub enum Credentials {
    None,
    /// A docker config file (standalone; `docker login` writes one).
    DockerConfig(PathBuf),
    /// A `kubernetes.io/dockerconfigjson` Secret (Kubernetes mode).
    Secret {
        api: Box<Api<Secret>>,
        name: String,
    },
}

impl Credentials {
    /// The logins as they are now.
    pub async fn load(&self) -> Result<Option<DockerConfig>, OciError> {
        match self {
            Credentials::None => Ok(None),
            Credentials::DockerConfig(path) => {
                let origin = path.display().to_string();
                let bytes = crate::files::read_capped(path, 1 << 20)
                    .map_err(|e| OciError::Credentials(format!("{origin}: {e}")))?;
                DockerConfig::parse(&bytes, &origin).map(Some)
            }
            Credentials::Secret { api, name } => {
                let origin = format!("Secret {name}");
                let secret = api
                    .get(name)
                    .await
                    .map_err(|e| OciError::Credentials(format!("{origin}: {e}")))?;
                let data = secret
                    .data
                    .and_then(|mut d| d.remove(".dockerconfigjson"))
                    .ok_or_else(|| OciError::Credentials(format!("{origin}: no .dockerconfigjson key")))?;
                DockerConfig::parse(&data.0, &origin).map(Some)
            }
        }
    }
}

/// Why the last poll of a source failed.
#[derive(Clone, Debug, Serialize)]
pub struct SourceError {
    pub reason: &'static str,
    pub message: String,
    pub at_unix_ms: u128,
}

/// What `/plugins` shows of a source.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    pub reference: String,
    /// The file the artefact is written to.
    pub file: String,
    /// The manifest digest whose wasm the file holds.
    pub digest: Option<String>,
    pub pulled_unix_ms: Option<u128>,
    pub error: Option<SourceError>,
}

pub struct OciSources {
    pub settings: RegistrySettings,
    pub credentials: Credentials,
    /// From `--plugin-oci NAME=REF`.
    pub flags: Vec<(String, OciRef)>,
    pub dir: PathBuf,
    pub cache: Cache,
    pub registry: Arc<PluginRegistry>,
    pub poll: Duration,
    statuses: Mutex<BTreeMap<String, SourceStatus>>,
}

impl OciSources {
    pub fn new(
        settings: RegistrySettings,
        credentials: Credentials,
        flags: Vec<(String, OciRef)>,
        dir: PathBuf,
        registry: Arc<PluginRegistry>,
        poll: Duration,
    ) -> Self {
        let cache = Cache::new(dir.join(".oci"));
        OciSources {
            settings,
            credentials,
            flags,
            dir,
            cache,
            registry,
            poll,
            statuses: Mutex::default(),
        }
    }

    pub fn statuses(&self) -> Vec<SourceStatus> {
        self.statuses.lock().unwrap().values().cloned().collect()
    }

    /// Every source, flags first; a settings entry of the same name wins
    /// (it can be edited without a restart).
    fn sources(&self) -> BTreeMap<String, Result<OciRef, OciError>> {
        let mut all: BTreeMap<String, Result<OciRef, OciError>> =
            self.flags.iter().map(|(n, r)| (n.clone(), Ok(r.clone()))).collect();
        for (name, text) in self.registry.oci_sources() {
            all.insert(name, OciRef::parse(&text));
        }
        all
    }

    /// Polls until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.poll_all().await;
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One pass over every source.
    pub async fn poll_all(&self) {
        self.registry.reload_settings();
        let sources = self.sources();
        let gone: Vec<String> = {
            let statuses = self.statuses.lock().unwrap();
            statuses.keys().filter(|n| !sources.contains_key(*n)).cloned().collect()
        };
        for name in gone {
            // Its artefact stops serving with its source.
            let file = self.file(&name);
            if std::fs::remove_file(&file).is_ok() {
                tracing::info!(plugin = %name, "OCI source removed; its plugin file is deleted");
            }
            self.statuses.lock().unwrap().remove(&name);
            let _ = self.registry.sync_dir(&self.dir).await;
        }
        if sources.is_empty() {
            return;
        }
        let client = match self.settings.client() {
            Ok(c) => c,
            Err(e) => return self.fail_all(&sources, &e),
        };
        let logins = match self.credentials.load().await {
            Ok(l) => l,
            Err(e) => return self.fail_all(&sources, &e),
        };
        for (name, source) in sources {
            let result = match &source {
                Ok(source) => self.poll_one(&client, &name, source, logins.as_ref()).await,
                Err(e) => Err(e.clone()),
            };
            self.record(&name, shown(&source), result);
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    async fn poll_one(
        &self,
        client: &oci_client::Client,
        name: &str,
        source: &OciRef,
        logins: Option<&DockerConfig>,
    ) -> Result<Option<String>, OciError> {
        let login = match logins {
            Some(config) => config.login(source.registry(), "registry credentials")?,
            None => None,
        };
        let digest = resolve(client, source, login.as_ref()).await?;
        let file = self.file(name);
        let current = self.statuses.lock().unwrap().get(name).and_then(|s| s.digest.clone());
        if current.as_deref() == Some(digest.as_str()) && file.is_file() {
            return Ok(None);
        }
        let wasm = fetch(client, &self.cache, source, &digest, login.as_ref()).await?;
        let unchanged = crate::files::read_capped(&file, crate::runtime::MAX_PLUGIN_BYTES).is_ok_and(|old| old == wasm);
        if !unchanged {
            crate::files::write_atomically(&file, &wasm).map_err(|e| OciError::Cache {
                path: file.clone(),
                message: e.to_string(),
            })?;
        }
        tracing::info!(plugin = %name, source = %source, %digest, "plugin artefact pulled");
        // Loaded now rather than at the watcher's next event: the same path.
        self.registry.load_file(&file).await;
        Ok(Some(digest))
    }

    fn record(&self, name: &str, reference: String, result: Result<Option<String>, OciError>) {
        let now = unix_ms();
        let mut statuses = self.statuses.lock().unwrap();
        let status = statuses.entry(name.to_string()).or_insert_with(|| SourceStatus {
            reference: reference.clone(),
            file: self.file(name).display().to_string(),
            digest: None,
            pulled_unix_ms: None,
            error: None,
        });
        status.reference = reference;
        match result {
            Ok(Some(digest)) => {
                status.digest = Some(digest);
                status.pulled_unix_ms = Some(now);
                status.error = None;
            }
            Ok(None) => status.error = None,
            Err(e) => {
                let message = e.to_string();
                // Counted and logged when the failure starts or changes,
                // not at every poll while it lasts.
                if status.error.as_ref().is_none_or(|old| old.message != message) {
                    self.registry.metrics().load_error(e.reason());
                    match &status.digest {
                        Some(d) => tracing::error!(plugin = %name, "OCI pull refused, {d} keeps serving: {message}"),
                        None => tracing::error!(plugin = %name, "OCI pull refused: {message}"),
                    }
                }
                status.error = Some(SourceError {
                    reason: e.reason(),
                    message,
                    at_unix_ms: now,
                });
            }
        }
    }

    fn fail_all(&self, sources: &BTreeMap<String, Result<OciRef, OciError>>, e: &OciError) {
        for (name, source) in sources {
            self.record(name, shown(source), Err(e.clone()));
        }
    }
}

/// The reference as /plugins shows it, or why it does not parse.
fn shown(source: &Result<OciRef, OciError>) -> String {
    source.as_ref().map_or_else(ToString::to_string, ToString::to_string)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

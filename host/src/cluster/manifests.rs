//! Standalone mode's source of clusters: EtcdCluster and EtcdInspection YAML
//! files in a directory. `certName` names a directory (relative to the
//! manifest directory) holding the same file names as the Secret.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::crd::{EtcdCluster, EtcdInspection, API_VERSION};
use super::{ClusterConfig, ClusterKey, ConfigError};
use crate::etcd::Credentials;

/// The clusters read from a manifest directory, and what was wrong with the rest.
#[derive(Debug, Default)]
pub struct ManifestSet {
    pub clusters: Vec<ClusterConfig>,
    /// One message per rejected cluster or unreadable document.
    pub errors: Vec<String>,
    /// Clusters whose documents were found but rejected: a running
    /// cluster goes on with its last good configuration.
    pub rejected: Vec<ClusterKey>,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Reads every `*.yaml`/`*.yml` file (multi-document) in `dir`.
pub fn read_dir(dir: &Path) -> std::io::Result<ManifestSet> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
            yaml && !hidden && p.is_file()
        })
        .collect();
    files.sort();
    Ok(read_files(&files, dir))
}

/// Reads the given manifest files; `certName` directories are resolved
/// against `base`.
pub fn read_files(files: &[PathBuf], dir: &Path) -> ManifestSet {
    let mut set = ManifestSet::default();
    let mut clusters = Vec::new();
    let mut inspections = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                set.errors.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let where_ = format!("{} (document {})", file.display(), index + 1);
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    set.errors.push(format!("{where_}: not YAML: {e}"));
                    continue;
                }
            };
            let meta: TypeMeta = serde_yaml::from_value(value.clone()).unwrap_or(TypeMeta {
                api_version: String::new(),
                kind: String::new(),
            });
            if meta.api_version != API_VERSION {
                set.errors.push(format!(
                    "{where_}: apiVersion {:?} ignored, expected {API_VERSION:?}",
                    meta.api_version
                ));
                continue;
            }
            match meta.kind.as_str() {
                "EtcdCluster" => match serde_yaml::from_value::<EtcdCluster>(value) {
                    Ok(c) => clusters.push(c),
                    Err(e) => set.errors.push(format!("{where_}: EtcdCluster: {e}")),
                },
                "EtcdInspection" => match serde_yaml::from_value::<EtcdInspection>(value) {
                    Ok(i) => inspections.push(i),
                    Err(e) => set.errors.push(format!("{where_}: EtcdInspection: {e}")),
                },
                other => set.errors.push(format!(
                    "{where_}: kind {other:?} ignored, expected EtcdCluster or EtcdInspection"
                )),
            }
        }
    }

    let namespace = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.namespace.clone().unwrap_or_else(|| "default".into())
    };
    let mut names_seen = std::collections::HashMap::new();
    for cluster in &clusters {
        let ns = namespace(&cluster.metadata);
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let own: Vec<&EtcdInspection> = inspections
            .iter()
            .filter(|i| namespace(&i.metadata) == ns && i.spec.cluster_name == name)
            .collect();
        let resolve = |cert_name: &str| Credentials::from_dir(&dir.join(cert_name)).map_err(|e| e.to_string());
        match ClusterConfig::from_resources(cluster, &own, resolve) {
            // Series carry clusterName only (the seed's label set), so two
            // namespaces may not share a name: their series would collide (D18).
            Ok(config) => match names_seen.get(&config.key.name) {
                Some(first) => set.errors.push(
                    ConfigError {
                        cluster: config.key.to_string(),
                        field: "metadata.name".into(),
                        message: format!("clusterName {:?} is already used by {first}", config.key.name),
                    }
                    .to_string(),
                ),
                None => {
                    names_seen.insert(config.key.name.clone(), config.key.clone());
                    set.clusters.push(config)
                }
            },
            Err(e) => {
                set.rejected.push(ClusterKey { namespace: ns, name });
                set.errors.push(e.to_string())
            }
        }
    }
    set
}

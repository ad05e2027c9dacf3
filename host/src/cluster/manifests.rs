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
                    Ok(c) => clusters.push((c, where_.clone())),
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

    for (cluster, where_) in &clusters {
        let key = ClusterKey::of(cluster);
        // Defined twice: neither copy is taken, so a file added beside a
        // running cluster cannot take it over; the running one goes on.
        let copies: Vec<&str> = clusters
            .iter()
            .filter(|(c, _)| ClusterKey::of(c) == key)
            .map(|(_, w)| w.as_str())
            .collect();
        if copies.len() > 1 {
            if copies[0] == where_.as_str() {
                set.errors.push(
                    ConfigError {
                        cluster: key.to_string(),
                        field: "metadata.name".into(),
                        message: format!(
                            "defined {} times ({}); none is applied",
                            copies.len(),
                            copies.join(", ")
                        ),
                    }
                    .to_string(),
                );
                set.rejected.push(key);
            }
            continue;
        }
        let own: Vec<&EtcdInspection> = inspections
            .iter()
            .filter(|i| ClusterKey::inspected_by(i) == key)
            .collect();
        let resolve = |cert_name: &str| Credentials::from_dir(&dir.join(cert_name)).map_err(|e| e.to_string());
        match ClusterConfig::from_resources(cluster, &own, resolve) {
            Ok(config) => set.clusters.push(config),
            Err(e) => {
                set.rejected.push(key);
                set.errors.push(e.to_string())
            }
        }
    }
    set
}

//! Standalone mode's source of clusters: EtcdCluster and EtcdInspection YAML
//! files in a directory. `certName` names a directory (relative to the
//! manifest directory, and inside it unless allowed) holding the same file
//! names as the Secret.
//!
//! The directory is re-read every few seconds: a file is parsed again only
//! when it changed (size, modification time or inode), so a large manifest
//! costs its parse once, not at every rescan.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::crd::{EtcdCluster, EtcdInspection, API_VERSION};
use super::{ClusterConfig, ClusterKey, ConfigError};
use crate::etcd::Credentials;
use crate::files;

/// Largest manifest file read (1000 clusters take about 500 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

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

/// What one file holds, parsed.
#[derive(Clone, Default)]
struct Parsed {
    /// With where each was found (file and document), for error messages.
    clusters: Vec<(EtcdCluster, String)>,
    inspections: Vec<EtcdInspection>,
    errors: Vec<String>,
}

/// A file's identity for the cache: any change to it changes one of these.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: i128,
    inode: (u64, u64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// Reads a manifest directory again and again, parsing only what changed.
pub struct ManifestReader {
    dir: PathBuf,
    /// Refuse certName directories (and their files) outside `dir`.
    confine: bool,
    cache: HashMap<PathBuf, (Stamp, Parsed)>,
}

impl ManifestReader {
    pub fn new(dir: PathBuf, confine: bool) -> Self {
        ManifestReader {
            dir,
            confine,
            cache: HashMap::new(),
        }
    }

    /// Every `*.yaml`/`*.yml` file (multi-document) of the directory.
    pub fn read(&mut self) -> std::io::Result<ManifestSet> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| n.starts_with('.'));
                let yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
                yaml && !hidden
            })
            .collect();
        files.sort();
        self.cache.retain(|path, _| files.contains(path));
        let mut parsed = Vec::with_capacity(files.len());
        for file in &files {
            let stamp = Stamp::of(file);
            match (stamp, self.cache.get(file)) {
                (Some(stamp), Some((cached, p))) if *cached == stamp => parsed.push(p.clone()),
                _ => {
                    let p = parse_file(file);
                    if let Some(stamp) = stamp {
                        self.cache.insert(file.clone(), (stamp, p.clone()));
                    }
                    parsed.push(p);
                }
            }
        }
        Ok(build(parsed, &self.dir, self.confine))
    }
}

/// Reads the given manifest files once; `certName` directories are
/// resolved against `dir`.
pub fn read_files(files: &[PathBuf], dir: &Path, confine: bool) -> ManifestSet {
    build(files.iter().map(|f| parse_file(f)).collect(), dir, confine)
}

/// Manifest text as if it were the only file of `dir` (named `source` in
/// errors): what the fuzz target drives, without touching the disk for the
/// manifest itself.
pub fn read_str(text: &str, source: &str, dir: &Path) -> ManifestSet {
    build(vec![parse_text(text, source)], dir, true)
}

fn parse_file(file: &Path) -> Parsed {
    match files::read_text_capped(file, MAX_MANIFEST_BYTES) {
        Ok(text) => parse_text(&text, &file.display().to_string()),
        Err(e) => Parsed {
            errors: vec![e.to_string()],
            ..Default::default()
        },
    }
}

fn parse_text(text: &str, source: &str) -> Parsed {
    let mut set = Parsed::default();
    let Parsed {
        clusters,
        inspections,
        errors,
    } = &mut set;
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let where_ = format!("{source} (document {})", index + 1);
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            // After a syntax error the rest of the file cannot be read
            // reliably, and serde_yaml's document iterator may yield the
            // same error forever (a lone control character did: found by
            // the manifest fuzz target, 1.6 GB in 20 s): stop at the first.
            Err(e) => {
                errors.push(format!("{where_}: not YAML: {e}"));
                break;
            }
        };
        let meta: TypeMeta = serde_yaml::from_value(value.clone()).unwrap_or(TypeMeta {
            api_version: String::new(),
            kind: String::new(),
        });
        if meta.api_version != API_VERSION {
            errors.push(format!(
                "{where_}: apiVersion {:?} ignored, expected {API_VERSION:?}",
                meta.api_version
            ));
            continue;
        }
        match meta.kind.as_str() {
            "EtcdCluster" => match serde_yaml::from_value::<EtcdCluster>(value) {
                Ok(c) => clusters.push((c, where_.clone())),
                Err(e) => errors.push(format!("{where_}: EtcdCluster: {e}")),
            },
            "EtcdInspection" => match serde_yaml::from_value::<EtcdInspection>(value) {
                Ok(i) => inspections.push(i),
                Err(e) => errors.push(format!("{where_}: EtcdInspection: {e}")),
            },
            other => errors.push(format!(
                "{where_}: kind {other:?} ignored, expected EtcdCluster or EtcdInspection"
            )),
        }
    }
    set
}

/// The clusters of all files: each validated with its inspections and
/// credentials (re-read every time: they are small, and may change alone).
fn build(parsed: Vec<Parsed>, dir: &Path, confine: bool) -> ManifestSet {
    let mut set = ManifestSet::default();
    let mut clusters = Vec::new();
    let mut inspections = Vec::new();
    for p in parsed {
        clusters.extend(p.clusters);
        inspections.extend(p.inspections);
        set.errors.extend(p.errors);
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
        let resolve = |cert_name: &str| {
            let cert_dir = if confine {
                files::confined(dir, cert_name, crate::etcd::CONFINEMENT_HINT).map_err(|e| e.to_string())?
            } else {
                dir.join(cert_name)
            };
            Credentials::from_dir(&cert_dir, confine.then_some(dir)).map_err(|e| e.to_string())
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, addr: &str) -> String {
        format!(
            "apiVersion: etcd.clay.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: {name}\n  annotations:\n    importedAddr: {addr}\nspec:\n  clusterType: imported\n"
        )
    }

    /// A file that sorts first cannot take over a running cluster by
    /// defining it again: neither copy applies, the key is kept running.
    #[test]
    fn a_cluster_defined_twice_applies_neither_copy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b-prod.yaml"), cluster("prod", "http://10.0.0.1:2379")).unwrap();
        let mut reader = ManifestReader::new(dir.path().to_path_buf(), true);
        assert_eq!(reader.read().unwrap().clusters.len(), 1);
        std::fs::write(
            dir.path().join("a-takeover.yaml"),
            cluster("prod", "http://10.6.6.6:2379"),
        )
        .unwrap();
        let set = reader.read().unwrap();
        assert!(set.clusters.is_empty(), "{:?}", set.clusters);
        assert_eq!(
            set.rejected,
            [ClusterKey::of(&serde_yaml::from_str(&cluster("prod", "x")).unwrap())]
        );
        assert_eq!(set.errors.len(), 1);
        assert!(
            set.errors[0].starts_with("cluster default/prod: metadata.name: defined 2 times ("),
            "{:?}",
            set.errors
        );
    }

    /// Found by the fuzz target: a control character made the document
    /// iterator yield one error after another without end.
    #[test]
    fn a_syntax_error_ends_the_file_with_one_error() {
        let set = read_str("\u{10}", "f.yaml", Path::new("/nonexistent"));
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert!(
            set.errors[0].starts_with("f.yaml (document 1): not YAML: "),
            "{:?}",
            set.errors
        );
        // The scanner refuses the whole text, with the position.
        let good_then_bad = format!("{}---\n\u{10}\n", cluster("ok", "http://10.0.0.1:2379"));
        let set = read_str(&good_then_bad, "g.yaml", Path::new("/nonexistent"));
        assert_eq!(
            set.errors,
            ["g.yaml (document 1): not YAML: control characters are not allowed at position 161"]
        );
    }

    /// Unchanged files are not parsed again; a changed one is.
    #[test]
    fn only_changed_files_are_parsed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, cluster("one", "http://10.0.0.1:2379")).unwrap();
        let mut reader = ManifestReader::new(dir.path().to_path_buf(), true);
        assert_eq!(reader.read().unwrap().clusters[0].key.name, "one");
        let stamp = reader.cache[&file].0;
        assert_eq!(reader.read().unwrap().clusters[0].key.name, "one");
        assert!(reader.cache[&file].0 == stamp);
        std::fs::write(&file, cluster("renamed", "http://10.0.0.1:2379")).unwrap();
        assert_eq!(reader.read().unwrap().clusters[0].key.name, "renamed");
        std::fs::remove_file(&file).unwrap();
        assert!(reader.read().unwrap().clusters.is_empty());
        assert!(reader.cache.is_empty(), "a removed file leaves the cache");
    }
}

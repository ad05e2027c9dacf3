//! Turns an EtcdCluster (plus its EtcdInspections) into the validated
//! settings the host runs with. Every error names the cluster and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use url::Url;

use super::crd::{EtcdCluster, EtcdInspection};
use crate::etcd::Credentials;

/// Annotation keys of the seed (§1.5).
pub mod annotations {
    pub const FEATURE_GATES: &str = "featureGates";
    pub const IMPORTED_ADDR: &str = "importedAddr";
    pub const CERT_NAME: &str = "certName";
    pub const EXT_CLIENT_URL: &str = "extClientURL";
    pub const REQUEST: &str = "request";
    /// Annotations under this prefix are passed to plugins as parameters.
    pub const PLUGIN_PARAM_PREFIX: &str = "etcd-inspector.io/";
}

/// `namespace/name` of an EtcdCluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A configuration error: which cluster, which field, what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cluster {cluster}: {field}: {message}")]
pub struct ConfigError {
    pub cluster: String,
    pub field: String,
    pub message: String,
}

/// One inspection to run against a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSettings {
    /// From EtcdInspection `spec.intervalInSecond`; `None` uses the plugin's default.
    pub interval: Option<Duration>,
}

/// Everything the host needs to inspect one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub key: ClusterKey,
    /// `importedAddr` URLs (a comma list is allowed), without trailing slash.
    pub seeds: Vec<String>,
    /// `extClientURL`: advertised `host:port` → reachable `host:port`.
    pub rewrites: HashMap<String, String>,
    pub credentials: Credentials,
    /// Enabled features (plugin names) and their settings.
    pub features: BTreeMap<String, FeatureSettings>,
    /// Passed to plugins in the snapshot.
    pub params: Vec<(String, String)>,
    /// Problems that do not stop the cluster (a malformed featureGates item).
    pub warnings: Vec<String>,
}

impl ClusterConfig {
    /// Validates `cluster`; `inspections` are the EtcdInspections whose
    /// `spec.clusterName` names it; `credentials` resolves a `certName`.
    pub fn from_resources(
        cluster: &EtcdCluster,
        inspections: &[&EtcdInspection],
        credentials: impl FnOnce(&str) -> Result<Credentials, String>,
    ) -> Result<Self, ConfigError> {
        let key = ClusterKey {
            namespace: cluster.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: cluster.metadata.name.clone().unwrap_or_default(),
        };
        let err = |field: &str, message: String| ConfigError {
            cluster: key.to_string(),
            field: field.into(),
            message,
        };
        if key.name.is_empty() {
            return Err(err("metadata.name", "missing".into()));
        }
        let spec = &cluster.spec;
        if spec.cluster_type != "imported" {
            return Err(err(
                "spec.clusterType",
                format!("unknown value {:?}, expected \"imported\"", spec.cluster_type),
            ));
        }
        match spec.storage_backend.as_deref() {
            None | Some("") | Some("v3") => {}
            Some(other) => {
                return Err(err(
                    "spec.storageBackend",
                    format!("unsupported value {other:?}, expected \"v3\""),
                ))
            }
        }

        let empty = BTreeMap::new();
        let notes = cluster.metadata.annotations.as_ref().unwrap_or(&empty);
        let annotation = |name: &str| notes.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let seeds_field = format!("metadata.annotations.{}", annotations::IMPORTED_ADDR);
        let seeds = parse_seeds(annotation(annotations::IMPORTED_ADDR)).map_err(|m| err(&seeds_field, m))?;
        let rewrites = parse_rewrites(annotation(annotations::EXT_CLIENT_URL).unwrap_or(""))
            .map_err(|m| err(&format!("metadata.annotations.{}", annotations::EXT_CLIENT_URL), m))?;
        let credentials = match annotation(annotations::CERT_NAME) {
            None => Credentials::default(),
            Some(name) => {
                credentials(name).map_err(|m| err(&format!("metadata.annotations.{}", annotations::CERT_NAME), m))?
            }
        };
        if seeds.iter().any(|s| s.starts_with("https://")) && credentials.ca_pem.is_none() {
            return Err(err(
                &format!("metadata.annotations.{}", annotations::CERT_NAME),
                "https endpoints need a CA (ca.crt) to verify the server certificate".into(),
            ));
        }

        let (gates, warnings) = parse_feature_gates(annotation(annotations::FEATURE_GATES).unwrap_or(""));
        let mut features: BTreeMap<String, FeatureSettings> = gates
            .iter()
            .filter(|(_, on)| **on)
            .map(|(name, _)| (name.clone(), FeatureSettings { interval: None }))
            .collect();
        for inspection in inspections {
            let feature = inspection.spec.inspection_type.clone();
            if gates.get(&feature) == Some(&false) {
                continue; // explicitly disabled on the cluster
            }
            let interval = inspection
                .spec
                .interval_in_second
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.into()));
            features.insert(feature, FeatureSettings { interval });
        }

        let params = notes
            .iter()
            .filter(|(k, _)| {
                [
                    annotations::FEATURE_GATES,
                    annotations::IMPORTED_ADDR,
                    annotations::EXT_CLIENT_URL,
                    annotations::REQUEST,
                ]
                .contains(&k.as_str())
                    || k.starts_with(annotations::PLUGIN_PARAM_PREFIX)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(ClusterConfig {
            key,
            seeds,
            rewrites,
            credentials,
            features,
            params,
            warnings,
        })
    }
}

fn parse_seeds(value: Option<&str>) -> Result<Vec<String>, String> {
    let value = value.ok_or(
        "missing; an imported cluster needs the client URL of at least one member, e.g. https://10.0.0.1:2379",
    )?;
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let url = Url::parse(item)
                .map_err(|e| format!("{item:?} is not a URL ({e}); expected a URL such as https://10.0.0.1:2379"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!("{item:?}: expected an http:// or https:// URL with a host"));
            }
            Ok(url.as_str().trim_end_matches('/').to_string())
        })
        .collect()
}

/// `advertisedHost:port->reachableHost:port[,…]`.
fn parse_rewrites(value: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (from, to) = item
            .split_once("->")
            .ok_or_else(|| format!("{item:?}: expected advertisedHost:port->reachableHost:port"))?;
        for side in [from, to] {
            // Parse as a URL authority so IPv6 literals work (D11).
            let url = Url::parse(&format!("http://{}", side.trim()))
                .map_err(|e| format!("{item:?}: {side:?} is not host:port ({e})"))?;
            if url.port().is_none() || url.path() != "/" {
                return Err(format!("{item:?}: {side:?} is not host:port"));
            }
        }
        map.insert(from.trim().to_string(), to.trim().to_string());
    }
    Ok(map)
}

/// The seed's format: `name=bool,…`, booleans as Go's `strconv.ParseBool`.
/// Returns the gates and a warning per item that was skipped.
pub fn parse_feature_gates(value: &str) -> (BTreeMap<String, bool>, Vec<String>) {
    let mut gates = BTreeMap::new();
    let mut warnings = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = match item.split('=').collect::<Vec<_>>().as_slice() {
            [name, value] => match value.trim() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => Some((name.trim(), true)),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => Some((name.trim(), false)),
                _ => None,
            },
            _ => None,
        };
        match parsed {
            Some((name, on)) if !name.is_empty() => {
                gates.insert(name.to_string(), on);
            }
            _ => warnings.push(format!(
                "metadata.annotations.{}: item {item:?} skipped, expected name=true or name=false",
                annotations::FEATURE_GATES
            )),
        }
    }
    (gates, warnings)
}

//! Turns an EtcdCluster (plus its EtcdInspections) into the validated
//! settings the host runs with. Every error names the cluster and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use url::Url;

use super::crd::{EtcdCluster, EtcdInspection};
use crate::etcd::{ClusterConnection, ConnectionSettings, Credentials, TlsError};

/// Annotation keys of the seed (§1.5).
pub mod annotations {
    pub const FEATURE_GATES: &str = "featureGates";
    pub const IMPORTED_ADDR: &str = "importedAddr";
    pub const CERT_NAME: &str = "certName";
    pub const EXT_CLIENT_URL: &str = "extClientURL";
    pub const REQUEST: &str = "request";
    /// `"true"`: do not verify the server certificates of this cluster (D13).
    pub const INSECURE_SKIP_TLS_VERIFY: &str = "etcd-inspector.io/insecure-skip-tls-verify";
    /// Annotations under this prefix are passed to plugins as parameters.
    pub const PLUGIN_PARAM_PREFIX: &str = "etcd-inspector.io/";
}

/// Bound on a cluster's annotations, keys and values together.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Bound on `featureGates`: each gate becomes a schedule.
pub const MAX_FEATURE_GATES: usize = 64;
pub const MAX_FEATURE_GATES_BYTES: usize = 4096;

/// `namespace/name` of an EtcdCluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    pub namespace: String,
    pub name: String,
}

impl ClusterKey {
    /// The namespace an object without one is in (a manifest file may omit it).
    pub const DEFAULT_NAMESPACE: &'static str = "default";

    fn new(namespace: Option<&str>, name: &str) -> Self {
        ClusterKey {
            namespace: namespace.unwrap_or(Self::DEFAULT_NAMESPACE).to_string(),
            name: name.to_string(),
        }
    }

    /// The key of an EtcdCluster.
    pub fn of(cluster: &EtcdCluster) -> Self {
        Self::new(
            cluster.metadata.namespace.as_deref(),
            cluster.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// The cluster an EtcdInspection names: `spec.clusterName` in its own namespace.
    pub fn inspected_by(inspection: &EtcdInspection) -> Self {
        Self::new(inspection.metadata.namespace.as_deref(), &inspection.spec.cluster_name)
    }
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

/// Where a cluster's features come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureSource {
    /// `featureGates` plus EtcdInspections (standalone mode).
    GatesAndInspections,
    /// EtcdInspections only (Kubernetes mode).
    Inspections,
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
    /// Whether a connection made for `self` serves `other` too (same
    /// endpoints, rewrites and credentials).
    pub fn same_connection(&self, other: &ClusterConfig) -> bool {
        self.seeds == other.seeds && self.rewrites == other.rewrites && self.credentials == other.credentials
    }

    /// This cluster's connections, prepared (nothing is dialled yet).
    pub fn connect(&self, settings: ConnectionSettings) -> Result<ClusterConnection, TlsError> {
        ClusterConnection::new(
            &self.key.to_string(),
            self.seeds.clone(),
            self.rewrites.clone(),
            self.credentials.clone(),
            settings,
        )
    }

    /// Validates `cluster`; `inspections` are the EtcdInspections whose
    /// `spec.clusterName` names it; `credentials` resolves a `certName`.
    pub fn from_resources(
        cluster: &EtcdCluster,
        inspections: &[&EtcdInspection],
        credentials: impl FnOnce(&str) -> Result<Credentials, String>,
    ) -> Result<Self, ConfigError> {
        Self::build(cluster, inspections, FeatureSource::GatesAndInspections, credentials)
    }

    /// Validates `cluster` and builds its configuration; `features` says
    /// whether `featureGates` enable features by themselves (standalone) or
    /// only through EtcdInspections (Kubernetes mode, where the cluster
    /// controller turns gates into inspections).
    pub fn build(
        cluster: &EtcdCluster,
        inspections: &[&EtcdInspection],
        features: FeatureSource,
        credentials: impl FnOnce(&str) -> Result<Credentials, String>,
    ) -> Result<Self, ConfigError> {
        let key = ClusterKey::of(cluster);
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
        // Kubernetes caps annotations at 256 KiB; manifest files get the same
        // bound, and featureGates one that fits any real set of features.
        let total: usize = notes.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > MAX_ANNOTATION_BYTES {
            return Err(err(
                "metadata.annotations",
                format!("{total} bytes; expected at most {MAX_ANNOTATION_BYTES}, as Kubernetes allows"),
            ));
        }
        if let Some(gates) = notes.get(annotations::FEATURE_GATES) {
            let count = gates.split(',').filter(|g| !g.trim().is_empty()).count();
            if count > MAX_FEATURE_GATES || gates.len() > MAX_FEATURE_GATES_BYTES {
                return Err(err(
                    &format!("metadata.annotations.{}", annotations::FEATURE_GATES),
                    format!(
                        "{count} gates in {} bytes; expected at most {MAX_FEATURE_GATES} gates in {MAX_FEATURE_GATES_BYTES} bytes",
                        gates.len()
                    ),
                ));
            }
        }
        let annotation = |name: &str| notes.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let seeds_field = format!("metadata.annotations.{}", annotations::IMPORTED_ADDR);
        let seeds = parse_seeds(annotation(annotations::IMPORTED_ADDR)).map_err(|m| err(&seeds_field, m))?;
        let rewrites = parse_rewrites(annotation(annotations::EXT_CLIENT_URL).unwrap_or(""))
            .map_err(|m| err(&format!("metadata.annotations.{}", annotations::EXT_CLIENT_URL), m))?;
        let mut credentials = match annotation(annotations::CERT_NAME) {
            None => Credentials::default(),
            Some(name) => {
                credentials(name).map_err(|m| err(&format!("metadata.annotations.{}", annotations::CERT_NAME), m))?
            }
        };
        let mut notes_for_user = Vec::new();
        match annotation(annotations::INSECURE_SKIP_TLS_VERIFY) {
            None | Some("false") => {}
            Some("true") => {
                credentials.skip_server_verification = true;
                notes_for_user.push(format!(
                    "server certificates are not verified ({} is \"true\")",
                    annotations::INSECURE_SKIP_TLS_VERIFY
                ));
            }
            Some(other) => {
                return Err(err(
                    &format!("metadata.annotations.{}", annotations::INSECURE_SKIP_TLS_VERIFY),
                    format!("{other:?}: expected \"true\" or \"false\""),
                ))
            }
        }
        let https = seeds.iter().any(|s| s.starts_with("https://"));
        if https && credentials.ca_pem.is_none() && !credentials.skip_server_verification {
            return Err(err(
                &format!("metadata.annotations.{}", annotations::CERT_NAME),
                "https endpoints need a CA (ca.crt) to verify the server certificate".into(),
            ));
        }

        let (gates, mut warnings) = parse_feature_gates(annotation(annotations::FEATURE_GATES).unwrap_or(""));
        let mut enabled: BTreeMap<String, FeatureSettings> = BTreeMap::new();
        if features == FeatureSource::GatesAndInspections {
            for (name, _) in gates.iter().filter(|(_, on)| **on) {
                enabled.insert(name.clone(), FeatureSettings { interval: None });
            }
        }
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
            enabled.insert(feature, FeatureSettings { interval });
        }
        let features = enabled;
        warnings.extend(notes_for_user);

        // Plugins see the seed's annotations, ours, and any annotation named
        // after a feature (the seed's `request` is one: it sets its watch path).
        const SEED_PARAMS: [&str; 4] = [
            annotations::FEATURE_GATES,
            annotations::IMPORTED_ADDR,
            annotations::EXT_CLIENT_URL,
            annotations::REQUEST,
        ];
        let params = notes
            .iter()
            .filter(|(k, _)| {
                SEED_PARAMS.contains(&k.as_str())
                    || k.starts_with(annotations::PLUGIN_PARAM_PREFIX)
                    || gates.contains_key(k.as_str())
                    || features.contains_key(k.as_str())
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
            let url = Url::parse(item).map_err(|e| {
                let why = if item.contains("://") {
                    e.to_string()
                } else {
                    "no scheme".into()
                };
                format!("{item:?} is not a URL ({why}); expected a URL such as https://10.0.0.1:2379")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !item.contains("://") {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::crd::EtcdClusterSpec;

    fn cluster(annotations: &[(&str, &str)]) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            "c1",
            EtcdClusterSpec {
                cluster_type: "imported".into(),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        c
    }

    fn config(annotations: &[(&str, &str)]) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::from_resources(&cluster(annotations), &[], |_| Ok(Credentials::default()))
    }

    #[test]
    fn feature_gates_follow_go_parse_bool_and_report_skipped_items() {
        let (gates, warnings) = parse_feature_gates("healthy=true, alarm=F,consistency=1,request=yes,broken");
        assert_eq!(gates.get("healthy"), Some(&true));
        assert_eq!(gates.get("alarm"), Some(&false));
        assert_eq!(gates.get("consistency"), Some(&true));
        assert_eq!(gates.get("request"), None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("\"request=yes\""), "{warnings:?}");
    }

    #[test]
    fn imported_addr_takes_a_comma_list_of_urls_including_ipv6() {
        let c = config(&[("importedAddr", "https://10.0.0.1:2379/, http://[::1]:2379")]);
        let err = c.unwrap_err();
        assert_eq!(err.field, "metadata.annotations.certName", "https needs a CA: {err}");
        let c = config(&[("importedAddr", "http://10.0.0.1:2379/, http://[::1]:2379")]).unwrap();
        assert_eq!(c.seeds, vec!["http://10.0.0.1:2379", "http://[::1]:2379"]);
    }

    #[test]
    fn feature_gates_and_annotations_are_bounded() {
        let many: Vec<String> = (0..65).map(|i| format!("f{i}=true")).collect();
        let err = config(&[("importedAddr", "http://a:2379"), ("featureGates", &many.join(","))]).unwrap_err();
        assert_eq!(err.field, "metadata.annotations.featureGates");
        assert!(err.message.starts_with("65 gates in"), "{err}");
        let ok: Vec<String> = (0..64).map(|i| format!("f{i}=true")).collect();
        assert!(config(&[("importedAddr", "http://a:2379"), ("featureGates", &ok.join(","))]).is_ok());
        let huge = "x".repeat(MAX_ANNOTATION_BYTES);
        let err = config(&[("importedAddr", "http://a:2379"), ("etcd-inspector.io/note", &huge)]).unwrap_err();
        assert_eq!(err.field, "metadata.annotations");
    }

    #[test]
    fn errors_name_the_cluster_and_the_field() {
        let err = config(&[]).unwrap_err();
        assert_eq!(err.cluster, "ns/c1");
        assert_eq!(err.field, "metadata.annotations.importedAddr");
        let err = config(&[("importedAddr", "10.0.0.1:2379")]).unwrap_err();
        assert!(
            err.message.contains("(no scheme); expected a URL such as https://"),
            "{err}"
        );
        let err = config(&[("importedAddr", "etcd-0:2379")]).unwrap_err();
        assert!(err.message.contains("expected an http:// or https:// URL"), "{err}");
        let err = config(&[("importedAddr", "http://a:1"), ("extClientURL", "a:1=>b:2")]).unwrap_err();
        assert_eq!(err.field, "metadata.annotations.extClientURL");
        let mut c = cluster(&[("importedAddr", "http://a:1")]);
        c.spec.storage_backend = Some("v2".into());
        let err = ClusterConfig::from_resources(&c, &[], |_| Ok(Credentials::default())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster ns/c1: spec.storageBackend: unsupported value \"v2\", expected \"v3\""
        );
    }

    #[test]
    fn verification_is_on_unless_the_cluster_opts_out_explicitly() {
        let opt_out = "etcd-inspector.io/insecure-skip-tls-verify";
        let err = config(&[("importedAddr", "https://a:1"), (opt_out, "yes")]).unwrap_err();
        assert_eq!(err.field, format!("metadata.annotations.{opt_out}"));
        assert!(
            config(&[("importedAddr", "https://a:1")]).is_err(),
            "https without a CA and without opting out"
        );
        let c = config(&[("importedAddr", "https://a:1"), (opt_out, "true")]).unwrap();
        assert!(c.credentials.skip_server_verification);
        assert!(
            c.warnings.iter().any(|w| w.contains("not verified")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn ext_client_url_maps_host_port_pairs_including_ipv6() {
        let c = config(&[
            ("importedAddr", "http://a:1"),
            ("extClientURL", "10.0.0.1:2379->lb:32379,[fd00::1]:2379->x:1"),
        ])
        .unwrap();
        assert_eq!(c.rewrites.get("10.0.0.1:2379").map(String::as_str), Some("lb:32379"));
        assert_eq!(c.rewrites.get("[fd00::1]:2379").map(String::as_str), Some("x:1"));
    }

    #[test]
    fn inspections_add_features_and_set_intervals_unless_the_gate_says_false() {
        let c = cluster(&[
            ("importedAddr", "http://a:1"),
            ("featureGates", "healthy=true,alarm=false"),
        ]);
        let inspection = |feature: &str, interval| {
            EtcdInspection::new(
                &format!("c1-{feature}"),
                crate::cluster::crd::EtcdInspectionSpec {
                    cluster_name: "c1".into(),
                    inspection_type: feature.into(),
                    interval_in_second: interval,
                    ..Default::default()
                },
            )
        };
        let (a, b, d) = (
            inspection("healthy", Some(7)),
            inspection("alarm", Some(5)),
            inspection("custom", None),
        );
        let config = ClusterConfig::from_resources(&c, &[&a, &b, &d], |_| Ok(Credentials::default())).unwrap();
        let features: Vec<(&str, Option<Duration>)> =
            config.features.iter().map(|(k, v)| (k.as_str(), v.interval)).collect();
        assert_eq!(
            features,
            vec![("custom", None), ("healthy", Some(Duration::from_secs(7)))]
        );
    }
}

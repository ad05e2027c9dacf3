//! The seed's custom resources, `etcd.clay.io/v1alpha1`, with the same JSON
//! field names. Fields that mean nothing for imported clusters are optional
//! (D23); the status is a subresource.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group and version of both kinds.
pub const API_VERSION: &str = "etcd.clay.io/v1alpha1";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.clay.io",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    status = "EtcdClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_config: Option<AuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "whole_number")]
    pub disk_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "whole_number")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "v3"]))]
    pub storage_backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Only `imported` is served.
    #[schemars(extend("enum" = ["imported"]))]
    pub cluster_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Kept opaque: meaningless for imported clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque")]
    pub affinity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque")]
    pub env: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque")]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque")]
    pub tolerations: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    #[serde(default, rename = "enableTLS")]
    pub enable_tls: bool,
    #[serde(default)]
    pub san: Vec<String>,
    #[serde(default)]
    pub tls_secret: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    #[serde(default)]
    pub feature_gates_status: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// `ready/total` members, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Why the cluster is in its phase. `type` is `Ready`; `reason` is a
/// CamelCase word (`AllMembersHealthy`, `MembersUnhealthy`, `Unreachable`,
/// `TLSError`, `AuthenticationFailed`, `InvalidSpec`, `CredentialsUnavailable`,
/// `DuplicateName`); `message` says what to fix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub member_id: String,
    pub status: String,
    pub version: String,
    pub endpoint: String,
    pub port: String,
    pub client_url: String,
    pub extension_client_url: String,
    pub role: String,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.clay.io",
    version = "v1alpha1",
    kind = "EtcdInspection",
    namespaced,
    status = "EtcdInspectionStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.inspectionType"}"#,
    printcolumn = r#"{"name":"Last","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdInspectionSpec {
    pub cluster_name: String,
    pub inspection_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection_provider: Option<String>,
    /// Seconds between runs; 30 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "seconds")]
    pub interval_in_second: Option<u32>,
}

/// Any JSON, kept as is. A structural schema (which the API server requires
/// of a CRD) gives every field a type unless it preserves unknown fields.
fn opaque(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A count. schemars says `format: uint64`, which the API server does not
/// know (it warns on every apply).
fn whole_number(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "minimum": 0,
        "nullable": true,
    })
}

/// A number of seconds, as [`whole_number`] but within what the host reads.
fn seconds(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": u32::MAX,
        "nullable": true,
    })
}

/// The seed's EtcdInspection status, now written: the last run and a
/// bounded list of recent runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdInspectionStatus {
    /// Outcome of the last run (`ok`, `timeout`, …).
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub records: Vec<InspectionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InspectionRecord {
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub end_time: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// Both CRDs as one YAML stream; `deploy/crds.yaml` is this output
/// (`etcd-inspector crd > deploy/crds.yaml`).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let cluster = serde_yaml::to_string(&EtcdCluster::crd())?;
    let inspection = serde_yaml::to_string(&EtcdInspection::crd())?;
    Ok(format!("---\n{cluster}---\n{inspection}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_crds_match_the_rust_types() {
        let committed = include_str!("../../../deploy/crds.yaml");
        assert!(
            crds_yaml().unwrap() == committed,
            "deploy/crds.yaml is stale: run `etcd-inspector crd > deploy/crds.yaml`"
        );
    }

    #[test]
    fn the_crds_have_a_status_subresource_printer_columns_and_enums() {
        let yaml = crds_yaml().unwrap();
        assert_eq!(yaml.matches("status: {}").count(), 2, "{yaml}");
        assert!(yaml.contains("jsonPath: .status.readyMembers"));
        assert!(yaml.contains("- imported"));
        // Fields meaningless for imported clusters are optional (D23).
        let cluster: serde_yaml::Value = serde_yaml::from_str(yaml.split("---\n").nth(1).unwrap()).unwrap();
        let required = &cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"];
        assert_eq!(required, &serde_yaml::Value::Sequence(vec!["clusterType".into()]));
    }
}

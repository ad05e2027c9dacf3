//! TLS material and credentials from a cluster's `certName` Secret, read
//! on demand (no cluster-wide Secret cache, D15) and kept in memory (D5).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::etcd::Credentials;

/// Reads the Secret `certName` names for a cluster in `namespace`. A
/// `namespace/name` form outside the cluster's namespace is refused unless
/// `allow_other_namespaces` (D14).
pub async fn credentials(
    client: &Client,
    namespace: &str,
    cert_name: &str,
    allow_other_namespaces: bool,
) -> Result<Credentials, String> {
    let (secret_ns, name) = match cert_name.split('/').collect::<Vec<_>>().as_slice() {
        [name] => (namespace, *name),
        [ns, name] => (*ns, *name),
        _ => return Err(format!("{cert_name:?}: expected a Secret name or namespace/name")),
    };
    if secret_ns != namespace && !allow_other_namespaces {
        return Err(format!(
            "Secret {secret_ns}/{name} is outside the cluster's namespace {namespace}; \
             start etcd-inspector with --allow-cross-namespace-secrets to allow it"
        ));
    }
    let secret = match Api::<Secret>::namespaced(client.clone(), secret_ns).get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(format!("Secret {secret_ns}/{name} not found")),
        Err(e) => return Err(format!("Secret {secret_ns}/{name}: {e}")),
    };
    let data = secret.data.unwrap_or_default();
    Credentials::from_entries(&format!("Secret {secret_ns}/{name}"), |key| {
        Ok(data.get(key).map(|b| b.0.clone()))
    })
    .map_err(|e| e.to_string())
}

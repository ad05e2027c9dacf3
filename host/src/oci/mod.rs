//! Plugins as OCI artefacts, the way Kubewarden, Spin and Istio distribute
//! wasm: pulled with oci-client, verified against their digests (the
//! manifest's and the layer's), cached on disk by digest, and handed to the
//! plugin directory, where the same validation and swap as for any file
//! applies. `plugin push` publishes one in the CNCF wasm artefact layout
//! (`application/wasm` layer, `application/vnd.wasm.config.v0+json`
//! config), which `oras` and `wkg` read and write too.

mod auth;
mod cache;
mod reference;
pub mod source;

use std::path::PathBuf;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, OciManifest, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

pub use auth::{DockerConfig, Login};
pub use cache::Cache;
pub use reference::OciRef;

use crate::runtime::{sha256_hex, MAX_PLUGIN_BYTES};

/// The layer media type of a wasm component in the CNCF layout.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The config media type of the CNCF layout.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Also accepted: the older wasm-to-oci / Krustlet layer type.
const OLD_WASM_MEDIA_TYPE: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;

#[derive(Clone, Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Reference(String),
    #[error("registry credentials: {0}")]
    Credentials(String),
    /// The registry refused our credentials (or asked for some).
    #[error("unauthorized at {registry}: {message}")]
    Unauthorized { registry: String, message: String },
    /// What arrived is not what the digest names.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    #[error("not a plugin artefact: {0}")]
    NotAPlugin(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

impl OciError {
    /// The `reason` label of `etcd_inspector_plugin_load_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::Reference(_) | OciError::Credentials(_) => "oci_config",
            OciError::Unauthorized { .. } => "oci_unauthorized",
            OciError::DigestMismatch(_) => "oci_digest_mismatch",
            OciError::NotAPlugin(_) => "oci_not_a_plugin",
            OciError::Registry(_) | OciError::Cache { .. } => "oci_pull",
        }
    }

    fn from_client(registry: &str, e: oci_client::errors::OciDistributionError) -> Self {
        use oci_client::errors::OciDistributionError as E;
        let message = crate::etcd::error_chain(&e);
        match e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } | E::ServerError { code: 401 | 403, .. } => {
                OciError::Unauthorized {
                    registry: registry.to_string(),
                    message,
                }
            }
            E::DigestError(_) => OciError::DigestMismatch(message),
            E::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        oci_client::errors::OciErrorCode::Unauthorized | oci_client::errors::OciErrorCode::Denied
                    )
                }) =>
            {
                OciError::Unauthorized {
                    registry: registry.to_string(),
                    message,
                }
            }
            _ => OciError::Registry(message),
        }
    }
}

/// How the host talks to registries.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// Registries (`host:port`) reached over plain HTTP: an explicit opt-out
    /// of TLS, as docker's `insecure-registries`.
    pub insecure: Vec<String>,
    /// PEM files of CAs trusted besides the system's (a private registry).
    pub ca_files: Vec<PathBuf>,
    /// Timeout of one request (above zero: the flags are checked).
    pub timeout: Duration,
}

impl RegistrySettings {
    pub fn client(&self) -> Result<Client, OciError> {
        let mut roots = Vec::new();
        for path in &self.ca_files {
            let data = crate::files::read_capped(path, 1 << 20)
                .map_err(|e| OciError::Credentials(format!("CA file {}: {e}", path.display())))?;
            roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let timeout = self.timeout;
        Ok(Client::new(ClientConfig {
            protocol: if self.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.insecure.clone())
            },
            extra_root_certificates: roots,
            read_timeout: Some(timeout),
            connect_timeout: Some(timeout),
            user_agent: concat!("etcd-inspector/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }))
    }
}

fn registry_auth(login: Option<&Login>) -> RegistryAuth {
    login.map_or(RegistryAuth::Anonymous, Login::to_auth)
}

/// The manifest digest a tag points at now (a HEAD request).
pub async fn resolve(client: &Client, source: &OciRef, login: Option<&Login>) -> Result<String, OciError> {
    if let Some(digest) = source.digest() {
        return Ok(digest.to_string());
    }
    client
        .fetch_manifest_digest(source.reference(), &registry_auth(login))
        .await
        .map_err(|e| OciError::from_client(source.registry(), e))
}

/// The wasm of the artefact at `digest`: from the cache when it holds it
/// (verified again), else pulled, verified and cached.
pub async fn fetch(
    client: &Client,
    cache: &Cache,
    source: &OciRef,
    digest: &str,
    login: Option<&Login>,
) -> Result<Vec<u8>, OciError> {
    if let Some(wasm) = cache.get(digest)? {
        return Ok(wasm);
    }
    let auth = registry_auth(login);
    let at = source.at(digest);
    let registry = source.registry();
    // oci-client checks the body against the digest we ask for; we check
    // again so that the cache can never hold what the digest does not name.
    let (manifest_bytes, got) = client
        .pull_manifest_raw(&at, &auth, &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| OciError::from_client(registry, e))?;
    let computed = format!("sha256:{}", sha256_hex(&manifest_bytes));
    if got != digest || computed != digest {
        return Err(OciError::DigestMismatch(format!(
            "manifest of {source}: expected {digest}, got {computed}"
        )));
    }
    let layer = wasm_layer(&manifest_bytes)?;
    let mut wasm = Vec::with_capacity(layer.size.max(0) as usize);
    client
        .pull_blob(&at, &layer, &mut wasm)
        .await
        .map_err(|e| OciError::from_client(registry, e))?;
    if format!("sha256:{}", sha256_hex(&wasm)) != layer.digest {
        return Err(OciError::DigestMismatch(format!(
            "layer {} of {source}: the bytes served hash otherwise",
            layer.digest
        )));
    }
    cache.put(digest, &manifest_bytes, &wasm)?;
    Ok(wasm)
}

/// The one wasm layer of a manifest, size-checked before any byte of it.
fn wasm_layer(manifest: &[u8]) -> Result<OciDescriptor, OciError> {
    let manifest: OciImageManifest =
        serde_json::from_slice(manifest).map_err(|e| OciError::NotAPlugin(format!("manifest does not parse: {e}")))?;
    let mut wasm = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == WASM_MEDIA_TYPE || l.media_type == OLD_WASM_MEDIA_TYPE);
    let layer = wasm
        .next()
        .ok_or_else(|| OciError::NotAPlugin(format!("no layer of media type {WASM_MEDIA_TYPE}")))?;
    if wasm.next().is_some() {
        return Err(OciError::NotAPlugin("more than one wasm layer".into()));
    }
    if !(0..=MAX_PLUGIN_BYTES as i64).contains(&layer.size) {
        return Err(OciError::NotAPlugin(format!(
            "the wasm layer is {} bytes; at most {MAX_PLUGIN_BYTES}",
            layer.size
        )));
    }
    Ok(layer)
}

/// Publishes `wasm` at `target` (a tag); returns the manifest digest.
pub async fn push(
    client: &Client,
    target: &OciRef,
    wasm: Vec<u8>,
    file_name: &str,
    login: Option<&Login>,
) -> Result<String, OciError> {
    let auth = registry_auth(login);
    let registry = target.registry();
    let reference = target.reference();
    client.store_auth_if_needed(reference.resolve_registry(), &auth).await;
    // Anonymous registries answer the first request; others want the
    // token or basic login set up before a blob is pushed.
    client
        .auth(reference, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| OciError::from_client(registry, e))?;
    let layer_digest = format!("sha256:{}", sha256_hex(&wasm));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    }))
    .expect("a JSON value serialises");
    let layer = ImageLayer::new(
        wasm,
        WASM_MEDIA_TYPE.to_string(),
        Some([("org.opencontainers.image.title".to_string(), file_name.to_string())].into()),
    );
    let config = Config::new(config, WASM_CONFIG_MEDIA_TYPE.to_string(), None);
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.artifact_type = Some("application/vnd.wasm.component.v1+wasm".to_string());
    for (data, digest) in [
        (layer.data.clone(), layer_digest.clone()),
        (config.data.clone(), manifest.config.digest.clone()),
    ] {
        client
            .push_blob(reference, data, &digest)
            .await
            .map_err(|e| OciError::from_client(registry, e))?;
    }
    let manifest = OciManifest::Image(manifest);
    let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let digest = format!("sha256:{}", sha256_hex(&body));
    let content_type = manifest.content_type().parse().expect("a media type is a header value");
    client
        .push_manifest_raw(reference, body, content_type)
        .await
        .map_err(|e| OciError::from_client(registry, e))?;
    Ok(digest)
}

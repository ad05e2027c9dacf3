//! Builds the TLS configurations (gRPC and HTTP) from in-memory PEM.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use super::Credentials;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("ca.crt: {0}")]
    Ca(String),
    #[error("client certificate/key: {0}")]
    Identity(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// rustls configuration for the HTTP `/health` probe. Server certificates
/// are always verified against the cluster's CA; without a CA no https
/// endpoint is trusted.
pub fn http_tls_config(creds: &Credentials) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &creds.ca_pem {
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| TlsError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Ca("no certificate found".into()));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match &creds.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Identity(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Identity(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Identity(e.to_string()))
        }
    }
}

/// tonic TLS options for the gRPC connections.
pub fn grpc_tls_options(creds: &Credentials) -> etcd_client::TlsOptions {
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &creds.ca_pem {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &creds.identity {
        tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
    }
    tls
}

//! Builds the TLS configurations (gRPC and HTTP) from in-memory PEM.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
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

/// rustls configuration for the HTTP `/health` probe and the gRPC
/// channels. Server certificates are verified against the cluster's CA
/// (without one no https endpoint is trusted) unless
/// `skip_server_verification`.
pub fn rustls_config(creds: &Credentials) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if creds.skip_server_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        builder.with_root_certificates(root_store(creds)?)
    };
    let mut config = match &creds.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Identity(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Identity(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Identity(e.to_string()))?
        }
    };
    // One config per cluster: the default cache for 256 servers (about
    // 46 KiB, allocated up front) is far more than a cluster's members.
    // This store serves the HTTP/1 probes; member channels each get one of
    // their own (`ClusterConnection::member_tls`).
    config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMABLE_SERVERS);
    Ok(config)
}

/// The cluster's CA certificates; empty when it names none (then no https
/// endpoint is trusted).
pub(super) fn root_store(creds: &Credentials) -> Result<rustls::RootCertStore, TlsError> {
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
    Ok(roots)
}

/// Servers (members) per cluster whose TLS sessions are kept for resumption.
const RESUMABLE_SERVERS: usize = 16;

/// Accepts any server certificate, but still checks the handshake
/// signatures: used only for clusters that opted out explicitly.
#[derive(Debug)]
pub(super) struct AcceptAnyServer(pub(super) Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! What certificates say about themselves: the chain a member presents to
//! clients (read from one TLS handshake, no request sent) and the client
//! certificate the host presents. Names, serials and dates only: no key
//! material leaves this module.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{tls, CallError, Credentials};

/// One certificate, as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

/// The chain a member presented and whether the host trusts it.
#[derive(Clone, Debug)]
pub struct ServerCertificates {
    pub chain: Vec<CertificateInfo>,
    /// `None` when trusted or when the cluster opted out of verification.
    pub verify_error: Option<String>,
}

/// Describes DER certificates; one that does not parse is described by its
/// parse error in `subject`, so a chain keeps its length and order.
pub fn describe(chain: &[CertificateDer<'_>]) -> Vec<CertificateInfo> {
    chain.iter().map(|der| describe_one(der)).collect()
}

fn describe_one(der: &[u8]) -> CertificateInfo {
    let cert = match X509Certificate::from_der(der) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return CertificateInfo {
                subject: format!("(not a readable X.509 certificate: {e})"),
                issuer: String::new(),
                serial: String::new(),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
                not_before: 0,
                not_after: 0,
                is_ca: false,
            }
        }
    };
    let (mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        ip_addresses.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex::encode(cert.raw_serial()),
        dns_names,
        ip_addresses,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    }
}

/// The client certificate chain of `creds`, described (empty without one).
pub fn client_chain(creds: &Credentials) -> Vec<CertificateInfo> {
    let Some((cert, _)) = &creds.identity else {
        return Vec::new();
    };
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert).filter_map(Result::ok).collect();
    describe(&ders)
}

/// Shakes hands with `endpoint` (an `https://` URL) and returns what it
/// presented. The handshake is completed whatever the verdict, so that an
/// expired or misnamed certificate can be reported rather than only
/// refused; nothing is sent over it, and no client certificate is offered.
pub async fn server_certificates(
    endpoint: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<ServerCertificates, CallError> {
    let url = url::Url::parse(endpoint).map_err(|e| CallError::Other(format!("{endpoint}: {e}")))?;
    if url.scheme() != "https" {
        return Ok(ServerCertificates {
            chain: Vec::new(),
            verify_error: None,
        });
    }
    let host = url
        .host_str()
        .ok_or_else(|| CallError::Other(format!("{endpoint}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|e| CallError::Other(format!("{endpoint}: {e}")))?;
    let recorder = Arc::new(Recorder::new(creds).map_err(|e| CallError::Tls(e.to_string()))?);
    let config = rustls::ClientConfig::builder_with_provider(recorder.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| CallError::Unavailable(format!("{endpoint}: {e}")))?;
        // A server that wants a client certificate may end the handshake
        // after its own was read: that is all this needs.
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        Ok::<_, CallError>(())
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| CallError::Timeout(format!("{endpoint}: no TLS handshake within {timeout:?}")))??;
    let seen = recorder.seen.lock().unwrap().take();
    let (chain, verify_error) =
        seen.ok_or_else(|| CallError::Tls(format!("{endpoint}: the server presented no certificate")))?;
    Ok(ServerCertificates {
        chain: describe(&chain),
        verify_error,
    })
}

/// Records the chain presented and the verdict of the host's usual
/// verification, then lets the handshake go on.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    /// Checks the handshake signatures (and nothing of the chain).
    signatures: tls::AcceptAnyServer,
    /// The cluster's verification; `Err` says why there is none to pass
    /// (no CA), `Ok(None)` that the cluster opted out.
    verifier: Result<Option<Arc<WebPkiServerVerifier>>, String>,
    seen: Mutex<Option<(Vec<CertificateDer<'static>>, Option<String>)>>,
}

impl Recorder {
    fn new(creds: &Credentials) -> Result<Self, tls::TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = if creds.skip_server_verification {
            Ok(None)
        } else {
            let roots = tls::root_store(creds)?;
            if roots.is_empty() {
                Err("no CA is configured for this cluster, so no https endpoint is trusted".to_string())
            } else {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        };
        Ok(Recorder {
            signatures: tls::AcceptAnyServer(provider.clone()),
            provider,
            verifier,
            seen: Mutex::new(None),
        })
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.verifier {
            Ok(None) => None,
            Ok(Some(v)) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .err()
                .map(verdict),
            Err(why) => Some(why.clone()),
        };
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.seen.lock().unwrap() = Some((chain, verdict));
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's own signatures are checked as for any server.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// Why a chain is refused, in words that stay the same from one round to
/// the next (rustls's own text of some errors carries the current time).
fn verdict(error: rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cause) = &error else {
        return error.to_string();
    };
    match cause {
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
        C::UnknownIssuer => "unknown issuer: not signed by the cluster's CA".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "certificate not valid for the host name the inspector connects to".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "certificate not valid for server use".into(),
        C::BadSignature => "bad signature".into(),
        C::Revoked => "certificate revoked".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_by_its_names_and_dates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["etcd-0.example".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        params.distinguished_name.push(rcgen::DnType::CommonName, "etcd-0");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x0a, 0xbc]));
        let cert = params.self_signed(&key).unwrap();
        let info = describe(&[cert.der().clone()]).remove(0);
        assert_eq!(info.subject, "CN=etcd-0");
        assert_eq!(info.issuer, "CN=etcd-0");
        assert_eq!(info.serial, "0abc");
        assert_eq!(info.dns_names, ["etcd-0.example"]);
        assert_eq!(info.ip_addresses, ["10.1.2.3"]);
        assert_eq!(info.not_before, 1_767_225_600);
        assert_eq!(info.not_after, 1_798_761_600);
        assert!(!info.is_ca);
    }

    #[test]
    fn verdicts_do_not_carry_the_time() {
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(2_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_000)),
        });
        assert_eq!(verdict(expired), "certificate expired");
    }

    #[test]
    fn junk_is_described_as_junk_and_keeps_its_place() {
        let described = describe(&[CertificateDer::from(vec![1, 2, 3])]);
        assert_eq!(described.len(), 1);
        assert!(
            described[0].subject.starts_with("(not a readable X.509 certificate"),
            "{:?}",
            described[0]
        );
    }
}

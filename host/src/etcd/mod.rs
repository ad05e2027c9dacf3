//! etcd access for the host: one [`ClusterConnection`] per cluster, holding
//! its TLS material in memory and a client per member endpoint.

mod certificates;
mod channel;
mod connection;
mod credentials;
mod fake;
mod probe;
mod reads;
mod shared;
mod tls;
mod types;
mod watch;

pub use certificates::{CertificateInfo, ServerCertificates};
pub use channel::tls_handshakes;
pub use connection::{ClusterConnection, ConnectionSettings};
pub use credentials::{Credentials, CredentialsError, CONFINEMENT_HINT};
pub use fake::{FakeEtcd, FAKE_REVISION};
pub use reads::EtcdReads;
pub use shared::answers_shared;
pub use tls::TlsError;
pub use types::{CallError, MemberHealth, MemberInfo, MemberStatus, WatchEvent, WatchUpdate};
pub use watch::Watch;

/// Formats an error with its whole source chain: the useful part of a TLS
/// or transport failure ("invalid peer certificate: UnknownIssuer") is
/// usually several levels down.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

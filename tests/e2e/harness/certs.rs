//! Certificates made at test time with rcgen: a CA, a server certificate for
//! 127.0.0.1/localhost and a client certificate signed by it.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};

pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub struct Pki {
    pub ca: Pem,
    pub server: Pem,
    pub client: Pem,
}

/// What differs from the default [`Pki::new`].
#[derive(Default)]
pub struct Leaves {
    /// The server and client certificates expire this long from now
    /// (default: rcgen's, far away).
    pub valid_for: Option<Duration>,
    /// The server certificate names only `localhost`, not 127.0.0.1.
    pub localhost_only: bool,
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        Pki::with(ca_name, Leaves::default())
    }

    pub fn with(ca_name: &str, leaves: Leaves) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Pem {
            cert: ca_cert.pem(),
            key: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |cn: &str, usages: Vec<ExtendedKeyUsagePurpose>, localhost_only: bool| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = vec![SanType::DnsName("localhost".try_into().unwrap())];
            if !localhost_only {
                params
                    .subject_alt_names
                    .insert(0, SanType::IpAddress("127.0.0.1".parse().unwrap()));
            }
            if let Some(valid_for) = leaves.valid_for {
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::minutes(5);
                params.not_after = now + valid_for;
            }
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &issuer).unwrap();
            Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        // etcd also presents its server pair as a client (peer and gateway traffic).
        let server = leaf(
            "etcd-server",
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            leaves.localhost_only,
        );
        let client = leaf("etcd-inspector", vec![ExtendedKeyUsagePurpose::ClientAuth], false);
        Pki { ca, server, client }
    }

    /// Writes a certName directory with the seed's Secret key names.
    pub fn write_cert_dir(&self, dir: &Path, ca_pem: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        std::fs::write(dir.join("server.crt"), &self.client.cert).unwrap();
        std::fs::write(dir.join("server.key"), &self.client.key).unwrap();
    }
}

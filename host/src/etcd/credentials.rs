//! TLS material and credentials for one cluster, kept in memory only (D5).

use std::fmt;
use std::path::Path;

use thiserror::Error;

/// File names accepted in a certName Secret or directory: the seed's first,
/// kstone's second.
const CERT_NAMES: [&str; 2] = ["server.crt", "client.pem"];
const KEY_NAMES: [&str; 2] = ["server.key", "client-key.pem"];
const CA_NAMES: [&str; 2] = ["ca.crt", "ca.pem"];
/// Largest credential file read: certificates and keys are a few KiB, a CA
/// bundle rarely 200 KiB; a 1 GB file is a mistake or an attack.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How a user allows certName directories outside the manifest directory.
pub const CONFINEMENT_HINT: &str =
    "certName must stay inside the manifest directory (start with --allow-cert-dirs-outside-manifests to lift this)";

/// What is needed to talk to a cluster. `Debug` never prints key material.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// PEM CA bundle that server certificates must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, presented for client-certificate auth.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user and password.
    pub user: Option<(String, String)>,
    /// The cluster opted out of server certificate verification (D13).
    pub skip_server_verification: bool,
}

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("{0}: not found or not a directory")]
    MissingDirectory(String),
    #[error("{dir}: {file} is present but {missing} is not; a client certificate needs both")]
    HalfIdentity {
        dir: String,
        file: &'static str,
        missing: &'static str,
    },
    #[error("{dir}: {file} is present but {missing} is not")]
    HalfUser {
        dir: String,
        file: &'static str,
        missing: &'static str,
    },
    /// A file of a certName directory: missing, too large, not regular, outside.
    #[error(transparent)]
    File(#[from] crate::files::ReadError),
    #[error("{path}: no PEM data found")]
    NotPem { path: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("skip_server_verification", &self.skip_server_verification)
            .finish()
    }
}

impl Credentials {
    /// Reads a certName directory (standalone mode): the same file names as
    /// the Secret keys, any subset of them; regular files of at most
    /// [`MAX_FILE_BYTES`]. With `root`, a file that links out of it is refused.
    pub fn from_dir(dir: &Path, root: Option<&Path>) -> Result<Self, CredentialsError> {
        let shown = dir.display().to_string();
        if !dir.is_dir() {
            return Err(CredentialsError::MissingDirectory(shown));
        }
        Self::from_entries(&shown, |name| {
            let path = match root {
                Some(root) => {
                    let inside = dir.strip_prefix(root).unwrap_or(dir).join(name);
                    crate::files::confined(root, &inside.to_string_lossy(), CONFINEMENT_HINT)?
                }
                None => dir.join(name),
            };
            match crate::files::read_capped(&path, MAX_FILE_BYTES) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Builds credentials from named entries (files of a directory, keys of a
    /// Secret). `source` names the origin in errors.
    pub fn from_entries(
        source: &str,
        mut get: impl FnMut(&str) -> Result<Option<Vec<u8>>, CredentialsError>,
    ) -> Result<Self, CredentialsError> {
        let mut first = |names: &[&'static str]| -> Result<Option<(&'static str, Vec<u8>)>, CredentialsError> {
            for name in names {
                if let Some(bytes) = get(name)?.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) {
                    return Ok(Some((name, bytes)));
                }
            }
            Ok(None)
        };
        let ca = first(&CA_NAMES)?;
        let cert = first(&CERT_NAMES)?;
        let key = first(&KEY_NAMES)?;
        let username = first(&["username"])?;
        let password = first(&["password"])?;

        for (name, pem) in [&ca, &cert, &key].into_iter().flatten() {
            if !String::from_utf8_lossy(pem).contains("-----BEGIN") {
                return Err(CredentialsError::NotPem {
                    path: format!("{source}/{name}"),
                });
            }
        }
        let identity = match (cert, key) {
            (Some((_, c)), Some((_, k))) => Some((c, k)),
            (None, None) => None,
            (Some((file, _)), None) => {
                return Err(CredentialsError::HalfIdentity {
                    dir: source.into(),
                    file,
                    missing: KEY_NAMES[0],
                })
            }
            (None, Some((file, _))) => {
                return Err(CredentialsError::HalfIdentity {
                    dir: source.into(),
                    file,
                    missing: CERT_NAMES[0],
                })
            }
        };
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).trim_end_matches(['\r', '\n']).to_string();
        let user = match (username, password) {
            (Some((_, u)), Some((_, p))) => Some((text(u), text(p))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(CredentialsError::HalfUser {
                    dir: source.into(),
                    file: "username",
                    missing: "password",
                })
            }
            (None, Some(_)) => {
                return Err(CredentialsError::HalfUser {
                    dir: source.into(),
                    file: "password",
                    missing: "username",
                })
            }
        };
        Ok(Credentials {
            ca_pem: ca.map(|(_, b)| b),
            identity,
            user,
            skip_server_verification: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn from(entries: &[(&str, &str)]) -> Result<Credentials, CredentialsError> {
        Credentials::from_entries("secret ns/x", |name| {
            Ok(entries
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_bytes().to_vec()))
        })
    }

    #[test]
    fn seed_and_kstone_key_names_are_accepted() {
        let seed = from(&[("ca.crt", PEM), ("server.crt", PEM), ("server.key", PEM)]).unwrap();
        let kstone = from(&[("ca.pem", PEM), ("client.pem", PEM), ("client-key.pem", PEM)]).unwrap();
        assert_eq!(seed, kstone);
        assert!(seed.identity.is_some() && seed.ca_pem.is_some() && seed.user.is_none());
    }

    #[test]
    fn half_an_identity_is_an_error_not_silently_plain_text() {
        let err = from(&[("ca.crt", PEM), ("server.crt", PEM)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret ns/x: server.crt is present but server.key is not; a client certificate needs both"
        );
        assert!(from(&[("username", "u")]).unwrap_err().to_string().contains("password"));
        assert!(from(&[("ca.crt", "garbage")])
            .unwrap_err()
            .to_string()
            .contains("ca.crt: no PEM data"));
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let c = from(&[
            ("username", "root\n"),
            ("password", "hunter2\n"),
            ("server.crt", PEM),
            ("server.key", PEM),
        ])
        .unwrap();
        assert_eq!(c.user, Some(("root".into(), "hunter2".into())));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("BEGIN"), "{shown}");
    }
}

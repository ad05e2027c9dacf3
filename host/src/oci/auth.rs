//! Registry credentials from a docker config (`~/.docker/config.json`, or a
//! `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`): the
//! `auths` map only; credential helpers are not run. Passwords live in
//! memory, never in a log line (the `Debug` of [`Login`] hides them).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::OciError;

#[derive(Deserialize, Default)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// A user and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({:?}, <password hidden>)", self.username)
    }
}

impl Login {
    pub fn to_auth(&self) -> RegistryAuth {
        RegistryAuth::Basic(self.username.clone(), self.password.clone())
    }
}

impl DockerConfig {
    /// Parses a docker config; the error names the field, never a value.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, OciError> {
        serde_json::from_slice(json).map_err(|e| {
            // serde_json's message quotes no input, only positions and types.
            OciError::Credentials(format!("{origin}: not a docker config ({e})"))
        })
    }

    /// The login for `registry` (`host[:port]`), matched as docker does:
    /// the key itself, or the key with a scheme and path around it.
    pub fn login(&self, registry: &str, origin: &str) -> Result<Option<Login>, OciError> {
        let entry = self.auths.iter().find(|(key, _)| {
            let host = key.trim_start_matches("https://").trim_start_matches("http://");
            host.split('/').next() == Some(registry)
        });
        let Some((key, entry)) = entry else { return Ok(None) };
        let bad = |why: &str| OciError::Credentials(format!("{origin}: auths[{key:?}]: {why}"));
        if entry.identity_token.is_some() {
            return Err(bad("identity tokens are not supported; use a username and password"));
        }
        let (username, password) = match (&entry.username, &entry.password, &entry.auth) {
            (Some(u), Some(p), _) => (u.clone(), p.clone()),
            (_, _, Some(auth)) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("auth: expected base64 of user:password"))?;
                let text = String::from_utf8(decoded).map_err(|_| bad("auth: expected base64 of user:password"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| bad("auth: expected base64 of user:password"))?;
                (u.to_string(), p.to_string())
            }
            _ => return Err(bad("expected auth, or username and password")),
        };
        Ok(Some(Login { username, password }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_found_by_registry_and_never_printed() {
        let config = br#"{"auths": {
            "https://registry.example:5000/v2/": {"auth": "cGx1Z2luczpzM2NyZXQ="},
            "ghcr.io": {"username": "bot", "password": "hunter2"},
            "broken.example": {"auth": "not base64!"}
        }}"#;
        let config = DockerConfig::parse(config, "config.json").unwrap();
        let login = config.login("registry.example:5000", "c").unwrap().unwrap();
        assert_eq!(login.username, "plugins");
        assert_eq!(login.to_auth(), RegistryAuth::Basic("plugins".into(), "s3cret".into()));
        assert!(!format!("{login:?}").contains("s3cret"));
        assert_eq!(config.login("ghcr.io", "c").unwrap().unwrap().username, "bot");
        assert_eq!(config.login("quay.io", "c").unwrap(), None);
        let err = config.login("broken.example", "c").unwrap_err().to_string();
        assert!(err.contains("auth: expected base64 of user:password"), "{err}");
        let err = DockerConfig::parse(b"{\"auths\": [\"hunter2\"]}", "config.json")
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

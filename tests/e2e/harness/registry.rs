//! A real OCI registry (Debian's docker-registry, distribution 2.8) on
//! loopback, over TLS with a CA made at test time and, when asked, htpasswd
//! logins (bcrypt, the only hash distribution takes).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::certs::Pki;
use super::{free_port, wait_until};

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:port`
    pub address: String,
    /// The CA its certificate is signed by (PEM file).
    pub ca_file: PathBuf,
}

impl Registry {
    pub async fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("registry-ca");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), &pki.ca.cert).unwrap();
        std::fs::write(path("server.pem"), &pki.server.cert).unwrap();
        std::fs::write(path("server.key"), &pki.server.key).unwrap();
        let hash = bcrypt::hash(password, 4).unwrap();
        std::fs::write(path("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {address}\n  secret: test-only\n  tls:\n    certificate: {}\n    key: {}\n\
             auth:\n  htpasswd:\n    realm: etcd-inspector-test\n    path: {}\n",
            path("storage").display(),
            path("server.pem").display(),
            path("server.key").display(),
            path("htpasswd").display(),
        );
        std::fs::write(path("config.yml"), config).unwrap();
        let log = std::fs::File::create(path("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", path("config.yml").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/setup.sh installs it)");
        let registry = Registry {
            child,
            ca_file: path("ca.pem"),
            address,
            dir,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.cert.as_bytes()).unwrap())
            .build()
            .unwrap();
        let url = format!("https://{}/v2/", registry.address);
        wait_until("the registry answers", Duration::from_secs(30), async || {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 401 => Ok(()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        registry
    }

    /// `oci://127.0.0.1:port/<path>`
    pub fn reference(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.address)
    }

    /// Writes a docker config with this login for the registry; returns it.
    pub fn docker_config(&self, name: &str, user: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let path = self.dir.path().join(name);
        let json = serde_json::json!({ "auths": { (self.address.clone()): { "auth": auth } } });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    /// Alters the stored bytes of a blob without changing its length or
    /// the digest it is stored under: what a damaged disk or a tampering
    /// mirror serves.
    pub fn tamper_blob(&self, digest: &str) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let data = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = std::fs::read(&data).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
    }

    /// Stops serving: what a pinned plugin must survive through the cache.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

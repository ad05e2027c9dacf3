//! A real kube-apiserver (built by tests/tools/build.sh from k8s.io/kubernetes)
//! on loopback, the way controller-runtime's envtest runs one: its own etcd,
//! a serving certificate made at test time, a static token for the test's
//! admin, RBAC on, and service-account signing keys so the host can run as
//! the etcd-inspector ServiceAccount with a real token.
//!
//! deploy/namespace.yaml, deploy/crds.yaml and deploy/rbac.yaml are applied
//! exactly as they ship. No controller-manager runs: nothing is garbage
//! collected, so what a user sees on delete is what the host itself does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::certs::Pki;
use super::etcd::{EtcdCluster, Options};
use super::{free_port, pinned_version, tool, wait_until};

/// The namespace deploy/ installs into, and where the host's ServiceAccount lives.
pub const NAMESPACE: &str = "kstone";

pub struct KubeApiServer {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    /// Its storage; dropped (killed) after the API server.
    _etcd: EtcdCluster,
}

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

/// The pinned Kubernetes release (tests/tools/kubernetes/go.mod).
pub fn release() -> String {
    pinned_version("kubernetes", "k8s.io/kubernetes")
}

impl KubeApiServer {
    pub async fn start() -> KubeApiServer {
        let etcd = EtcdCluster::start(Options::new(1)).await;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("kube-ca");
        let file = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            path
        };
        let ca = file("ca.crt", &pki.ca.cert);
        let cert = file("serving.crt", &pki.server.cert);
        let key = file("serving.key", &pki.server.key);
        let signing = rcgen::KeyPair::generate().unwrap();
        let sa_key = file("sa.key", &signing.serialize_pem());
        // The verifying side reads public keys (or PKCS#1/SEC1 private ones).
        let sa_pub = file("sa.pub", &signing.public_key_pem());
        let admin_token = format!("admin-{}", free_port());
        let tokens = file(
            "tokens.csv",
            &format!("{admin_token},test-admin,test-admin,\"system:masters\"\n"),
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("kube-apiserver.log")).unwrap();
        let binary = tool("kube-apiserver", &release());
        let child = Command::new(&binary)
            .args(["--etcd-servers", &etcd.endpoints()])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-private-key-file")
            .arg(&key)
            .arg("--token-auth-file")
            .arg(&tokens)
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(&sa_pub)
            .arg("--service-account-signing-key-file")
            .arg(&sa_key)
            .args(["--service-cluster-ip-range", "10.0.0.0/24"])
            // Nothing here runs pods; fewer moving parts on a 2-core machine.
            .args(["--enable-priority-and-fairness=false", "--profiling=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let server = KubeApiServer {
            url: format!("https://127.0.0.1:{port}"),
            child,
            dir,
            _etcd: etcd,
        };
        server.write_kubeconfig("admin.kubeconfig", &ca, &admin_token);
        wait_until("kube-apiserver ready", Duration::from_secs(120), async || {
            server.kubectl(&["get", "--raw", "/readyz"]).map(|_| ())
        })
        .await;
        let apply = |files: &[&str], namespace: Option<&str>| {
            let mut args = vec!["apply".to_string()];
            if let Some(ns) = namespace {
                args.extend(["-n".into(), ns.into()]);
            }
            for f in files {
                args.extend(["-f".into(), deploy(f).display().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            server
                .kubectl(&args)
                .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
        };
        apply(&["namespace.yaml", "crds.yaml"], None);
        // rbac.yaml names no namespace: kustomize (or -n) puts it in kstone.
        apply(&["rbac.yaml"], Some(NAMESPACE));
        server
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/etcdclusters.etcd.clay.io",
                "crd/etcdinspections.etcd.clay.io",
            ])
            .unwrap();
        // A real ServiceAccount token (TokenRequest), as a pod would mount.
        let sa_token = server
            .kubectl(&["create", "token", "etcd-inspector", "-n", NAMESPACE, "--duration=2h"])
            .unwrap();
        server.write_kubeconfig("host.kubeconfig", &ca, sa_token.trim());
        server
    }

    fn write_kubeconfig(&self, name: &str, ca: &Path, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
            self.url,
            ca.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The kubeconfig the host runs with: the etcd-inspector ServiceAccount,
    /// so it has exactly the rights deploy/rbac.yaml grants.
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("host.kubeconfig")
    }

    /// An administrator's client for the test itself.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.dir.path().join("admin.kubeconfig")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs the kubectl of the same release as the administrator.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(tool("kubectl", &release()))
            .arg("--kubeconfig")
            .arg(self.dir.path().join("admin.kubeconfig"))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(stdout + &String::from_utf8_lossy(&out.stderr))
        }
    }

    /// Creates a namespace (nothing else creates them here).
    pub fn namespace(&self, name: &str) {
        self.kubectl(&["create", "namespace", name]).unwrap();
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

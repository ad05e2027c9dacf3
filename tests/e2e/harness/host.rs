//! The real `etcd-inspector` binary in standalone mode, on a free port, with
//! its log captured to a file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::metrics::Scrape;
use super::{free_port, get_text, http_client, wait_until};

pub struct Host {
    child: Child,
    pub base_url: String,
    log_path: PathBuf,
    pub dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Host {
    /// Starts the host in standalone mode with `plugins` copied into its
    /// plugin directory, `manifests` (file name, YAML; or a certName
    /// directory's file as `dir/file`) in its manifest directory, and extra flags.
    pub async fn start(plugins: &[PathBuf], manifests: &[(&str, String)], extra: &[&str]) -> Host {
        Host::standalone(plugins, manifests, extra, None).await
    }

    /// [`Host::start`] with the process's address space limited to `bytes`
    /// (RLIMIT_AS), as on nodes that cannot reserve much of it.
    pub async fn start_in_address_space(bytes: u64, plugins: &[PathBuf], manifests: &[(&str, String)]) -> Host {
        Host::standalone(plugins, manifests, &[], Some(bytes)).await
    }

    async fn standalone(
        plugins: &[PathBuf],
        manifests: &[(&str, String)],
        extra: &[&str],
        address_space: Option<u64>,
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let manifest_dir = dir.path().join("manifests");
        std::fs::create_dir_all(&manifest_dir).unwrap();
        for (name, body) in manifests {
            // A name with a directory (`creds/password`) makes the directory.
            let path = manifest_dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let mut args: Vec<OsString> = vec!["standalone".into(), "--manifests".into(), manifest_dir.into()];
        args.extend(extra.iter().map(OsString::from));
        Host::launch(dir, plugins, args, address_space).await
    }

    /// Starts the host in Kubernetes mode (`run`) against `kubeconfig`.
    pub async fn kubernetes(plugins: &[PathBuf], kubeconfig: &Path, extra: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<OsString> = vec!["run".into(), "--kubeconfig".into(), kubeconfig.into()];
        args.extend(extra.iter().map(OsString::from));
        Host::launch(dir, plugins, args, None).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        plugins: &[PathBuf],
        args: Vec<OsString>,
        address_space: Option<u64>,
    ) -> Host {
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        for p in plugins {
            std::fs::copy(p, plugin_dir.join(p.file_name().unwrap())).unwrap();
        }
        let port = free_port();
        let log_path = dir.path().join("host.log");
        // A caller that brings its own plugin directory passes --plugin-dir itself.
        let own_dir: Vec<OsString> = if args.iter().any(|a| a == "--plugin-dir") {
            Vec::new()
        } else {
            vec!["--plugin-dir".into(), plugin_dir.into()]
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_etcd-inspector"));
        if let Some(bytes) = address_space {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
            .args(&args)
            .args(&own_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "RUST_LOG",
                std::env::var("E2E_HOST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let host = Host {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            dir,
            client: http_client(),
        };
        wait_until("host /health", Duration::from_secs(60), async || {
            host.get("/health").await.map(|_| ())
        })
        .await;
        host
    }

    pub fn manifest_dir(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub async fn get(&self, path: &str) -> Result<String, String> {
        get_text(&self.client, &format!("{}{path}", self.base_url)).await
    }

    pub async fn scrape(&self) -> Scrape {
        Scrape::parse(&self.get("/metrics").await.expect("scrape /metrics"))
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get(path).await.expect("GET json")).expect("JSON")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- host log ----\n{}", self.log());
        }
    }
}

/// An EtcdCluster manifest in the seed's schema.
pub fn cluster_manifest(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: etcd.clay.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n"
    );
    for (k, v) in annotations {
        yaml.push_str(&format!("    {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    yaml.push_str("spec:\n  clusterType: imported\n");
    yaml
}

/// An EtcdInspection manifest (`<cluster>-<feature>`).
pub fn inspection_manifest(cluster: &str, feature: &str, interval: u32) -> String {
    format!(
        "apiVersion: etcd.clay.io/v1alpha1\nkind: EtcdInspection\nmetadata:\n  name: {cluster}-{feature}\n  namespace: default\nspec:\n  clusterName: {cluster}\n  inspectionType: {feature}\n  intervalInSecond: {interval}\n"
    )
}

//! Shared test harness: etcd clusters, certificates, the host process.

pub mod certs;
pub mod etcd;
pub mod host;
pub mod kube_api;
pub mod metrics;
pub mod proxy;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A loopback port nobody listens on, never handed out twice in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes; panics with
/// `what` and the last observation otherwise.
pub async fn wait_until<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The built plugin components (see scripts/build-plugins.sh).
pub fn plugin_file(kind: &str, name: &str) -> PathBuf {
    let base = std::env::var_os("ETCD_INSPECTOR_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target>/debug/deps/e2e-<hash>
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("plugins")
        });
    let path = base.join(kind).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh (make test does) first",
        path.display()
    );
    path
}

/// rustls needs a process-wide crypto provider for the test's own HTTP client.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

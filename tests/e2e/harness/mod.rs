//! Shared test harness: etcd clusters, certificates, the host process.

/// Runs the test function `$name(version)` once per etcd version, as
/// `$name::etcd_3_4` … `$name::etcd_3_7`: the compatibility subset that the
/// README's version table points at.
macro_rules! on_every_etcd {
    ($name:ident) => {
        mod $name {
            use $crate::harness::etcd::Version;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_3_4() {
                super::$name(Version::V3_4).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_3_5() {
                super::$name(Version::V3_5).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_3_6() {
                super::$name(Version::V3_6).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_3_7() {
                super::$name(Version::V3_7).await
            }
        }
    };
}

pub mod browser;
pub mod certs;
pub mod etcd;
pub mod host;
pub mod kube;
pub mod metrics;
pub mod prometheus;
pub mod proxy;
pub mod registry;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
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

/// The version of `module` that the Go tools module `tests/tools/<dir>`
/// pins: its go.mod is the one place test tool versions are written.
pub fn pinned_version(dir: &str, module: &str) -> String {
    let go_mod = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/tools")
        .join(dir)
        .join("go.mod");
    let text = std::fs::read_to_string(&go_mod).unwrap_or_else(|e| panic!("{}: {e}", go_mod.display()));
    let prefix = format!("{module} v");
    text.lines()
        .map(|l| l.trim().trim_start_matches("require ").trim())
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{} does not pin {module}", go_mod.display()))
        .to_string()
}

/// A binary that tests/tools/build.sh built: `<name>-<version>` in
/// $TOOLS_BIN (default ~/.cache/etcd-inspector/bin).
pub fn tool(name: &str, version: &str) -> PathBuf {
    let bin = std::env::var_os("TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/etcd-inspector/bin"));
    let path = bin.join(format!("{name}-{version}"));
    assert!(
        path.is_file(),
        "{} is missing: run tests/tools/build.sh (make test does) first",
        path.display()
    );
    path
}

/// GET `url`: the body of a 2xx answer, else what went wrong.
pub async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("HTTP {status}: {body}"))
    }
}

/// rustls needs a process-wide crypto provider for the test's own HTTP client.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

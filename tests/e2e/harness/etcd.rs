//! Real etcd clusters on free loopback ports, in a temp dir: Debian's
//! etcd-server (3.4) or etcd 3.5, 3.6 and 3.7 built by tests/tools/build.sh.
//! Every process is killed when the value is dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::certs::Pki;
use super::metrics::Scrape;
use super::{free_port, get_text, http_client, pinned_version, tool, wait_until};

/// A member's own metrics, which etcd serves on its client URL: what the
/// server saw of the host (its calls, its watches), counted by etcd itself.
pub async fn member_metrics(client_url: &str) -> Scrape {
    let text = get_text(&http_client(), &format!("{client_url}/metrics")).await;
    Scrape::parse(&text.expect("etcd's /metrics"))
}

/// The etcd release lines the suite runs against. 3.6 (what Kubernetes
/// 1.34–1.36 ship) is the default; every version runs the compatibility
/// subset (see `on_every_etcd!`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Version {
    /// Debian 12's etcd-server and etcd-client, 3.4.23.
    V3_4,
    V3_5,
    #[default]
    V3_6,
    V3_7,
}

impl Version {
    /// `3.6` and so on: the tools module is `tests/tools/etcd-3.6`.
    pub fn line(self) -> &'static str {
        match self {
            Version::V3_4 => "3.4",
            Version::V3_5 => "3.5",
            Version::V3_6 => "3.6",
            Version::V3_7 => "3.7",
        }
    }

    /// The exact release, as pinned in the tools module's go.mod (the one
    /// place versions are written), or Debian's for 3.4.
    pub fn release(self) -> String {
        match self {
            Version::V3_4 => "3.4.23".into(),
            _ => pinned_version(&format!("etcd-{}", self.line()), "go.etcd.io/etcd/server/v3"),
        }
    }

    /// The binary `name` (`etcd` or `etcdctl`) of this version.
    pub fn binary(self, name: &str) -> PathBuf {
        match self {
            Version::V3_4 => PathBuf::from(name),
            _ => tool(name, &self.release()),
        }
    }
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    child: Child,
}

/// A member `etcdctl member add` announced, not started yet.
pub struct AddedMember {
    pub id: u64,
    name: String,
    peer_url: String,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
    pub version: Version,
    tls: Option<PathBuf>,
    /// How every member is started (flags shared by the members).
    launch: Launch,
}

/// The flags every member of a cluster shares.
struct Launch {
    scheme: &'static str,
    token: String,
    quota_bytes: Option<u64>,
    extra: Vec<String>,
}

pub struct Options<'a> {
    pub size: usize,
    pub version: Version,
    /// Serve clients over https with client-certificate auth.
    pub tls: Option<&'a Pki>,
    /// `--quota-backend-bytes`, to reach NOSPACE quickly.
    pub quota_bytes: Option<u64>,
    /// More flags for every member.
    pub extra: Vec<String>,
}

impl<'a> Options<'a> {
    pub fn new(size: usize) -> Self {
        Options {
            size,
            version: Version::default(),
            tls: None,
            quota_bytes: None,
            extra: Vec::new(),
        }
    }

    pub fn args(self, args: &[&str]) -> Self {
        Options {
            extra: args.iter().map(|a| a.to_string()).collect(),
            ..self
        }
    }

    pub fn version(self, version: Version) -> Self {
        Options { version, ..self }
    }

    pub fn tls(self, pki: &'a Pki) -> Self {
        Options { tls: Some(pki), ..self }
    }

    pub fn quota(self, bytes: u64) -> Self {
        Options {
            quota_bytes: Some(bytes),
            ..self
        }
    }
}

impl EtcdCluster {
    pub async fn start(options: Options<'_>) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let tls = options.tls.map(|pki| {
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            for (name, body) in [
                ("ca.crt", &pki.ca.cert),
                ("server.crt", &pki.server.cert),
                ("server.key", &pki.server.key),
                ("client.crt", &pki.client.cert),
                ("client.key", &pki.client.key),
            ] {
                std::fs::write(tls_dir.join(name), body).unwrap();
            }
            tls_dir
        });
        let ports: Vec<(u16, u16)> = (0..options.size).map(|_| (free_port(), free_port())).collect();
        let launch = Launch {
            scheme,
            token: format!("t{}", ports[0].0),
            quota_bytes: options.quota_bytes,
            extra: options.extra,
        };
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
            version: options.version,
            tls,
            launch,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let member = cluster.spawn(
                options.version,
                &format!("m{i}"),
                format!("{scheme}://127.0.0.1:{client}"),
                format!("http://127.0.0.1:{peer}"),
                &initial.join(","),
                "new",
            );
            cluster.members.push(member);
        }
        let endpoints = cluster.endpoints();
        wait_until("etcd members healthy", Duration::from_secs(60), async || {
            cluster
                .etcdctl(&["--endpoints", &endpoints, "endpoint", "health"])
                .map(|_| ())
        })
        .await;
        cluster
    }

    /// Starts one member process of `version` (its data under `<dir>/<name>`).
    fn spawn(
        &self,
        version: Version,
        name: &str,
        client_url: String,
        peer_url: String,
        initial_cluster: &str,
        state: &str,
    ) -> Member {
        let etcd = version.binary("etcd");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(format!("{name}.log")))
            .unwrap();
        let mut cmd = Command::new(&etcd);
        cmd.args(["--name", name])
            .arg("--data-dir")
            .arg(self.dir().join(name))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.launch.token, "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(log);
        cmd.args(&self.launch.extra);
        if let Some(bytes) = self.launch.quota_bytes {
            cmd.arg(format!("--quota-backend-bytes={bytes}"));
        }
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file").arg(t.join("server.crt"));
            cmd.arg("--key-file").arg(t.join("server.key"));
            cmd.arg("--trusted-ca-file").arg(t.join("ca.crt"));
            cmd.arg("--client-cert-auth");
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", etcd.display()));
        Member {
            name: name.to_string(),
            client_url,
            peer_url,
            child,
        }
    }

    /// Adds a member with `etcdctl member add` (as a raft learner when
    /// `learner`); it joins when [`Self::start_member`] starts it.
    pub async fn add_member(&self, learner: bool) -> AddedMember {
        let name = format!("m{}", self.members.len());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let endpoints = self.endpoints();
        let peer_flag = format!("--peer-urls={peer_url}");
        let mut args = vec!["--endpoints", &endpoints, "member", "add", &name, &peer_flag];
        if learner {
            args.push("--learner");
        }
        // etcd refuses a reconfiguration until every member has been
        // connected for a few seconds ("unhealthy cluster").
        let out = wait_until("member add accepted", Duration::from_secs(30), async || {
            self.etcdctl(&args)
        })
        .await;
        // "Member 8e9e05c52164694d added to cluster ..."
        let id = out
            .split_whitespace()
            .nth(1)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("member id in {out:?}"));
        AddedMember { id, name, peer_url }
    }

    /// Starts a member added with [`Self::add_member`]; returns its index.
    pub fn start_member(&mut self, added: AddedMember, version: Version) -> usize {
        let client_url = format!("{}://127.0.0.1:{}", self.launch.scheme, free_port());
        let mut initial = self.initial_cluster();
        initial.push_str(&format!(",{}={}", added.name, added.peer_url));
        let member = self.spawn(version, &added.name, client_url, added.peer_url, &initial, "existing");
        self.members.push(member);
        self.members.len() - 1
    }

    /// `name=peer-url,…` of the running members.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops member `index` and starts it again on the same data with
    /// `version`: one step of a rolling upgrade.
    pub async fn restart_member(&mut self, index: usize, version: Version) {
        let member = &mut self.members[index];
        let _ = member.child.kill();
        let _ = member.child.wait();
        let (name, client_url, peer_url) = (member.name.clone(), member.client_url.clone(), member.peer_url.clone());
        let initial = self.initial_cluster();
        let restarted = self.spawn(version, &name, client_url.clone(), peer_url, &initial, "existing");
        self.members[index] = restarted;
        wait_until("the restarted member healthy", Duration::from_secs(60), async || {
            self.etcdctl(&["--endpoints", &client_url, "endpoint", "health"])
                .map(|_| ())
        })
        .await;
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs etcdctl (v3 API, with this cluster's client certificate).
    /// Adds user `root` with `password` and turns authentication on.
    pub fn enable_auth(&self, password: &str) {
        let ep = self.endpoints();
        let password = format!("--new-user-password={password}");
        self.etcdctl(&["--endpoints", &ep, "user", "add", "root", &password])
            .unwrap();
        self.etcdctl(&["--endpoints", &ep, "auth", "enable"]).unwrap();
    }

    /// A certName directory `name` beside the data holding `root` and `password`.
    pub fn user_dir(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("username"), "root\n").unwrap();
        std::fs::write(path.join("password"), password).unwrap();
        path
    }

    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(self.version.binary("etcdctl"));
        // 3.4 defaults to the v2 API; 3.6+ warns about the variable.
        if self.version == Version::V3_4 {
            cmd.env("ETCDCTL_API", "3");
        }
        cmd.args(["--command-timeout", "3s", "--dial-timeout", "2s"]);
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.join("ca.crt").display()));
            cmd.arg(format!("--cert={}", t.join("client.crt").display()));
            cmd.arg(format!("--key={}", t.join("client.key").display()));
        }
        let out = cmd.args(args).output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(stdout + &String::from_utf8_lossy(&out.stderr))
        }
    }

    /// Index of the current leader, from `endpoint status`.
    pub fn leader_index(&self) -> usize {
        let out = self
            .etcdctl(&["--endpoints", &self.endpoints(), "endpoint", "status", "-w", "json"])
            .unwrap();
        let statuses: Vec<Value> = serde_json::from_str(&out).unwrap();
        let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
        statuses
            .iter()
            .position(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .expect("leader among members")
    }

    /// Member ids and the current revision, from `endpoint status`.
    pub fn status(&self) -> Vec<(u64, u64)> {
        let out = self
            .etcdctl(&["--endpoints", &self.endpoints(), "endpoint", "status", "-w", "json"])
            .unwrap();
        let statuses: Vec<Value> = serde_json::from_str(&out).unwrap();
        statuses
            .iter()
            .map(|s| {
                let header = &s["Status"]["header"];
                (
                    header["member_id"].as_u64().unwrap(),
                    header["revision"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Writes 100 KiB values under /fill/ until etcd refuses one (a real
    /// NOSPACE from a small `--quota-backend-bytes`); returns etcd's error.
    pub async fn fill_quota(&self) -> String {
        let mut client = self.client().await;
        let value = vec![b'x'; 100 * 1024];
        for written in 0..1000 {
            if let Err(e) = client.put(format!("/fill/{written}"), value.clone(), None).await {
                return e.to_string();
            }
        }
        panic!("the quota never filled");
    }

    /// The documented recovery from NOSPACE: free space, compact,
    /// defragment, disarm.
    pub fn recover_from_nospace(&self) {
        let url = self.endpoints();
        self.etcdctl(&["--endpoints", &url, "del", "--prefix", "/fill/"])
            .unwrap();
        let revision = self.status()[0].1.to_string();
        self.etcdctl(&["--endpoints", &url, "compact", &revision]).unwrap();
        self.etcdctl(&["--endpoints", &url, "defrag"]).unwrap();
        self.etcdctl(&["--endpoints", &url, "alarm", "disarm"]).unwrap();
    }

    /// A client of the etcd-client crate for calls etcdctl lacks (alarm
    /// ACTIVATE), to every member, with the client certificate where the
    /// cluster has TLS.
    pub async fn client(&self) -> etcd_client::Client {
        let endpoints: Vec<&str> = self.members.iter().map(|m| m.client_url.as_str()).collect();
        let options = self.tls.as_ref().map(|dir| {
            let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
                    .identity(etcd_client::Identity::from_pem(read("client.crt"), read("client.key"))),
            )
        });
        etcd_client::Client::connect(endpoints, options).await.unwrap()
    }

    pub fn signal(&self, index: usize, signal: Signal) {
        kill(Pid::from_raw(self.members[index].child.id() as i32), signal).unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

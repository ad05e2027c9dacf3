//! One cluster's connections: a gRPC client per member endpoint (created on
//! first use, closed when idle). `/health` rides the member channel on TLS
//! members, a one-request HTTP/1 connection on plain-text ones
//! (`probe`), and reqwest's client only where a TLS listener serves gRPC
//! alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::sync::OnceCell;
use url::Url;

use super::certificates::{self, CertificateInfo, ServerCertificates};
use super::channel::{Endpoint, MemberChannel, PlainAnswer};
use super::probe::{self, ProbeError};
use super::shared::SharedAnswer;
use super::types::is_tls_failure;
use super::{
    error_chain, tls, CallError, Credentials, MemberHealth, MemberInfo, MemberStatus, TlsError, Watch, WatchUpdate,
};

/// Settings shared by every connection.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Bound on every single etcd call (connect included).
    pub call_timeout: Duration,
    /// A member channel unused this long is closed (see
    /// [`ClusterConnection::close_idle`]); `None` keeps channels open.
    pub idle_timeout: Option<Duration>,
}

impl ConnectionSettings {
    /// `call_timeout` unless configured (`--etcd-timeout`).
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
    /// `idle_timeout` unless configured (`--etcd-idle-timeout`): a cluster's
    /// inspections use its members in one burst, so a short timeout adds no
    /// dials and only shortens how long a finished round's channels linger.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// One member's client, connected on first use, and what decides when it
/// may be closed.
#[derive(Default)]
struct MemberClient {
    cell: Arc<OnceCell<Member>>,
    last_used: Option<Instant>,
    /// Held by each open watch on this member: its channel is not idle.
    watches: Arc<()>,
    /// Its latest Status answer, for callers asking at about the same time.
    status: Arc<SharedAnswer<Result<MemberStatus, CallError>>>,
}

impl MemberClient {
    /// An open watch holds this member's channel.
    fn watched(&self) -> bool {
        Arc::strong_count(&self.watches) > 1
    }
}

/// A member's gRPC client and the channel under it.
#[derive(Clone)]
struct Member {
    client: Client,
    channel: MemberChannel,
}

/// Connections to one etcd cluster.
pub struct ClusterConnection {
    cluster: String,
    /// `importedAddr` endpoints: always tried when members do not answer (D10).
    seeds: Vec<String>,
    /// `extClientURL`: advertised host:port → reachable host:port.
    rewrites: HashMap<String, String>,
    creds: Credentials,
    /// For probes of a TLS member whose listener serves gRPC alone; made
    /// on first use, as few clusters have one (see [`Self::http`]).
    http: std::sync::OnceLock<reqwest::Client>,
    /// The cluster's TLS, as `http` is made with it.
    http_tls: Arc<rustls::ClientConfig>,
    /// TLS for the gRPC channels (ALPN h2); see [`Self::member_tls`].
    grpc_tls: Arc<rustls::ClientConfig>,
    /// Per https member: `grpc_tls` with a session store of its own.
    member_tls: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    settings: ConnectionSettings,
    members: Mutex<Vec<MemberInfo>>,
    /// When `members` was last read from etcd.
    members_read: Mutex<Option<std::time::Instant>>,
    /// Held while a MemberList for `recent_members` is in flight, so that a
    /// cluster's inspections, which start together, make one between them.
    members_refresh: tokio::sync::Mutex<()>,
    /// When the last MemberList attempt ended, and its error if it failed.
    members_attempt: Mutex<Option<(Instant, Option<CallError>)>>,
    clients: Mutex<HashMap<String, MemberClient>>,
    /// When the cluster's next round is due, as its schedules last said:
    /// channels are not closed just before they are needed again.
    next_round: Mutex<Option<Instant>>,
    /// Index (into the candidate list) of the endpoint that answered last.
    preferred: AtomicUsize,
}

impl ClusterConnection {
    /// Prepares connections; nothing is dialled until the first call.
    pub fn new(
        cluster: &str,
        seeds: Vec<String>,
        rewrites: HashMap<String, String>,
        creds: Credentials,
        settings: ConnectionSettings,
    ) -> Result<Self, TlsError> {
        let tls = tls::rustls_config(&creds)?;
        let mut grpc_tls = tls.clone();
        grpc_tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClusterConnection {
            cluster: cluster.to_string(),
            seeds,
            rewrites,
            creds,
            http: std::sync::OnceLock::new(),
            http_tls: Arc::new(tls),
            grpc_tls: Arc::new(grpc_tls),
            member_tls: Mutex::new(HashMap::new()),
            settings,
            members: Mutex::new(Vec::new()),
            members_read: Mutex::new(None),
            members_refresh: tokio::sync::Mutex::new(()),
            members_attempt: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            next_round: Mutex::new(None),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The members found by the last successful [`Self::refresh_members`].
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.lock().unwrap().clone()
    }

    /// The `importedAddr` endpoints presented as members (id 0), for when no
    /// member list could ever be read.
    pub fn seed_members(&self) -> Vec<MemberInfo> {
        self.seeds
            .iter()
            .map(|s| self.member_info(0, "", std::slice::from_ref(s), false))
            .collect()
    }

    /// Lists members through whichever endpoint answers first and remembers them.
    pub async fn refresh_members(&self) -> Result<Vec<MemberInfo>, CallError> {
        let answer = self.on_any_endpoint(|mut c| async move { c.member_list().await }).await;
        *self.members_attempt.lock().unwrap() = Some((Instant::now(), answer.as_ref().err().cloned()));
        let members = answer?
            .members()
            .iter()
            .filter(|m| !m.client_urls().is_empty())
            .map(|m| self.member_info(m.id(), m.name(), m.client_urls(), m.is_learner()))
            .collect::<Vec<_>>();
        self.remember_members(members.clone());
        Ok(members)
    }

    fn remember_members(&self, members: Vec<MemberInfo>) {
        *self.members.lock().unwrap() = members;
        *self.members_read.lock().unwrap() = Some(std::time::Instant::now());
        // A member gone from the list takes its TLS session store along:
        // members replaced over months would otherwise pile them up.
        self.member_tls
            .lock()
            .unwrap()
            .retain(|endpoint, _| self.check_endpoint(endpoint).is_ok());
    }

    /// The members an inspection runs against: read at most every
    /// `max_age`; the last known ones when MemberList fails; the
    /// `importedAddr` endpoints when none was ever known, so a probe can
    /// still report them (and why they fail). A MemberList error comes back
    /// for the caller to report.
    pub async fn members_or_fallback(&self, max_age: Duration) -> (Vec<MemberInfo>, Option<CallError>) {
        let error = match self.recent_members(max_age).await {
            Ok(members) if !members.is_empty() => return (members, None),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        let known = self.members();
        (if known.is_empty() { self.seed_members() } else { known }, error)
    }

    /// The members, read again only when the last read is older than
    /// `max_age`: a cluster's inspections share one MemberList per period
    /// instead of each making its own (membership changes rarely). Callers
    /// that find the list stale together wait for one MemberList and take
    /// its answer, error included: a cluster's rounds start together, and
    /// each asking in turn would multiply the calls (four per round with
    /// four inspections) or, on a dead cluster, the waiting.
    pub async fn recent_members(&self, max_age: Duration) -> Result<Vec<MemberInfo>, CallError> {
        let fresh = || self.members_read.lock().unwrap().is_some_and(|t| t.elapsed() < max_age);
        if fresh() {
            return Ok(self.members());
        }
        let asked = Instant::now();
        let _turn = self.members_refresh.lock().await;
        let answered_meanwhile = self
            .members_attempt
            .lock()
            .unwrap()
            .clone()
            .filter(|(at, _)| *at >= asked);
        match answered_meanwhile {
            Some((_, Some(error))) => Err(error),
            Some((_, None)) => Ok(self.members()),
            None if fresh() => Ok(self.members()),
            None => self.refresh_members().await,
        }
    }

    fn member_info(&self, id: u64, name: &str, urls: &[String], is_learner: bool) -> MemberInfo {
        let first = urls[0].clone();
        let parsed = Url::parse(&first).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            })
            .unwrap_or_else(|| first.clone());
        let endpoint = parsed
            .and_then(|mut url| {
                let key = format!("{}:{}", url.host_str()?, url.port_or_known_default()?);
                let (host, port) = self.rewrites.get(&key)?.rsplit_once(':')?;
                url.set_host(Some(host)).ok()?;
                url.set_port(Some(port.parse().ok()?)).ok()?;
                Some(url.as_str().trim_end_matches('/').to_string())
            })
            .unwrap_or_else(|| first.trim_end_matches('/').to_string());
        MemberInfo {
            id,
            name: name.to_string(),
            client_urls: urls.to_vec(),
            endpoint,
            host,
            is_learner,
        }
    }

    /// [`Self::status`], or an answer to an ask of another caller made at
    /// or after `since` (see [`super::shared`]); and when the answer came.
    pub async fn status_since(&self, endpoint: &str, since: Instant) -> (Result<MemberStatus, CallError>, Instant) {
        if let Err(e) = self.check_endpoint(endpoint) {
            return (Err(e), Instant::now());
        }
        let shared = {
            let mut clients = self.clients.lock().unwrap();
            clients.entry(endpoint.to_string()).or_default().status.clone()
        };
        shared.get(since, self.status(endpoint)).await
    }

    /// Maintenance Status of the member at `endpoint`.
    pub async fn status(&self, endpoint: &str) -> Result<MemberStatus, CallError> {
        let mut client = self.client_for(endpoint).await?;
        let s = self.bounded(client.status()).await?;
        let header = s.header();
        Ok(MemberStatus {
            member_id: header.map(|h| h.member_id()).unwrap_or_default(),
            version: s.version().to_string(),
            db_size: s.db_size().max(0) as u64,
            db_size_in_use: s.raft_used_db_size().max(0) as u64,
            leader: s.leader(),
            raft_index: s.raft_index(),
            raft_term: s.raft_term(),
            raft_applied_index: s.raft_applied_index(),
            revision: header.map(|h| h.revision().max(0) as u64).unwrap_or_default(),
            is_learner: s.is_learner(),
            errors: s.errors().to_vec(),
            // Before 3.6 these are absent from the answer, so zero and empty.
            db_size_quota: Some(s.db_size_quota()).filter(|q| *q > 0).map(|q| q as u64),
            storage_version: Some(s.storage_version()).filter(|v| !v.is_empty()).map(str::to_string),
            downgrade: s
                .downgrade_info()
                .map(|d| (d.enabled(), d.target_version().to_string())),
        })
    }

    /// How long one count-only read of a key that does not exist takes on
    /// the member at `endpoint` (the channel is dialled before the clock
    /// starts).
    pub async fn read_latency(&self, endpoint: &str, serializable: bool) -> Result<Duration, CallError> {
        let mut client = self.client_for(endpoint).await?;
        let mut options = etcd_client::GetOptions::new().with_count_only();
        if serializable {
            options = options.with_serializable();
        }
        let started = Instant::now();
        self.bounded(client.get(&b"\0etcd-inspector/latency-probe"[..], Some(options)))
            .await?;
        Ok(started.elapsed())
    }

    /// MemberList as the member at `endpoint` sees it (served from its own
    /// state), members not started yet included (no name, no client URL).
    pub async fn member_list_at(&self, endpoint: &str) -> Result<Vec<MemberInfo>, CallError> {
        let mut client = self.client_for(endpoint).await?;
        let response = self.bounded(client.member_list()).await?;
        Ok(response
            .members()
            .iter()
            .map(|m| {
                if m.client_urls().is_empty() {
                    MemberInfo {
                        id: m.id(),
                        name: m.name().to_string(),
                        client_urls: Vec::new(),
                        endpoint: String::new(),
                        host: String::new(),
                        is_learner: m.is_learner(),
                    }
                } else {
                    self.member_info(m.id(), m.name(), m.client_urls(), m.is_learner())
                }
            })
            .collect())
    }

    /// The certificates the member at `endpoint` presents, and the host's
    /// verdict on them (one handshake; see [`super::certificates`]).
    pub async fn server_certificates(&self, endpoint: &str) -> Result<ServerCertificates, CallError> {
        self.check_endpoint(endpoint)?;
        certificates::server_certificates(endpoint, &self.creds, self.settings.call_timeout).await
    }

    /// The client certificate chain the host presents to this cluster.
    pub fn client_certificates(&self) -> Vec<CertificateInfo> {
        certificates::client_chain(&self.creds)
    }

    /// Every lease id, ascending.
    pub async fn lease_ids(&self) -> Result<Vec<i64>, CallError> {
        let response = self.on_any_endpoint(|mut c| async move { c.leases().await }).await?;
        let mut ids: Vec<i64> = response.leases().iter().map(|l| l.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// LeaseTimeToLive: (ttl, granted ttl, keys attached when `with_keys`).
    pub async fn lease_time_to_live(&self, id: i64, with_keys: bool) -> Result<(i64, i64, usize), CallError> {
        let response = self
            .on_any_endpoint(|mut c| async move {
                let options = etcd_client::LeaseTimeToLiveOptions::new();
                let options = if with_keys { options.with_keys() } else { options };
                c.lease_time_to_live(id, Some(options)).await
            })
            .await?;
        Ok((response.ttl(), response.granted_ttl(), response.keys().len()))
    }

    /// Active alarms (member id, type name).
    pub async fn alarm_list(&self) -> Result<Vec<(u64, String)>, CallError> {
        let response = self
            .on_any_endpoint(|mut c| async move {
                c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
                    .await
            })
            .await?;
        Ok(response
            .alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm().as_str_name().to_string()))
            .collect())
    }

    /// Count-only range over [start, end) (`end` empty: to the end of the
    /// keyspace); `endpoint` picks the member that serves it.
    pub async fn count(
        &self,
        endpoint: Option<&str>,
        (start, end): (&[u8], &[u8]),
        revision: u64,
        serializable: bool,
    ) -> Result<(u64, u64), CallError> {
        let mut options = range_options(end, revision).with_count_only();
        if serializable {
            options = options.with_serializable();
        }
        let key = range_start(start);
        let response = match endpoint {
            Some(ep) => {
                let mut client = self.client_for(ep).await?;
                self.bounded(client.get(key, Some(options))).await
            }
            None => {
                self.on_any_endpoint(|mut c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                })
                .await
            }
        };
        let response = self.with_compact_revision(response).await?;
        let rev = response
            .header()
            .map(|h| h.revision().max(0) as u64)
            .unwrap_or_default();
        Ok((response.count().max(0) as u64, rev))
    }

    /// Keys (no values) of [start, end), at most `limit`.
    pub async fn keys(
        &self,
        (start, end): (&[u8], &[u8]),
        limit: u32,
        revision: u64,
    ) -> Result<Vec<(Vec<u8>, u64, u64, u64)>, CallError> {
        let options = range_options(end, revision).with_keys_only().with_limit(limit as i64);
        let key = range_start(start);
        let response = self
            .on_any_endpoint(|mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.get(key, Some(options)).await }
            })
            .await;
        let response = self.with_compact_revision(response).await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.create_revision() as u64,
                    kv.mod_revision() as u64,
                    kv.version() as u64,
                )
            })
            .collect())
    }

    /// HashKV of one member: (member id, hash, compact revision, hash revision).
    pub async fn hash_kv(&self, endpoint: &str, revision: u64) -> Result<(u64, u32, u64, u64), CallError> {
        let mut client = self.client_for(endpoint).await?;
        let r = self
            .with_compact_revision(self.bounded(client.hash_kv(revision as i64)).await)
            .await?;
        let header = r.header();
        // etcd 3.6+ says which revision it hashed. Before, the header carries
        // the member's current revision, which is the one hashed only when
        // no revision was asked for.
        let hashed = match (r.hash_revision(), revision) {
            (reported, _) if reported > 0 => reported as u64,
            (_, 0) => header.map(|h| h.revision().max(0) as u64).unwrap_or_default(),
            (_, asked) => asked,
        };
        Ok((
            header.map(|h| h.member_id()).unwrap_or_default(),
            r.hash(),
            r.compact_version().max(0) as u64,
            hashed,
        ))
    }

    /// etcd's "required revision has been compacted" does not say up to
    /// where; the plugin contract does (`compacted(u64)`), so ask.
    async fn with_compact_revision<T>(&self, result: Result<T, CallError>) -> Result<T, CallError> {
        match result {
            Err(CallError::Compacted(0)) => Err(CallError::Compacted(self.compact_revision().await.unwrap_or(0))),
            other => other,
        }
    }

    /// The compact revision: a watch from revision 1 is refused with it.
    /// Cheap (no history is read), and only asked after a compacted answer.
    pub async fn compact_revision(&self) -> Option<u64> {
        let probe = async {
            let mut watch = self.watch(b"\0etcd-inspector/compact-revision", 1).await.ok()?;
            loop {
                match watch.next().await.ok()?? {
                    WatchUpdate::Compacted(revision) => return Some(revision),
                    WatchUpdate::Events(_) | WatchUpdate::Progress(_) => continue,
                }
            }
        };
        tokio::time::timeout(self.settings.call_timeout, probe)
            .await
            .ok()
            .flatten()
    }

    /// The bound on one etcd call (`--etcd-timeout`).
    pub fn call_timeout(&self) -> Duration {
        self.settings.call_timeout
    }

    /// The cluster's current revision, from whichever member answers.
    pub async fn current_revision(&self) -> Result<u64, CallError> {
        let status = self.on_any_endpoint(|mut c| async move { c.status().await }).await?;
        Ok(status.header().map(|h| h.revision().max(0) as u64).unwrap_or_default())
    }

    /// Opens a watch on `prefix` (empty: every key) from `start_revision`.
    pub async fn watch(&self, prefix: &[u8], start_revision: u64) -> Result<Watch, CallError> {
        let options = etcd_client::WatchOptions::new()
            .with_start_revision(start_revision as i64)
            .with_progress_notify();
        let options = if prefix.is_empty() {
            options.with_from_key()
        } else {
            options.with_prefix()
        };
        let key = range_start(prefix);
        let (stream, endpoint) = self
            .on_any_endpoint_at(|mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
        let pin = self
            .clients
            .lock()
            .unwrap()
            .entry(endpoint)
            .or_default()
            .watches
            .clone();
        Ok(Watch { stream, _pin: pin })
    }

    /// GET `<endpoint>/health`, as etcd's own health endpoint answers it.
    pub async fn health(&self, endpoint: &str) -> Result<MemberHealth, CallError> {
        let (status, body) = self.http_get(endpoint, "/health").await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            health: String,
            #[serde(default)]
            reason: String,
        }
        let reason = match serde_json::from_str::<Answer>(&body) {
            Ok(a) if a.health == "true" => {
                return Ok(MemberHealth {
                    healthy: true,
                    reason: String::new(),
                })
            }
            Ok(a) if a.reason.is_empty() => format!("health {:?} (HTTP {status})", a.health),
            Ok(a) => a.reason,
            Err(_) => format!("unexpected answer (HTTP {status})"),
        };
        // Where the member serves /readyz (3.4.29+, 3.5.11+), the names of
        // its failing checks say more than /health's reason does.
        let reason = self.failing_readyz_checks(endpoint).await.unwrap_or(reason);
        Ok(MemberHealth { healthy: false, reason })
    }

    /// The failing checks of `<endpoint>/readyz?verbose`, comma separated
    /// (`data_corruption`, `linearizable_read`, …); `None` where the member
    /// has no /readyz or reports no failing check.
    async fn failing_readyz_checks(&self, endpoint: &str) -> Option<String> {
        let (status, body) = self.http_get(endpoint, "/readyz?verbose").await.ok()?;
        if status == http::StatusCode::NOT_FOUND {
            return None;
        }
        let failing: Vec<&str> = readyz_failures(&body).collect();
        (!failing.is_empty()).then(|| failing.join(","))
    }

    /// `GET <endpoint><path>`, answered by the member's HTTP handlers: on
    /// its open HTTP/2 channel where the member has TLS (a probe then costs
    /// no TLS handshake of its own: 3 of the 6 a round made at 1000
    /// clusters, bench/HISTORY.md), over a fresh HTTP/1 connection on
    /// plain text, where etcd serves HTTP/2 only to gRPC, or where the
    /// member's TLS listener turns out to serve only gRPC.
    async fn http_get(&self, endpoint: &str, path: &str) -> Result<(http::StatusCode, String), CallError> {
        self.check_endpoint(endpoint)?;
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        if endpoint.starts_with("https://") {
            let member = self.member(endpoint).await?;
            match member.channel.get(path).await {
                Ok(PlainAnswer { grpc: true, .. }) => {}
                Ok(PlainAnswer { status, body, .. }) => {
                    return Ok((status, String::from_utf8_lossy(&body).into_owned()))
                }
                Err(status) => return Err(CallError::from(etcd_client::Error::GRpcStatus(status)).at(&url)),
            }
        }
        if let Ok(Endpoint {
            https: false,
            host,
            port,
            ..
        }) = Endpoint::parse(endpoint)
        {
            return probe::get(&host, port, path, self.settings.call_timeout)
                .await
                .map(|(status, body)| (status, String::from_utf8_lossy(&body).into_owned()))
                .map_err(|e| match e {
                    ProbeError::Timeout(_) => CallError::Timeout(format!("{url}: {e}")),
                    _ => CallError::Unavailable(format!("{url}: {e}")),
                });
        }
        let response = self.http()?.get(&url).send().await.map_err(|e| {
            if is_tls_failure(&e) {
                CallError::Tls(format!("{url}: {}", error_chain(&e)))
            } else if e.is_timeout() {
                CallError::Timeout(format!("{url}: no answer within {:?}", self.settings.call_timeout))
            } else {
                CallError::Unavailable(format!("{url}: {}", error_chain(&e)))
            }
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| CallError::Unavailable(format!("{url}: {}", error_chain(&e))))?;
        Ok((status, body))
    }

    /// Endpoints a plugin may address: known members and the seeds. A
    /// plugin can never make the host dial (and present credentials to) an
    /// address outside the cluster.
    fn check_endpoint(&self, endpoint: &str) -> Result<(), CallError> {
        let endpoint = endpoint.trim_end_matches('/');
        let known = self.members.lock().unwrap().iter().any(|m| m.endpoint == endpoint)
            || self.seeds.iter().any(|s| s.trim_end_matches('/') == endpoint);
        if known {
            Ok(())
        } else {
            Err(CallError::UnknownEndpoint(endpoint.to_string()))
        }
    }

    /// The HTTP/1 client of TLS probes that the member channel cannot
    /// carry. Each probe connects afresh, as `etcdctl endpoint health`
    /// does (so it also proves the member accepts connections): kept open,
    /// thousands of members' idle HTTP/1 connections held about 25 KiB of
    /// buffers each between probes (70 MiB at 1000 clusters;
    /// bench/HISTORY.md).
    fn http(&self) -> Result<&reqwest::Client, CallError> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*self.http_tls).clone())
            .timeout(self.settings.call_timeout)
            .connect_timeout(self.settings.call_timeout)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| CallError::Tls(format!("cluster {}: {}", self.cluster, error_chain(&e))))?;
        Ok(self.http.get_or_init(|| client))
    }

    fn candidates(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .members
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.endpoint.clone())
            .collect();
        for seed in &self.seeds {
            if !all.contains(seed) {
                all.push(seed.clone());
            }
        }
        all
    }

    /// Runs `op` against the endpoint that answered last, then the others,
    /// until one succeeds.
    async fn on_any_endpoint<T, F, Fut>(&self, op: F) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        Ok(self.on_any_endpoint_at(op).await?.0)
    }

    /// [`Self::on_any_endpoint`], also saying which endpoint answered.
    async fn on_any_endpoint_at<T, F, Fut>(&self, op: F) -> Result<(T, String), CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let candidates = self.candidates();
        if candidates.is_empty() {
            return Err(CallError::Unavailable(format!(
                "cluster {} has no endpoints",
                self.cluster
            )));
        }
        let start = self.preferred.load(Ordering::Relaxed) % candidates.len();
        let mut errors = Vec::new();
        let mut all_tls = true;
        for i in 0..candidates.len() {
            let index = (start + i) % candidates.len();
            let endpoint = &candidates[index];
            let attempt = async {
                let client = self.client_for(endpoint).await?;
                self.bounded(op(client)).await
            };
            match attempt.await {
                Ok(value) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((value, endpoint.clone()));
                }
                // The same answer from every member: no use asking the others.
                Err(
                    e @ (CallError::PermissionDenied(_)
                    | CallError::AuthFailed(_)
                    | CallError::Compacted(_)
                    | CallError::FutureRevision),
                ) => return Err(e),
                Err(e) => {
                    all_tls &= matches!(e, CallError::Tls(_));
                    errors.push(format!("{endpoint}: {e}"));
                }
            }
        }
        if all_tls {
            return Err(CallError::Tls(errors.join("; ")));
        }
        Err(CallError::Unavailable(errors.join("; ")))
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.settings.call_timeout, call).await {
            Ok(result) => result.map_err(CallError::from),
            Err(_) => Err(CallError::Timeout(format!(
                "no answer within {:?}",
                self.settings.call_timeout
            ))),
        }
    }

    /// The client for one endpoint, connected (and authenticated) on first
    /// use. A cluster's inspections start together: one of them connects
    /// while the others wait for its client, rather than each making its own
    /// channel and Authenticate call (bcrypt on the server) to be dropped.
    async fn client_for(&self, endpoint: &str) -> Result<Client, CallError> {
        Ok(self.member(endpoint).await?.client)
    }

    /// [`Self::client_for`], with the member's channel.
    async fn member(&self, endpoint: &str) -> Result<Member, CallError> {
        self.check_endpoint(endpoint)?;
        let cell = {
            let mut clients = self.clients.lock().unwrap();
            let member = clients.entry(endpoint.to_string()).or_default();
            member.last_used = Some(Instant::now());
            member.cell.clone()
        };
        // A failed connect leaves the cell empty for the next caller to retry.
        cell.get_or_try_init(|| self.connect(endpoint)).await.cloned()
    }

    /// Closes the member channels unused for `idle`, except those an open
    /// watch uses; returns how many. Each open HTTP/2 channel holds ~38 KiB
    /// whatever its traffic (h2's 16 KiB write buffer, its read buffer;
    /// bench/HISTORY.md), and a cluster's
    /// inspections use its members in one burst per interval: between
    /// bursts nothing needs them. A call in flight keeps its own handle, so
    /// closing only means the next call dials again (a TCP connect, and a
    /// resumed TLS session where the member has TLS). Clusters with
    /// username/password auth keep their channels: each new one costs an
    /// Authenticate, a bcrypt on the server.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let due_soon = self
            .next_round
            .lock()
            .unwrap()
            .is_some_and(|t| t > now && t - now < idle);
        if self.creds.user.is_some() || due_soon {
            return 0;
        }
        let mut clients = self.clients.lock().unwrap();
        let before = clients.len();
        clients.retain(|_, m| m.watched() || m.last_used.is_none_or(|t| t.elapsed() < idle));
        before - clients.len()
    }

    /// Notes that a round of this cluster is due at `at`. Channels stay
    /// open when the next round is closer than the idle timeout: with an
    /// interval at or near the timeout, closing would only mean dialling
    /// again a moment later.
    pub fn expect_round(&self, at: Instant) {
        let mut next = self.next_round.lock().unwrap();
        let now = Instant::now();
        if next.is_none_or(|t| t <= now || at < t) {
            *next = Some(at);
        }
    }

    /// Member channels open (or being opened) now.
    pub fn open_channels(&self) -> usize {
        self.clients
            .lock()
            .unwrap()
            .values()
            .filter(|m| m.cell.initialized() || m.watched())
            .count()
    }

    /// The TLS configuration of one member's channels: the cluster's, with
    /// a session store of the member's own, kept across its channels so
    /// that one dialled again after an idle close resumes its session (no
    /// certificate signatures). rustls keys sessions by server name alone:
    /// members sharing one (one host, several ports) were offered each
    /// other's tickets, which they refuse, and every connect was a full
    /// handshake (bench/HISTORY.md).
    fn member_tls(&self, endpoint: &str) -> Arc<rustls::ClientConfig> {
        if !endpoint.starts_with("https://") {
            return self.grpc_tls.clone();
        }
        let mut configs = self.member_tls.lock().unwrap();
        configs
            .entry(endpoint.to_string())
            .or_insert_with(|| {
                let mut config = (*self.grpc_tls).clone();
                config.resumption = rustls::client::Resumption::in_memory_sessions(1);
                Arc::new(config)
            })
            .clone()
    }

    async fn connect(&self, endpoint: &str) -> Result<Member, CallError> {
        let timeout = self.settings.call_timeout;
        let mut options = ConnectOptions::new();
        if let Some((user, password)) = &self.creds.user {
            // Tokens expire (simple tokens after --auth-token-ttl, JWTs at
            // their TTL): a refused token is renewed and the call retried once.
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        let connect = async {
            let channel = MemberChannel::new(endpoint, &self.member_tls(endpoint), timeout)?;
            let client = Client::from_channel(channel.grpc(), Some(options)).await?;
            Ok(Member { client, channel })
        };
        self.bounded(connect).await.map_err(|e| e.at(endpoint))
    }
}

/// etcd has no empty key; "\0" is the first one.
fn range_start(start: &[u8]) -> Vec<u8> {
    if start.is_empty() {
        vec![0]
    } else {
        start.to_vec()
    }
}

/// Options for [start, end): an empty end means "to the end of the keyspace".
fn range_options(end: &[u8], revision: u64) -> GetOptions {
    let options = if end.is_empty() {
        GetOptions::new().with_from_key()
    } else {
        GetOptions::new().with_range(end)
    };
    if revision > 0 {
        options.with_revision(revision as i64)
    } else {
        options
    }
}

/// Check names from the lines `[-]name failed: why` of a verbose /readyz.
fn readyz_failures(body: &str) -> impl Iterator<Item = &str> {
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("[-]"))
        .filter_map(|rest| rest.split_whitespace().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(user: Option<(String, String)>) -> ClusterConnection {
        let creds = Credentials {
            user,
            ..Default::default()
        };
        let seeds = vec!["http://127.0.0.1:1".to_string()];
        ClusterConnection::new("ns/c", seeds, HashMap::new(), creds, ConnectionSettings::default()).unwrap()
    }

    /// A channel is closed once idle, unless the cluster's next round is
    /// closer than the idle time or the cluster authenticates by password.
    #[tokio::test]
    async fn idle_channels_close_unless_a_round_is_near_or_a_password_is_used() {
        let plain = connection(None);
        // Nothing listens on port 1: the call fails, the channel stays made.
        assert!(plain.status("http://127.0.0.1:1").await.is_err());
        assert_eq!(plain.open_channels(), 1);
        plain.expect_round(Instant::now() + Duration::from_secs(60));
        assert_eq!(plain.close_idle(Duration::from_secs(600)), 0, "the round is near");
        assert_eq!(plain.open_channels(), 1);
        assert_eq!(plain.close_idle(Duration::ZERO), 1, "idle, the round is not near");
        assert_eq!(plain.open_channels(), 0);
        assert!(plain.status("http://127.0.0.1:1").await.is_err());
        assert_eq!(plain.open_channels(), 1, "dialled again by the next call");

        let authed = connection(Some(("root".into(), "pw".into())));
        // Its Authenticate fails, which leaves the member's entry behind:
        // without the rule it would be swept (and counted) here.
        let _ = authed.status("http://127.0.0.1:1").await;
        assert_eq!(authed.close_idle(Duration::ZERO), 0, "password clusters keep theirs");
    }

    #[test]
    fn a_member_gone_from_the_list_takes_its_tls_sessions_along() {
        let seed = "https://127.0.0.1:1";
        let conn = ClusterConnection::new(
            "ns/c",
            vec![seed.to_string()],
            HashMap::new(),
            Credentials::default(),
            ConnectionSettings::default(),
        )
        .unwrap();
        let member = |url: &str| conn.member_info(1, "m", &[url.to_string()], false);
        let (kept, gone) = ("https://10.0.0.1:2379", "https://10.0.0.2:2379");
        conn.remember_members(vec![member(kept), member(gone)]);
        let first = conn.member_tls(kept);
        for endpoint in [seed, gone] {
            conn.member_tls(endpoint);
        }
        conn.remember_members(vec![member(kept)]);
        let mut stores: Vec<String> = conn.member_tls.lock().unwrap().keys().cloned().collect();
        stores.sort();
        assert_eq!(stores, [kept, seed]);
        assert!(
            Arc::ptr_eq(&first, &conn.member_tls(kept)),
            "a member keeps its sessions"
        );
    }

    /// Few clusters need it: it costs nothing until then, and is made once.
    #[test]
    fn the_client_of_tls_fallback_probes_is_made_on_first_use_only() {
        let conn = connection(None);
        assert!(conn.http.get().is_none());
        let first: *const reqwest::Client = conn.http().unwrap();
        assert!(std::ptr::eq(first, conn.http().unwrap()));
    }

    #[test]
    fn failing_readyz_checks_are_named() {
        let body = "[+]serializable_read ok\n[-]data_corruption failed: alarm activated\n[+]linearizable_read ok\n[-]non_learner failed: is learner\nreadyz check failed\n";
        assert_eq!(
            readyz_failures(body).collect::<Vec<_>>(),
            ["data_corruption", "non_learner"]
        );
        assert_eq!(readyz_failures("ok").count(), 0);
    }
}

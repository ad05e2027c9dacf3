//! # etcd-inspector-sdk
//!
//! Everything needed to write an [etcd-inspector](https://crates.io/crates/etcd-inspector)
//! inspection plugin in Rust. A plugin is a WebAssembly component built with
//! `cargo build --target wasm32-wasip2`; the host calls it on a schedule for
//! each etcd cluster it watches and exports the samples it returns as
//! Prometheus metrics.
//!
//! The SDK owns the WIT contract (`etcd-inspector:plugin@0.1.3`), so a plugin
//! depends on this crate and on nothing else of ours.
//!
//! ```ignore
//! use etcd_inspector_sdk::{export_plugin, etcd, gauge, Plugin, PluginInfo, ClusterSnapshot, Sample};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"))
//!             .metric(gauge("hello_members", "Number of members", &[]))
//!     }
//!
//!     fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
//!         Ok(vec![Sample::new("hello_members", snapshot.members.len() as f64)])
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! What a plugin may do: read etcd through [`etcd`] (there is no write), log
//! through [`log`], and return samples of the metrics it declared in
//! [`Plugin::describe`]. It has no files, no network and no environment.
//! The host adds the `clusterName` label itself, rejects undeclared metrics
//! and labels, and commits samples only when `inspect` returns `Ok`.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "watch-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "etcd_inspector_sdk::bindings",
    });
}

pub use bindings::etcd_inspector::plugin::types::{
    Alarm, AlarmType, Certificate, ClusterSnapshot, DowngradeInfo, EtcdError, EventKind, KeyInfo, KeyRange, KvHash,
    LeaseInfo, Member, MemberHealth, MemberStatus, MemberStatusDetails, MetricDesc, MetricKind, PackedEvents,
    PluginInfo, PresentedCertificates, RangeCount, Sample, WatchEvent,
};

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: vec![0],
            end: Vec::new(),
        }
    }

    /// Every key starting with `prefix` (an empty prefix means every key).
    ///
    /// ```
    /// use etcd_inspector_sdk::KeyRange;
    /// let pods = KeyRange::prefix("/registry/pods/");
    /// assert_eq!(pods.end, b"/registry/pods0");
    /// ```
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        let prefix = prefix.as_ref();
        if prefix.is_empty() {
            return Self::all();
        }
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }
}

/// The first key after every key that starts with `prefix` (empty when
/// there is none, i.e. the end of the keyspace).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

// In a component the SDK calls the host; natively (`cargo test`) it calls the
// cluster described with [`testing::FakeCluster`].
#[cfg(target_arch = "wasm32")]
use bindings::etcd_inspector::plugin::{etcd as host_etcd, state as host_state};
#[cfg(not(target_arch = "wasm32"))]
use testing::fake::{etcd as host_etcd, state as host_state};

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// Read-only calls into the etcd cluster under inspection.
///
/// Every call goes through the host, which owns the connections, TLS,
/// credentials and timeouts. Per-endpoint calls take a
/// [`Member::endpoint`](crate::Member) from the snapshot.
pub mod etcd {
    use crate::host_etcd as host;
    pub use crate::{
        Alarm, Certificate, EtcdError, KeyInfo, KeyRange, KvHash, LeaseInfo, Member, MemberHealth, MemberStatus,
        MemberStatusDetails, PresentedCertificates, RangeCount,
    };

    /// Current members, through the cluster's balanced connection.
    pub fn member_list() -> Result<Vec<Member>, EtcdError> {
        host::member_list()
    }

    /// Maintenance Status of one member; cheap (no raft round trip). The
    /// host may hand over the answer to another plugin's ask of the same
    /// member, made after this round was due and after this call's previous
    /// etcd answer came: a reading as fresh as asking would give, so two
    /// Status rounds of one call stay in order.
    ///
    /// ```no_run
    /// # use etcd_inspector_sdk::{etcd, ClusterSnapshot};
    /// # fn f(snapshot: ClusterSnapshot) -> Result<(), String> {
    /// for member in &snapshot.members {
    ///     let status = etcd::status(&member.endpoint).map_err(|e| e.message())?;
    ///     let lagging = status.raft_index - status.raft_applied_index;
    /// #   let _ = lagging;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn status(endpoint: &str) -> Result<MemberStatus, EtcdError> {
        host::status(endpoint)
    }

    /// What etcd 3.6+ adds to Status: the backend quota, the storage
    /// version and any downgrade in progress; each `None` where the member
    /// does not report it (before 3.6). Another Status call, as cheap as
    /// [`status`]. Needs a host serving contract 0.1.1 or later.
    ///
    /// ```no_run
    /// # use etcd_inspector_sdk::etcd;
    /// # fn f(endpoint: &str) -> Option<u64> {
    /// // The quota etcd applies, where it says; else a configured default.
    /// let quota = etcd::status_details(endpoint).ok()?.db_size_quota;
    /// # quota }
    /// ```
    pub fn status_details(endpoint: &str) -> Result<MemberStatusDetails, EtcdError> {
        host::status_details(endpoint)
    }

    /// How long one count-only read of a key that does not exist takes on
    /// the member at `endpoint`, in microseconds, timed by the host:
    /// `serializable` answers from the member's local state, otherwise the
    /// read is linearizable (confirmed with the leader): what a client
    /// feels, with no write. Needs a host serving contract 0.1.1 or later.
    pub fn read_latency(endpoint: &str, serializable: bool) -> Result<u64, EtcdError> {
        host::read_latency(endpoint, serializable)
    }

    /// The member list as the member at `endpoint` sees it, from its own
    /// state (not confirmed with the leader): ask each member and compare
    /// to find members that disagree. Members added but not started yet are
    /// included, with an empty name and no client URLs. Needs a host
    /// serving contract 0.1.2 or later.
    pub fn member_list_at(endpoint: &str) -> Result<Vec<Member>, EtcdError> {
        host::member_list_at(endpoint)
    }

    /// The certificate chain the member at `endpoint` presents to clients
    /// (one TLS handshake, no request), with the host's verdict on it
    /// (`verify_error`: the cluster's CA, the host name, the dates). Empty
    /// for `http://` endpoints. Names and dates only, never keys. Needs a
    /// host serving contract 0.1.2 or later.
    ///
    /// ```no_run
    /// # use etcd_inspector_sdk::etcd;
    /// # fn f(endpoint: &str, now: i64) -> Result<(), etcd_inspector_sdk::EtcdError> {
    /// let presented = etcd::server_certificates(endpoint)?;
    /// if let Some(leaf) = presented.chain.first() {
    ///     let days_left = (leaf.not_after - now) / 86_400;
    /// #   let _ = days_left;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn server_certificates(endpoint: &str) -> Result<PresentedCertificates, EtcdError> {
        host::server_certificates(endpoint)
    }

    /// The client certificate chain the host presents to this cluster
    /// (empty when it uses none). No etcd call. Needs a host serving
    /// contract 0.1.2 or later.
    pub fn client_certificates() -> Vec<Certificate> {
        host::client_certificates()
    }

    /// Every lease id, ascending (LeaseLeases: one call, answered by one
    /// member; 8 bytes per lease). Needs a host serving contract 0.1.2 or
    /// later.
    pub fn lease_ids() -> Result<Vec<i64>, EtcdError> {
        host::lease_ids()
    }

    /// One lease's remaining and granted TTL; `with_keys` also counts the
    /// keys attached (etcd then sends their names, which the host counts
    /// against the round's byte budget). One call per lease: bound how many
    /// a round asks about. Needs a host serving contract 0.1.2 or later.
    pub fn lease_time_to_live(id: i64, with_keys: bool) -> Result<LeaseInfo, EtcdError> {
        host::lease_time_to_live(id, with_keys)
    }

    /// Active alarms. This is a raft round trip: prefer the alarms that
    /// [`status`] reports in `errors` and call this only when needed.
    pub fn alarm_list() -> Result<Vec<Alarm>, EtcdError> {
        host::alarm_list()
    }

    /// The member's HTTP `/health` answer (false while an alarm is active or
    /// there is no leader).
    pub fn health(endpoint: &str) -> Result<MemberHealth, EtcdError> {
        host::health(endpoint)
    }

    /// Count the keys of `range` without transferring them. `revision` 0
    /// means latest; `endpoint` `None` lets the host pick a member;
    /// `serializable` answers from that member's local state.
    ///
    /// ```no_run
    /// # use etcd_inspector_sdk::{etcd, KeyRange};
    /// # fn f() -> Result<u64, etcd_inspector_sdk::EtcdError> {
    /// // Pods now, served by any member:
    /// let pods = etcd::count(None, &KeyRange::prefix("/registry/pods/"), 0, false)?.count;
    /// # Ok(pods) }
    /// ```
    pub fn count(
        endpoint: Option<&str>,
        range: &KeyRange,
        revision: u64,
        serializable: bool,
    ) -> Result<RangeCount, EtcdError> {
        host::count(endpoint, range, revision, serializable)
    }

    /// Keys (no values) of `range` in key order, at most `limit` of them
    /// (the host caps it at 10000).
    pub fn keys(range: &KeyRange, limit: u32, revision: u64) -> Result<Vec<KeyInfo>, EtcdError> {
        host::keys(range, limit, revision)
    }

    /// The cluster's compact revision (0: never compacted), as the member
    /// at `endpoint` (or any, with `None`) knows it: a count at revision 1 of
    /// a range that holds nothing, which etcd refuses with the compact
    /// revision before reading anything. Cheap on any store.
    pub fn compact_revision(endpoint: Option<&str>) -> Result<u64, EtcdError> {
        Ok(compacted_past(endpoint, 1)?.unwrap_or(0))
    }

    /// `Some(compact revision)` if the member at `endpoint` (or any, with
    /// `None`) has compacted its history past `revision`, `None` if it can
    /// still read there: the same empty count as [`compact_revision`], at
    /// `revision`. Where a plugin remembers a compaction, this checks it
    /// in one Range; only when the member has compacted past it does the
    /// host also open a Watch to learn the newer revision (as it does for
    /// every [`compact_revision`] on a compacted member).
    pub fn compacted_past(endpoint: Option<&str>, revision: u64) -> Result<Option<u64>, EtcdError> {
        let probe = KeyRange::prefix("\0etcd-inspector/compaction-probe/");
        match count(endpoint, &probe, revision, true) {
            Ok(_) => Ok(None),
            Err(EtcdError::Compacted(compact)) if compact > revision => Ok(Some(compact)),
            Err(e) => Err(e),
        }
    }

    /// HashKV of one member at `revision` (0: latest).
    pub fn hash_kv(endpoint: &str, revision: u64) -> Result<KvHash, EtcdError> {
        host::hash_kv(endpoint, revision)
    }
}

/// A small memory of this plugin for the cluster being inspected, kept by
/// the host between calls (each call runs in a fresh instance).
pub mod state {
    use crate::host_state as host;

    /// The bytes the last successful call stored, if any.
    pub fn load() -> Option<Vec<u8>> {
        host::load()
    }

    /// Keeps `value` (at most 64 KiB) for the next call, if this call
    /// succeeds.
    pub fn store(value: &[u8]) -> Result<(), String> {
        host::store(value)
    }

    /// A number kept with [`store_number`] (a position, a time, a
    /// revision), or `None` if nothing was kept or it does not read as a
    /// `T` (an older plugin's state).
    pub fn load_number<T: std::str::FromStr>() -> Option<T> {
        String::from_utf8(load()?).ok()?.trim().parse().ok()
    }

    /// Keeps `value` as its decimal text, for [`load_number`].
    pub fn store_number(value: impl std::fmt::Display) -> Result<(), String> {
        store(value.to_string().as_bytes())
    }
}

/// Logging into the host's log (rate-limited by the host: 32 lines a call,
/// 2 KiB a line). Natively the lines are kept by the test harness.
pub mod log {
    use crate::bindings::etcd_inspector::plugin::log::Level;

    fn emit(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::etcd_inspector::plugin::log::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::fake::log::log(&format!("{level:?}").to_lowercase(), message);
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        emit(Level::Debug, message)
    }
    /// Log at info level.
    pub fn info(message: &str) {
        emit(Level::Info, message)
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        emit(Level::Warn, message)
    }
    /// Log at error level.
    pub fn error(message: &str) {
        emit(Level::Error, message)
    }
}

impl EtcdError {
    /// A readable description, for logs and error messages.
    pub fn message(&self) -> String {
        match self {
            EtcdError::Timeout(m) => format!("timeout: {m}"),
            EtcdError::Unavailable(m) => format!("unavailable: {m}"),
            EtcdError::Compacted(rev) => format!("revision compacted (compact revision {rev})"),
            EtcdError::FutureRevision => "revision not reached yet by this member".into(),
            EtcdError::PermissionDenied(m) => format!("permission denied: {m}"),
            EtcdError::UnknownEndpoint(m) => format!("{m} is not an endpoint of this cluster"),
            EtcdError::Other(m) => m.clone(),
        }
    }
}

/// Declare a gauge: a value the plugin sets on every inspection.
/// `labels` excludes `clusterName`, which the host adds.
///
/// ```
/// use etcd_inspector_sdk::{gauge, PluginInfo};
/// let info = PluginInfo::new("quota", "0.1.0").metric(gauge("db_bytes", "Database size", &["endpoint"]));
/// assert_eq!(info.metrics[0].labels, ["endpoint"]);
/// ```
pub fn gauge(name: &str, help: &str, labels: &[&str]) -> MetricDesc {
    metric(MetricKind::Gauge, name, help, labels)
}

/// Declare a counter: each sample adds its (non-negative) value.
/// `labels` excludes `clusterName`, which the host adds.
///
/// ```
/// use etcd_inspector_sdk::{counter, MetricKind};
/// let writes = counter("writes_total", "Writes seen", &["resource"]);
/// assert_eq!(writes.kind, MetricKind::Counter);
/// ```
pub fn counter(name: &str, help: &str, labels: &[&str]) -> MetricDesc {
    metric(MetricKind::Counter, name, help, labels)
}

fn metric(kind: MetricKind, name: &str, help: &str, labels: &[&str]) -> MetricDesc {
    MetricDesc {
        name: name.into(),
        help: help.into(),
        kind,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

impl PluginInfo {
    /// A description with no metrics, a 30 s default interval and no watch.
    pub fn new(name: &str, version: &str) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            metrics: Vec::new(),
            default_interval_seconds: 30,
            watch_prefixes: Vec::new(),
        }
    }

    /// Add a metric this plugin owns.
    pub fn metric(mut self, desc: MetricDesc) -> Self {
        self.metrics.push(desc);
        self
    }

    /// Set the default interval (an EtcdInspection's `intervalInSecond` wins).
    pub fn interval_seconds(mut self, seconds: u32) -> Self {
        self.default_interval_seconds = seconds;
        self
    }

    /// Ask the host to deliver events under `prefix` to [`Plugin::on_events`].
    pub fn watch(mut self, prefix: &str) -> Self {
        self.watch_prefixes.push(prefix.into());
        self
    }
}

impl Sample {
    /// A sample with no labels besides `clusterName`; add labels with
    /// [`Sample::label`].
    ///
    /// ```
    /// use etcd_inspector_sdk::Sample;
    /// let s = Sample::new("db_bytes", 1024.0).label("endpoint", "10.0.0.1");
    /// assert_eq!(s.labels, [("endpoint".to_string(), "10.0.0.1".to_string())]);
    /// ```
    pub fn new(metric: &str, value: f64) -> Self {
        Sample {
            metric: metric.into(),
            labels: Vec::new(),
            value,
        }
    }

    /// Add a label (declared in the metric's description).
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }
}

impl ClusterSnapshot {
    /// The seed's `endpoint` label for `member`: the host of its first client
    /// URL, or `host:port` when another member shares that host (the seed's
    /// host-only label made such members collide).
    pub fn endpoint_label(&self, member: &Member) -> String {
        let shared = self.members.iter().filter(|m| m.host == member.host).count() > 1;
        if !shared {
            return member.host.clone();
        }
        let url = member
            .client_urls
            .first()
            .map(String::as_str)
            .unwrap_or(&member.endpoint);
        let authority = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
        authority.split('/').next().unwrap_or(authority).to_string()
    }

    /// The `member` label the bundled plugins use for `member`: its name,
    /// or [`Self::endpoint_label`] for a member that has none yet (or an
    /// `importedAddr` endpoint standing in for members never listed).
    pub fn member_label(&self, member: &Member) -> String {
        if member.name.is_empty() {
            self.endpoint_label(member)
        } else {
            member.name.clone()
        }
    }

    /// The value of parameter `key` (a cluster annotation or inspection
    /// setting), if set.
    ///
    /// ```
    /// # use etcd_inspector_sdk::testing::FakeCluster;
    /// let snapshot = FakeCluster::new("prod").param("etcd-inspector.io/quota-backend-bytes", "8589934592").snapshot();
    /// assert_eq!(snapshot.param("etcd-inspector.io/quota-backend-bytes"), Some("8589934592"));
    /// ```
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An inspection plugin. Implement it on a unit struct and pass the type to
/// [`export_plugin!`].
///
/// ```
/// use etcd_inspector_sdk::{gauge, ClusterSnapshot, Plugin, PluginInfo, Sample};
/// use etcd_inspector_sdk::testing::{FakeCluster, FakeMember};
///
/// struct Members;
///
/// impl Plugin for Members {
///     fn describe() -> PluginInfo {
///         PluginInfo::new("members", "0.1.0").metric(gauge("members", "Known members", &[]))
///     }
///     fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
///         Ok(vec![Sample::new("members", snapshot.members.len() as f64)])
///     }
/// }
///
/// let samples = FakeCluster::new("prod").member(FakeMember::new(1, "m0")).inspect::<Members>().unwrap();
/// assert_eq!(samples.value("members", &[]), Some(1.0));
/// ```
pub trait Plugin {
    /// Name, version, owned metrics, default interval and watch prefixes.
    /// Called once when the host loads the plugin.
    fn describe() -> PluginInfo;

    /// One inspection round against `snapshot`'s cluster. Return every sample
    /// of this round: gauges not returned are deleted by the host. Return
    /// `Err` to report a failed inspection (nothing is committed).
    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String>;

    /// A batch of watch events under the prefixes from
    /// [`PluginInfo::watch`]. Every returned value is *added*: counters
    /// grow, gauges move by the (possibly negative) value.
    fn on_events(snapshot: ClusterSnapshot, events: Vec<WatchEvent>) -> Result<Vec<Sample>, String> {
        let _ = (snapshot, events);
        Err("this plugin does not consume watch events".into())
    }

    /// What the host calls with a batch (hosts serving 0.1.3 and later):
    /// by default the events are unpacked and given to
    /// [`Plugin::on_events`]. A plugin that handles many events overrides
    /// it to read them in place ([`EventRef`]), without a copy per key.
    fn on_event_batch(snapshot: ClusterSnapshot, events: EventBatch) -> Result<Vec<Sample>, String> {
        Self::on_events(snapshot, events.iter().map(EventRef::to_event).collect())
    }
}

/// A batch of watch events as the host packs them; [`EventBatch::iter`]
/// reads them in revision order.
pub struct EventBatch(PackedEvents);

/// One event of an [`EventBatch`], borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Put or delete.
    pub kind: EventKind,
    /// The key's bytes.
    pub key: &'a [u8],
    /// Revision at which the key was created (0 for a delete).
    pub create_revision: u64,
    /// Revision of this event.
    pub mod_revision: u64,
}

impl EventRef<'_> {
    /// An owned [`WatchEvent`].
    pub fn to_event(self) -> WatchEvent {
        WatchEvent {
            kind: self.kind,
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

impl EventBatch {
    /// Packs `events` as the host does (the SDK's test harness, benchmarks).
    pub fn pack(events: &[WatchEvent]) -> Self {
        let mut packed = PackedEvents {
            keys: Vec::with_capacity(events.iter().map(|e| e.key.len()).sum()),
            key_ends: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            revisions: Vec::with_capacity(events.len() * 2),
        };
        for e in events {
            packed.keys.extend_from_slice(&e.key);
            packed.key_ends.push(packed.keys.len() as u32);
            packed.kinds.push(u8::from(e.kind == EventKind::Delete));
            packed.revisions.extend([e.create_revision, e.mod_revision]);
        }
        EventBatch(packed)
    }

    /// Takes a batch from the host, checking that its buffers agree.
    pub fn new(packed: PackedEvents) -> Result<Self, String> {
        let n = packed.kinds.len();
        let ends_ok = packed.key_ends.windows(2).all(|w| w[0] <= w[1])
            && packed.key_ends.last().is_none_or(|&e| e as usize <= packed.keys.len());
        if packed.key_ends.len() != n || packed.revisions.len() != 2 * n || !ends_ok {
            return Err("malformed event batch".into());
        }
        Ok(EventBatch(packed))
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.0.kinds.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.kinds.is_empty()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> + '_ {
        let p = &self.0;
        (0..p.kinds.len()).map(move |i| {
            let start = if i == 0 { 0 } else { p.key_ends[i - 1] as usize };
            EventRef {
                kind: if p.kinds[i] == 1 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                key: &p.keys[start..p.key_ends[i] as usize],
                create_revision: p.revisions[2 * i],
                mod_revision: p.revisions[2 * i + 1],
            }
        })
    }
}

#[doc(hidden)]
pub struct Adapter<P>(std::marker::PhantomData<P>);

impl<P: Plugin> bindings::exports::etcd_inspector::plugin::inspector::Guest for Adapter<P> {
    fn describe() -> PluginInfo {
        P::describe()
    }
    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        P::inspect(snapshot)
    }
}

impl<P: Plugin> bindings::exports::etcd_inspector::plugin::watcher::Guest for Adapter<P> {
    fn on_events(snapshot: ClusterSnapshot, events: Vec<WatchEvent>) -> Result<Vec<Sample>, String> {
        P::on_events(snapshot, events)
    }
}

impl<P: Plugin> bindings::exports::etcd_inspector::plugin::packed_watcher::Guest for Adapter<P> {
    fn on_packed_events(snapshot: ClusterSnapshot, events: PackedEvents) -> Result<Vec<Sample>, String> {
        P::on_event_batch(snapshot, EventBatch::new(events)?)
    }
}

/// Export a [`Plugin`] implementation as the component's entry points.
///
/// ```ignore
/// etcd_inspector_sdk::export_plugin!(MyPlugin);
/// ```
///
/// It exports only when building for wasm: natively the plugin is a plain
/// library (its tests, or a benchmark calling it directly), and the
/// component's export names cannot be linked into a native shared library.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        type __EtcdInspectorPlugin = $crate::Adapter<$plugin>;
        #[cfg(target_family = "wasm")]
        $crate::bindings::__export_bindings!(__EtcdInspectorPlugin with_types_in $crate::bindings);
    };
}

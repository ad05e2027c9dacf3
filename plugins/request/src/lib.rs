//! The seed's `request` inspection, without its drift (D8, D19, D20):
//! - `inspection_etcd_key_total{clusterName, etcdPrefix, resourceName}`:
//!   keys per resource, counted at the revision the host watches from, then
//!   moved by every create and delete the watch delivers, and counted again
//!   whenever the host asks (compaction, a lost batch, every interval).
//! - `inspection_etcd_request_total{clusterName, grpcMethod, etcdPrefix, resourceName}`:
//!   writes seen by the watch, `grpcMethod` = `PUT` or `Delete` as in the seed.
//!
//! Names understand Kubernetes keys: `/registry/<resource>/…` gives
//! (`registry`, `<resource>`), `/registry/<group>/<resource>/…` gives
//! (`registry`, `<resource>.<group>`), and the historical paths
//! (`services/specs`, `services/endpoints`, `minions`, `controllers`) get
//! their resource names. Elsewhere `etcdPrefix` is the first directory and
//! `resourceName` the next `depth` directories (never the key's own name).
//! At most `max-resources` label pairs per cluster; the rest count as
//! (`other`, `other`).

use std::collections::{BTreeMap, BTreeSet};

use etcd_inspector_sdk::{
    counter, etcd, export_plugin, gauge, prefix_end, state, ClusterSnapshot, EventBatch, EventKind, EventRef, KeyRange,
    Plugin, PluginInfo, Sample, WatchEvent,
};

const KEY_TOTAL: &str = "inspection_etcd_key_total";
const REQUEST_TOTAL: &str = "inspection_etcd_request_total";
const PREFIX_PARAM: &str = "etcd-inspector.io/watch-prefix";
const REVISION_PARAM: &str = "etcd-inspector.io/watch-revision";
const DEPTH_PARAM: &str = "etcd-inspector.io/request-depth";
const MAX_RESOURCES_PARAM: &str = "etcd-inspector.io/request-max-resources";
const DEFAULT_MAX_RESOURCES: usize = 200;
/// Keys read per page while looking for the next resource.
const PAGE: u32 = 256;
/// Bound on etcd calls in one census; past it the census fails and says why.
const MAX_CENSUS_CALLS: usize = 20_000;

type Labels = (String, String);

/// The plugin (public so the host's benchmark can run it natively).
pub struct Request;

impl Plugin for Request {
    fn describe() -> PluginInfo {
        PluginInfo::new("request", env!("CARGO_PKG_VERSION"))
            .metric(gauge(
                KEY_TOTAL,
                "The total number of etcd key",
                &["etcdPrefix", "resourceName"],
            ))
            .metric(counter(
                REQUEST_TOTAL,
                "The total number of etcd requests",
                &["grpcMethod", "etcdPrefix", "resourceName"],
            ))
            .interval_seconds(300)
            .watch("")
    }

    fn inspect(snapshot: ClusterSnapshot) -> Result<Vec<Sample>, String> {
        let settings = Settings::from(&snapshot);
        let revision: u64 = snapshot
            .param(REVISION_PARAM)
            .and_then(|r| r.parse().ok())
            .ok_or("no watch revision: request runs under etcd-inspector's watch")?;
        let prefix = snapshot.param(PREFIX_PARAM).unwrap_or("");
        let counts = census(prefix.as_bytes(), revision, settings.depth)?;
        let mut admitted = Admitted::default();
        let mut totals: BTreeMap<Labels, u64> = BTreeMap::new();
        // The largest resources keep their names when there are too many.
        let mut by_size: Vec<(&Labels, &u64)> = counts.iter().collect();
        by_size.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (labels, n) in by_size {
            *totals
                .entry(admitted.admit(labels.clone(), settings.max_resources))
                .or_default() += n;
        }
        admitted.save()?;
        Ok(totals
            .into_iter()
            .map(|((p, r), n)| {
                Sample::new(KEY_TOTAL, n as f64)
                    .label("etcdPrefix", p)
                    .label("resourceName", r)
            })
            .collect())
    }

    fn on_events(snapshot: ClusterSnapshot, events: Vec<WatchEvent>) -> Result<Vec<Sample>, String> {
        let refs = events.iter().map(|e| EventRef {
            kind: e.kind,
            key: &e.key,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
        });
        count_events(&snapshot, refs)
    }

    /// Hosts serving 0.1.3 hand the batch over packed: the keys are read
    /// where they lie (bench D).
    fn on_event_batch(snapshot: ClusterSnapshot, events: EventBatch) -> Result<Vec<Sample>, String> {
        count_events(&snapshot, events.iter())
    }
}

fn count_events<'a>(
    snapshot: &ClusterSnapshot,
    events: impl Iterator<Item = EventRef<'a>>,
) -> Result<Vec<Sample>, String> {
    let settings = Settings::from(snapshot);
    let mut admitted = Admitted::load();
    // Labels depend only on a key's directories, and a batch's keys
    // share few of them: each directory is looked up once, and events
    // are counted per admitted label pair without allocating. A new
    // directory under a bucket already classified in this batch (every
    // namespace of `/registry/pods/`) takes its labels without a new
    // classification, the costly part in wasm (bench D).
    let mut by_dir = DirIndex::default();
    let mut buckets: Vec<(&[u8], usize)> = Vec::new();
    let mut totals: Vec<(Labels, Delta)> = Vec::new();
    for event in events {
        let key = event.key;
        let dir = match last_slash(key) {
            Some(slash) => &key[..slash],
            None => &[][..],
        };
        let index = by_dir.get_or_insert(dir, || {
            let known = buckets
                .iter()
                .find(|(bucket, _)| key.len() > bucket.len() && same(&key[..bucket.len()], bucket));
            if let Some(&(_, index)) = known {
                return index;
            }
            let (labels, bucket) = classify(key, settings.depth);
            let labels = admitted.admit(labels, settings.max_resources);
            let index = totals.iter().position(|(l, _)| *l == labels).unwrap_or_else(|| {
                totals.push((labels, Delta::default()));
                totals.len() - 1
            });
            if let Bucket::Prefix(n) = bucket {
                buckets.push((&key[..dirs_end(key, n)], index));
            }
            index
        });
        let delta = &mut totals[index].1;
        match event.kind {
            EventKind::Put => {
                delta.puts += 1;
                if event.create_revision == event.mod_revision {
                    delta.keys += 1;
                }
            }
            EventKind::Delete => {
                delta.deletes += 1;
                delta.keys -= 1;
            }
        }
    }
    admitted.save()?;
    let mut samples = Vec::new();
    for ((prefix, resource), delta) in totals {
        let sample = |metric: &str, value: f64| {
            Sample::new(metric, value)
                .label("etcdPrefix", prefix.clone())
                .label("resourceName", resource.clone())
        };
        if delta.keys != 0 {
            samples.push(sample(KEY_TOTAL, delta.keys as f64));
        }
        for (method, n) in [("PUT", delta.puts), ("Delete", delta.deletes)] {
            if n > 0 {
                samples.push(sample(REQUEST_TOTAL, n as f64).label("grpcMethod", method));
            }
        }
    }
    Ok(samples)
}

/// A batch's directories and the label pair each counts towards. Few and
/// long (`/registry/pods/<namespace>`), sharing their start: a search tree
/// compares each lookup's first ~15 bytes several times over, byte by byte
/// in wasm. Here a lookup hashes the directory once (8 bytes at a step)
/// and compares bytes only with an entry of the same hash and length.
#[derive(Default)]
struct DirIndex<'a> {
    /// (hash, directory, index into the totals), in order of arrival.
    entries: Vec<(u64, &'a [u8], usize)>,
    /// Open addressing over `entries`: slot → position + 1 (0 = empty).
    slots: Vec<u32>,
}

impl<'a> DirIndex<'a> {
    fn get_or_insert(&mut self, dir: &'a [u8], make: impl FnOnce() -> usize) -> usize {
        if self.entries.len() * 2 >= self.slots.len() {
            self.grow();
        }
        let hash = hash(dir);
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                0 => break,
                n => {
                    let (h, d, index) = self.entries[n as usize - 1];
                    if h == hash && same(d, dir) {
                        return index;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
        let index = make();
        self.entries.push((hash, dir, index));
        self.slots[slot] = self.entries.len() as u32;
        index
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        self.slots = vec![0; size];
        for (n, (hash, _, _)) in self.entries.iter().enumerate() {
            let mut slot = *hash as usize & (size - 1);
            while self.slots[slot] != 0 {
                slot = (slot + 1) & (size - 1);
            }
            self.slots[slot] = n as u32 + 1;
        }
    }
}

/// Eight little-endian bytes from `bytes[at..at + 8]`.
fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

/// Where the last `/` of `key` is. Keys are scanned from the end eight
/// bytes at a step: a byte loop is the largest part of a wasm event's cost
/// (bench D), and wasm32 has no `memrchr`.
fn last_slash(key: &[u8]) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SLASHES: u64 = 0x2f2f_2f2f_2f2f_2f2f;
    let mut end = key.len();
    while end >= 8 {
        let x = word(key, end - 8) ^ SLASHES;
        // The high bit of each byte that was a `/` (now zero), exactly: no
        // carry crosses bytes, so the highest one is the last slash.
        let found = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
        if found != 0 {
            return Some(end - 8 + (63 - found.leading_zeros() as usize) / 8);
        }
        end -= 8;
    }
    key[..end].iter().rposition(|&b| b == b'/')
}

/// `a == b`, eight bytes at a step (wasm's `memcmp` compares bytewise).
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    // The last word may overlap the one before it: equal either way.
    (0..n - 8).step_by(8).all(|at| word(a, at) == word(b, at)) && word(a, n - 8) == word(b, n - 8)
}

/// FxHash-style: a multiply and a rotate per 8 bytes, the length mixed in.
/// Words are read in place (the last one may overlap the one before): a
/// copy of the tail into a buffer is a `memory.copy`, which wasmtime runs
/// as a call out of the guest, once per event.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mix = |h: u64, word: u64| (h.rotate_left(26) ^ word).wrapping_mul(K);
    let n = bytes.len();
    let mut h = n as u64;
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            h = mix(h, word(bytes, at));
            at += 8;
        }
        h = mix(h, word(bytes, n - 8));
    } else {
        h = mix(h, bytes.iter().rev().fold(0, |w, &b| w << 8 | u64::from(b)));
    }
    h ^ (h >> 32)
}

/// What one batch changed for one label pair.
#[derive(Default)]
struct Delta {
    keys: i64,
    puts: u64,
    deletes: u64,
}

struct Settings {
    depth: usize,
    max_resources: usize,
}

impl Settings {
    fn from(snapshot: &ClusterSnapshot) -> Self {
        let number = |name: &str, default: usize| snapshot.param(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Settings {
            depth: number(DEPTH_PARAM, 1).max(1),
            max_resources: number(MAX_RESOURCES_PARAM, DEFAULT_MAX_RESOURCES),
        }
    }
}

/// The label pairs that have a series of their own, kept in the plugin's
/// state so events and counts agree on them.
#[derive(Default)]
struct Admitted(BTreeSet<Labels>);

impl Admitted {
    fn load() -> Self {
        let text = state::load()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        Admitted(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(p, r)| (p.into(), r.into()))
                .collect(),
        )
    }

    fn admit(&mut self, labels: Labels, max: usize) -> Labels {
        if self.0.contains(&labels) || (self.0.len() < max && self.0.insert(labels.clone())) {
            labels
        } else {
            ("other".into(), "other".into())
        }
    }

    fn save(&self) -> Result<(), String> {
        let text: String = self.0.iter().map(|(p, r)| format!("{p}\t{r}\n")).collect();
        state::store(text.as_bytes())
    }
}

/// Which keys share a key's labels.
#[derive(Debug, PartialEq)]
enum Bucket {
    /// Every key that shares this key's first `n` segments (and the `/`
    /// after them, [`dirs_end`]) has the same labels. A count, not the
    /// bytes: events only need the labels, the census alone the prefix.
    Prefix(usize),
    /// Only this key.
    Key,
}

/// Labels of a key and the bucket they hold for.
fn classify(key: &[u8], depth: usize) -> (Labels, Bucket) {
    let text = String::from_utf8_lossy(key);
    let parts: Vec<&str> = text.split('/').collect();
    // Directories only: the last segment is the key's own name.
    let dirs = &parts[..parts.len() - 1];
    let Some(first) = dirs.get(1) else {
        return ((String::new(), String::new()), Bucket::Key);
    };
    let prefix = first.to_string();
    if prefix == "registry" && depth == 1 {
        if let Some(labels) = kubernetes(dirs) {
            return labels;
        }
    }
    if dirs.len() < 3 {
        return ((prefix, String::new()), Bucket::Key);
    }
    let n = 2 + depth;
    if dirs.len() < n {
        // A deeper key under these directories names more of them: the
        // labels hold for this key only.
        return ((prefix, dirs[2..].join("/")), Bucket::Key);
    }
    ((prefix, dirs[2..n].join("/")), Bucket::Prefix(n))
}

/// Length of the key's first `n` segments with the `/` after them, in the
/// key's own bytes (a lossy text of a non-UTF-8 key would not be a prefix).
fn dirs_end(key: &[u8], n: usize) -> usize {
    key.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .nth(n.saturating_sub(1))
        .map_or(key.len(), |(at, _)| at + 1)
}

/// Kubernetes' layout under /registry, or None for the generic rule.
fn kubernetes(dirs: &[&str]) -> Option<(Labels, Bucket)> {
    let registry = |resource: &str| ("registry".to_string(), resource.to_string());
    let bucket = Bucket::Prefix;
    let second = *dirs.get(2)?;
    if second.contains('.') {
        // /registry/<group>/<resource>/...: an API group (CRDs, aggregated APIs).
        return Some(match dirs.get(3) {
            Some(resource) => (registry(&format!("{resource}.{second}")), bucket(4)),
            None => (registry(second), Bucket::Key),
        });
    }
    let renamed = match (second, dirs.get(3).copied()) {
        ("services", Some("specs")) => return Some((registry("services"), bucket(4))),
        ("services", Some("endpoints")) => return Some((registry("endpoints"), bucket(4))),
        ("services", _) => return Some((registry("services"), Bucket::Key)),
        ("minions", _) => "nodes",
        ("controllers", _) => "replicationcontrollers",
        (other, _) => other,
    };
    Some((registry(renamed), bucket(3)))
}

/// Keys per label pair under `prefix` at `revision`: pages through keys and
/// replaces every bucket it meets by one count-only range, so a Kubernetes
/// keyspace costs about two calls per resource instead of a download of
/// every key name.
fn census(prefix: &[u8], revision: u64, depth: usize) -> Result<BTreeMap<Labels, u64>, String> {
    let range = KeyRange::prefix(prefix);
    let mut counts: BTreeMap<Labels, u64> = BTreeMap::new();
    let mut start = range.start.clone();
    let mut calls = 0;
    let fail = |what: &str, e: etcd_inspector_sdk::EtcdError| {
        format!("census at revision {revision}: {what}: {}", e.message())
    };
    loop {
        calls += 1;
        if calls > MAX_CENSUS_CALLS {
            return Err(format!(
                "census at revision {revision} needs more than {MAX_CENSUS_CALLS} calls; narrow the request path or raise request-depth"
            ));
        }
        let page = etcd::keys(
            &KeyRange {
                start: start.clone(),
                end: range.end.clone(),
            },
            PAGE,
            revision,
        )
        .map_err(|e| fail("keys", e))?;
        let Some(last) = page.last() else { break };
        let mut next = [last.key.as_slice(), &[0]].concat();
        for info in &page {
            let (labels, bucket) = classify(&info.key, depth);
            match bucket {
                Bucket::Key => *counts.entry(labels).or_default() += 1,
                Bucket::Prefix(n) => {
                    let bucket = &info.key[..dirs_end(&info.key, n)];
                    // Only the part of the bucket inside the watched range.
                    let from = bucket.to_vec().max(range.start.clone());
                    let to = min_end(prefix_end(bucket), range.end.clone());
                    calls += 1;
                    let n = etcd::count(
                        None,
                        &KeyRange {
                            start: from,
                            end: to.clone(),
                        },
                        revision,
                        false,
                    )
                    .map_err(|e| fail("count", e))?;
                    *counts.entry(labels).or_default() += n.count;
                    next = to;
                    break;
                }
            }
        }
        if next.is_empty() || (!range.end.is_empty() && next >= range.end) {
            break;
        }
        start = next;
    }
    Ok(counts)
}

/// The smaller of two range ends, where empty means "end of keyspace".
fn min_end(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

export_plugin!(Request);

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(key: &str, depth: usize) -> (String, String, Option<String>) {
        let ((p, r), bucket) = classify(key.as_bytes(), depth);
        let bucket = match bucket {
            Bucket::Prefix(n) => {
                Some(String::from_utf8(key.as_bytes()[..dirs_end(key.as_bytes(), n)].to_vec()).unwrap())
            }
            Bucket::Key => None,
        };
        (p, r, bucket)
    }

    fn l(p: &str, r: &str, b: Option<&str>) -> (String, String, Option<String>) {
        (p.into(), r.into(), b.map(String::from))
    }

    #[test]
    fn kubernetes_keys_name_their_resource() {
        assert_eq!(
            labels("/registry/pods/ns/x", 1),
            l("registry", "pods", Some("/registry/pods/"))
        );
        assert_eq!(
            labels("/registry/namespaces/x", 1),
            l("registry", "namespaces", Some("/registry/namespaces/"))
        );
        assert_eq!(
            labels("/registry/apiextensions.k8s.io/customresourcedefinitions/x", 1),
            l(
                "registry",
                "customresourcedefinitions.apiextensions.k8s.io",
                Some("/registry/apiextensions.k8s.io/customresourcedefinitions/")
            )
        );
        assert_eq!(
            labels("/registry/stable.example.com/crontabs/ns/x", 1),
            l(
                "registry",
                "crontabs.stable.example.com",
                Some("/registry/stable.example.com/crontabs/")
            )
        );
        assert_eq!(
            labels("/registry/services/endpoints/ns/x", 1),
            l("registry", "endpoints", Some("/registry/services/endpoints/"))
        );
        assert_eq!(
            labels("/registry/services/specs/ns/x", 1),
            l("registry", "services", Some("/registry/services/specs/"))
        );
        assert_eq!(
            labels("/registry/minions/node-1", 1),
            l("registry", "nodes", Some("/registry/minions/"))
        );
    }

    #[test]
    fn other_keys_use_directories_never_the_key_name() {
        assert_eq!(labels("compact_rev_key", 1), l("", "", None));
        assert_eq!(labels("/app/3f1c-uuid", 1), l("app", "", None));
        assert_eq!(labels("/app/users/42", 1), l("app", "users", Some("/app/users/")));
        assert_eq!(
            labels("/app/users/42/profile", 2),
            l("app", "users/42", Some("/app/users/42/"))
        );
        assert_eq!(
            labels("/registry/pods/ns/x", 2),
            l("registry", "pods/ns", Some("/registry/pods/ns/"))
        );
        // Shallower than the depth: "/app/users/42/profile" is (app, users/42).
        assert_eq!(labels("/app/users/42", 2), l("app", "users", None));
    }

    /// Events are counted under the labels their own key has, whether
    /// their directory was classified or matched a bucket of the batch.
    #[test]
    fn events_take_the_labels_of_their_key() {
        let keys = [
            "/registry/pods/ns1/a",
            "/registry/pods/ns2/b",
            "/registry/pods/ns2/c",
            "/registry/services/specs/ns1/s",
            "/registry/services/endpoints/ns1/s",
            "/registry/services/other",
            "/registry/stable.example.com/crontabs/ns1/c",
            "/registry/stable.example.com/x",
            "/app/users/42",
            "/app/users/42/profile",
            "/app/users/43/profile",
            "/app/x",
            "compact_rev_key",
        ];
        for depth in [1, 2, 3] {
            let cluster = etcd_inspector_sdk::testing::FakeCluster::new("c").param(DEPTH_PARAM, &depth.to_string());
            let events: Vec<WatchEvent> = keys
                .iter()
                .map(|k| WatchEvent {
                    kind: EventKind::Put,
                    key: k.as_bytes().to_vec(),
                    create_revision: 1,
                    mod_revision: 1,
                })
                .collect();
            let samples = cluster.on_events::<Request>(events).expect("counted");
            let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
            for k in keys {
                *want.entry(classify(k.as_bytes(), depth).0).or_default() += 1.0;
            }
            let got: BTreeMap<(String, String), f64> = samples
                .0
                .iter()
                .filter(|s| s.metric == KEY_TOTAL)
                .map(|s| {
                    let label = |name: &str| s.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
                    ((label("etcdPrefix").unwrap(), label("resourceName").unwrap()), s.value)
                })
                .collect();
            assert_eq!(got, want, "depth {depth}");
        }
    }

    /// The census counts under the key's own bytes, also where they are
    /// not UTF-8 (the labels then carry U+FFFD).
    #[test]
    fn buckets_are_prefixes_of_the_raw_key() {
        let key = b"/app/\xffusers/42";
        let ((_, resource), bucket) = classify(key, 1);
        assert_eq!(resource, "\u{fffd}users");
        let Bucket::Prefix(n) = bucket else { panic!("a bucket") };
        assert_eq!(&key[..dirs_end(key, n)], b"/app/\xffusers/");
    }

    #[test]
    fn the_cap_folds_new_label_pairs_into_other() {
        let mut admitted = Admitted::default();
        let pair = |r: &str| ("p".to_string(), r.to_string());
        assert_eq!(admitted.admit(pair("a"), 2), pair("a"));
        assert_eq!(admitted.admit(pair("b"), 2), pair("b"));
        assert_eq!(admitted.admit(pair("c"), 2), ("other".into(), "other".into()));
        assert_eq!(admitted.admit(pair("a"), 2), pair("a"));
    }

    /// Every directory gets its own index, found again after the table
    /// grows, whatever its length (the tail, the empty directory).
    #[test]
    fn directories_are_told_apart_and_found_again() {
        let dirs: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("/registry/pods/ns-{i}").into_bytes())
            .chain([Vec::new(), b"/a".to_vec(), b"/registry/pods/ns-1x".to_vec()])
            .collect();
        let mut index = DirIndex::default();
        for (n, dir) in dirs.iter().enumerate() {
            assert_eq!(
                index.get_or_insert(dir, || n),
                n,
                "new: {:?}",
                String::from_utf8_lossy(dir)
            );
        }
        for (n, dir) in dirs.iter().enumerate() {
            assert_eq!(index.get_or_insert(dir, || unreachable!("{n} is known")), n);
        }
        assert_eq!(index.entries.len(), dirs.len());
    }

    #[test]
    fn word_steps_agree_with_the_byte_loops() {
        let keys: [&[u8]; 9] = [
            b"",
            b"/",
            b"abc",
            b"/registry/pods/ns/x",
            b"/registry/pods/ns/",
            b"no-slash-in-a-key-this-long",
            b"/a\x01\x00\x2e\x30/bbbbbbbbbbbbbbbbbbb",
            b"\xff\xaf/\x2f\x2e\xaf\x01\x00",
            b"12345678/2345678",
        ];
        for key in keys {
            assert_eq!(last_slash(key), key.iter().rposition(|&b| b == b'/'), "{key:?}");
            for other in keys {
                assert_eq!(same(key, other), key == other, "{key:?} {other:?}");
            }
            for cut in 0..key.len() {
                let mut changed = key.to_vec();
                changed[cut] ^= 1;
                assert!(!same(key, &changed), "{key:?} at {cut}");
            }
        }
    }

    #[test]
    fn range_ends_take_the_narrower_one() {
        assert_eq!(min_end(vec![], b"b".to_vec()), b"b".to_vec());
        assert_eq!(min_end(b"c".to_vec(), b"b".to_vec()), b"b".to_vec());
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
    }
}

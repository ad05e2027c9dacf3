//! One invocation of a plugin against a cluster: the snapshot it sees, the
//! bounded call, the commit of its samples and the accounting. The
//! scheduler, `plugin run` and the bench all go through here, so what a
//! plugin author tries is what the host does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::ClusterKey;
use crate::etcd::{EtcdReads, MemberInfo, WatchEvent};
use crate::log_state::RepeatGate;
use crate::metrics::{CommitMode, Metrics};
use crate::runtime::{CallLimits, LoadedPlugin, Outcome, Runtime, Snapshot};

/// How old a cluster's member list may be when an inspection starts.
pub const MEMBERS_MAX_AGE: Duration = Duration::from_secs(10);

/// Parameters the host adds to a census call of a watching plugin.
pub const WATCH_PREFIX_PARAM: &str = "etcd-inspector.io/watch-prefix";
pub const WATCH_REVISION_PARAM: &str = "etcd-inspector.io/watch-revision";

/// A cluster's plugin parameters (annotations), shared by all its jobs and
/// replaced as a whole when an annotation is edited.
pub type Params = Arc<Vec<(String, String)>>;

/// What one call is for.
pub enum Work {
    /// A periodic inspection round, and when it was due (`None` for one
    /// run on demand). Status answers other calls of the cluster asked for
    /// after that moment may serve this round (`etcd::shared`): its
    /// features' rounds fall due together, so the one to wake first need
    /// not be the one to ask first.
    Inspect { due: Option<Instant> },
    /// A watching plugin counts everything under `prefix` at `revision`.
    Census { prefix: String, revision: u64 },
    /// A batch of watch events for a watching plugin.
    Events(Vec<WatchEvent>),
}

/// Everything one invocation needs.
pub struct Invocation<'a> {
    pub runtime: &'a Runtime,
    pub metrics: &'a Metrics,
    pub plugin: &'a LoadedPlugin,
    pub cluster: &'a ClusterKey,
    pub connection: &'a Arc<dyn EtcdReads>,
    pub params: &'a [(String, String)],
    pub limits: CallLimits,
    /// The plugin's `state` from its last successful call on this cluster.
    pub state: Option<Vec<u8>>,
    /// Where the plugin's log lines on this cluster are remembered, so a
    /// line repeated every round is written once every few minutes.
    pub log_gate: Option<Arc<Mutex<RepeatGate>>>,
}

/// How an invocation ended.
pub struct Done {
    pub outcome: Outcome,
    /// What the status page shows: the sample count, or why it failed.
    pub message: String,
    /// The call and commit, not the member list read before it.
    pub elapsed: Duration,
    /// What the plugin stored, on success.
    pub state: Option<Vec<u8>>,
    /// Why the member list could not be read (the last known one was used).
    pub members_error: Option<String>,
}

impl Invocation<'_> {
    /// Runs `work`, commits on success and records the outcome in the host's
    /// metrics; never fails: a failure is an outcome.
    pub async fn run(self, work: Work) -> Done {
        let now = Instant::now();
        let began = match work {
            Work::Inspect { due: Some(due) } => due.min(now),
            _ => now,
        };
        let (members, members_error) = self.connection.members_or_fallback(MEMBERS_MAX_AGE).await;
        let snapshot = self.snapshot(began, members, &work);
        let name = self.plugin.info.name.as_str();
        let started = Instant::now();
        let connection = self.connection.clone();
        let (result, mode) = match work {
            Work::Inspect { .. } | Work::Census { .. } => (
                self.runtime
                    .inspect(self.plugin, connection, snapshot, self.state, &self.limits)
                    .await,
                CommitMode::Replace,
            ),
            Work::Events(events) => (
                self.runtime
                    .on_events(self.plugin, connection, snapshot, self.state, events, &self.limits)
                    .await,
                CommitMode::Add,
            ),
        };
        let (outcome, message, state) = match result {
            Ok(done) => match self.metrics.commit(name, &self.cluster.name, &done.samples, mode) {
                Ok(()) => (Outcome::Ok, format!("{} samples", done.samples.len()), done.state),
                Err(e) => (Outcome::PluginError, format!("samples rejected: {e}"), None),
            },
            Err(failure) => (failure.outcome, failure.message, None),
        };
        let elapsed = started.elapsed();
        self.metrics.invocation(name, outcome.as_str(), elapsed.as_secs_f64());
        if let Outcome::BudgetExceeded(kind) = outcome {
            self.metrics.budget_refusal(name, kind.as_str());
        }
        Done {
            outcome,
            message,
            elapsed,
            state,
            members_error: members_error.map(|e| e.to_string()),
        }
    }

    fn snapshot(&self, began: Instant, members: Vec<MemberInfo>, work: &Work) -> Snapshot {
        let mut params = self.params.to_vec();
        if let Work::Census { prefix, revision } = work {
            params.push((WATCH_PREFIX_PARAM.into(), prefix.clone()));
            params.push((WATCH_REVISION_PARAM.into(), revision.to_string()));
        }
        Snapshot {
            name: self.cluster.name.clone(),
            namespace: self.cluster.namespace.clone(),
            members,
            params,
            log_gate: self.log_gate.clone(),
            began,
        }
    }
}

/// The prefix a watching plugin watches on a cluster: its own, unless the
/// cluster has an annotation named after the feature with a JSON `path`
/// (the seed's `request` annotation). `None` for a plugin that does not
/// watch; beside the prefix, why the annotation was ignored, if it was.
pub fn watch_prefix(plugin: &LoadedPlugin, params: &[(String, String)]) -> Option<(String, Option<String>)> {
    let default = plugin.watch_prefix()?.to_string();
    let feature = &plugin.info.name;
    let Some((_, value)) = params.iter().find(|(k, _)| k == feature) else {
        return Some((default, None));
    };
    Some(match serde_json::from_str::<serde_json::Value>(value) {
        Ok(json) => match json.get("path").and_then(|p| p.as_str()) {
            Some(path) => (path.to_string(), None),
            None => (default, None),
        },
        Err(e) => {
            let warning = format!("annotation {feature}: not JSON ({e}); watching {default:?}");
            (default, Some(warning))
        }
    })
}

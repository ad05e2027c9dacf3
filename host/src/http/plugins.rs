//! What `/plugins` says of each plugin file: the version serving and since
//! when, the last version refused and why, and how its recent rounds went
//! on every cluster, so that "loaded" is never mistaken for "working".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::controllers::{ClusterView, RunRecord};
use crate::oci::source::SourceStatus;
use crate::runtime::{PluginState, PluginStatus};

/// How the last round of a plugin on one cluster went, in one word.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoundHealth {
    Ok,
    Failing,
    /// Paused after repeated traps, timeouts or OOMs.
    CircuitOpen,
    NotRun,
}

impl RoundHealth {
    fn of(run: Option<&RunRecord>) -> Self {
        match run.map(|r| r.outcome) {
            None => RoundHealth::NotRun,
            Some("ok") => RoundHealth::Ok,
            Some("circuit_open") => RoundHealth::CircuitOpen,
            Some(_) => RoundHealth::Failing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoundHealth::Ok => "ok",
            RoundHealth::Failing => "failing",
            RoundHealth::CircuitOpen => "circuit open",
            RoundHealth::NotRun => "not run yet",
        }
    }
}

/// One cluster's view of a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRound {
    pub health: RoundHealth,
    /// The last round (absent before the first).
    #[serde(flatten)]
    pub last: Option<RunRecord>,
}

/// How many clusters are in each [`RoundHealth`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoundCounts {
    pub ok: usize,
    pub failing: usize,
    pub circuit_open: usize,
    pub not_run: usize,
    /// Failing clusters whose series of the last good round are kept.
    pub stale_series_kept: usize,
}

/// One entry of `/plugins`.
#[derive(Clone, Debug, Serialize)]
pub struct PluginReport {
    #[serde(flatten)]
    pub status: PluginStatus,
    /// The OCI source the file is pulled from, and how its last poll went.
    pub source: Option<SourceStatus>,
    pub rounds: RoundCounts,
    /// By cluster (`namespace/name`), the clusters this plugin is enabled on.
    pub clusters: BTreeMap<String, ClusterRound>,
}

/// Joins the registry's files with their OCI sources and the supervisor's
/// rounds. A source that never delivered a file gets an entry of its own.
pub fn reports(
    mut statuses: Vec<PluginStatus>,
    sources: Vec<SourceStatus>,
    views: &[ClusterView],
) -> Vec<PluginReport> {
    let mut by_file: BTreeMap<String, SourceStatus> = sources.into_iter().map(|s| (s.file.clone(), s)).collect();
    for file in by_file.keys() {
        if !statuses.iter().any(|s| &s.file == file) {
            let name = std::path::Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string);
            statuses.push(PluginStatus {
                file: file.clone(),
                name,
                state: PluginState::Failed,
                serving: None,
                last_rejected: None,
            });
        }
    }
    statuses
        .into_iter()
        .map(|status| {
            let source = by_file.remove(&status.file);
            let mut rounds = RoundCounts::default();
            let mut clusters = BTreeMap::new();
            // Rounds belong to the feature; a file that never loaded has none.
            let views = if status.serving.is_some() { views } else { &[] };
            for view in views {
                let Some(run) = status.name.as_ref().and_then(|n| view.features.get(n)) else {
                    continue;
                };
                let health = RoundHealth::of(run.as_ref());
                match health {
                    RoundHealth::Ok => rounds.ok += 1,
                    RoundHealth::Failing => rounds.failing += 1,
                    RoundHealth::CircuitOpen => rounds.circuit_open += 1,
                    RoundHealth::NotRun => rounds.not_run += 1,
                }
                if run.as_ref().is_some_and(|r| r.stale_series_kept) {
                    rounds.stale_series_kept += 1;
                }
                let last = run.clone();
                clusters.insert(view.cluster.clone(), ClusterRound { health, last });
            }
            PluginReport {
                status,
                source,
                rounds,
                clusters,
            }
        })
        .collect()
}

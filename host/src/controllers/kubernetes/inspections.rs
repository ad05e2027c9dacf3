//! The inspection controller: EtcdInspections (and the clusters they name)
//! become the supervisor's desired set, exactly as manifest files do in
//! standalone mode; each inspection's status records its runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::registry::ClusterRegistry;
use super::replicas::Membership;
use crate::cluster::crd::{EtcdCluster, EtcdInspection, EtcdInspectionStatus, InspectionRecord};
use crate::cluster::{ClusterConfig, ClusterKey};
use crate::controllers::{RunRecord, Supervisor};
use tokio::sync::watch;

/// How often the desired set is recomputed and statuses written.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Runs kept in an EtcdInspection's status.
const MAX_RECORDS: usize = 10;

/// What was last written into each inspection's status: (namespace, name)
/// → (finish time of the run written, the records).
type Written = HashMap<(String, String), (u128, VecDeque<InspectionRecord>)>;

pub async fn run(registry: Arc<ClusterRegistry>, supervisor: Arc<Supervisor>, membership: watch::Receiver<Membership>) {
    let client = registry.client().clone();
    let wc = match &registry.settings().label_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let clusters = reflect(Api::<EtcdCluster>::all(client.clone()), watcher::Config::default());
    let inspections = reflect(Api::<EtcdInspection>::all(client.clone()), wc);
    let _ = clusters.wait_until_ready().await;
    let _ = inspections.wait_until_ready().await;

    let mut written = Written::new();
    loop {
        let owned = membership.borrow().clone();
        let (desired, keep, errors) = desired(&registry, &clusters, &inspections, &owned).await;
        supervisor.apply(desired, &keep, errors);
        write_statuses(&client, &supervisor, &inspections, &mut written).await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!("watch: {e}");
        }
    }));
    store
}

async fn desired(
    registry: &ClusterRegistry,
    clusters: &Store<EtcdCluster>,
    inspections: &Store<EtcdInspection>,
    membership: &Membership,
) -> (Vec<ClusterConfig>, Vec<ClusterKey>, Vec<String>) {
    let inspections = inspections.state();
    let mut by_cluster: BTreeMap<ClusterKey, Vec<&EtcdInspection>> = BTreeMap::new();
    for i in &inspections {
        by_cluster
            .entry(ClusterKey::inspected_by(i))
            .or_default()
            .push(i.as_ref());
    }
    let (mut configs, mut keep, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for cluster in clusters.state() {
        let key = ClusterKey::of(&cluster);
        // Before its Secret is read: a replica touches only its own clusters.
        if !membership.owns(&key) {
            continue;
        }
        let Some(own) = by_cluster.get(&key) else { continue };
        match registry.config(&cluster, own).await {
            Ok(config) => configs.push(config),
            Err(e) => {
                keep.push(key);
                errors.push(e.to_string());
            }
        }
    }
    (configs, keep, errors)
}

/// Writes each inspection's last run into its status when it changed.
async fn write_statuses(
    client: &Client,
    supervisor: &Supervisor,
    inspections: &Store<EtcdInspection>,
    written: &mut Written,
) {
    let runs: HashMap<(String, String), RunRecord> = supervisor
        .views()
        .into_iter()
        .flat_map(|view| {
            let cluster = view.cluster.clone();
            view.features
                .into_iter()
                .filter_map(move |(f, r)| r.map(|r| ((cluster.clone(), f), r)))
        })
        .collect();
    let inspections = inspections.state();
    // Inspections that are gone take their records with them.
    written.retain(|(ns, name), _| {
        inspections
            .iter()
            .any(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.name_any() == *name)
    });
    for inspection in inspections {
        let ns = inspection.namespace().unwrap_or_default();
        let cluster = format!("{ns}/{}", inspection.spec.cluster_name);
        let Some(run) = runs.get(&(cluster, inspection.spec.inspection_type.clone())) else {
            continue;
        };
        let id = (ns.clone(), inspection.name_any());
        let (last, records) = written.entry(id).or_default();
        if *last == run.finished_unix_ms {
            continue;
        }
        *last = run.finished_unix_ms;
        let end = timestamp(run.finished_unix_ms);
        let start = timestamp(run.finished_unix_ms.saturating_sub(run.duration_ms));
        records.push_back(InspectionRecord {
            start_time: start,
            end_time: end.clone(),
            reason: run.outcome.to_string(),
            message: run.message.clone(),
        });
        while records.len() > MAX_RECORDS {
            records.pop_front();
        }
        let status = EtcdInspectionStatus {
            reason: run.outcome.to_string(),
            message: run.message.clone(),
            records: records.iter().cloned().collect(),
            last_updated_time: Some(end),
        };
        let api: Api<EtcdInspection> = Api::namespaced(client.clone(), &ns);
        let patch = Patch::Merge(json!({ "status": status }));
        if let Err(e) = api
            .patch_status(&inspection.name_any(), &PatchParams::default(), &patch)
            .await
        {
            tracing::debug!(inspection = %inspection.name_any(), "status not written: {e}");
        }
    }
}

fn timestamp(unix_ms: u128) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(unix_ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

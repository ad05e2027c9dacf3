//! The cluster controller: for each EtcdCluster, observe its members (each
//! through its own endpoint, D1), write one status patch, the seed's
//! labels, and one EtcdInspection per enabled feature, owned by the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::registry::{ClusterRegistry, Unusable};
use super::replicas::Membership;
use super::status::{cluster_labels, cluster_status, feature_actions, FeatureAction, Observation, ObservedMember};
use crate::cluster::config::annotations;
use crate::cluster::crd::{EtcdCluster, EtcdInspection, EtcdInspectionSpec};
use crate::cluster::{parse_feature_gates, ClusterKey};
use crate::etcd::CallError;

/// EtcdClusters reconciled at once.
const RECONCILE_CONCURRENCY: u16 = 64;

pub struct Context {
    pub registry: Arc<ClusterRegistry>,
    /// Which clusters this replica owns: only their status is written.
    pub membership: tokio::sync::watch::Receiver<Membership>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let selector = ctx.registry.settings().label_selector.clone();
    let client = ctx.registry.client().clone();
    let config = |s: &Option<String>| match s {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let clusters = Api::<EtcdCluster>::all(client.clone());
    let inspections = Api::<EtcdInspection>::all(client);
    // When the replicas change, every cluster is looked at again: the ones
    // this replica gained are reconciled now, not at their next resync.
    let changes = futures::stream::unfold(ctx.membership.clone(), |mut rx| async move {
        rx.changed().await.ok().map(|_| ((), rx))
    });
    Controller::new(clusters, config(&selector))
        .owns(inspections, watcher::Config::default())
        // A bulk reconcile (start, a replica joining or leaving) must not
        // send thousands of requests at once: the API server also serves
        // the Lease renewals that keep replicas in the set.
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .reconcile_all_on(changes)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("cluster reconcile: {e}");
            }
        })
        .await;
}

fn error_policy(_: Arc<EtcdCluster>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!("cluster reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    if !ctx.membership.borrow().owns(&ClusterKey::of(&cluster)) {
        // Another replica writes its status; look again if it goes.
        return Ok(Action::requeue(ctx.registry.settings().resync));
    }
    let api: Api<EtcdCluster> = Api::namespaced(ctx.registry.client().clone(), &namespace);
    let annotations = cluster.annotations();
    let (gates, _) = parse_feature_gates(
        annotations
            .get(annotations::FEATURE_GATES)
            .map(String::as_str)
            .unwrap_or(""),
    );
    let seeds = annotations.get(annotations::IMPORTED_ADDR).cloned().unwrap_or_default();

    let observation = observe(&cluster, &ctx.registry).await;
    let mut status = cluster_status(&cluster.status.clone().unwrap_or_default(), &seeds, &observation);
    if let Observation::Members(_) = observation {
        status.feature_gates_status = sync_inspections(&cluster, &namespace, &gates, &ctx).await;
    }
    if status != cluster.status.clone().unwrap_or_default() {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }

    let labels = cluster_labels(&gates, &cluster.spec.cluster_type, cluster.spec.version.as_deref());
    let current = cluster.labels();
    if labels.iter().any(|(k, v)| current.get(k) != Some(v)) {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": labels } })),
        )
        .await?;
    }
    Ok(Action::requeue(ctx.registry.settings().resync))
}

async fn observe(cluster: &EtcdCluster, registry: &ClusterRegistry) -> Observation {
    if let Some(message) = registry.name_taken(&ClusterKey::of(cluster)) {
        return Observation::Invalid {
            reason: "DuplicateName",
            message,
        };
    }
    let config = match registry.config(cluster, &[]).await {
        Ok(c) => c,
        Err(Unusable::Credentials(e)) => {
            return Observation::Invalid {
                reason: "CredentialsUnavailable",
                message: e.to_string(),
            }
        }
        Err(Unusable::Spec(e)) => {
            return Observation::Invalid {
                reason: "InvalidSpec",
                message: e.to_string(),
            }
        }
    };
    let connection = match registry.connection(&config) {
        Ok(c) => c,
        Err(e) => {
            return Observation::Invalid {
                reason: "CredentialsUnavailable",
                message: format!("cluster {}: metadata.annotations.certName: {e}", config.key),
            }
        }
    };
    let members = match connection.refresh_members().await {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => {
            return Observation::Unreachable {
                error: CallError::Unavailable("MemberList returned no member with a client URL".into()),
            }
        }
        Err(error) => return Observation::Unreachable { error },
    };
    let observed = members.into_iter().map(|info| {
        let connection = connection.clone();
        async move {
            let status = connection.status(&info.endpoint).await.map_err(|e| e.to_string());
            let health = connection.health(&info.endpoint).await.map_err(|e| e.to_string());
            ObservedMember { info, status, health }
        }
    });
    Observation::Members(futures::future::join_all(observed).await)
}

/// Creates and deletes `<cluster>-<feature>` EtcdInspections; returns the
/// seed's featureGatesStatus.
async fn sync_inspections(
    cluster: &EtcdCluster,
    namespace: &str,
    gates: &BTreeMap<String, bool>,
    ctx: &Context,
) -> BTreeMap<String, String> {
    let api: Api<EtcdInspection> = Api::namespaced(ctx.registry.client().clone(), namespace);
    let name = cluster.name_any();
    let uid = cluster.uid();
    let owned: Vec<String> = match api.list(&Default::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|i| i.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
            .map(|i| i.spec.inspection_type.clone())
            .collect(),
        Err(e) => {
            tracing::warn!(cluster = %name, "cannot list EtcdInspections: {e}");
            Vec::new()
        }
    };
    let mut result = BTreeMap::new();
    for (feature, action) in feature_actions(gates, &owned) {
        let inspection_name = format!("{name}-{feature}");
        let outcome = match action {
            FeatureAction::Ensure => ensure_inspection(&api, cluster, &inspection_name, &feature)
                .await
                .map(|_| "enabled"),
            FeatureAction::Delete => match api.delete(&inspection_name, &DeleteParams::default()).await {
                Ok(_) => Ok("disabled"),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok("disabled"),
                Err(e) => Err(e),
            },
        };
        let value = match outcome {
            Ok(v) => v.to_string(),
            Err(e) => format!("failed to sync {feature} feature, err is {e}"),
        };
        if gates.contains_key(&feature) {
            result.insert(feature, value);
        }
    }
    result
}

async fn ensure_inspection(
    api: &Api<EtcdInspection>,
    cluster: &EtcdCluster,
    name: &str,
    feature: &str,
) -> Result<(), kube::Error> {
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let inspection = EtcdInspection {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cluster.namespace(),
            labels: Some(cluster.labels().clone()),
            owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: EtcdInspectionSpec {
            cluster_name: cluster.name_any(),
            inspection_type: feature.to_string(),
            ..Default::default()
        },
        status: None,
    };
    match api.create(&PostParams::default(), &inspection).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

//! Deletes the EtcdInspections of a deleted EtcdCluster.
//!
//! Their owner references let Kubernetes' garbage collector do it where
//! kube-controller-manager runs, but what a user sees on delete should not
//! depend on it (a GC that is slow, disabled, or absent as on a bare API
//! server): the cluster controller removes what it created. Whichever of
//! the two comes first wins; the other finds nothing to delete.

use std::collections::HashSet;

use futures::StreamExt;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::cluster::crd::{EtcdCluster, EtcdInspection};

/// Follows EtcdCluster deletions until the stream ends. After every (re)list
/// it also sweeps inspections whose cluster went away while nobody watched.
pub async fn run(client: Client, selector: Option<String>) {
    let config = match &selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let clusters = Api::<EtcdCluster>::all(client.clone());
    let mut listed = HashSet::new();
    let mut events = watcher(clusters, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(cluster)) => {
                listed.extend(cluster.uid());
            }
            Ok(watcher::Event::InitDone) => {
                sweep(&client, None, |uid| !listed.contains(uid)).await;
            }
            Ok(watcher::Event::Delete(cluster)) => {
                let Some(uid) = cluster.uid() else { continue };
                let namespace = cluster.namespace().unwrap_or_default();
                sweep(&client, Some(&namespace), |owner| owner == uid).await;
            }
            Ok(watcher::Event::Apply(_)) => {}
            Err(e) => tracing::debug!("EtcdCluster watch for deletions: {e}"),
        }
    }
}

/// Deletes the inspections (in `namespace`, or everywhere) controlled by an
/// EtcdCluster whose uid `gone` selects, once the API confirms that cluster
/// is really gone.
async fn sweep(client: &Client, namespace: Option<&str>, gone: impl Fn(&str) -> bool) {
    let api: Api<EtcdInspection> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = match api.list(&Default::default()).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("cannot list EtcdInspections to remove those of deleted clusters: {e}");
            return;
        }
    };
    for inspection in list.items {
        let Some(owner) = inspection
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == EtcdCluster::kind(&()))
            .cloned()
        else {
            continue;
        };
        if !gone(&owner.uid) {
            continue;
        }
        let ns = inspection.namespace().unwrap_or_default();
        let name = inspection.name_any();
        // A cluster outside our label selector, or recreated since, is not gone.
        let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), &ns);
        match clusters.get_opt(&owner.name).await {
            Ok(Some(c)) if c.uid().as_deref() == Some(owner.uid.as_str()) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(inspection = %format!("{ns}/{name}"), "owner lookup failed: {e}");
                continue;
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: inspection.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let inspections: Api<EtcdInspection> = Api::namespaced(client.clone(), &ns);
        match inspections.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(inspection = %format!("{ns}/{name}"), "deleted: its cluster {} is gone", owner.name)
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(inspection = %format!("{ns}/{name}"), "cannot delete: {e}"),
        }
    }
}

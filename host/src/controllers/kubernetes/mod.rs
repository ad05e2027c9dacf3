//! Kubernetes mode: the cluster controller (members, status, one
//! EtcdInspection per enabled feature) and the inspection controller (runs
//! the inspections). By default every replica works on the clusters it
//! owns ([`replicas`]); with `--leader-election` only the Lease holder
//! reconciles and inspects, as in the seed.

pub mod cluster;
mod inspections;
pub mod leader;
mod orphans;
pub mod plugin_source;
mod registry;
pub mod replicas;
mod secrets;
pub mod status;

use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;

use crate::controllers::Supervisor;
use leader::{Elector, LeaseTiming};
use registry::ClusterRegistry;
use replicas::{Membership, Replicas};

/// Which controllers this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `etcd-inspector run`: both.
    All,
    /// The seed's `etcdcluster` subcommand.
    Clusters,
    /// The seed's `inspection` subcommand.
    Inspections,
}

#[derive(Clone, Debug)]
pub struct KubeSettings {
    pub label_selector: Option<String>,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_timing: LeaseTiming,
    pub identity: String,
    /// Allow `certName: namespace/name` outside the cluster's namespace (D14).
    pub allow_cross_namespace_secrets: bool,
    /// How often a cluster is observed when nothing changes; also how long a
    /// Secret read is reused.
    pub resync: std::time::Duration,
    /// Every replica inspects a share of the clusters (the default); false:
    /// the Lease holder inspects them all (`--leader-election`).
    pub sharding: bool,
}

/// Runs until `shutdown` resolves; then releases the lease.
pub async fn run(
    client: Client,
    settings: KubeSettings,
    role: Role,
    supervisor: Arc<Supervisor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    if settings.sharding {
        sharded(client, settings, role, supervisor, shutdown).await
    } else {
        led(client, settings, role, supervisor, shutdown).await
    }
}

/// Every replica works: each inspects the clusters it owns among the live
/// replicas ([`replicas`]), and writes only their statuses.
async fn sharded(
    client: Client,
    settings: Arc<KubeSettings>,
    role: Role,
    supervisor: Arc<Supervisor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (membership_tx, membership) = watch::channel(Membership {
        me: settings.identity.clone(),
        ..Default::default()
    });
    let replicas = Arc::new(Replicas::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_timing.clone(),
    ));
    let renewals = tokio::spawn({
        let replicas = replicas.clone();
        async move { replicas.run(membership_tx).await }
    });
    let work = controllers(&client, &settings, role, &supervisor, membership);
    shutdown.await;
    renewals.abort();
    for task in work {
        task.abort();
    }
    supervisor.shutdown();
    replicas.release().await;
}

/// The seed's model (`--leader-election`): the replica holding the Lease
/// inspects every cluster, the others wait.
async fn led(
    client: Client,
    settings: Arc<KubeSettings>,
    role: Role,
    supervisor: Arc<Supervisor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (leading_tx, mut leading) = watch::channel(false);
    let elector = Arc::new(Elector::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_timing.clone(),
    ));
    let election = tokio::spawn({
        let elector = elector.clone();
        async move { elector.run(leading_tx).await }
    });
    let lead = async {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            let (_all, membership) = watch::channel(Membership::alone(&settings.identity));
            let work = controllers(&client, &settings, role, &supervisor, membership);
            let _ = leading.wait_for(|l| !*l).await;
            tracing::info!("lost the lease: stopping controllers and inspections");
            for task in work {
                task.abort();
            }
            supervisor.shutdown();
        }
    };
    tokio::select! {
        _ = lead => {},
        _ = shutdown => {},
    }
    election.abort();
    supervisor.shutdown();
    elector.release().await;
}

/// Starts the controllers of `role`, limited to the clusters `membership` gives.
fn controllers(
    client: &Client,
    settings: &Arc<KubeSettings>,
    role: Role,
    supervisor: &Arc<Supervisor>,
    membership: watch::Receiver<Membership>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut work = Vec::new();
    // Both controllers share one view of each cluster: its Secret read,
    // its configuration and its connection.
    let registry = Arc::new(ClusterRegistry::new(
        client.clone(),
        settings.clone(),
        supervisor.clone(),
    ));
    if role != Role::Inspections {
        let ctx = Arc::new(cluster::Context {
            registry: registry.clone(),
            membership: membership.clone(),
        });
        work.push(tokio::spawn(cluster::run(ctx)));
        work.push(tokio::spawn(orphans::run(
            client.clone(),
            settings.label_selector.clone(),
        )));
    }
    if role != Role::Clusters {
        work.push(tokio::spawn(inspections::run(registry, supervisor.clone(), membership)));
    }
    work
}

//! What both Kubernetes controllers know of a cluster, in one place: its
//! credentials (one Secret read per resync, whoever asks), its validated
//! configuration and its connection (shared with the scheduler through the
//! supervisor's pool). Before, each controller read Secrets and kept
//! connections of its own: two sets of member channels per cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube::{Client, ResourceExt};

use super::{secrets, KubeSettings};
use crate::cluster::config::annotations;
use crate::cluster::crd::{EtcdCluster, EtcdInspection};
use crate::cluster::{ClusterConfig, ClusterKey, ConfigError, FeatureSource};
use crate::controllers::Supervisor;
use crate::etcd::{ClusterConnection, Credentials, TlsError};

/// A Secret read: (namespace, certName) → when, and what it gave.
type SecretCache = HashMap<(String, String), (Instant, Result<Credentials, String>)>;

/// Why a cluster's configuration cannot be used; either way the error
/// names the cluster and the field.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// The `certName` Secret cannot be read or is incomplete.
    #[error(transparent)]
    Credentials(ConfigError),
    #[error(transparent)]
    Spec(ConfigError),
}

pub struct ClusterRegistry {
    client: Client,
    settings: Arc<KubeSettings>,
    /// Runs the inspections; its pool holds the connections.
    supervisor: Arc<Supervisor>,
    secrets: Mutex<SecretCache>,
}

impl ClusterRegistry {
    pub fn new(client: Client, settings: Arc<KubeSettings>, supervisor: Arc<Supervisor>) -> Self {
        ClusterRegistry {
            client,
            settings,
            supervisor,
            secrets: Mutex::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The credentials `certName` names, read at most once per resync
    /// interval whichever controller asks first.
    pub async fn credentials(&self, cluster: &EtcdCluster) -> Result<Credentials, String> {
        let namespace = cluster.namespace().unwrap_or_default();
        let Some(cert_name) = cluster
            .annotations()
            .get(annotations::CERT_NAME)
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
        else {
            return Ok(Credentials::default());
        };
        let id = (namespace.clone(), cert_name.clone());
        let fresh = |(at, _): &(Instant, _)| at.elapsed() < self.settings.resync;
        if let Some((_, cached)) = self.secrets.lock().unwrap().get(&id).filter(|e| fresh(e)) {
            return cached.clone();
        }
        let read = secrets::credentials(
            &self.client,
            &namespace,
            &cert_name,
            self.settings.allow_cross_namespace_secrets,
        )
        .await;
        let mut cache = self.secrets.lock().unwrap();
        // Expired reads go: the cache holds what was read within one resync.
        cache.retain(|_, entry| fresh(entry));
        cache.insert(id, (Instant::now(), read.clone()));
        read
    }

    /// The cluster's validated configuration with its credentials.
    pub async fn config(
        &self,
        cluster: &EtcdCluster,
        inspections: &[&EtcdInspection],
    ) -> Result<ClusterConfig, Unusable> {
        let credentials = self.credentials(cluster).await;
        let unreadable = credentials.is_err();
        ClusterConfig::build(cluster, inspections, FeatureSource::Inspections, |_| credentials).map_err(|e| {
            if unreadable && e.field.ends_with(annotations::CERT_NAME) {
                Unusable::Credentials(e)
            } else {
                Unusable::Spec(e)
            }
        })
    }

    /// The cluster's connection, shared with its inspections.
    pub fn connection(&self, config: &ClusterConfig) -> Result<Arc<ClusterConnection>, TlsError> {
        self.supervisor.connections().get(config)
    }

    /// Why the inspections refuse this cluster: its name is another
    /// namespace's (series carry clusterName only).
    pub fn name_taken(&self, key: &ClusterKey) -> Option<String> {
        self.supervisor.refusal(key)
    }
}

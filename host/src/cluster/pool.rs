//! One connection per cluster, whoever asks for it: in Kubernetes mode the
//! cluster controller (status) and the scheduler (inspections) share it, so
//! a cluster costs one set of member channels and one Authenticate, not two.
//! The pool keeps only weak references: a connection lives as long as a
//! user holds it, and the pool forgets it then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{ClusterConfig, ClusterKey};
use crate::etcd::{ClusterConnection, ConnectionSettings, TlsError};
use crate::metrics::Metrics;

pub struct ConnectionPool {
    settings: ConnectionSettings,
    entries: Mutex<HashMap<ClusterKey, (ClusterConfig, Weak<ClusterConnection>)>>,
}

impl ConnectionPool {
    pub fn new(settings: ConnectionSettings) -> Self {
        ConnectionPool {
            settings,
            entries: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &ConnectionSettings {
        &self.settings
    }

    /// The live connection of `config`'s cluster if it was made for the
    /// same endpoints, rewrites and credentials; a new one otherwise.
    pub fn get(&self, config: &ClusterConfig) -> Result<Arc<ClusterConnection>, TlsError> {
        let mut entries = self.entries.lock().unwrap();
        if let Some(live) = entries
            .get(&config.key)
            .filter(|(known, _)| known.same_connection(config))
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(live);
        }
        let connection = Arc::new(config.connect(self.settings.clone())?);
        // Forget what nobody holds any more: deleted and reconfigured clusters.
        entries.retain(|_, (_, weak)| weak.strong_count() > 0);
        entries.insert(config.key.clone(), (config.clone(), Arc::downgrade(&connection)));
        Ok(connection)
    }

    /// Closes idle member channels of every live connection, every half
    /// `idle_timeout` (every 5 s when channels are kept open, to count
    /// them), for as long as the pool exists; nothing outside a tokio
    /// runtime.
    pub fn spawn_idle_sweeper(self: &Arc<Self>, metrics: Arc<Metrics>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let idle = self.settings.idle_timeout;
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(idle.map_or(Duration::from_secs(5), |idle| idle / 2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let live = pool.live();
                if let Some(idle) = idle {
                    let closed: usize = live.iter().map(|c| c.close_idle(idle)).sum();
                    tracing::trace!(closed, "idle member channels closed");
                }
                metrics.member_channels(live.iter().map(|c| c.open_channels()).sum());
            }
        });
    }

    fn live(&self) -> Vec<Arc<ClusterConnection>> {
        let entries = self.entries.lock().unwrap();
        entries.values().filter_map(|(_, weak)| weak.upgrade()).collect()
    }

    /// Clusters with a live connection.
    pub fn len(&self) -> usize {
        let entries = self.entries.lock().unwrap();
        entries.values().filter(|(_, weak)| weak.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::crd::{EtcdCluster, EtcdClusterSpec};

    fn config(name: &str, addr: &str) -> ClusterConfig {
        let mut cluster = EtcdCluster::new(
            name,
            EtcdClusterSpec {
                cluster_type: "imported".into(),
                ..Default::default()
            },
        );
        cluster.metadata.annotations = Some([("importedAddr".to_string(), addr.to_string())].into());
        ClusterConfig::from_resources(&cluster, &[], |_| Ok(Default::default())).unwrap()
    }

    #[test]
    fn one_connection_per_cluster_while_held_and_none_kept_after() {
        let pool = ConnectionPool::new(ConnectionSettings::default());
        let a = pool.get(&config("a", "http://127.0.0.1:1")).unwrap();
        let again = pool.get(&config("a", "http://127.0.0.1:1")).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "shared while held");
        let moved = pool.get(&config("a", "http://127.0.0.1:2")).unwrap();
        assert!(!Arc::ptr_eq(&a, &moved), "other endpoints: another connection");
        let b = pool.get(&config("b", "http://127.0.0.1:1")).unwrap();
        assert_eq!(pool.len(), 2);
        drop((a, again, moved, b));
        assert!(pool.is_empty());
        // Entries of dropped connections go at the next insert: the map
        // does not grow with deleted clusters.
        let _c = pool.get(&config("c", "http://127.0.0.1:1")).unwrap();
        assert_eq!(pool.entries.lock().unwrap().len(), 1);
    }
}

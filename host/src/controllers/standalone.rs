//! Standalone mode: the manifest directory is the source of clusters. It is
//! re-read periodically, so added, edited and removed files take effect
//! without a restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shard::StaticShard;
use super::Supervisor;
use crate::cluster::manifests::ManifestReader;

pub struct ManifestSource {
    pub dir: PathBuf,
    pub rescan: Duration,
    /// Refuse certName directories outside `dir` (the default).
    pub confine_cert_dirs: bool,
    /// `--shard`: only the clusters of this share.
    pub shard: Option<StaticShard>,
}

impl ManifestSource {
    /// Applies the directory now and then every `rescan`, forever. Files
    /// are read on a blocking thread: a slow or hostile file (a FIFO, a huge
    /// manifest) never stalls the runtime that serves /health and /metrics.
    pub async fn run(self, supervisor: Arc<Supervisor>) {
        let reader = Arc::new(Mutex::new(ManifestReader::new(
            self.dir.clone(),
            self.confine_cert_dirs,
        )));
        loop {
            let read = {
                let reader = reader.clone();
                tokio::task::spawn_blocking(move || reader.lock().unwrap().read()).await
            };
            match read {
                Ok(Ok(mut set)) => {
                    if let Some(shard) = self.shard {
                        set.clusters.retain(|c| shard.owns(&c.key));
                        set.rejected.retain(|k| shard.owns(k));
                    }
                    supervisor.apply(set.clusters, &set.rejected, set.errors)
                }
                // Keep running what we have: a transient read error must not
                // stop every inspection.
                Ok(Err(e)) => tracing::error!(dir = %self.dir.display(), "cannot read manifest directory: {e}"),
                Err(e) => tracing::error!(dir = %self.dir.display(), "manifest reader failed: {e}"),
            }
            tokio::time::sleep(self.rescan).await;
        }
    }
}

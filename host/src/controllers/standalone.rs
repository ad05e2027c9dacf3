//! Standalone mode: the manifest directory is the source of clusters. It is
//! re-read periodically, so added, edited and removed files take effect
//! without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Supervisor;
use crate::cluster::{manifests, ClusterKey};

pub struct ManifestSource {
    pub dir: PathBuf,
    pub rescan: Duration,
}

impl ManifestSource {
    /// Reads the directory once and applies it.
    pub fn sync(&self, supervisor: &Supervisor) {
        match manifests::read_dir(&self.dir) {
            Ok(set) => {
                let keep: Vec<ClusterKey> = set.rejected.clone();
                supervisor.apply(set.clusters, &keep, set.errors);
            }
            // Keep running what we have: a transient read error must not
            // stop every inspection.
            Err(e) => tracing::error!(dir = %self.dir.display(), "cannot read manifest directory: {e}"),
        }
    }

    /// Applies the directory now and then every `rescan`, forever.
    pub async fn run(self, supervisor: Arc<Supervisor>) {
        loop {
            self.sync(&supervisor);
            tokio::time::sleep(self.rescan).await;
        }
    }
}

//! Watches a plugin directory and reconciles the registry with it: on
//! create, modify, remove and rename events (not on reads, which inotify
//! also reports and which our own loading causes), debounced, and on a
//! periodic rescan in case an event is missed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use super::PluginRegistry;

/// Events closer together than this are handled as one.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Runs forever. The directory itself is watched, not its files: kubelet
/// replaces a ConfigMap volume's content by swapping the `..data` link.
pub async fn watch_plugin_dir(registry: Arc<PluginRegistry>, dir: PathBuf, rescan: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|e| {
            matches!(
                e.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            )
        });
        if relevant {
            let _ = tx.try_send(()); // a full channel already means "sync soon"
        }
    });
    let _watcher = match watcher.and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot watch the plugin directory ({e}); rescanning every {rescan:?}");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(rescan) => {}
        }
        if let Err(e) = registry.sync_dir(&dir).await {
            tracing::error!(dir = %dir.display(), "cannot read the plugin directory: {e}");
        }
    }
}

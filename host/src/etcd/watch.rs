//! An open watch stream, as the host's watch loop reads it.

use super::{CallError, WatchEvent, WatchUpdate};

/// An open watch stream.
pub struct Watch {
    pub(super) stream: etcd_client::WatchStream,
    /// Marks the member's channel busy while the watch is open, so it is
    /// not closed as idle (see `ClusterConnection::close_idle`).
    pub(super) _pin: std::sync::Arc<()>,
}

impl Watch {
    /// Asks etcd to report, as a [`WatchUpdate::Progress`], the revision up
    /// to which it has sent every event. etcd answers only once the watch
    /// has caught up with its history (an unsynced watcher's request is
    /// dropped before etcd 3.5.8 and deferred after), so a caller waiting
    /// for the answer asks again until it comes.
    pub async fn request_progress(&mut self) -> Result<(), CallError> {
        self.stream.request_progress().await.map_err(CallError::from)
    }

    /// The next update; `Ok(None)` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchUpdate>, CallError> {
        loop {
            let Some(response) = self.stream.message().await.map_err(CallError::from)? else {
                return Ok(None);
            };
            if response.canceled() {
                let compacted = response.compact_revision();
                if compacted > 0 {
                    return Ok(Some(WatchUpdate::Compacted(compacted as u64)));
                }
                return Err(CallError::Unavailable(format!(
                    "watch canceled: {}",
                    response.cancel_reason()
                )));
            }
            if response.created() && response.events().is_empty() {
                continue;
            }
            if response.events().is_empty() {
                let revision = response
                    .header()
                    .map(|h| h.revision().max(0) as u64)
                    .unwrap_or_default();
                return Ok(Some(WatchUpdate::Progress(revision)));
            }
            let events = response
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    Some(WatchEvent {
                        deleted: e.event_type() == etcd_client::EventType::Delete,
                        key: kv.key().to_vec(),
                        create_revision: kv.create_revision().max(0) as u64,
                        mod_revision: kv.mod_revision().max(0) as u64,
                    })
                })
                .collect();
            return Ok(Some(WatchUpdate::Events(events)));
        }
    }
}

//! What the etcd layer hands the rest of the host: members, statuses,
//! watch events, and errors classified once, here.

use super::error_chain;

/// A member as the host knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
    /// First client URL rewritten through `extClientURL`: what the host dials.
    pub endpoint: String,
    /// Host of the first advertised client URL (the seed's `endpoint` label).
    pub host: String,
    pub is_learner: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct MemberStatus {
    pub member_id: u64,
    pub version: String,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub revision: u64,
    pub is_learner: bool,
    pub errors: Vec<String>,
    /// What etcd 3.6+ adds; `None` where the member does not report it.
    pub db_size_quota: Option<u64>,
    pub storage_version: Option<String>,
    /// (enabled, target version) of a downgrade.
    pub downgrade: Option<(bool, String)>,
}

/// One change under a watched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub deleted: bool,
    pub key: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// What a watch stream delivered next.
#[derive(Debug)]
pub enum WatchUpdate {
    Events(Vec<WatchEvent>),
    /// Every event up to this revision has been delivered.
    Progress(u64),
    /// The start revision is compacted: history is gone, recount.
    Compacted(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHealth {
    pub healthy: bool,
    pub reason: String,
}

/// Why an etcd call failed, in the terms of the plugin contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("revision compacted (compact revision {0})")]
    Compacted(u64),
    #[error("revision is newer than the member's")]
    FutureRevision,
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The credentials were refused (wrong password, token not accepted).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The TLS handshake failed (unknown CA, bad certificate, wrong name).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("endpoint {0} is not a member of this cluster")]
    UnknownEndpoint(String),
    #[error("{0}")]
    Other(String),
}

impl CallError {
    /// The error with where it happened (an endpoint, a URL) before its
    /// message; a failure to reach that place is Unavailable, whatever
    /// the transport called it.
    pub(super) fn at(self, place: &str) -> CallError {
        match self {
            CallError::Timeout(m) => CallError::Timeout(format!("{place}: {m}")),
            CallError::Tls(m) => CallError::Tls(format!("{place}: {m}")),
            CallError::Unavailable(m) | CallError::Other(m) => CallError::Unavailable(format!("{place}: {m}")),
            other => other,
        }
    }
}

impl From<etcd_client::Error> for CallError {
    /// Classified once, here: the rest of the host matches on variants.
    /// etcd reports some conditions only by its sentinel messages
    /// (`rpctypes` in etcd's client), so those are matched by text.
    fn from(e: etcd_client::Error) -> Self {
        use tonic::Code;
        // etcd_client::Error reports no source(): start from what it wraps.
        let tls = match &e {
            etcd_client::Error::GRpcStatus(status) => is_tls_failure(status),
            etcd_client::Error::TransportError(transport) => is_tls_failure(transport),
            etcd_client::Error::IoError(io) => is_tls_failure(io),
            _ => false,
        };
        if tls {
            return CallError::Tls(error_chain(&e));
        }
        match &e {
            etcd_client::Error::GRpcStatus(status) => {
                let message = status.message().to_string();
                match status.code() {
                    _ if message.contains("required revision has been compacted") => CallError::Compacted(0),
                    _ if message.contains("required revision is a future revision") => CallError::FutureRevision,
                    _ if message.contains("authentication failed") || message.contains("invalid auth token") => {
                        CallError::AuthFailed(message)
                    }
                    Code::Unauthenticated => CallError::AuthFailed(message),
                    Code::DeadlineExceeded => CallError::Timeout(message),
                    Code::PermissionDenied => CallError::PermissionDenied(message),
                    Code::Unavailable => CallError::Unavailable(error_chain(&e)),
                    _ => CallError::Other(error_chain(&e)),
                }
            }
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                CallError::Unavailable(error_chain(&e))
            }
            _ => CallError::Other(error_chain(&e)),
        }
    }
}

/// Whether a rustls error is somewhere in `error`'s causes (an `io::Error`
/// hides its payload from `source()`, so that is looked into too).
pub fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let inner_tls = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if e.downcast_ref::<rustls::Error>().is_some() || inner_tls {
            return true;
        }
        cause = e.source();
    }
    false
}

//! Controllers: what decides which clusters are inspected, and the
//! supervisor that runs them.

pub mod invocation;
mod job;
pub mod kubernetes;
pub mod shard;
pub mod standalone;
pub mod supervisor;

pub use invocation::{Invocation, Work, WATCH_PREFIX_PARAM, WATCH_REVISION_PARAM};
pub use job::{WatchMode, BATCH_EVENTS};
pub use supervisor::{ClusterView, RunRecord, SchedulerSettings, Supervisor};

//! Controllers: what decides which clusters are inspected, and the
//! supervisor that runs them.

pub mod standalone;
pub mod supervisor;

pub use supervisor::{ClusterView, RunRecord, SchedulerSettings, Supervisor};

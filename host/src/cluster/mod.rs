//! What a cluster is to the host: the seed's CRDs, their validation into
//! [`ClusterConfig`], and the standalone manifest reader.

pub mod config;
pub mod crd;
pub mod manifests;
mod pool;

pub use config::{parse_feature_gates, ClusterConfig, ClusterKey, ConfigError, FeatureSettings, FeatureSource};
pub use pool::ConnectionPool;

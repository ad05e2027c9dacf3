//! End-to-end tests: real etcd processes (3.6 by default; 3.4, 3.5 and 3.7
//! for the compatibility subset) started by the harness, and the real
//! `etcd-inspector` binary with real plugins. Build the plugins and the
//! test tools first (`make test` does): scripts/build-plugins.sh and
//! tests/tools/build.sh.

#[macro_use]
mod harness;

mod alarm;
mod alerts;
mod bad_manifests;
mod certificates;
mod chart;
mod compaction;
mod consistency;
mod etcd_access;
mod healthy;
mod hostile_plugins;
mod kubernetes;
mod latency;
mod leases;
mod membership;
mod oci;
mod plugin_lifecycle;
mod plugin_tools;
mod quota;
mod request;
mod sharding;
mod status_page;
mod tls_and_auth;

//! End-to-end tests: real etcd processes (Debian's etcd-server) started by
//! the harness, and the real `etcd-inspector` binary with real plugins.
//! Build the plugins first (`make test` does): scripts/build-plugins.sh.

mod harness;

mod alarm;
mod bad_manifests;
mod consistency;
mod db_quota;
mod etcd_access;
mod healthy;
mod hostile_plugins;
mod kubernetes;
mod plugin_lifecycle;
mod plugin_tools;
mod request;
mod tls_and_auth;

//! Per-plugin settings (`--plugin-config FILE`, YAML):
//!
//! ```yaml
//! plugins:
//!   healthy:
//!     timeoutSeconds: 10       # wall time of one call
//!     memoryMiB: 32            # linear memory of one call
//!     sha256: "9f2c…"          # only this exact artefact may load
//!     onFailure: keep          # keep: last values stay (the seed); drop: delete the series
//!     maxConsecutiveTraps: 5   # traps/timeouts/OOMs before calls back off; 0 turns it off
//!     etcdCallsPerRound: 1000  # etcd calls one round may make
//!     etcdBytesPerRound: 67108864  # bytes of etcd answers one round may read
//!     source: "oci://ghcr.io/org/healthy:1.2@sha256:…"  # pulled into <plugin-dir>/healthy.wasm
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{CallLimits, EtcdBudget};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The last committed values stay (the seed's behaviour).
    #[default]
    Keep,
    /// A failed call deletes the plugin's series for that cluster.
    Drop,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSettings {
    pub timeout_seconds: Option<f64>,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: Option<usize>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub on_failure: OnFailure,
    pub max_consecutive_traps: Option<u32>,
    pub etcd_calls_per_round: Option<u64>,
    pub etcd_bytes_per_round: Option<u64>,
    /// An OCI reference the plugin is pulled from (`oci://…`).
    pub source: Option<String>,
}

/// Consecutive traps, timeouts or OOMs before a plugin's calls back off.
pub const DEFAULT_MAX_CONSECUTIVE_TRAPS: u32 = 5;
/// Longest call a setting may ask for (a round is inspected every interval).
pub const MAX_TIMEOUT_SECONDS: f64 = 3600.0;
/// Largest linear memory a setting may ask for: what a pool slot reserves.
pub const MAX_MEMORY_MIB: usize = 4096;

impl SettingsFile {
    /// Reads and validates the file; errors name the line and the field.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = crate::files::read_text_capped(path, 1 << 20).map_err(|e| e.to_string())?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates settings; every number is range-checked, and an
    /// error names the field (`plugins.healthy.memoryMiB: …`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SettingsFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (name, s) in &file.plugins {
            let field = |f: &str, expected: &str| format!("plugins.{name}.{f}: expected {expected}");
            if s.timeout_seconds
                .is_some_and(|t| !(t > 0.0 && t <= MAX_TIMEOUT_SECONDS))
            {
                return Err(field(
                    "timeoutSeconds",
                    &format!("a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS}"),
                ));
            }
            if s.memory_mib.is_some_and(|m| !(1..=MAX_MEMORY_MIB).contains(&m)) {
                return Err(field("memoryMiB", &format!("1 to {MAX_MEMORY_MIB}")));
            }
            if s.etcd_calls_per_round == Some(0) {
                return Err(field("etcdCallsPerRound", "at least 1"));
            }
            if s.etcd_bytes_per_round == Some(0) {
                return Err(field("etcdBytesPerRound", "at least 1"));
            }
            if let Some(source) = &s.source {
                if let Err(e) = crate::oci::OciRef::parse(source) {
                    return Err(format!("plugins.{name}.source: {e}"));
                }
                if !is_file_stem(name) {
                    return Err(field(
                        "source",
                        "a plugin name usable as a file name (letters, digits, - and _)",
                    ));
                }
            }
            if s.sha256
                .as_ref()
                .is_some_and(|h| h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(field("sha256", "64 hex digits"));
            }
        }
        Ok(file)
    }

    pub fn for_plugin(&self, name: &str) -> PluginSettings {
        self.plugins.get(name).cloned().unwrap_or_default()
    }
}

/// A name `<plugin-dir>/NAME.wasm` can be made of, and nothing else.
pub fn is_file_stem(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl PluginSettings {
    /// The limits of a call: these settings over the host's defaults.
    /// Values are in range: [`SettingsFile::parse`] checked them.
    pub fn limits(&self, defaults: &CallLimits) -> CallLimits {
        CallLimits {
            timeout: self
                .timeout_seconds
                .and_then(|t| Duration::try_from_secs_f64(t).ok())
                .unwrap_or(defaults.timeout),
            memory_bytes: self
                .memory_mib
                .and_then(|m| m.checked_mul(1 << 20))
                .unwrap_or(defaults.memory_bytes),
            budget: EtcdBudget {
                calls: self.etcd_calls_per_round.unwrap_or(defaults.budget.calls),
                bytes: self.etcd_bytes_per_round.unwrap_or(defaults.budget.bytes),
            },
        }
    }

    pub fn max_consecutive_traps(&self) -> u32 {
        self.max_consecutive_traps.unwrap_or(DEFAULT_MAX_CONSECUTIVE_TRAPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_with_the_field_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugins.yaml");
        std::fs::write(
            &path,
            "plugins:\n  healthy:\n    timeoutSeconds: 2.5\n    memoryMiB: 8\n    onFailure: drop\n",
        )
        .unwrap();
        let file = SettingsFile::read(&path).unwrap();
        let limits = file.for_plugin("healthy").limits(&CallLimits::default());
        assert_eq!(
            (limits.timeout, limits.memory_bytes),
            (Duration::from_millis(2500), 8 << 20)
        );
        assert_eq!(file.for_plugin("healthy").on_failure, OnFailure::Drop);
        assert_eq!(file.for_plugin("other"), PluginSettings::default());

        std::fs::write(&path, "plugins:\n  healthy:\n    sha256: abc\n").unwrap();
        assert!(SettingsFile::read(&path)
            .unwrap_err()
            .contains("plugins.healthy.sha256: expected 64 hex digits"));
        std::fs::write(&path, "plugins:\n  healthy:\n    etcdCallsPerRound: 7\n").unwrap();
        let limits = SettingsFile::read(&path)
            .unwrap()
            .for_plugin("healthy")
            .limits(&CallLimits::default());
        assert_eq!(limits.budget.calls, 7);
        assert_eq!(limits.budget.bytes, CallLimits::default().budget.bytes);
        std::fs::write(&path, "plugins:\n  healthy:\n    timeout: 3\n").unwrap();
        assert!(SettingsFile::read(&path)
            .unwrap_err()
            .contains("unknown field `timeout`"));
    }

    /// Numbers that would overflow a `Duration` or a shift are refused with
    /// the field named, never reach the arithmetic.
    #[test]
    fn out_of_range_numbers_are_refused_not_computed() {
        let cases = [
            (
                "timeoutSeconds: 1e300",
                "plugins.p.timeoutSeconds: expected a number of seconds above 0",
            ),
            ("timeoutSeconds: -1", "plugins.p.timeoutSeconds"),
            ("timeoutSeconds: .nan", "plugins.p.timeoutSeconds"),
            ("timeoutSeconds: .inf", "plugins.p.timeoutSeconds"),
            (
                "memoryMiB: 18446744073709551615",
                "plugins.p.memoryMiB: expected 1 to 4096",
            ),
            ("memoryMiB: 0", "plugins.p.memoryMiB: expected 1 to 4096"),
            ("memoryMiB: -5", "plugins.p.memoryMiB"),
            (
                "etcdCallsPerRound: 0",
                "plugins.p.etcdCallsPerRound: expected at least 1",
            ),
            (
                "etcdBytesPerRound: 0",
                "plugins.p.etcdBytesPerRound: expected at least 1",
            ),
            ("maxConsecutiveTraps: 99999999999", "plugins.p.maxConsecutiveTraps"),
        ];
        for (line, expected) in cases {
            let err = SettingsFile::parse(&format!("plugins:\n  p:\n    {line}\n")).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
        let ok = SettingsFile::parse("plugins:\n  p:\n    timeoutSeconds: 3600\n    memoryMiB: 4096\n").unwrap();
        let limits = ok.for_plugin("p").limits(&CallLimits::default());
        assert_eq!((limits.timeout.as_secs(), limits.memory_bytes), (3600, 4096 << 20));
    }
}

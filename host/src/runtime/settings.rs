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
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::CallLimits;

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
}

/// Consecutive traps, timeouts or OOMs before a plugin's calls back off.
pub const DEFAULT_MAX_CONSECUTIVE_TRAPS: u32 = 5;

impl SettingsFile {
    /// Reads and validates the file; errors name the line and the field.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: SettingsFile = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for (name, s) in &file.plugins {
            if s.timeout_seconds.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
                return Err(format!(
                    "{}: plugins.{name}.timeoutSeconds: expected a positive number",
                    path.display()
                ));
            }
            if s.memory_mib == Some(0) {
                return Err(format!(
                    "{}: plugins.{name}.memoryMiB: expected at least 1",
                    path.display()
                ));
            }
            if s.sha256
                .as_ref()
                .is_some_and(|h| h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(format!(
                    "{}: plugins.{name}.sha256: expected 64 hex digits",
                    path.display()
                ));
            }
        }
        Ok(file)
    }

    pub fn for_plugin(&self, name: &str) -> PluginSettings {
        self.plugins.get(name).cloned().unwrap_or_default()
    }
}

impl PluginSettings {
    /// The limits of a call: these settings over the host's defaults.
    pub fn limits(&self, defaults: &CallLimits) -> CallLimits {
        CallLimits {
            timeout: self
                .timeout_seconds
                .map(Duration::from_secs_f64)
                .unwrap_or(defaults.timeout),
            memory_bytes: self.memory_mib.map(|m| m << 20).unwrap_or(defaults.memory_bytes),
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
        std::fs::write(&path, "plugins:\n  healthy:\n    timeout: 3\n").unwrap();
        assert!(SettingsFile::read(&path)
            .unwrap_err()
            .contains("unknown field `timeout`"));
    }
}

//! Pulled artefacts on disk, by manifest digest: a pinned plugin serves
//! after a restart without its registry, and a moved tag back to a known
//! digest costs no download. Every read is verified again (the manifest
//! against its digest, the wasm against the manifest), so a damaged or
//! altered entry is pulled anew instead of served.

use std::path::{Path, PathBuf};

use super::{wasm_layer, OciError};
use crate::runtime::{sha256_hex, MAX_PLUGIN_BYTES};

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache { dir }
    }

    fn paths(&self, digest: &str) -> (PathBuf, PathBuf) {
        let stem = digest.replace(':', "-");
        (
            self.dir.join(format!("{stem}.manifest.json")),
            self.dir.join(format!("{stem}.wasm")),
        )
    }

    fn error(path: &Path, e: impl std::fmt::Display) -> OciError {
        OciError::Cache {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// The wasm cached for `digest`, if an intact entry exists.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        let (manifest_path, wasm_path) = self.paths(digest);
        let (Ok(manifest), Ok(wasm)) = (
            crate::files::read_capped(&manifest_path, 1 << 20),
            crate::files::read_capped(&wasm_path, MAX_PLUGIN_BYTES),
        ) else {
            return Ok(None);
        };
        let intact = format!("sha256:{}", sha256_hex(&manifest)) == digest
            && wasm_layer(&manifest).is_ok_and(|l| l.digest == format!("sha256:{}", sha256_hex(&wasm)));
        if !intact {
            tracing::warn!(digest, dir = %self.dir.display(), "cached plugin artefact damaged; pulling it again");
            return Ok(None);
        }
        Ok(Some(wasm))
    }

    pub fn put(&self, digest: &str, manifest: &[u8], wasm: &[u8]) -> Result<(), OciError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::error(&self.dir, e))?;
        let (manifest_path, wasm_path) = self.paths(digest);
        for (path, bytes) in [(wasm_path, wasm), (manifest_path, manifest)] {
            crate::files::write_atomically(&path, bytes).map_err(|e| Self::error(&path, e))?;
        }
        Ok(())
    }
}

//! The precompile cache: a component compiled once per wasm digest and
//! engine, kept on disk (written only by this process) so restarts skip
//! Cranelift.

use wasmtime::component::Component;

use super::call::wasm_error_chain;
use super::{LoadError, Runtime};

impl Runtime {
    /// The component for `bytes`: from the precompile cache when it has a
    /// usable entry, compiled (and cached) otherwise. An entry that does not
    /// deserialize — corrupt, truncated, or from another engine — is a miss.
    pub(super) async fn compile(&self, bytes: Vec<u8>, sha256: &str) -> Result<Component, LoadError> {
        use std::hash::{Hash, Hasher};
        let cached = self.cache_dir.as_ref().map(|dir| {
            let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
            dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash.finish()))
        });
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the cache directory is written only by this process
            // (below), never from plugin sources; deserialize validates the
            // header and engine compatibility and fails cleanly otherwise.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "precompile cache entry unusable ({}); recompiling", wasm_error_chain(&e));
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let engine = self.engine.clone();
        // Compilation is CPU-bound (cranelift): keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(wasm_error_chain(&e)))?;
        if let Some(path) = cached {
            let write = component.serialize().map_err(|e| e.to_string()).and_then(|artefact| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, artefact)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = write {
                tracing::warn!(path = %path.display(), "cannot write the precompile cache: {e}");
            }
        }
        Ok(component)
    }
}

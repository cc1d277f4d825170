//! The on-disk cache of precompiled components, keyed by wasmtime version, engine configuration and file hash.
//! Artefacts live in one folder per wasmtime version (`wasmtime-<version>/<hash>.cwasm`), so that
//! [`prune_compile_cache`] can drop those of versions no longer in use.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// The wasmtime release the host is built with; part of the cache key.
const WASMTIME_VERSION: &str = "48.0.8";

/// The cache file for `bytes` under `engine`'s configuration.
pub(crate) fn cache_path(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let mut engine_hasher = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hasher);
    let mut digest = Sha256::new();
    digest.update(WASMTIME_VERSION.as_bytes());
    digest.update(engine_hasher.finish().to_le_bytes());
    digest.update(Sha256::digest(bytes));
    version_dir(cache_dir).join(format!("{}.cwasm", hex::encode(digest.finalize())))
}

fn version_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("wasmtime-{WASMTIME_VERSION}"))
}

/// Removes from `cache_dir` the artefacts of other wasmtime versions (their `wasmtime-<version>`
/// folders) and those of the flat layout used before versions had folders; returns what was
/// removed. A process still running an older version keeps the components it loaded (they are
/// mapped in memory) and compiles again only if it restarts. Other files are left alone.
pub async fn prune_compile_cache(cache_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut entries = match tokio::fs::read_dir(cache_dir).await {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(error) => return Err(error),
    };
    let current = version_dir(cache_dir);
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().await?;
        if kind.is_dir() && name.starts_with("wasmtime-") && path != current {
            tokio::fs::remove_dir_all(&path).await?;
            removed.push(path);
        } else if kind.is_file() && name.ends_with(".cwasm") {
            tokio::fs::remove_file(&path).await?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Loads a precompiled artefact that this process (or an earlier one) wrote into the host-owned cache.
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, artefact: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `artefact` is written only by `compile_into_cache` below, from `Engine::precompile_component`,
    // into the operator's cache folder (never the plugins folder), via an atomic rename, and its name is the
    // hash of the wasmtime version, engine configuration and source file. wasmtime additionally checks the
    // header and engine compatibility and refuses mismatches with an error.
    unsafe { Component::deserialize_file(engine, artefact) }
}

async fn compile_into_cache(
    engine: &Engine,
    source: &Path,
    bytes: Vec<u8>,
    artefact: &Path,
) -> Result<(), LoadError> {
    let compile_engine = engine.clone();
    let compiled = tokio::task::spawn_blocking(move || compile_engine.precompile_component(&bytes))
        .await
        .map_err(|error| LoadError::Cache {
            path: source.to_owned(),
            reason: format!("compiler task failed: {error}"),
        })?
        .map_err(|error| LoadError::Corrupt {
            path: source.to_owned(),
            reason: format!("{error:#}"),
        })?;
    let cache_error = |error: std::io::Error| LoadError::Cache {
        path: source.to_owned(),
        reason: error.to_string(),
    };
    let dir = artefact.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(cache_error)?;
    // Unique per writer: a file another load has mmapped must never be truncated or rewritten in place.
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let writer = WRITERS.fetch_add(1, Ordering::Relaxed);
    let temporary = artefact.with_extension(format!("tmp-{}-{writer}", std::process::id()));
    tokio::fs::write(&temporary, &compiled)
        .await
        .map_err(cache_error)?;
    tokio::fs::rename(&temporary, artefact)
        .await
        .map_err(cache_error)?;
    Ok(())
}

/// Compile `source` once, then load it from the cache on every later start.
pub(crate) async fn load_component(
    engine: &Engine,
    cache_dir: &Path,
    source: &Path,
    bytes: Vec<u8>,
) -> Result<Component, LoadError> {
    let artefact = cache_path(engine, cache_dir, &bytes);
    if tokio::fs::try_exists(&artefact).await.unwrap_or(false) {
        match deserialize_cached(engine, &artefact) {
            Ok(component) => return Ok(component),
            Err(error) => {
                tracing::warn!(file = %source.display(), error = %format!("{error:#}"), "discarding unusable cached artefact");
                let _ = tokio::fs::remove_file(&artefact).await;
            }
        }
    }
    // One compilation at a time per process: concurrent loads of the same file wait and then hit the cache.
    static COMPILING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _compiling = COMPILING.lock().await;
    if !tokio::fs::try_exists(&artefact).await.unwrap_or(false) {
        compile_into_cache(engine, source, bytes, &artefact).await?;
    }
    deserialize_cached(engine, &artefact).map_err(|error| LoadError::Cache {
        path: source.to_owned(),
        reason: format!("{error:#}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_keeps_only_this_wasmtime_version() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let current = version_dir(root);
        std::fs::create_dir_all(&current).unwrap();
        std::fs::write(current.join("a.cwasm"), b"x").unwrap();
        std::fs::create_dir_all(root.join("wasmtime-47.0.1")).unwrap();
        std::fs::write(root.join("wasmtime-47.0.1/b.cwasm"), b"x").unwrap();
        std::fs::write(root.join("c.cwasm"), b"old layout").unwrap();
        std::fs::write(root.join("README"), b"the operator's").unwrap();
        let removed = prune_compile_cache(root).await.unwrap();
        assert_eq!(
            removed,
            [root.join("c.cwasm"), root.join("wasmtime-47.0.1")]
        );
        assert!(current.join("a.cwasm").is_file());
        assert!(root.join("README").is_file());
        assert!(
            prune_compile_cache(&root.join("missing"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

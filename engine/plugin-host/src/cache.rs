//! The on-disk cache of precompiled components, keyed by wasmtime version, engine configuration and file hash.

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
    cache_dir.join(format!("{}.cwasm", hex::encode(digest.finalize())))
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

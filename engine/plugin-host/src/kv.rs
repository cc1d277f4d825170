//! The key-value capability: the `KvStore` trait the engine implements over `plugin_kv`, and an in-memory store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

/// Longest key a plugin may use.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value a plugin may store.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A boxed future returned by [`KvStore`] methods.
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvStoreError>> + Send + 'a>>;

/// Failure of the backing store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvStoreError {
    /// The store cannot be reached; the plugin may retry later.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// The request was refused.
    #[error("key-value request refused: {0}")]
    Invalid(String),
}

/// Storage behind the plugins' key-value capability, scoped by plugin id.
///
/// The engine implements it over the `plugin_kv` table (`plugin`, `key`, `value`, `expires_at`;
/// primary key `(plugin, key)`). Expired rows must read as absent; deleting them is the store's business.
pub trait KvStore: Send + Sync + 'static {
    /// Read `key` of `plugin`; expired keys are `None`.
    fn get<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;
    /// Insert or replace `key`; `ttl` of `None` keeps it until deleted.
    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> KvFuture<'a, ()>;
    /// Remove `key`; a missing key is not an error.
    fn delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, ()>;
}

type Entry = (Vec<u8>, Option<tokio::time::Instant>);

/// An in-memory [`KvStore`] for tests and for `plugins list`/`check`.
#[derive(Debug, Default)]
pub struct MemoryKvStore {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl MemoryKvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live entries of `plugin` (for tests).
    pub fn len(&self, plugin: &str) -> usize {
        let now = tokio::time::Instant::now();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .iter()
            .filter(|((owner, _), (_, expires))| {
                owner == plugin && expires.is_none_or(|at| at > now)
            })
            .count()
    }

    /// Whether `plugin` has no live entries.
    pub fn is_empty(&self, plugin: &str) -> bool {
        self.len(plugin) == 0
    }
}

impl KvStore for MemoryKvStore {
    fn get<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let now = tokio::time::Instant::now();
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let id = (plugin.to_owned(), key.to_owned());
            match entries.get(&id) {
                Some((_, Some(expires))) if *expires <= now => {
                    entries.remove(&id);
                    Ok(None)
                }
                Some((value, _)) => Ok(Some(value.clone())),
                None => Ok(None),
            }
        })
    }

    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let expires = ttl.map(|ttl| tokio::time::Instant::now() + ttl);
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries.insert((plugin.to_owned(), key.to_owned()), (value, expires));
            Ok(())
        })
    }

    fn delete<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries.remove(&(plugin.to_owned(), key.to_owned()));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keys_are_scoped_and_expire() {
        let store = MemoryKvStore::new();
        store
            .set("a", "k", b"1".to_vec(), Some(Duration::from_secs(10)))
            .await
            .unwrap();
        store.set("b", "k", b"2".to_vec(), None).await.unwrap();
        assert_eq!(store.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("b", "k").await.unwrap(), Some(b"2".to_vec()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.get("a", "k").await.unwrap(), None);
        assert_eq!(store.get("b", "k").await.unwrap(), Some(b"2".to_vec()));
        store.delete("b", "k").await.unwrap();
        store.delete("b", "missing").await.unwrap();
        assert!(store.is_empty("b"));
    }
}

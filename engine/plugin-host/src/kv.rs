//! The key-value capability: the `KvStore` trait the engine implements over `plugin_kv`, an
//! in-memory store, and the writes a call makes, held back until it succeeds (`PendingWrites`).
//!
//! A call's writes are applied together, in one `KvStore::apply`, only when the call returns
//! success; a trap, timeout, limit hit or returned error leaves the store as it was. Each plugin
//! also has a total quota (keys, value bytes), checked as it writes: per-call budgets bound the
//! rate, the quota the total.

use std::collections::{BTreeMap, HashMap};
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

/// One change a call made to its plugin's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Insert or replace `key`; `ttl` of `None` keeps it until deleted (the ttl runs from `apply`).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// How long it lives.
        ttl: Option<Duration>,
    },
    /// Remove `key`; a missing key is not an error.
    Delete {
        /// The key.
        key: String,
    },
}

/// What a plugin holds in its store: live (unexpired) keys and the bytes of their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Live keys.
    pub keys: u64,
    /// Bytes of their values.
    pub bytes: u64,
}

/// Storage behind the plugins' key-value capability, scoped by plugin id.
///
/// The engine implements it over the `plugin_kv` table (`plugin`, `key`, `value`, `expires_at`;
/// primary key `(plugin, key)`). Expired rows must read as absent; deleting them is the store's business.
pub trait KvStore: Send + Sync + 'static {
    /// Read `key` of `plugin`; expired keys are `None`.
    fn get<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;
    /// The live keys of `plugin` and the bytes of their values.
    fn usage<'a>(&'a self, plugin: &'a str) -> KvFuture<'a, KvUsage>;
    /// Apply all of `writes` (at most one per key) or none of them: one transaction.
    fn apply<'a>(&'a self, plugin: &'a str, writes: Vec<KvWrite>) -> KvFuture<'a, ()>;
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

    fn usage<'a>(&'a self, plugin: &'a str) -> KvFuture<'a, KvUsage> {
        Box::pin(async move {
            let now = tokio::time::Instant::now();
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut usage = KvUsage::default();
            for ((owner, _), (value, expires)) in entries.iter() {
                if owner == plugin && expires.is_none_or(|at| at > now) {
                    usage.keys += 1;
                    usage.bytes += value.len() as u64;
                }
            }
            Ok(usage)
        })
    }

    fn apply<'a>(&'a self, plugin: &'a str, writes: Vec<KvWrite>) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let now = tokio::time::Instant::now();
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for write in writes {
                match write {
                    KvWrite::Set { key, value, ttl } => {
                        let expires = ttl.map(|ttl| now + ttl);
                        entries.insert((plugin.to_owned(), key), (value, expires));
                    }
                    KvWrite::Delete { key } => {
                        entries.remove(&(plugin.to_owned(), key));
                    }
                }
            }
            Ok(())
        })
    }
}

/// A total quota: most keys and value bytes one plugin may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvQuota {
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
}

#[derive(Debug)]
enum Pending {
    Set(Vec<u8>, Option<Duration>),
    Delete,
}

impl Pending {
    fn size(&self) -> Option<u64> {
        match self {
            Pending::Set(value, _) => Some(value.len() as u64),
            Pending::Delete => None,
        }
    }
}

/// The writes of the call in progress, not yet applied: what the call reads back, and what its
/// quota check counts.
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    /// The latest change per key.
    writes: BTreeMap<String, Pending>,
    /// The plugin's usage in the store when the call first wrote.
    base: Option<KvUsage>,
    /// The stored value size of every key the call changed, before the call (`None`: absent).
    before: HashMap<String, Option<u64>>,
}

/// Why a write was refused: the store could not answer, or the quota is full.
#[derive(Debug)]
pub(crate) enum Refusal {
    Store(KvStoreError),
    Quota(String),
}

impl PendingWrites {
    /// What the call itself wrote to `key`: `Some(None)` if it deleted it, `None` if untouched.
    pub(crate) fn read(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.writes.get(key).map(|pending| match pending {
            Pending::Set(value, _) => Some(value.clone()),
            Pending::Delete => None,
        })
    }

    /// Records a set (`Some(value)`) or delete (`None`) of `key`, unless it would take the plugin
    /// past `quota` (a write that does not grow the usage is always accepted).
    pub(crate) async fn write(
        &mut self,
        store: &dyn KvStore,
        plugin: &str,
        key: &str,
        value: Option<(Vec<u8>, Option<Duration>)>,
        quota: KvQuota,
    ) -> Result<(), Refusal> {
        if self.base.is_none() {
            self.base = Some(store.usage(plugin).await.map_err(Refusal::Store)?);
        }
        if !self.before.contains_key(key) {
            let stored = store.get(plugin, key).await.map_err(Refusal::Store)?;
            self.before
                .insert(key.to_owned(), stored.map(|value| value.len() as u64));
        }
        let pending = match value {
            Some((value, ttl)) => Pending::Set(value, ttl),
            None => Pending::Delete,
        };
        let current = self.usage();
        let previous = self.writes.insert(key.to_owned(), pending);
        let next = self.usage();
        let refusal = if next.keys > quota.keys && next.keys > current.keys {
            Some(format!(
                "over the quota of {} keys for this plugin (kv_max_keys)",
                quota.keys
            ))
        } else if next.bytes > quota.bytes && next.bytes > current.bytes {
            Some(format!(
                "over the quota of {} value bytes for this plugin (kv_max_mib)",
                quota.bytes
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            match previous {
                Some(previous) => self.writes.insert(key.to_owned(), previous),
                None => self.writes.remove(key),
            };
            return Err(Refusal::Quota(reason));
        }
        Ok(())
    }

    /// The plugin's usage as it will be once the pending writes are applied.
    fn usage(&self) -> KvUsage {
        let base = self.base.unwrap_or_default();
        let (mut keys, mut bytes) = (i128::from(base.keys), i128::from(base.bytes));
        for (key, before) in &self.before {
            let after = self.writes.get(key).map_or(*before, Pending::size);
            keys += i128::from(after.is_some()) - i128::from(before.is_some());
            bytes += i128::from(after.unwrap_or(0)) - i128::from(before.unwrap_or(0));
        }
        KvUsage {
            keys: u64::try_from(keys.max(0)).unwrap_or(u64::MAX),
            bytes: u64::try_from(bytes.max(0)).unwrap_or(u64::MAX),
        }
    }

    /// The writes to apply now that the call succeeded; the buffer is left empty.
    pub(crate) fn take(&mut self) -> Vec<KvWrite> {
        let writes = std::mem::take(&mut self.writes);
        *self = PendingWrites::default();
        writes
            .into_iter()
            .map(|(key, pending)| match pending {
                Pending::Set(value, ttl) => KvWrite::Set { key, value, ttl },
                Pending::Delete => KvWrite::Delete { key },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> KvWrite {
        KvWrite::Set {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_scoped_and_expire() {
        let store = MemoryKvStore::new();
        store
            .apply("a", vec![set("k", b"1", Some(Duration::from_secs(10)))])
            .await
            .unwrap();
        store.apply("b", vec![set("k", b"2", None)]).await.unwrap();
        assert_eq!(store.get("a", "k").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("b", "k").await.unwrap(), Some(b"2".to_vec()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.get("a", "k").await.unwrap(), None);
        assert_eq!(store.usage("a").await.unwrap(), KvUsage::default());
        assert_eq!(store.get("b", "k").await.unwrap(), Some(b"2".to_vec()));
        let delete = |key: &str| KvWrite::Delete {
            key: key.to_owned(),
        };
        store
            .apply("b", vec![delete("k"), delete("missing")])
            .await
            .unwrap();
        assert!(store.is_empty("b"));
    }

    const QUOTA: KvQuota = KvQuota { keys: 2, bytes: 10 };

    #[tokio::test]
    async fn pending_writes_are_read_back_and_counted_against_the_quota() {
        let store = MemoryKvStore::new();
        store
            .apply("p", vec![set("old", b"12345", None)])
            .await
            .unwrap();
        let mut pending = PendingWrites::default();
        assert_eq!(pending.read("old"), None);
        pending
            .write(&store, "p", "new", Some((b"abc".to_vec(), None)), QUOTA)
            .await
            .unwrap();
        assert_eq!(pending.read("new"), Some(Some(b"abc".to_vec())));
        // a third key is over the quota; overwriting one that exists is not
        let refused = pending
            .write(&store, "p", "third", Some((b"x".to_vec(), None)), QUOTA)
            .await;
        assert!(matches!(refused, Err(Refusal::Quota(reason)) if reason.contains("2 keys")));
        assert_eq!(pending.read("third"), None, "a refused write is not kept");
        pending
            .write(&store, "p", "old", Some((b"1234567".to_vec(), None)), QUOTA)
            .await
            .unwrap();
        let refused = pending
            .write(&store, "p", "new", Some((b"abcd".to_vec(), None)), QUOTA)
            .await;
        assert!(
            matches!(refused, Err(Refusal::Quota(reason)) if reason.contains("10 value bytes"))
        );
        assert_eq!(
            pending.read("new"),
            Some(Some(b"abc".to_vec())),
            "the earlier write stands"
        );
        // deleting makes room within the same call
        pending
            .write(&store, "p", "old", None, QUOTA)
            .await
            .unwrap();
        assert_eq!(pending.read("old"), Some(None));
        pending
            .write(&store, "p", "third", Some((b"x".to_vec(), None)), QUOTA)
            .await
            .unwrap();
        // nothing reached the store until the writes are taken and applied
        assert_eq!(
            store.get("p", "old").await.unwrap(),
            Some(b"12345".to_vec())
        );
        assert_eq!(store.len("p"), 1);
        let writes = pending.take();
        assert_eq!(writes.len(), 3);
        store.apply("p", writes).await.unwrap();
        assert_eq!(
            store.usage("p").await.unwrap(),
            KvUsage { keys: 2, bytes: 4 }
        );
        assert_eq!(pending.read("new"), None, "take leaves the buffer empty");
    }

    #[tokio::test]
    async fn a_plugin_already_over_its_quota_may_shrink_but_not_grow() {
        let store = MemoryKvStore::new();
        store
            .apply(
                "p",
                vec![
                    set("a", b"1", None),
                    set("b", b"2", None),
                    set("c", b"3", None),
                ],
            )
            .await
            .unwrap();
        let mut pending = PendingWrites::default();
        pending
            .write(&store, "p", "a", Some((b"9".to_vec(), None)), QUOTA)
            .await
            .unwrap();
        assert!(
            pending
                .write(&store, "p", "d", Some((b"4".to_vec(), None)), QUOTA)
                .await
                .is_err()
        );
        pending.write(&store, "p", "b", None, QUOTA).await.unwrap();
    }
}

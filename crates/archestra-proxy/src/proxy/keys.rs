//! The virtual keys the data plane has seen, cached in memory so that a request does not
//! query SQLite.
//!
//! Freshness: a revocation made through this process (`DELETE /api/virtual-keys/self`)
//! forgets the key at once. A change made by another process, such as `archestra-proxy keys
//! revoke`, is noticed by [`KeyCache::watch`], which looks at SQLite's data version every
//! [`WATCH_INTERVAL`] and empties the cache when the key table changed.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::setup::KeyKind;
use crate::store::{KeyRecord, KeysFingerprint, Store, StoreError};

/// How often another process's changes to the keys are looked for.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Most keys cached; past it the cache starts over, so random keys cannot fill the memory.
const MAX_ENTRIES: usize = 10_000;

/// What the data plane needs to know about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    pub id: i64,
    pub user: Arc<str>,
    pub kind: KeyKind,
    pub revoked: bool,
}

impl From<KeyRecord> for KnownKey {
    fn from(record: KeyRecord) -> Self {
        KnownKey {
            id: record.id,
            user: record.user.into(),
            kind: record.kind,
            revoked: record.revoked,
        }
    }
}

type Digest32 = [u8; 32];

/// Presented keys by their SHA-256, known or not.
#[derive(Debug)]
pub struct KeyCache {
    store: Arc<Store>,
    entries: RwLock<HashMap<Digest32, Option<Arc<KnownKey>>>>,
}

impl KeyCache {
    /// Cache keys looked up in `store`.
    pub fn new(store: Arc<Store>) -> KeyCache {
        KeyCache {
            store,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Return what the store says about `raw_key`, from memory when it can.
    pub async fn lookup(&self, raw_key: &str) -> Result<Option<Arc<KnownKey>>, StoreError> {
        let digest = digest(raw_key);
        if let Some(entry) = self.read().get(&digest) {
            return Ok(entry.clone());
        }

        let store = Arc::clone(&self.store);
        let raw = raw_key.to_string();
        let record = tokio::task::spawn_blocking(move || store.key_state(&raw))
            .await
            .map_err(|err| StoreError::Corrupt(format!("the key lookup task failed: {err}")))??;
        let entry = record.map(|r| Arc::new(KnownKey::from(r)));

        let mut entries = self.write();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(digest, entry.clone());
        Ok(entry)
    }

    /// Drop what is cached about `raw_key`, so the next request reads the store.
    pub fn forget(&self, raw_key: &str) {
        self.write().remove(&digest(raw_key));
    }

    /// Drop everything cached.
    pub fn clear(&self) {
        self.write().clear();
    }

    /// Empty the cache whenever another connection changes the key table; runs until the
    /// task is dropped.
    ///
    /// `watcher` must be a connection of its own: SQLite's data version only moves for
    /// commits made by other connections.
    pub async fn watch(self: Arc<Self>, watcher: Arc<Store>) {
        let mut seen: Option<(i64, KeysFingerprint)> = None;
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let store = Arc::clone(&watcher);
            let last = seen;
            let checked = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                let version = store.data_version()?;
                match last {
                    // The usage log commits often; only a new version needs the fingerprint.
                    Some((seen_version, fingerprint)) if seen_version == version => {
                        Ok((version, fingerprint))
                    }
                    _ => Ok((version, store.keys_fingerprint()?)),
                }
            })
            .await;
            match checked {
                Ok(Ok(now)) => {
                    if seen.is_some_and(|(_, fingerprint)| fingerprint != now.1) {
                        tracing::debug!("the keys changed in the database; emptying the key cache");
                        self.clear();
                    }
                    seen = Some(now);
                }
                Ok(Err(err)) => {
                    // Without a working check nothing cached can be trusted for long.
                    tracing::warn!(error = %crate::server::error::error_chain(&err), "could not check the keys for changes; emptying the key cache");
                    self.clear();
                }
                Err(err) => tracing::warn!(error = %err, "the key check task failed"),
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Digest32, Option<Arc<KnownKey>>>> {
        // A panic while holding the lock cannot leave a half-written map entry behind.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Digest32, Option<Arc<KnownKey>>>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn digest(raw_key: &str) -> Digest32 {
    Sha256::digest(raw_key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_key(path: &std::path::Path) -> (Store, String, i64) {
        let store = Store::open(path).unwrap();
        let minted = store
            .create_setup(
                &crate::test_support::request("ada@example.com"),
                "http://127.0.0.1:9",
            )
            .unwrap();
        let token = minted.url.rsplit('/').next().unwrap().to_string();
        let redeemed = store.redeem(&token, None, "A").unwrap();
        let key = redeemed
            .payload
            .proxy
            .unwrap()
            .machine_key()
            .unwrap()
            .expose()
            .to_string();
        (store, key, redeemed.key_id)
    }

    #[tokio::test]
    async fn cached_answers_hold_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, id) = store_with_key(&dir.path().join("proxy.db"));
        let store = Arc::new(store);
        let cache = KeyCache::new(Arc::clone(&store));

        let known = cache.lookup(&key).await.unwrap().unwrap();
        assert_eq!((known.id, &*known.user), (id, "ada@example.com"));
        assert!(!known.revoked);
        assert_eq!(cache.lookup("arch_nope").await.unwrap(), None);

        // The store changes behind the cache's back: the cached answer stands...
        store.revoke_key(id).unwrap();
        assert!(!cache.lookup(&key).await.unwrap().unwrap().revoked);
        // ...until the key is forgotten, as the self-revoke route does.
        cache.forget(&key);
        assert!(cache.lookup(&key).await.unwrap().unwrap().revoked);
    }

    #[tokio::test]
    async fn the_watcher_notices_revocations_by_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.db");
        let (store, key, id) = store_with_key(&path);
        let cache = Arc::new(KeyCache::new(Arc::new(store)));
        let watcher = Arc::new(Store::open(&path).unwrap());
        let watching = tokio::spawn(Arc::clone(&cache).watch(watcher));

        assert!(!cache.lookup(&key).await.unwrap().unwrap().revoked);
        // Let the watcher take its first look before the change.
        tokio::time::sleep(WATCH_INTERVAL).await;
        Store::open(&path).unwrap().revoke_key(id).unwrap();

        // The bound only keeps a broken watcher from hanging the test.
        let noticed = tokio::time::timeout(Duration::from_secs(60), async {
            while !cache.lookup(&key).await.unwrap().unwrap().revoked {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        watching.abort();
        assert!(noticed.is_ok(), "the watcher never emptied the cache");
    }
}

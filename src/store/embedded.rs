//! The embedded store: one redb database file under `store.path`, for a single replica.
//! Every write is its own durable transaction (committed before the call returns), so a
//! `kill -9` never loses a confirmed enrollment or revocation. Values carry their expiry in
//! an 8-byte prefix; expired entries read as absent and are swept periodically.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Ns, Store, StoreError, envelope, live};
use crate::clock::Clock;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

pub struct EmbeddedStore {
    db: Arc<Database>,
    clock: Clock,
    /// Write counters per namespace; one process owns the file, so memory is enough.
    versions: [AtomicU64; Ns::COUNT],
    writes: AtomicU64,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn full_key(ns: Ns, key: &str) -> String {
    format!("{}\u{0}{key}", ns.prefix())
}

/// Makes sure the database file exists with mode 0600 before redb opens it (redb would create
/// it 0644 under the usual umask), and narrows a file an older version created world-readable.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

impl EmbeddedStore {
    pub fn open(dir: &Path, clock: Clock) -> Result<Self, StoreError> {
        crate::token::keys::create_private_dir(dir).map_err(err)?;
        let path = dir.join("authgate.redb");
        private_file(&path).map_err(err)?;
        let db = Database::create(&path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(KV).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            clock,
            versions: Default::default(),
            writes: AtomicU64::new(0),
        })
    }

    fn bump(&self, ns: Ns) {
        self.versions[ns.index()].fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs blocking redb work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = full_key(ns, key);
        let now = self.clock.now();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(KV).map_err(err)?;
            let value = table.get(k.as_str()).map_err(err)?;
            Ok(value.and_then(|v| live(v.value(), now).map(<[u8]>::to_vec)))
        })
        .await
    }

    async fn put(
        &self,
        ns: Ns,
        key: &str,
        value: &[u8],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let k = full_key(ns, key);
        let v = envelope(value, expires_at);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(KV)
                .map_err(err)?
                .insert(k.as_str(), v.as_slice())
                .map_err(err)?;
            txn.commit().map_err(err)
        })
        .await?;
        self.bump(ns);
        Ok(())
    }

    async fn delete(&self, ns: Ns, key: &str) -> Result<(), StoreError> {
        let k = full_key(ns, key);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            txn.open_table(KV)
                .map_err(err)?
                .remove(k.as_str())
                .map_err(err)?;
            txn.commit().map_err(err)
        })
        .await?;
        self.bump(ns);
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        ns: Ns,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let k = full_key(ns, key);
        let expected = expected.map(<[u8]>::to_vec);
        let new = new.map(|v| envelope(v, expires_at));
        let now = self.clock.now();
        // redb allows one write transaction at a time: read and write happen atomically.
        let swapped = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(err)?;
                let swapped = {
                    let mut table = txn.open_table(KV).map_err(err)?;
                    let current = table
                        .get(k.as_str())
                        .map_err(err)?
                        .and_then(|v| live(v.value(), now).map(<[u8]>::to_vec));
                    if current != expected {
                        false
                    } else {
                        match &new {
                            Some(v) => table.insert(k.as_str(), v.as_slice()).map(|_| ()),
                            None => table.remove(k.as_str()).map(|_| ()),
                        }
                        .map_err(err)?;
                        true
                    }
                };
                if swapped {
                    txn.commit().map_err(err)?;
                } else {
                    txn.abort().map_err(err)?;
                }
                Ok(swapped)
            })
            .await?;
        if swapped {
            self.bump(ns);
        }
        Ok(swapped)
    }

    async fn scan(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = full_key(ns, "");
        let now = self.clock.now();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(KV).map_err(err)?;
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                let Some(key) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                if let Some(value) = live(v.value(), now) {
                    out.push((key.to_owned(), value.to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn version(&self, ns: Ns) -> Result<u64, StoreError> {
        Ok(self.versions[ns.index()].load(Ordering::Relaxed))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Deletes expired entries.
    async fn sweep(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(KV).map_err(err)?;
                table.retain(|_, v| live(v, now).is_some()).map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn conforms() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(1_000);
        let store = EmbeddedStore::open(dir.path(), clock.clone()).unwrap();
        super::super::conformance::run(&store, &clock).await;
    }

    #[test]
    fn database_file_is_owner_only_even_when_an_older_version_made_it_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let clock = Clock::manual(1_000);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(EmbeddedStore::open(&data, clock.clone()).unwrap());
        let db = data.join("authgate.redb");
        assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(EmbeddedStore::open(&data, clock).unwrap());
        assert_eq!(mode(&db), 0o600);
    }

    #[tokio::test]
    async fn survives_reopen_and_sweeps_expired() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(1_000);
        {
            let store = EmbeddedStore::open(dir.path(), clock.clone()).unwrap();
            store.put(Ns::Revoked, "s1", b"2000", 2000).await.unwrap();
            store.put(Ns::Revoked, "s2", b"1500", 1500).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path(), clock.clone()).unwrap();
        assert_eq!(store.scan(Ns::Revoked).await.unwrap().len(), 2);
        clock.set(1600);
        store.sweep().await.unwrap();
        clock.set(1000);
        // s2 was physically removed by the sweep, not just hidden by the clock.
        let keys: Vec<String> = store
            .scan(Ns::Revoked)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["s1".to_owned()]);
    }
}

//! Cheap questions that tell whether the keys changed, so the data plane can cache them.

use super::{Store, StoreError};

/// A summary of the key table that changes whenever a key is created or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysFingerprint {
    count: i64,
    max_id: i64,
    revoked: i64,
    revoked_sum: i64,
}

impl Store {
    /// Return SQLite's data version: it changes whenever another connection, in this process
    /// or another, commits a change to the database.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        Ok(conn.pragma_query_value(None, "data_version", |row| row.get(0))?)
    }

    /// Summarise the key table; keys are never deleted, so any creation or revocation
    /// changes the summary.
    pub fn keys_fingerprint(&self) -> Result<KeysFingerprint, StoreError> {
        let conn = self.lock();
        let fingerprint = conn.query_row(
            "SELECT count(*), coalesce(max(id), 0), count(revoked_at),
                    coalesce(sum(revoked_at), 0)
             FROM virtual_keys",
            [],
            |row| {
                Ok(KeysFingerprint {
                    count: row.get(0)?,
                    max_id: row.get(1)?,
                    revoked: row.get(2)?,
                    revoked_sum: row.get(3)?,
                })
            },
        )?;
        Ok(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_connections_revocation_changes_version_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.db");
        let watcher = Store::open(&path).unwrap();
        let admin = Store::open(&path).unwrap();
        let minted = admin
            .create_setup(
                &crate::test_support::request("ada@example.com"),
                "http://127.0.0.1:9",
            )
            .unwrap();
        let token = minted.url.rsplit('/').next().unwrap();
        let key_id = admin.redeem(token, None, "A").unwrap().key_id;

        let version = watcher.data_version().unwrap();
        let before = watcher.keys_fingerprint().unwrap();
        admin.revoke_key(key_id).unwrap();
        assert_ne!(watcher.data_version().unwrap(), version);
        assert_ne!(watcher.keys_fingerprint().unwrap(), before);
    }
}

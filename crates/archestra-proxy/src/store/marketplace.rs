//! Credentials for the companion's own skills marketplace: issued inside a redemption, one
//! per machine, looked up on every git request.
//!
//! Only the SHA-256 of a credential is stored. It is tied to the virtual key of the same
//! redemption, and a trigger (migration 4) revokes it whenever that key is revoked.

use archestra_wire::Secret;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, rfc3339};
use crate::secrets::{hash_secret, key_last_four};
use crate::setup::SetupSpec;
use crate::skills::CREDENTIAL_PREFIX;
use crate::skills::credential::{is_own_clone_url, new_credential, with_credential};

/// A marketplace credential as the store knows it; the raw value is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MarketplaceCredential {
    pub id: i64,
    pub user: String,
    pub setup_id: i64,
    /// The virtual key of the same redemption; revoking it revokes this credential.
    pub key_id: i64,
    /// The credential as it may be shown, e.g. `archestra_mkt_…x9Q_`.
    pub masked: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 revocation time, if revoked.
    pub revoked_at: Option<String>,
    pub revoked: bool,
}

impl Store {
    /// Look up the marketplace credential with this raw value, revoked or not.
    pub fn marketplace_credential(
        &self,
        raw: &str,
    ) -> Result<Option<MarketplaceCredential>, StoreError> {
        let conn = self.lock();
        let record = conn
            .query_row(
                &format!("{CREDENTIAL_COLUMNS} WHERE credential_hash = ?1"),
                [hash_secret(raw)],
                read_credential,
            )
            .optional()?;
        Ok(record)
    }

    /// List marketplace credentials, oldest first, of one user or of everyone.
    pub fn list_marketplace_credentials(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<MarketplaceCredential>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{CREDENTIAL_COLUMNS} WHERE ?1 IS NULL OR user = ?1 ORDER BY id"
        ))?;
        let records = stmt
            .query_map([user], read_credential)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(records)
    }
}

/// Give a setup of this server's own marketplace a fresh credential: put it in the clone
/// URL's user part and return it. Setups of any other marketplace are left alone.
pub(super) fn issue_credential(spec: &mut SetupSpec) -> Option<Secret> {
    let skills = spec.skills.as_mut()?;
    if !is_own_clone_url(skills.clone_url.expose(), &spec.public_url) {
        return None;
    }
    let credential = new_credential();
    skills.clone_url = with_credential(skills.clone_url.expose(), &credential)?;
    Some(credential)
}

/// Store the hash of a credential issued by the redemption that created key `key_id`.
pub(super) fn insert_credential(
    tx: &Transaction<'_>,
    spec: &SetupSpec,
    setup_id: i64,
    key_id: i64,
    credential: &Secret,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.query_row(
        "INSERT INTO marketplace_credentials (credential_hash, last_four, user, setup_id, key_id,
                                              created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![
            hash_secret(credential.expose()),
            key_last_four(credential.expose()),
            spec.user,
            setup_id,
            key_id,
            now,
        ],
        |row| row.get(0),
    )
}

const CREDENTIAL_COLUMNS: &str = "SELECT id, user, setup_id, key_id, last_four, created_at,
                                         revoked_at
                                  FROM marketplace_credentials";

fn read_credential(row: &Row<'_>) -> rusqlite::Result<MarketplaceCredential> {
    let last_four: String = row.get(4)?;
    let revoked_at: Option<i64> = row.get(6)?;
    Ok(MarketplaceCredential {
        id: row.get(0)?,
        user: row.get(1)?,
        setup_id: row.get(2)?,
        key_id: row.get(3)?,
        masked: format!("{CREDENTIAL_PREFIX}…{last_four}"),
        created_at: rfc3339(row.get(5)?),
        revoked_at: revoked_at.map(rfc3339),
        revoked: revoked_at.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use archestra_wire::CreateSetupRequest;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("proxy.db")).unwrap();
        (dir, store)
    }

    fn own_request(user: &str) -> CreateSetupRequest {
        CreateSetupRequest {
            skills_url: Some(crate::skills::MARKETPLACE_PATH.into()),
            marketplace: Some("acme-skills".into()),
            plugins: vec!["extra".into()],
            ..crate::test_support::request(user)
        }
    }

    fn redeem(store: &Store, req: &CreateSetupRequest) -> (String, archestra_wire::SetupPayload) {
        let minted = store.create_setup(req, "http://127.0.0.1:9").unwrap();
        let token = minted.url.rsplit('/').next().unwrap();
        let redemption = store.redeem(token, Some("laptop"), "A").unwrap();
        let key = redemption
            .payload
            .proxy
            .as_ref()
            .unwrap()
            .machine_key()
            .unwrap()
            .expose()
            .to_string();
        (key, redemption.payload)
    }

    fn credential_of(payload: &archestra_wire::SetupPayload) -> String {
        let url = url::Url::parse(payload.skills.as_ref().unwrap().clone_url.expose()).unwrap();
        url.username().to_string()
    }

    #[test]
    fn each_redemption_of_the_own_marketplace_gets_its_own_stored_credential() {
        let (_dir, store) = store();
        let (key, payload) = redeem(&store, &own_request("ada@example.com"));
        let skills = payload.skills.as_ref().unwrap();
        let credential = credential_of(&payload);
        assert!(credential.starts_with("archestra_mkt_"), "{credential}");
        assert_eq!(
            skills.clone_url.expose(),
            format!("http://{credential}@127.0.0.1:9/skills/marketplace.git")
        );
        payload.validate().unwrap();

        let record = store.marketplace_credential(&credential).unwrap().unwrap();
        let key_record = store.key_state(&key).unwrap().unwrap();
        assert_eq!(record.key_id, key_record.id);
        assert_eq!(record.user, "ada@example.com");
        assert!(!record.revoked);
        assert_eq!(
            record.masked,
            format!("archestra_mkt_…{}", &credential[credential.len() - 4..])
        );

        // Only the hash is kept.
        let stored: String = store
            .lock()
            .query_row(
                "SELECT credential_hash FROM marketplace_credentials",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, hash_secret(&credential));

        let (_, second) = redeem(&store, &own_request("ada@example.com"));
        assert_ne!(credential_of(&second), credential);
        assert_eq!(
            store
                .list_marketplace_credentials(Some("ada@example.com"))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn other_marketplaces_get_no_credential() {
        let (_dir, store) = store();
        let req = CreateSetupRequest {
            skills_url: Some("https://git.example.com/skills/marketplace.git".into()),
            ..own_request("ada@example.com")
        };
        let (_, payload) = redeem(&store, &req);
        assert_eq!(
            payload.skills.unwrap().clone_url.expose(),
            "https://git.example.com/skills/marketplace.git"
        );
        assert!(store.list_marketplace_credentials(None).unwrap().is_empty());
    }

    #[test]
    fn revoking_the_key_in_any_way_revokes_the_credential() {
        let (_dir, store) = store();
        let (first_key, first) = redeem(&store, &own_request("ada@example.com"));
        let (_, second) = redeem(&store, &own_request("ada@example.com"));
        let (_, third) = redeem(&store, &own_request("bob@example.com"));
        let revoked = |payload| {
            store
                .marketplace_credential(&credential_of(payload))
                .unwrap()
                .unwrap()
                .revoked
        };

        store.revoke_presented_key(&first_key).unwrap().unwrap();
        assert!(revoked(&first));
        assert!(!revoked(&second));

        store.revoke_user_keys("ada@example.com").unwrap();
        assert!(revoked(&second));
        assert!(!revoked(&third));

        let bob = store.list_keys(Some("bob@example.com")).unwrap();
        store.revoke_key(bob[0].id).unwrap();
        assert!(revoked(&third));
    }
}

//! The SQLite store of setups and virtual keys, shared safely by any number of servers.
//!
//! Every method blocks; the server calls them from `spawn_blocking`. The database runs in WAL
//! mode with a busy timeout, and each change that must happen once (a claim, a revocation) is
//! a single conditional `UPDATE`, so it stays exactly-once across processes. Tokens and keys
//! are stored as SHA-256 hashes only.

mod connections;
mod marketplace;
mod schema;
mod usage;
mod watch;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archestra_wire::{
    AuthMode, CreateSetupRequest, MintedSetup, PayloadError, Provider, SETUP_SCRIPT_PATH, Secret,
    SetupPayload, VIRTUAL_KEY_PREFIX,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::secrets::{hash_secret, key_last_four, new_setup_token, new_virtual_key, token_start};
use crate::setup::{FieldNames, KeyKind, McpChoice, SetupError, SetupSpec, SkillsChoice};

pub use connections::{
    ConnectionError, ConnectionView, Decided, NewConnection, Verdict, normalize_user_code,
};
pub use marketplace::MarketplaceCredential;
pub use schema::current_version as schema_version;
pub use usage::{Outcome, TokenUsage, UsageQuery, UsageRecord, UsageRow};
pub use watch::KeysFingerprint;

/// How long a store waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("could not create the database folder `{path}`")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("could not create the database file `{path}`")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("could not open the database `{path}`")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this build knows ({known}); run a newer archestra-proxy"
    )]
    NewerSchema { found: usize, known: usize },
    #[error("a database operation failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored row is malformed: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Why a redemption did not hand out a payload.
#[derive(Debug, Error)]
pub enum RedeemError {
    #[error("no setup has this token")]
    Unknown,
    #[error("the setup token was already used")]
    Used,
    #[error("the setup token has expired")]
    Expired,
    #[error("the stored setup no longer passes validation")]
    Invalid(#[source] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for RedeemError {
    fn from(err: rusqlite::Error) -> Self {
        RedeemError::Store(StoreError::Sqlite(err))
    }
}

/// Where a setup token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// No setup has this token.
    Unknown,
    /// The token can still be redeemed once.
    Unused,
    /// The token was redeemed.
    Used,
    /// The token was never redeemed and its time ran out.
    Expired,
}

/// A virtual key as the store knows it; the raw key itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub kind: KeyKind,
    /// The machine name the installer sent when it redeemed the setup.
    pub device_name: Option<String>,
    pub setup_id: i64,
    /// The key as it may be shown, e.g. `arch_…9f3c`.
    pub masked: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 revocation time, if revoked.
    pub revoked_at: Option<String>,
    pub revoked: bool,
}

/// What a successful redemption hands out.
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The payload for the installer, carrying the new raw key.
    pub payload: SetupPayload,
    pub setup_id: i64,
    pub key_id: i64,
}

/// What revoking a key by id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    Unknown,
}

/// A handle on the database file; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    // One connection per store is enough for a control plane: each operation takes well
    // under a millisecond, and other processes get their own connection and WAL locking.
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Open the database at `path`, creating it (mode 0600) and its folder (0700) if missing,
    /// and apply any pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        prepare_file(path)?;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "the database refused WAL mode and stayed in `{mode}` mode"
            )));
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Return the path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check a setup request and mint it; error messages name the JSON body fields.
    pub fn create_setup(
        &self,
        req: &CreateSetupRequest,
        public_url: &str,
    ) -> Result<MintedSetup, StoreError> {
        let spec = SetupSpec::from_request(req, public_url, FieldNames::Json)?;
        self.insert_setup(&spec)
    }

    // TODO(proxy): used and expired setup rows are kept for ever. They are small and keys
    // point at them; a `setups prune` that drops old rows without keys can come when needed.
    /// Mint an already checked setup: store it and return the one-time command.
    pub fn insert_setup(&self, spec: &SetupSpec) -> Result<MintedSetup, StoreError> {
        let token = new_setup_token();
        let now = now_ms();
        let ttl_ms = i64::try_from(spec.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = now.saturating_add(ttl_ms);
        let row = NewSetupRow {
            token_hash: &hash_secret(&token),
            token_start: &token_start(&token),
            created_at: now,
            expires_at,
        };
        insert_setup_row(&self.lock(), spec, &row)?;

        let url = format!("{}{SETUP_SCRIPT_PATH}{token}", spec.public_url);
        Ok(MintedSetup {
            command: format!("archestra-connect setup '{url}'"),
            url,
            expires_at: rfc3339(expires_at),
            token_start: token_start(&token),
        })
    }

    /// Tell where the setup with this raw token stands.
    pub fn token_state(&self, raw_token: &str) -> Result<TokenState, StoreError> {
        let conn = self.lock();
        Ok(token_state_of(&conn, &hash_secret(raw_token), now_ms())?)
    }

    /// Redeem a setup token: claim it, create this machine's key and build its payload.
    ///
    /// The claim, the key and the payload are one transaction. If any step after the claim
    /// fails, the transaction rolls back and the claim with it, so a server fault never uses
    /// up a token. Of any number of concurrent redemptions, in any number of processes,
    /// exactly one wins.
    pub fn redeem(
        &self,
        raw_token: &str,
        device_name: Option<&str>,
        app_name: &str,
    ) -> Result<Redemption, RedeemError> {
        let hash = hash_secret(raw_token);
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

        // Claim first: only one UPDATE can find `consumed_at` still empty.
        let claimed = tx
            .query_row(
                "UPDATE setups SET consumed_at = ?1
                 WHERE token_hash = ?2 AND consumed_at IS NULL AND expires_at > ?1
                 RETURNING id, user, mode, provider, mcp_name, mcp_url, skills_url, marketplace,
                           plugins, public_url, created_at, expires_at",
                params![now, hash],
                SetupRow::read,
            )
            .optional()?;
        let Some(row) = claimed else {
            return Err(match token_state_of(&tx, &hash, now)? {
                TokenState::Unknown => RedeemError::Unknown,
                TokenState::Expired => RedeemError::Expired,
                // Unused cannot happen here: this transaction holds the write lock, so the
                // token could not change between the UPDATE and the lookup.
                TokenState::Used | TokenState::Unused => RedeemError::Used,
            });
        };
        let setup_id = row.id;
        let mut spec = row.into_spec().map_err(StoreError::Corrupt)?;

        // From here on, returning early drops `tx`, which rolls the claim back.
        let key = Secret::new(new_virtual_key());
        let marketplace_credential = marketplace::issue_credential(&mut spec);
        let payload = spec.payload(app_name, &key);
        payload.validate().map_err(RedeemError::Invalid)?;
        let key_id = insert_key(&tx, &spec, setup_id, &key, device_name, now)?;
        if let Some(credential) = &marketplace_credential {
            marketplace::insert_credential(&tx, &spec, setup_id, key_id, credential, now)?;
        }
        // TODO(proxy): a client that disconnects after this commit loses its payload while the
        // token counts as used. Archestra has the same gap; closing it needs a second,
        // acknowledging request, which the installer protocol does not have yet.
        tx.commit()?;

        Ok(Redemption {
            payload,
            setup_id,
            key_id,
        })
    }

    /// Look up the key with this raw value, revoked or not.
    pub fn key_state(&self, raw_key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.lock();
        let record = conn
            .query_row(
                &format!("{KEY_COLUMNS} WHERE key_hash = ?1"),
                [hash_secret(raw_key)],
                read_key,
            )
            .optional()?;
        Ok(record)
    }

    /// List keys, oldest first, of one user or of everyone.
    pub fn list_keys(&self, user: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{KEY_COLUMNS} WHERE ?1 IS NULL OR user = ?1 ORDER BY id"
        ))?;
        let keys = stmt
            .query_map([user], read_key)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// Revoke the key with this raw value; return its id if this call revoked it.
    ///
    /// An unknown or already revoked key gives `None`, so presenting a key twice fails the
    /// second time.
    pub fn revoke_presented_key(&self, raw_key: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        let id = conn
            .query_row(
                "UPDATE virtual_keys SET revoked_at = ?1
                 WHERE key_hash = ?2 AND revoked_at IS NULL RETURNING id",
                params![now_ms(), hash_secret(raw_key)],
                |row| row.get(0),
            )
            .optional()?;
        Ok(id)
    }

    /// Revoke one key by its id.
    pub fn revoke_key(&self, id: i64) -> Result<RevokeOutcome, StoreError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE virtual_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![now_ms(), id],
        )?;
        if changed == 1 {
            return Ok(RevokeOutcome::Revoked);
        }
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM virtual_keys WHERE id = ?1)",
            [id],
            |row| row.get(0),
        )?;
        Ok(if exists {
            RevokeOutcome::AlreadyRevoked
        } else {
            RevokeOutcome::Unknown
        })
    }

    /// Revoke every active key of a user, on every machine; return how many were revoked.
    pub fn revoke_user_keys(&self, user: &str) -> Result<usize, StoreError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE virtual_keys SET revoked_at = ?1 WHERE user = ?2 AND revoked_at IS NULL",
            params![now_ms(), user],
        )?;
        Ok(changed)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its transaction, which rolled back, so the
        // connection is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Create the database's folder (0700) and file (0600) when they are missing.
///
/// SQLite gives its `-wal` and `-shm` files the permissions of the database file.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(parent)
            .map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
    }

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Where and until when a new setup row redeems: its token is known by its hash only.
struct NewSetupRow<'a> {
    token_hash: &'a str,
    token_start: &'a str,
    created_at: i64,
    expires_at: i64,
}

/// Insert a checked setup under a token hash; return its id.
fn insert_setup_row(
    conn: &Connection,
    spec: &SetupSpec,
    row: &NewSetupRow<'_>,
) -> Result<i64, StoreError> {
    let plugins = spec.skills.as_ref().map_or(&[][..], |s| &s.plugins[..]);
    let plugins = serde_json::to_string(plugins)
        .map_err(|e| StoreError::Corrupt(format!("could not encode plugin names: {e}")))?;
    let id = conn.query_row(
        "INSERT INTO setups (token_hash, token_start, user, mode, provider, mcp_name, mcp_url,
                             skills_url, marketplace, plugins, public_url, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         RETURNING id",
        params![
            row.token_hash,
            row.token_start,
            spec.user,
            spec.mode.as_str(),
            spec.provider.as_str(),
            spec.mcp.as_ref().map(|m| &m.name),
            spec.mcp.as_ref().map(|m| &m.url),
            spec.skills.as_ref().map(|s| s.clone_url.expose()),
            spec.skills.as_ref().map(|s| &s.marketplace),
            plugins,
            spec.public_url,
            row.created_at,
            row.expires_at,
        ],
        |r| r.get(0),
    )?;
    Ok(id)
}

fn token_state_of(conn: &Connection, hash: &str, now: i64) -> rusqlite::Result<TokenState> {
    let row: Option<(Option<i64>, i64)> = conn
        .query_row(
            "SELECT consumed_at, expires_at FROM setups WHERE token_hash = ?1",
            [hash],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => TokenState::Unknown,
        Some((Some(_), _)) => TokenState::Used,
        Some((None, expires_at)) if expires_at <= now => TokenState::Expired,
        Some((None, _)) => TokenState::Unused,
    })
}

fn insert_key(
    tx: &Transaction<'_>,
    spec: &SetupSpec,
    setup_id: i64,
    key: &Secret,
    device_name: Option<&str>,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.query_row(
        "INSERT INTO virtual_keys (key_hash, last_four, kind, user, name, device_name, setup_id,
                                   created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        params![
            hash_secret(key.expose()),
            key_last_four(key.expose()),
            spec.key_kind().as_str(),
            spec.user,
            spec.key_name(),
            device_name,
            setup_id,
            now,
        ],
        |row| row.get(0),
    )
}

const KEY_COLUMNS: &str = "SELECT id, user, name, kind, device_name, setup_id, last_four,
                                  created_at, revoked_at
                           FROM virtual_keys";

fn read_key(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let kind: String = row.get(3)?;
    let kind = KeyKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            3,
            rusqlite::types::Type::Text,
            format!("unknown key kind `{kind}`").into(),
        )
    })?;
    let last_four: String = row.get(6)?;
    let revoked_at: Option<i64> = row.get(8)?;
    Ok(KeyRecord {
        id: row.get(0)?,
        user: row.get(1)?,
        name: row.get(2)?,
        kind,
        device_name: row.get(4)?,
        setup_id: row.get(5)?,
        masked: format!("{VIRTUAL_KEY_PREFIX}…{last_four}"),
        created_at: rfc3339(row.get(7)?),
        revoked_at: revoked_at.map(rfc3339),
        revoked: revoked_at.is_some(),
    })
}

/// A setup row as the claim returns it.
struct SetupRow {
    id: i64,
    user: String,
    mode: String,
    provider: String,
    mcp_name: Option<String>,
    mcp_url: Option<String>,
    skills_url: Option<String>,
    marketplace: Option<String>,
    plugins: String,
    public_url: String,
    created_at: i64,
    expires_at: i64,
}

impl SetupRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<SetupRow> {
        Ok(SetupRow {
            id: row.get(0)?,
            user: row.get(1)?,
            mode: row.get(2)?,
            provider: row.get(3)?,
            mcp_name: row.get(4)?,
            mcp_url: row.get(5)?,
            skills_url: row.get(6)?,
            marketplace: row.get(7)?,
            plugins: row.get(8)?,
            public_url: row.get(9)?,
            created_at: row.get(10)?,
            expires_at: row.get(11)?,
        })
    }

    fn into_spec(self) -> Result<SetupSpec, String> {
        let id = self.id;
        let mode = match self.mode.as_str() {
            "provider-key" => AuthMode::ProviderKey,
            "virtual-key" => AuthMode::VirtualKey,
            other => return Err(format!("setup {id} has unknown mode `{other}`")),
        };
        let provider = match self.provider.as_str() {
            "anthropic" => Provider::Anthropic,
            "bedrock" => Provider::Bedrock,
            other => return Err(format!("setup {id} has unknown provider `{other}`")),
        };
        let mcp = match (self.mcp_name, self.mcp_url) {
            (Some(name), Some(url)) => Some(McpChoice { name, url }),
            _ => None,
        };
        let skills = match (self.skills_url, self.marketplace) {
            (Some(clone_url), Some(marketplace)) => {
                let plugins: Vec<String> = serde_json::from_str(&self.plugins)
                    .map_err(|e| format!("setup {id} has malformed plugin names: {e}"))?;
                Some(SkillsChoice {
                    clone_url: Secret::new(clone_url),
                    marketplace,
                    plugins,
                })
            }
            _ => None,
        };
        let ttl_ms = u64::try_from(self.expires_at - self.created_at).unwrap_or(0);
        Ok(SetupSpec {
            user: self.user,
            mode,
            provider,
            mcp,
            skills,
            public_url: self.public_url,
            ttl: Duration::from_millis(ttl_ms),
        })
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str) -> CreateSetupRequest {
        CreateSetupRequest {
            mcp_url: Some("https://h.example/v1/mcp/default".into()),
            skills_url: Some("https://h.example/skills/marketplace.git".into()),
            marketplace: Some("acme".into()),
            plugins: vec!["review".into()],
            ..crate::test_support::request(user)
        }
    }

    fn token_of(minted: &MintedSetup) -> &str {
        minted.url.rsplit('/').next().unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("nested/proxy.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn minted_setups_carry_the_command_and_redeem_exactly_once() {
        let (_dir, store) = store();
        let minted = store
            .create_setup(&request("ada@example.com"), "http://127.0.0.1:9/")
            .unwrap();
        let token = token_of(&minted);
        assert!(
            minted
                .url
                .starts_with("http://127.0.0.1:9/api/connection-setups/script/archestra_con_")
        );
        assert_eq!(
            minted.command,
            format!("archestra-connect setup '{}'", minted.url)
        );
        assert!(token.starts_with(&minted.token_start));
        assert_eq!(store.token_state(token).unwrap(), TokenState::Unused);

        let redeemed = store.redeem(token, Some("laptop"), "Archestra").unwrap();
        let payload = redeemed.payload;
        assert_eq!(payload.mcp.as_ref().unwrap().server_name, "archestra");
        assert_eq!(payload.skills.as_ref().unwrap().plugin_names, ["review"]);
        let key = payload
            .proxy
            .as_ref()
            .unwrap()
            .machine_key()
            .unwrap()
            .expose()
            .to_string();
        let record = store.key_state(&key).unwrap().unwrap();
        assert_eq!(record.device_name.as_deref(), Some("laptop"));
        assert_eq!(record.setup_id, redeemed.setup_id);
        assert_eq!(record.name, "Connection passthrough — ada@example.com");
        assert_eq!(record.masked, format!("arch_…{}", &key[key.len() - 4..]));

        assert_eq!(store.token_state(token).unwrap(), TokenState::Used);
        assert!(matches!(
            store.redeem(token, None, "Archestra"),
            Err(RedeemError::Used)
        ));
    }

    #[test]
    fn unknown_and_expired_tokens_are_told_apart() {
        let (_dir, store) = store();
        let unknown = format!("archestra_con_{}", "A".repeat(32));
        assert_eq!(store.token_state(&unknown).unwrap(), TokenState::Unknown);
        assert!(matches!(
            store.redeem(&unknown, None, "A"),
            Err(RedeemError::Unknown)
        ));

        let mut req = request("ada@example.com");
        req.ttl_seconds = Some(1);
        let minted = store.create_setup(&req, "http://127.0.0.1:9").unwrap();
        // Age the setup instead of sleeping.
        store
            .lock()
            .execute("UPDATE setups SET expires_at = expires_at - 5000", [])
            .unwrap();
        assert_eq!(
            store.token_state(token_of(&minted)).unwrap(),
            TokenState::Expired
        );
        assert!(matches!(
            store.redeem(token_of(&minted), None, "A"),
            Err(RedeemError::Expired)
        ));
    }

    #[test]
    fn a_failed_key_insert_rolls_the_claim_back() {
        let (_dir, store) = store();
        let minted = store
            .create_setup(&request("ada@example.com"), "http://127.0.0.1:9")
            .unwrap();
        store
            .lock()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse_keys BEFORE INSERT ON virtual_keys
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            )
            .unwrap();
        assert!(matches!(
            store.redeem(token_of(&minted), None, "A"),
            Err(RedeemError::Store(_))
        ));
        assert_eq!(
            store.token_state(token_of(&minted)).unwrap(),
            TokenState::Unused
        );

        store
            .lock()
            .execute_batch("DROP TRIGGER refuse_keys")
            .unwrap();
        store.redeem(token_of(&minted), None, "A").unwrap();
    }

    #[test]
    fn revocations_cover_one_key_or_all_of_a_users_keys() {
        let (_dir, store) = store();
        let mut keys = Vec::new();
        for user in ["ada@example.com", "ada@example.com", "bob@example.com"] {
            let minted = store
                .create_setup(&request(user), "http://127.0.0.1:9")
                .unwrap();
            let payload = store.redeem(token_of(&minted), None, "A").unwrap().payload;
            keys.push(
                payload
                    .proxy
                    .unwrap()
                    .machine_key()
                    .unwrap()
                    .expose()
                    .to_string(),
            );
        }

        let first = store.revoke_presented_key(&keys[0]).unwrap().unwrap();
        assert_eq!(store.revoke_presented_key(&keys[0]).unwrap(), None);
        assert_eq!(
            store.revoke_key(first).unwrap(),
            RevokeOutcome::AlreadyRevoked
        );
        assert_eq!(store.revoke_key(999).unwrap(), RevokeOutcome::Unknown);
        assert!(!store.key_state(&keys[1]).unwrap().unwrap().revoked);

        assert_eq!(store.revoke_user_keys("ada@example.com").unwrap(), 1);
        let ada = store.list_keys(Some("ada@example.com")).unwrap();
        assert_eq!(ada.len(), 2);
        assert!(ada.iter().all(|k| k.revoked && k.revoked_at.is_some()));
        assert!(!store.key_state(&keys[2]).unwrap().unwrap().revoked);
        assert_eq!(store.list_keys(None).unwrap().len(), 3);
    }

    #[test]
    fn hostile_requests_are_refused_before_anything_is_written() {
        let (_dir, store) = store();
        let mut req = request("ada@example.com");
        req.mcp_name = Some("--scope".into());
        let err = store.create_setup(&req, "http://127.0.0.1:9").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`mcpName` starts with `-` and would be read as a command-line flag"
        );
        let count: i64 = store
            .lock()
            .query_row("SELECT count(*) FROM setups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn reopening_keeps_data_and_migrates_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.db");
        let minted = {
            let store = Store::open(&path).unwrap();
            store
                .create_setup(&request("ada@example.com"), "http://127.0.0.1:9")
                .unwrap()
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.token_state(token_of(&minted)).unwrap(),
            TokenState::Unused
        );
        let version: i64 = store
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_version() as i64);
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn new_databases_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/proxy.db");
        drop(Store::open(&path).unwrap());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}

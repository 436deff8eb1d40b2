//! The database schema and its migrations, applied in order when a store opens.
//!
//! `PRAGMA user_version` records how many migrations a database has had. Migrations only
//! ever get appended; an applied one is never edited.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Every migration, oldest first; a database at version N has had the first N.
const MIGRATIONS: &[&str] = &[
    // 1: setups and the virtual keys their redemptions create.
    "CREATE TABLE setups (
        id           INTEGER PRIMARY KEY,
        token_hash   TEXT    NOT NULL UNIQUE,
        token_start  TEXT    NOT NULL,
        user         TEXT    NOT NULL,
        mode         TEXT    NOT NULL,
        provider     TEXT    NOT NULL,
        mcp_name     TEXT,
        mcp_url      TEXT,
        skills_url   TEXT,
        marketplace  TEXT,
        plugins      TEXT    NOT NULL DEFAULT '[]',
        public_url   TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        consumed_at  INTEGER
    );
    CREATE TABLE virtual_keys (
        id           INTEGER PRIMARY KEY,
        key_hash     TEXT    NOT NULL UNIQUE,
        last_four    TEXT    NOT NULL,
        kind         TEXT    NOT NULL CHECK (kind IN ('passthrough', 'standard')),
        user         TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        device_name  TEXT,
        setup_id     INTEGER NOT NULL REFERENCES setups(id),
        created_at   INTEGER NOT NULL,
        revoked_at   INTEGER
    );
    CREATE INDEX virtual_keys_by_user ON virtual_keys(user);",
    // 2: the data plane's usage log, one row per forwarded request.
    "CREATE TABLE usage_log (
        id                          INTEGER PRIMARY KEY,
        at                          INTEGER NOT NULL,
        user                        TEXT,
        key_id                      INTEGER,
        agent_id                    TEXT,
        method                      TEXT    NOT NULL,
        path                        TEXT    NOT NULL,
        model                       TEXT,
        status                      INTEGER NOT NULL,
        latency_us                  INTEGER NOT NULL,
        ttfb_us                     INTEGER,
        input_tokens                INTEGER,
        output_tokens               INTEGER,
        cache_creation_input_tokens INTEGER,
        cache_read_input_tokens     INTEGER,
        outcome                     TEXT    NOT NULL
    );
    CREATE INDEX usage_log_by_time ON usage_log(at);
    CREATE INDEX usage_log_by_user ON usage_log(user, at);",
    // 3: browser approval requests; an approved one points at the setup it minted.
    "CREATE TABLE client_connections (
        id                TEXT    PRIMARY KEY,
        device_code_hash  TEXT    NOT NULL UNIQUE,
        token_hash        TEXT    NOT NULL UNIQUE,
        token_start       TEXT    NOT NULL,
        user_code         TEXT    NOT NULL,
        client_id         TEXT    NOT NULL,
        platform          TEXT    NOT NULL,
        device_name       TEXT,
        public_url        TEXT    NOT NULL,
        status            TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
        created_at        INTEGER NOT NULL,
        expires_at        INTEGER NOT NULL,
        decided_at        INTEGER,
        decided_by        TEXT,
        setup_id          INTEGER REFERENCES setups(id)
    );
    CREATE INDEX client_connections_by_user_code ON client_connections(user_code, status);",
    // 4: credentials for the companion's own skills marketplace, one per redemption; revoking
    // the machine's key revokes its credential too, whichever command or route did it.
    "CREATE TABLE marketplace_credentials (
        id               INTEGER PRIMARY KEY,
        credential_hash  TEXT    NOT NULL UNIQUE,
        last_four        TEXT    NOT NULL,
        user             TEXT    NOT NULL,
        setup_id         INTEGER NOT NULL REFERENCES setups(id),
        key_id           INTEGER NOT NULL REFERENCES virtual_keys(id),
        created_at       INTEGER NOT NULL,
        revoked_at       INTEGER
    );
    CREATE INDEX marketplace_credentials_by_key ON marketplace_credentials(key_id);
    CREATE TRIGGER key_revocation_revokes_marketplace_credentials
    AFTER UPDATE OF revoked_at ON virtual_keys
    WHEN NEW.revoked_at IS NOT NULL
    BEGIN
        UPDATE marketplace_credentials SET revoked_at = NEW.revoked_at
        WHERE key_id = NEW.id AND revoked_at IS NULL;
    END;",
];

/// Bring the database up to the newest schema this build knows.
///
/// Runs in one write transaction, so two servers starting on the same file at once migrate
/// it exactly once between them.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    // A negative version can only come from another program; treat it as unknown and newer.
    let found = usize::try_from(found).unwrap_or(usize::MAX);
    if found > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema {
            found,
            known: MIGRATIONS.len(),
        });
    }
    for migration in &MIGRATIONS[found..] {
        tx.execute_batch(migration)?;
    }
    let version = i64::try_from(MIGRATIONS.len()).expect("fewer than 2^63 migrations");
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    Ok(())
}

/// Return the schema version this build writes.
pub fn current_version() -> usize {
    MIGRATIONS.len()
}

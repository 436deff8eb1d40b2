//! Browser approval requests: a client starts one, a person approves or denies it, and the
//! client polls until then.
//!
//! The device code is the client's proof and is never stored. The row keeps its SHA-256 for
//! polling, and the SHA-256 of the setup token it redeems as (`archestra_con_<deviceCode>`),
//! so that an approval can mint the setup under that token without knowing the code.

use std::time::Duration;

use archestra_wire::{ConnectionStatus, CreateSetupRequest, Secret, device_setup_token};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use thiserror::Error;

use super::{NewSetupRow, Store, StoreError, insert_setup_row, now_ms, rfc3339};
use crate::secrets::{hash_secret, token_start};
use crate::setup::{FieldNames, SetupError, SetupSpec};

/// Random bytes behind a device code (43 base64url characters).
const DEVICE_CODE_BYTES: usize = 32;

/// Letters of a user code: capitals and digits without the look-alikes 0, O, 1 and I.
const USER_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Tries at a user code no pending request holds.
const USER_CODE_TRIES: usize = 8;

/// A request just started: what the client is told once.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub id: String,
    /// The client's proof; it leaves the server only in the answer to the start request.
    pub device_code: Secret,
    /// `XXXX-XXXX`, shown in the client and typed or compared by the approver.
    pub user_code: String,
    /// RFC 3339 time after which the request can no longer be approved.
    pub expires_at: String,
}

/// What the person deciding a request says.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Approve it with this setup; the setup's user is the approver.
    Approve(CreateSetupRequest),
    Deny,
}

/// A decided request.
#[derive(Debug, Clone)]
pub struct Decided {
    pub id: String,
    pub device_name: Option<String>,
    pub platform: String,
    /// The setup the approval minted.
    pub setup_id: Option<i64>,
}

/// A request as its approval page shows it; nothing in it is a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionView {
    pub user_code: String,
    pub platform: String,
    pub device_name: Option<String>,
    pub status: ConnectionStatus,
}

/// Why a request could not be decided.
#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("no pending connection request has the code `{0}`")]
    UnknownCode(String),
    #[error("the connection request with the code `{0}` has expired")]
    Expired(String),
    #[error("the connection request with the code `{code}` was {status} already")]
    Decided { code: String, status: String },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ConnectionError {
    fn from(err: rusqlite::Error) -> Self {
        ConnectionError::Store(StoreError::Sqlite(err))
    }
}

/// Return a user code in its stored form: capitals, with the dash; `None` if it is no code.
pub fn normalize_user_code(code: &str) -> Option<String> {
    let letters: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = letters.len() == 8 && letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    ok.then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

fn new_user_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        let at = rng.random_range(0..USER_CODE_ALPHABET.len());
        code.push(char::from(USER_CODE_ALPHABET[at]));
    }
    code
}

impl Store {
    /// Start a connection request that a person must decide within `ttl`.
    pub fn start_connection(
        &self,
        client_id: &str,
        platform: &str,
        device_name: Option<&str>,
        public_url: &str,
        ttl: Duration,
    ) -> Result<NewConnection, StoreError> {
        let mut rng = rand::rng();
        let mut bytes = [0u8; DEVICE_CODE_BYTES];
        rng.fill(&mut bytes);
        let device_code = Secret::new(URL_SAFE_NO_PAD.encode(bytes));
        let mut id_bytes = [0u8; 12];
        rng.fill(&mut id_bytes);
        let id = hex::encode(id_bytes);
        let token = device_setup_token(&device_code);
        let now = now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = now.saturating_add(ttl_ms);

        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // A user code must point at one pending request; retry the rare clash.
        let mut user_code = new_user_code();
        for _ in 0..USER_CODE_TRIES {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM client_connections
                                WHERE user_code = ?1 AND status = 'pending' AND expires_at > ?2)",
                params![user_code, now],
                |row| row.get(0),
            )?;
            if !taken {
                break;
            }
            user_code = new_user_code();
        }
        tx.execute(
            "INSERT INTO client_connections (id, device_code_hash, token_hash, token_start,
                 user_code, client_id, platform, device_name, public_url, status, created_at,
                 expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)",
            params![
                id,
                hash_secret(device_code.expose()),
                hash_secret(token.expose()),
                token_start(token.expose()),
                user_code,
                client_id,
                platform,
                device_name,
                public_url,
                now,
                expires_at,
            ],
        )?;
        tx.commit()?;
        Ok(NewConnection {
            id,
            device_code,
            user_code,
            expires_at: rfc3339(expires_at),
        })
    }

    /// Tell where the request with this device code stands; `None` if no request has it.
    pub fn connection_status(
        &self,
        device_code: &str,
    ) -> Result<Option<ConnectionStatus>, StoreError> {
        let conn = self.lock();
        let row: Option<(String, i64)> = conn
            .query_row(
                "SELECT status, expires_at FROM client_connections WHERE device_code_hash = ?1",
                [hash_secret(device_code)],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(status, expires_at)| match status.as_str() {
            "approved" => ConnectionStatus::Approved,
            "denied" => ConnectionStatus::Denied,
            _ if expires_at <= now_ms() => ConnectionStatus::Expired,
            _ => ConnectionStatus::Pending,
        }))
    }

    /// Describe the request with this id for its approval page; `None` if no request has it.
    pub fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionView>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT user_code, platform, device_name, status, expires_at
                 FROM client_connections WHERE id = ?1",
                [id],
                |row| {
                    let status: String = row.get(3)?;
                    let expires_at: i64 = row.get(4)?;
                    Ok(ConnectionView {
                        user_code: row.get(0)?,
                        platform: row.get(1)?,
                        device_name: row.get(2)?,
                        status: match status.as_str() {
                            "approved" => ConnectionStatus::Approved,
                            "denied" => ConnectionStatus::Denied,
                            _ if expires_at <= now_ms() => ConnectionStatus::Expired,
                            _ => ConnectionStatus::Pending,
                        },
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Approve or deny the pending request with this user code, as `approver`.
    ///
    /// Approving mints the setup under the token the client will redeem, valid until the
    /// request's own deadline. The check, the setup and the decision are one transaction:
    /// a request is decided exactly once, even by two approvers at the same moment.
    pub fn decide_connection(
        &self,
        user_code: &str,
        approver: &str,
        verdict: &Verdict,
    ) -> Result<Decided, ConnectionError> {
        let code = normalize_user_code(user_code)
            .ok_or_else(|| ConnectionError::UnknownCode(user_code.chars().take(20).collect()))?;
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

        let row = tx
            .query_row(
                "SELECT id, token_hash, token_start, platform, device_name, public_url, status,
                        expires_at
                 FROM client_connections WHERE user_code = ?1
                 ORDER BY created_at DESC LIMIT 1",
                [&code],
                |row| {
                    Ok(PendingRow {
                        id: row.get(0)?,
                        token_hash: row.get(1)?,
                        token_start: row.get(2)?,
                        platform: row.get(3)?,
                        device_name: row.get(4)?,
                        public_url: row.get(5)?,
                        status: row.get(6)?,
                        expires_at: row.get(7)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| ConnectionError::UnknownCode(code.clone()))?;
        if row.status != "pending" {
            return Err(ConnectionError::Decided {
                code,
                status: row.status,
            });
        }
        if row.expires_at <= now {
            return Err(ConnectionError::Expired(code));
        }

        let (status, setup_id) = match verdict {
            Verdict::Deny => ("denied", None),
            Verdict::Approve(request) => {
                let spec = SetupSpec::from_request(request, &row.public_url, FieldNames::Flags)?;
                let new_row = NewSetupRow {
                    token_hash: &row.token_hash,
                    token_start: &row.token_start,
                    created_at: now,
                    expires_at: row.expires_at,
                };
                ("approved", Some(insert_setup_row(&tx, &spec, &new_row)?))
            }
        };
        tx.execute(
            "UPDATE client_connections
             SET status = ?1, decided_at = ?2, decided_by = ?3, setup_id = ?4
             WHERE id = ?5 AND status = 'pending'",
            params![status, now, approver, setup_id, row.id],
        )?;
        tx.commit()?;
        Ok(Decided {
            id: row.id,
            device_name: row.device_name,
            platform: row.platform,
            setup_id,
        })
    }
}

struct PendingRow {
    id: String,
    token_hash: String,
    token_start: String,
    platform: String,
    device_name: Option<String>,
    public_url: String,
    status: String,
    expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use archestra_wire::{AuthMode, Provider, is_device_code, is_user_code};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    fn request() -> CreateSetupRequest {
        CreateSetupRequest {
            user: "dev@example.com".into(),
            mode: AuthMode::ProviderKey,
            provider: Provider::Anthropic,
            mcp_url: Some("http://127.0.0.1:9/v1/mcp/default".into()),
            mcp_name: None,
            skills_url: None,
            marketplace: None,
            plugins: Vec::new(),
            ttl_seconds: None,
        }
    }

    const ORIGIN: &str = "http://127.0.0.1:9";
    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn an_approved_request_redeems_once_under_its_device_code() {
        let (_dir, store) = store();
        let started = store
            .start_connection("claude-code", "linux", Some("laptop"), ORIGIN, TEN_MINUTES)
            .unwrap();
        assert!(is_device_code(started.device_code.expose()));
        assert!(is_user_code(&started.user_code));
        let code = started.device_code.expose();
        assert_eq!(
            store.connection_status(code).unwrap(),
            Some(ConnectionStatus::Pending)
        );

        let lower = started.user_code.to_lowercase().replace('-', "");
        let decided = store
            .decide_connection(&lower, "dev@example.com", &Verdict::Approve(request()))
            .unwrap();
        assert_eq!(decided.device_name.as_deref(), Some("laptop"));
        assert_eq!(
            store.connection_status(code).unwrap(),
            Some(ConnectionStatus::Approved)
        );

        let token = device_setup_token(&started.device_code);
        let redeemed = store
            .redeem(token.expose(), Some("laptop"), "Archestra")
            .unwrap();
        assert_eq!(redeemed.setup_id, decided.setup_id.unwrap());
        assert!(store.redeem(token.expose(), None, "Archestra").is_err());

        let again = store.decide_connection(&started.user_code, "x@example.com", &Verdict::Deny);
        assert!(matches!(again, Err(ConnectionError::Decided { .. })));
    }

    #[test]
    fn denied_expired_and_unknown_requests_mint_nothing() {
        let (_dir, store) = store();
        let denied = store
            .start_connection("claude-code", "linux", None, ORIGIN, TEN_MINUTES)
            .unwrap();
        store
            .decide_connection(&denied.user_code, "dev@example.com", &Verdict::Deny)
            .unwrap();
        assert_eq!(
            store
                .connection_status(denied.device_code.expose())
                .unwrap(),
            Some(ConnectionStatus::Denied)
        );
        let token = device_setup_token(&denied.device_code);
        assert!(store.redeem(token.expose(), None, "Archestra").is_err());

        let expired = store
            .start_connection("claude-code", "linux", None, ORIGIN, Duration::ZERO)
            .unwrap();
        assert_eq!(
            store
                .connection_status(expired.device_code.expose())
                .unwrap(),
            Some(ConnectionStatus::Expired)
        );
        let late = store.decide_connection(
            &expired.user_code,
            "dev@example.com",
            &Verdict::Approve(request()),
        );
        assert!(matches!(late, Err(ConnectionError::Expired(_))));

        assert_eq!(store.connection_status(&"x".repeat(43)).unwrap(), None);
        assert!(matches!(
            store.decide_connection("ZZZZ-ZZZZ", "dev@example.com", &Verdict::Deny),
            Err(ConnectionError::UnknownCode(_))
        ));
    }

    #[test]
    fn user_codes_avoid_look_alike_letters() {
        for _ in 0..200 {
            let code = new_user_code();
            assert!(is_user_code(&code), "{code}");
            assert!(!code.contains(['0', 'O', '1', 'I']), "{code}");
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        }
        assert_eq!(
            normalize_user_code("abcd efgh").as_deref(),
            Some("ABCD-EFGH")
        );
        assert_eq!(normalize_user_code("ABCD-EFG0"), None);
    }
}

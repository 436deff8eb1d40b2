//! The usage log: one row per request the data plane handled, written in batches and read
//! back by `archestra-proxy logs`.

use rusqlite::{Row, params};
use serde::Serialize;

use super::{Store, StoreError, rfc3339};

/// Token counts an upstream reply reported; a count the reply did not carry is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
}

/// How a request ended, as the usage log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole upstream answer reached the client.
    Completed,
    /// The proxy refused the request itself (unknown or revoked key, malformed request).
    Refused,
    /// The upstream could not be reached.
    UpstreamUnreachable,
    /// The upstream sent no response headers in time.
    UpstreamTimeout,
    /// The upstream broke off its answer.
    UpstreamBroken,
    /// The client went away before the answer was complete; the upstream request was dropped.
    ClientGone,
}

impl Outcome {
    /// Return the name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Refused => "refused",
            Outcome::UpstreamUnreachable => "upstream_unreachable",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamBroken => "upstream_broken",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// One request as the data plane saw it, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub user: Option<String>,
    pub key_id: Option<i64>,
    pub agent_id: Option<String>,
    pub method: String,
    /// The upstream path, without its query.
    pub path: String,
    pub model: Option<String>,
    pub status: u16,
    /// From the request's arrival to the end of the answer.
    pub latency_us: u64,
    /// From the request's arrival to the first byte of the upstream's answer body.
    pub ttfb_us: Option<u64>,
    pub usage: TokenUsage,
    pub outcome: Outcome,
}

/// Which rows [`Store::usage_log`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this user's rows.
    pub user: Option<String>,
    /// Only rows at or after this time, in milliseconds since the Unix epoch.
    pub since_ms: Option<i64>,
    /// At most this many rows, the newest ones.
    pub limit: Option<u32>,
}

/// A row of the usage log as `logs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub id: i64,
    /// RFC 3339 arrival time.
    pub time: String,
    pub user: Option<String>,
    pub key_id: Option<i64>,
    pub agent_id: Option<String>,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub status: u16,
    pub latency_us: u64,
    pub ttfb_us: Option<u64>,
    #[serde(flatten)]
    pub usage: TokenUsage,
    pub outcome: String,
}

impl Store {
    /// Set this connection up for the usage writer: a small page cache, since rows are only
    /// appended, and commits without an fsync each.
    ///
    /// In WAL mode a commit at `synchronous = NORMAL` survives a crash of the process; only
    /// the last batches before a power loss can be lost, which a usage log can afford.
    pub fn tune_for_usage_writes(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -256)?;
        Ok(())
    }

    /// Write `records` in one transaction.
    pub fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO usage_log (at, user, key_id, agent_id, method, path, model, status,
                                        latency_us, ttfb_us, input_tokens, output_tokens,
                                        cache_creation_input_tokens, cache_read_input_tokens,
                                        outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for record in records {
                insert.execute(params![
                    record.at_ms,
                    record.user,
                    record.key_id,
                    record.agent_id,
                    record.method,
                    record.path,
                    record.model,
                    record.status,
                    clamp(record.latency_us),
                    record.ttfb_us.map(clamp),
                    record.usage.input_tokens.map(clamp),
                    record.usage.output_tokens.map(clamp),
                    record.usage.cache_creation_input_tokens.map(clamp),
                    record.usage.cache_read_input_tokens.map(clamp),
                    record.outcome.as_str(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Return the usage rows `query` selects, oldest first.
    pub fn usage_log(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.lock();
        // The newest `limit` rows are picked first, then put back in time order.
        let mut stmt = conn.prepare(
            "SELECT * FROM (
                 SELECT id, at, user, key_id, agent_id, method, path, model, status, latency_us,
                        ttfb_us, input_tokens, output_tokens, cache_creation_input_tokens,
                        cache_read_input_tokens, outcome
                 FROM usage_log
                 WHERE (?1 IS NULL OR user = ?1) AND (?2 IS NULL OR at >= ?2)
                 ORDER BY id DESC
                 LIMIT ?3
             ) ORDER BY id",
        )?;
        let limit = query.limit.map_or(-1, i64::from);
        let rows = stmt
            .query_map(params![query.user, query.since_ms, limit], read_usage)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// SQLite integers are signed; a count past `i64::MAX` cannot happen, but must not wrap.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn read_usage(row: &Row<'_>) -> rusqlite::Result<UsageRow> {
    let count = |index: usize| -> rusqlite::Result<Option<u64>> {
        let value: Option<i64> = row.get(index)?;
        Ok(value.map(|v| u64::try_from(v).unwrap_or(0)))
    };
    let status: i64 = row.get(8)?;
    Ok(UsageRow {
        id: row.get(0)?,
        time: rfc3339(row.get(1)?),
        user: row.get(2)?,
        key_id: row.get(3)?,
        agent_id: row.get(4)?,
        method: row.get(5)?,
        path: row.get(6)?,
        model: row.get(7)?,
        status: u16::try_from(status).unwrap_or(0),
        latency_us: count(9)?.unwrap_or(0),
        ttfb_us: count(10)?,
        usage: TokenUsage {
            input_tokens: count(11)?,
            output_tokens: count(12)?,
            cache_creation_input_tokens: count(13)?,
            cache_read_input_tokens: count(14)?,
        },
        outcome: row.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, at_ms: i64) -> UsageRecord {
        UsageRecord {
            at_ms,
            user: Some(user.into()),
            key_id: Some(1),
            agent_id: Some("anthropic_claude_code".into()),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            status: 200,
            latency_us: 1500,
            ttfb_us: Some(700),
            usage: TokenUsage {
                input_tokens: Some(12),
                output_tokens: Some(34),
                cache_creation_input_tokens: None,
                cache_read_input_tokens: Some(0),
            },
            outcome: Outcome::Completed,
        }
    }

    #[test]
    fn rows_come_back_filtered_and_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("proxy.db")).unwrap();
        store
            .insert_usage(&[
                record("ada@example.com", 1_000),
                record("bob@example.com", 2_000),
                record("ada@example.com", 3_000),
            ])
            .unwrap();

        let all = store.usage_log(&UsageQuery::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].usage.output_tokens, Some(34));
        assert_eq!(all[0].usage.cache_creation_input_tokens, None);
        assert_eq!(all[0].outcome, "completed");

        let ada = store
            .usage_log(&UsageQuery {
                user: Some("ada@example.com".into()),
                since_ms: Some(2_000),
                limit: None,
            })
            .unwrap();
        assert_eq!(ada.len(), 1);
        assert_eq!(ada[0].time, "1970-01-01T00:00:03Z");

        let newest = store
            .usage_log(&UsageQuery {
                limit: Some(2),
                ..UsageQuery::default()
            })
            .unwrap();
        let users: Vec<_> = newest.iter().map(|r| r.user.clone().unwrap()).collect();
        assert_eq!(users, ["bob@example.com", "ada@example.com"]);
    }
}

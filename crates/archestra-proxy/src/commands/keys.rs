//! `archestra-proxy keys list|revoke`: see and revoke the keys redemptions created.

use std::io::Write;

use anyhow::{Context, bail};
use archestra_proxy::{KeyRecord, RevokeOutcome, Store};

use super::resolve_db;
use crate::cli::{ListArgs, RevokeArgs};

/// Print the keys as a table, or as JSON with `--json`.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let store = open(&args.db)?;
    let keys = store
        .list_keys(args.user.as_deref())
        .context("could not list the keys")?;

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(&keys).context("could not encode the keys")?;
        writeln!(out, "{json}")?;
        return Ok(());
    }
    if keys.is_empty() {
        eprintln!("No virtual keys yet.");
        return Ok(());
    }
    write!(out, "{}", render_table(&keys))?;
    Ok(())
}

/// Revoke one key by id, or every key of a user.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let store = open(&args.db)?;
    if let Some(id) = args.id {
        match store.revoke_key(id).context("could not revoke the key")? {
            RevokeOutcome::Revoked => eprintln!("Revoked key {id}."),
            RevokeOutcome::AlreadyRevoked => eprintln!("Key {id} was already revoked."),
            RevokeOutcome::Unknown => {
                bail!("no key has id {id}; `archestra-proxy keys list` shows the ids")
            }
        }
    }
    if let Some(user) = &args.user {
        let count = store
            .revoke_user_keys(user)
            .context("could not revoke the keys")?;
        eprintln!("Revoked {count} active key(s) of {user}.");
    }
    Ok(())
}

fn open(db: &crate::cli::DbArg) -> anyhow::Result<Store> {
    let path = resolve_db(db)?;
    Store::open(&path).with_context(|| format!("could not open the store `{}`", path.display()))
}

/// Lay the keys out in aligned columns under a header.
fn render_table(keys: &[KeyRecord]) -> String {
    let header = ["ID", "USER", "NAME", "DEVICE", "KEY", "CREATED", "REVOKED"].map(String::from);
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|key| {
            [
                key.id.to_string(),
                key.user.clone(),
                key.name.clone(),
                key.device_name.clone().unwrap_or_else(|| "-".into()),
                key.masked.clone(),
                key.created_at.clone(),
                key.revoked_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use archestra_proxy::KeyKind;

    #[test]
    fn the_table_aligns_columns_and_marks_missing_values() {
        let key = KeyRecord {
            id: 7,
            user: "ada@example.com".into(),
            name: "Connection passthrough — ada@example.com".into(),
            kind: KeyKind::Passthrough,
            device_name: None,
            setup_id: 3,
            masked: "arch_…1a2b".into(),
            created_at: "2026-12-03T10:00:00Z".into(),
            revoked_at: None,
            revoked: false,
        };
        let table = render_table(&[key]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  USER             NAME"), "{table}");
        assert!(
            lines[1].starts_with("7   ada@example.com  Connection passthrough"),
            "{table}"
        );
        assert!(lines[1].ends_with("2026-12-03T10:00:00Z  -"), "{table}");
    }
}

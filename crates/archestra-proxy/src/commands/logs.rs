//! `archestra-proxy logs`: print the usage log as a table or as JSON.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use archestra_proxy::{Store, UsageQuery, UsageRow};

use super::resolve_db;
use crate::cli::LogsArgs;

/// Print the usage rows the flags select, oldest first.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let path = resolve_db(&args.db)?;
    let store = Store::open(&path)
        .with_context(|| format!("could not open the store `{}`", path.display()))?;
    let since_ms = args.since.map(|span| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let start = now.saturating_sub(span);
        i64::try_from(start.as_millis()).unwrap_or(i64::MAX)
    });
    let rows = store
        .usage_log(&UsageQuery {
            user: args.user,
            since_ms,
            limit: Some(args.limit),
        })
        .context("could not read the usage log")?;

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(&rows).context("could not encode the rows")?;
        writeln!(out, "{json}")?;
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("No requests in the usage log for this selection.");
        return Ok(());
    }
    write!(out, "{}", render_table(&rows))?;
    Ok(())
}

/// Lay the rows out in aligned columns under a header.
fn render_table(rows: &[UsageRow]) -> String {
    const HEADER: [&str; 13] = [
        "TIME", "USER", "KEY", "AGENT", "MODEL", "STATUS", "LATENCY", "TTFB", "IN", "OUT",
        "CACHE_W", "CACHE_R", "OUTCOME",
    ];
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let cells: Vec<[String; 13]> = rows
        .iter()
        .map(|row| {
            [
                row.time.clone(),
                row.user.clone().unwrap_or_else(|| "-".into()),
                row.key_id.map_or_else(|| "-".into(), |id| id.to_string()),
                row.agent_id.clone().unwrap_or_else(|| "-".into()),
                row.model.clone().unwrap_or_else(|| "-".into()),
                row.status.to_string(),
                millis(Some(row.latency_us)),
                millis(row.ttfb_us),
                count(row.usage.input_tokens),
                count(row.usage.output_tokens),
                count(row.usage.cache_creation_input_tokens),
                count(row.usage.cache_read_input_tokens),
                row.outcome.clone(),
            ]
        })
        .collect();
    let header = HEADER.map(String::from);
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut table = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(line.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// Show microseconds as milliseconds with one decimal, e.g. `12.3ms`.
fn millis(micros: Option<u64>) -> String {
    match micros {
        Some(us) => format!("{}.{}ms", us / 1000, (us % 1000) / 100),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archestra_proxy::TokenUsage;

    #[test]
    fn the_table_shows_times_in_milliseconds_and_marks_missing_values() {
        let row = UsageRow {
            id: 1,
            time: "2026-12-03T10:00:00.123Z".into(),
            user: Some("ada@example.com".into()),
            key_id: Some(4),
            agent_id: Some("anthropic_claude_code".into()),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            status: 200,
            latency_us: 1_234_567,
            ttfb_us: Some(45_600),
            usage: TokenUsage {
                input_tokens: Some(10),
                output_tokens: Some(20),
                cache_creation_input_tokens: None,
                cache_read_input_tokens: Some(0),
            },
            outcome: "completed".into(),
        };
        let table = render_table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIME  "), "{table}");
        assert!(lines[1].contains("1234.5ms"), "{table}");
        assert!(lines[1].contains("45.6ms"), "{table}");
        assert!(lines[1].contains("  10  "), "{table}");
        assert!(lines[1].ends_with("completed"), "{table}");
    }
}

//! Durations on the command line: `90s`, `15m`, `2h`, `1d`.

use std::time::Duration;

use archestra_proxy::MAX_TTL;
use thiserror::Error;

/// Why a duration was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TtlError {
    #[error("`{0}` is not a duration; write a whole number and a unit, such as 90s, 15m, 2h or 1d")]
    Malformed(String),
    #[error("`{0}` is not a unit; use s, m, h or d")]
    UnknownUnit(String),
    #[error("a duration of zero would expire at once")]
    Zero,
    #[error("`{0}` is longer than 7 days, the longest a setup may stay valid")]
    TooLong(String),
}

/// Parse the lifetime of a setup: a whole number and one of `s`, `m`, `h`, `d`, from one
/// second up to seven days.
pub fn parse_ttl(text: &str) -> Result<Duration, TtlError> {
    let span = parse_span(text)?;
    if span > MAX_TTL {
        return Err(TtlError::TooLong(text.to_string()));
    }
    Ok(span)
}

/// Parse how far back `logs --since` looks: a whole number and one of `s`, `m`, `h`, `d`.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    parse_span(text).map_err(|err| match err {
        TtlError::TooLong(_) => format!("`{text}` is too long a time"),
        other => other.to_string(),
    })
}

/// Parse a whole number and a unit into a non-zero duration.
fn parse_span(text: &str) -> Result<Duration, TtlError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || unit.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(TtlError::Malformed(text.to_string()));
    }
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        other => return Err(TtlError::UnknownUnit(other.to_string())),
    };
    // A number too large for u64 is certainly longer than seven days.
    let count: u64 = number
        .parse()
        .map_err(|_| TtlError::TooLong(text.to_string()))?;
    let seconds = count
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| TtlError::TooLong(text.to_string()))?;
    if seconds == 0 {
        return Err(TtlError::Zero);
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("7d"), Ok(MAX_TTL));
        assert_eq!(parse_ttl(" 1s "), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn refuses_zero_and_more_than_a_week() {
        assert_eq!(parse_ttl("0m"), Err(TtlError::Zero));
        assert!(matches!(parse_ttl("8d"), Err(TtlError::TooLong(_))));
        assert!(matches!(parse_ttl("604801s"), Err(TtlError::TooLong(_))));
        assert!(matches!(
            parse_ttl("99999999999999999999999d"),
            Err(TtlError::TooLong(_))
        ));
        assert!(matches!(
            parse_ttl("18446744073709551615d"),
            Err(TtlError::TooLong(_))
        ));
    }

    #[test]
    fn since_accepts_more_than_a_week() {
        assert_eq!(parse_since("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_since("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_since("3w").unwrap_err().contains("not a unit"));
    }

    #[test]
    fn refuses_missing_or_unknown_units() {
        for text in ["", "15", "m", "-5m", "1.5h", "1 h"] {
            assert!(
                matches!(parse_ttl(text), Err(TtlError::Malformed(_))),
                "{text:?}"
            );
        }
        assert_eq!(parse_ttl("3w"), Err(TtlError::UnknownUnit("w".into())));
        assert_eq!(parse_ttl("10min"), Err(TtlError::UnknownUnit("min".into())));
    }
}

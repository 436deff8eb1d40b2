//! Secrets that cannot be printed by accident, and masking for the places that show them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string that must never reach a log, an error message or `Debug` output whole.
///
/// `Debug` and `Display` show the masked form; [`Secret::expose`] is the one way to the
/// value, so every use of the raw secret is visible in the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Return the raw value; call this only where the secret is meant to go.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Return the masked form, safe to show.
    pub fn masked(&self) -> String {
        mask_secret(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Prefixes kept visible when masking, longest first so the most specific one wins.
const KNOWN_PREFIXES: [&str; 7] = [
    "archestra_con_",
    "archestra_mkt_",
    "archestra_skl_",
    "archestra_",
    "sk-ant-",
    "arch_",
    "sk-",
];

/// Mask a secret as its prefix and last four characters, e.g. `arch_…9f3c`.
///
/// A value too short to keep four characters hidden is masked whole.
pub fn mask_secret(secret: &str) -> String {
    let prefix = KNOWN_PREFIXES
        .iter()
        .find(|p| secret.starts_with(**p))
        .copied()
        .unwrap_or("");
    let rest = &secret[prefix.len()..];
    let chars: Vec<char> = rest.chars().collect();
    if chars.len() < 12 {
        return format!("{prefix}…");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}…{tail}")
}

/// Return `url` with its credentials masked: the user part, and any path segment or query
/// value that is an Archestra token or key.
///
/// Text that does not parse as a URL is masked whole unless it holds nothing secret-shaped.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return if looks_secret(url) {
            mask_secret(url)
        } else {
            url.to_string()
        };
    };
    if !parsed.username().is_empty() {
        let masked = mask_secret(&percent_decode(parsed.username()));
        let _ = parsed.set_username(&masked);
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("…"));
    }
    let segments: Option<Vec<String>> = parsed.path_segments().map(|segments| {
        segments
            .map(|s| {
                if looks_secret(s) {
                    mask_secret(s)
                } else {
                    s.to_string()
                }
            })
            .collect()
    });
    if let Some(segments) = segments {
        parsed.set_path(&segments.join("/"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if looks_secret(&v) {
                    mask_secret(&v)
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // `Url` percent-encodes the ellipsis; show it as written.
    parsed.to_string().replace("%E2%80%A6", "…")
}

fn looks_secret(text: &str) -> bool {
    KNOWN_PREFIXES[..6].iter().any(|p| text.starts_with(p))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_prefix_and_last_four() {
        let key = format!("arch_{}", "ab12".repeat(16));
        assert_eq!(mask_secret(&key), "arch_…ab12");
        assert_eq!(
            mask_secret("sk-ant-api03-abcdefghijklmnopWXYZ"),
            "sk-ant-…WXYZ"
        );
    }

    #[test]
    fn masks_short_values_whole() {
        assert_eq!(mask_secret("hunter2"), "…");
        assert_eq!(mask_secret("arch_short"), "arch_…");
    }

    #[test]
    fn secret_debug_never_shows_value() {
        let s = Secret::new("archestra_con_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let shown = format!("{s:?} {s}");
        assert!(!shown.contains("AAAAAAAAAAAA"), "{shown}");
    }

    #[test]
    fn redacts_token_in_path_and_userinfo() {
        let token = "archestra_con_0123456789abcdefghijABCDEFGHIJ-_xyz";
        let url = format!("https://h.example/api/connection-setups/script/{token}");
        let shown = redact_url(&url);
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.ends_with("archestra_con_…_xyz"), "{shown}");

        let clone = "https://archestra_mkt_supersecretvalue1234@h.example/skills/marketplace.git";
        let shown = redact_url(clone);
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(
            shown.contains("h.example/skills/marketplace.git"),
            "{shown}"
        );

        let with_password = "https://user:pa55word@h.example/x";
        assert!(!redact_url(with_password).contains("pa55word"));
    }

    #[test]
    fn leaves_plain_urls_alone() {
        let url = "https://h.example/v1/mcp/prod-gateway";
        assert_eq!(redact_url(url), url);
    }
}

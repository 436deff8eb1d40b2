//! Validation of setup payloads: what both programs refuse before anything is done with it.
//!
//! Every value ends up in a `claude` argument or in settings.json. Nothing here runs through
//! a shell, but a name that looks like a flag would still be read as one by `claude`, and a
//! value with control characters could forge a header line, so both are refused outright.

use thiserror::Error;

use crate::payload::{AuthMode, SetupPayload};
use crate::{
    ARCHESTRA_KEY_PREFIXES, CLIENT_ID_CLAUDE_CODE, SETUP_TOKEN_PREFIX, VIRTUAL_KEY_PREFIX,
};

/// Largest setup payload accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

const MAX_NAME_LEN: usize = 64;
const MAX_URL_LEN: usize = 2048;
const MAX_TEXT_LEN: usize = 200;
const MAX_LIST_LEN: usize = 32;

/// Characters no URL in a payload may hold: they mean nothing in a URL we would use and
/// everything to a shell that might one day see it.
const SHELL_CHARS: &[char] = &[
    '\'', '"', '`', '$', ';', '|', '&', '<', '>', '\\', '(', ')', '{', '}', '*', '!', ' ',
];

/// Why a payload, or one of its values, was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("`{field}` is empty")]
    Empty { field: String },
    #[error("`{field}` is too long ({len} characters; at most {max})")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("`{field}` starts with `-` and would be read as a command-line flag")]
    FlagLike { field: String },
    #[error("`{field}` holds a control character")]
    ControlChar { field: String },
    #[error("`{field}` holds `{ch}`; only letters, digits, `_`, `.` and `-` are allowed")]
    BadNameChar { field: String, ch: char },
    #[error("`{field}` is not a URL: {reason}")]
    BadUrl { field: String, reason: String },
    #[error("`{field}` uses the `{scheme}` scheme; only http and https are allowed")]
    BadScheme { field: String, scheme: String },
    #[error("`{field}` holds `{ch}`, which has no place in a setup URL")]
    ShellChar { field: String, ch: char },
    #[error("`{field}` has {len} entries; at most {max} are allowed")]
    TooMany {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("`{field}` is not an Archestra virtual key")]
    BadKey { field: String },
    #[error("`clientId` is `{0}`, but this installer only sets up `claude-code`")]
    WrongClient(String),
    #[error("{0}")]
    Inconsistent(String),
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), PayloadError> {
    if value.trim().is_empty() {
        return Err(PayloadError::Empty {
            field: field.into(),
        });
    }
    let len = value.chars().count();
    if len > max {
        return Err(PayloadError::TooLong {
            field: field.into(),
            len,
            max,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(PayloadError::ControlChar {
            field: field.into(),
        });
    }
    Ok(())
}

/// Check a marketplace or plugin name: `[A-Za-z0-9_.-]+`, never starting with `-`.
pub fn validate_name(field: &str, value: &str) -> Result<(), PayloadError> {
    check_name(field, value, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    })
}

/// Check an MCP server name, which Claude Code limits further to `[A-Za-z0-9_-]+`.
pub fn validate_server_name(field: &str, value: &str) -> Result<(), PayloadError> {
    check_name(field, value, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
    })
}

fn check_name(field: &str, value: &str, allowed: fn(char) -> bool) -> Result<(), PayloadError> {
    check_text(field, value, MAX_NAME_LEN)?;
    if value.starts_with('-') {
        return Err(PayloadError::FlagLike {
            field: field.into(),
        });
    }
    if let Some(ch) = value.chars().find(|c| !allowed(*c)) {
        return Err(PayloadError::BadNameChar {
            field: field.into(),
            ch,
        });
    }
    Ok(())
}

/// Check a URL: http or https, a host, no control or shell characters, at most 2048 long.
pub fn validate_url(field: &str, value: &str) -> Result<(), PayloadError> {
    check_text(field, value, MAX_URL_LEN)?;
    if value.starts_with('-') {
        return Err(PayloadError::FlagLike {
            field: field.into(),
        });
    }
    if let Some(ch) = value.chars().find(|c| SHELL_CHARS.contains(c)) {
        return Err(PayloadError::ShellChar {
            field: field.into(),
            ch,
        });
    }
    let parsed = url::Url::parse(value).map_err(|e| PayloadError::BadUrl {
        field: field.into(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(PayloadError::BadScheme {
            field: field.into(),
            scheme: parsed.scheme().into(),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(PayloadError::BadUrl {
            field: field.into(),
            reason: "it has no host".into(),
        });
    }
    if parsed.fragment().is_some() {
        return Err(PayloadError::BadUrl {
            field: field.into(),
            reason: "it has a `#` fragment".into(),
        });
    }
    Ok(())
}

fn validate_key(field: &str, value: &str) -> Result<(), PayloadError> {
    let body = value.strip_prefix(VIRTUAL_KEY_PREFIX).unwrap_or("");
    let ok = (32..=128).contains(&body.len()) && body.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(PayloadError::BadKey {
            field: field.into(),
        })
    }
}

fn check_list_len(field: &str, len: usize) -> Result<(), PayloadError> {
    if len > MAX_LIST_LEN {
        return Err(PayloadError::TooMany {
            field: field.into(),
            len,
            max: MAX_LIST_LEN,
        });
    }
    Ok(())
}

/// Tell whether `text` has the shape of a one-time setup token.
pub fn is_setup_token(text: &str) -> bool {
    text.strip_prefix(SETUP_TOKEN_PREFIX).is_some_and(|rest| {
        (32..=43).contains(&rest.len())
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// Tell whether `value` is an Archestra key, current (`arch_`) or legacy (`archestra_`).
pub fn is_archestra_key(value: &str) -> bool {
    ARCHESTRA_KEY_PREFIXES.iter().any(|p| value.starts_with(p))
}

impl SetupPayload {
    /// Check every field; the first problem found is returned.
    ///
    /// A payload that passes is safe to turn into `claude` arguments and settings values.
    pub fn validate(&self) -> Result<(), PayloadError> {
        if self.client_id != CLIENT_ID_CLAUDE_CODE {
            let mut shown: String = self.client_id.chars().take(40).collect();
            shown.retain(|c| !c.is_control());
            return Err(PayloadError::WrongClient(shown));
        }
        check_text("appName", &self.app_name, MAX_TEXT_LEN)?;
        if let Some(url) = &self.health_url {
            validate_url("healthUrl", url)?;
        }

        if let Some(mcp) = &self.mcp {
            validate_server_name("mcp.serverName", &mcp.server_name)?;
            validate_url("mcp.url", &mcp.url)?;
            check_list_len("mcp.legacyServerNames", mcp.legacy_server_names.len())?;
            for name in &mcp.legacy_server_names {
                validate_server_name("mcp.legacyServerNames", name)?;
            }
        }

        if let Some(proxy) = &self.proxy {
            validate_url("proxy.url", &proxy.url)?;
            if let Some(name) = &proxy.virtual_key_name {
                check_text("proxy.virtualKeyName", name, MAX_TEXT_LEN)?;
            }
            match proxy.auth_mode {
                AuthMode::VirtualKey => {
                    let key = proxy.virtual_key.as_ref().ok_or_else(|| {
                        PayloadError::Inconsistent(
                            "virtual-key mode needs `proxy.virtualKey`, and the payload has none"
                                .into(),
                        )
                    })?;
                    validate_key("proxy.virtualKey", key.expose())?;
                    if proxy.passthrough_virtual_key.is_some() {
                        return Err(PayloadError::Inconsistent(
                            "virtual-key mode carries no `proxy.passthroughVirtualKey`".into(),
                        ));
                    }
                }
                AuthMode::ProviderKey => {
                    if proxy.virtual_key.is_some() {
                        return Err(PayloadError::Inconsistent(
                            "provider-key mode carries no `proxy.virtualKey`".into(),
                        ));
                    }
                    if let Some(key) = &proxy.passthrough_virtual_key {
                        validate_key("proxy.passthroughVirtualKey", key.expose())?;
                    }
                }
            }
        }

        if let Some(skills) = &self.skills {
            validate_url("skills.cloneUrl", skills.clone_url.expose())?;
            validate_name("skills.marketplaceName", &skills.marketplace_name)?;
            check_list_len("skills.pluginNames", skills.plugin_names.len())?;
            for name in &skills.plugin_names {
                validate_name("skills.pluginNames", name)?;
            }
        }

        if self.mcp.is_none() && self.proxy.is_none() && self.skills.is_none() {
            return Err(PayloadError::Inconsistent(
                "the payload selects nothing to set up".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{McpSection, Provider, ProxySection, SkillsSection};
    use crate::secret::Secret;

    fn key() -> String {
        format!("arch_{}", "0f".repeat(32))
    }

    fn payload() -> SetupPayload {
        SetupPayload {
            client_id: "claude-code".into(),
            app_name: "Archestra".into(),
            mcp: Some(McpSection {
                server_name: "archestra".into(),
                url: "https://h.example/v1/mcp/default".into(),
                legacy_server_names: vec!["old_name".into()],
            }),
            proxy: Some(ProxySection {
                auth_mode: AuthMode::ProviderKey,
                provider: Provider::Anthropic,
                url: "https://h.example/v1/anthropic".into(),
                virtual_key: None,
                virtual_key_name: Some("Connection passthrough — a@b.c".into()),
                passthrough_virtual_key: Some(Secret::new(key())),
            }),
            skills: Some(SkillsSection {
                clone_url: Secret::new("https://h.example/skills/marketplace.git"),
                marketplace_name: "acme-skills".into(),
                has_skills: true,
                plugin_names: vec!["extra".into()],
            }),
            health_url: Some("https://h.example/v1/health".into()),
        }
    }

    #[test]
    fn accepts_a_well_formed_payload() {
        payload().validate().unwrap();
    }

    #[test]
    fn refuses_flag_like_names() {
        let mut p = payload();
        p.mcp.as_mut().unwrap().server_name = "--scope".into();
        assert!(matches!(p.validate(), Err(PayloadError::FlagLike { .. })));

        let mut p = payload();
        p.skills.as_mut().unwrap().plugin_names = vec!["-x".into()];
        assert!(matches!(p.validate(), Err(PayloadError::FlagLike { .. })));
    }

    #[test]
    fn refuses_shell_and_control_characters() {
        let mut p = payload();
        p.mcp.as_mut().unwrap().url = "https://h.example/$(touch /tmp/x)".into();
        assert!(matches!(p.validate(), Err(PayloadError::ShellChar { .. })));

        let mut p = payload();
        p.app_name = "Arch\nestra".into();
        assert!(matches!(
            p.validate(),
            Err(PayloadError::ControlChar { .. })
        ));

        let mut p = payload();
        p.mcp.as_mut().unwrap().server_name = "a;b".into();
        assert!(matches!(
            p.validate(),
            Err(PayloadError::BadNameChar { .. })
        ));
    }

    #[test]
    fn refuses_other_schemes_and_huge_fields() {
        for url in [
            "file:///etc/passwd",
            "ssh://h.example/x",
            "javascript:alert(1)",
        ] {
            let mut p = payload();
            p.proxy.as_mut().unwrap().url = url.into();
            assert!(p.validate().is_err(), "{url}");
        }
        let mut p = payload();
        p.proxy.as_mut().unwrap().url = format!("https://h.example/{}", "a".repeat(3000));
        assert!(matches!(p.validate(), Err(PayloadError::TooLong { .. })));
    }

    #[test]
    fn refuses_keys_of_the_wrong_shape_or_mode() {
        let mut p = payload();
        p.proxy.as_mut().unwrap().passthrough_virtual_key = Some(Secret::new("sk-ant-x"));
        assert!(matches!(p.validate(), Err(PayloadError::BadKey { .. })));

        let mut p = payload();
        p.proxy.as_mut().unwrap().auth_mode = AuthMode::VirtualKey;
        assert!(matches!(p.validate(), Err(PayloadError::Inconsistent(_))));
    }

    #[test]
    fn refuses_an_empty_selection_and_other_clients() {
        let mut p = payload();
        p.mcp = None;
        p.proxy = None;
        p.skills = None;
        assert!(p.validate().is_err());

        let mut p = payload();
        p.client_id = "cursor".into();
        assert!(matches!(p.validate(), Err(PayloadError::WrongClient(_))));
    }

    #[test]
    fn recognises_token_shapes() {
        assert!(is_setup_token(&format!("archestra_con_{}", "A".repeat(32))));
        assert!(!is_setup_token("archestra_con_short"));
        assert!(!is_setup_token(&format!(
            "archestra_con_{}$",
            "A".repeat(32)
        )));
        assert!(is_archestra_key("arch_abc"));
        assert!(!is_archestra_key("sk-ant-abc"));
    }
}

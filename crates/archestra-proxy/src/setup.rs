//! What a setup selects: checked once when it is minted, turned into a payload when redeemed.
//!
//! Minting refuses anything the installer would refuse later, so a bad value is reported to
//! the admin who typed it rather than to the user who runs the command. The assembled payload
//! is validated with [`SetupPayload::validate`] at both ends.

use std::time::Duration;

use archestra_wire::{
    AuthMode, CLIENT_ID_CLAUDE_CODE, CreateSetupRequest, HEALTH_PATH, McpSection, PayloadError,
    Provider, ProxySection, Secret, SetupPayload, SkillsSection, validate_name,
    validate_server_name, validate_url,
};
use serde::Serialize;
use thiserror::Error;

use crate::skills::credential::resolve_clone_url;

/// Lifetime of a setup token when none is asked for, as in Archestra.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// Longest lifetime a setup token may be given.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Name the MCP gateway is registered under when none is given.
pub const DEFAULT_MCP_NAME: &str = "archestra";

/// Display name of the deployment in payloads.
pub const DEFAULT_APP_NAME: &str = "Archestra";

/// Origin written into setups minted without a running server.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8787";

const MAX_USER_LEN: usize = 254;
const MAX_PLUGINS: usize = 32;

/// A value of a setup request, named as the person who sent it knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    User,
    McpUrl,
    McpName,
    SkillsUrl,
    Marketplace,
    Plugins,
    Ttl,
    PublicUrl,
}

/// How error messages name the fields: as JSON body fields or as command-line flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldNames {
    Json,
    Flags,
}

impl FieldNames {
    /// Return the name of `field` in this naming.
    pub fn of(self, field: Field) -> &'static str {
        match (self, field) {
            (FieldNames::Json, Field::User) => "user",
            (FieldNames::Json, Field::McpUrl) => "mcpUrl",
            (FieldNames::Json, Field::McpName) => "mcpName",
            (FieldNames::Json, Field::SkillsUrl) => "skillsUrl",
            (FieldNames::Json, Field::Marketplace) => "marketplace",
            (FieldNames::Json, Field::Plugins) => "plugins",
            (FieldNames::Json, Field::Ttl) => "ttlSeconds",
            (FieldNames::Json, Field::PublicUrl) => "publicUrl",
            (FieldNames::Flags, Field::User) => "--user",
            (FieldNames::Flags, Field::McpUrl) => "--mcp-url",
            (FieldNames::Flags, Field::McpName) => "--mcp-name",
            (FieldNames::Flags, Field::SkillsUrl) => "--skills-url",
            (FieldNames::Flags, Field::Marketplace) => "--marketplace",
            (FieldNames::Flags, Field::Plugins) => "--plugin",
            (FieldNames::Flags, Field::Ttl) => "--ttl",
            (FieldNames::Flags, Field::PublicUrl) => "--public-url",
        }
    }
}

/// Why a setup request was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SetupError {
    #[error(transparent)]
    Invalid(#[from] PayloadError),
    #[error("`{field}` is not an e-mail address: {reason}")]
    BadUser { field: &'static str, reason: String },
    #[error("`{field}` must be at least one second")]
    ZeroTtl { field: &'static str },
    #[error("`{field}` is {seconds} seconds; at most 7 days (604800 seconds) are allowed")]
    TtlTooLong { field: &'static str, seconds: u64 },
    #[error("`{needs}` is required with `{with}`")]
    Missing {
        needs: &'static str,
        with: &'static str,
    },
    #[error("`{field}` was given without `{needs}`, so it would be ignored")]
    Orphan {
        field: &'static str,
        needs: &'static str,
    },
    #[error("`{field}` must be a bare origin such as `https://archestra.example.com`: {reason}")]
    BadOrigin { field: &'static str, reason: String },
}

/// The kind of virtual key a setup hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Attributes traffic made with the user's own provider credential.
    Passthrough,
    /// Stands in for a provider key that the proxy holds.
    Standard,
}

impl KeyKind {
    /// Return the name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Passthrough => "passthrough",
            KeyKind::Standard => "standard",
        }
    }

    /// Parse a name stored in the database.
    pub fn parse(text: &str) -> Option<KeyKind> {
        match text {
            "passthrough" => Some(KeyKind::Passthrough),
            "standard" => Some(KeyKind::Standard),
            _ => None,
        }
    }
}

/// The MCP gateway a setup registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpChoice {
    pub name: String,
    pub url: String,
}

/// The skills marketplace a setup adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillsChoice {
    /// Git URL of the marketplace; it may carry a credential, so it is kept masked.
    pub clone_url: Secret,
    pub marketplace: String,
    pub plugins: Vec<String>,
}

/// A checked setup request, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupSpec {
    pub user: String,
    pub mode: AuthMode,
    pub provider: Provider,
    pub mcp: Option<McpChoice>,
    pub skills: Option<SkillsChoice>,
    /// Origin the payload's URLs are built on, without a trailing slash.
    pub public_url: String,
    pub ttl: Duration,
}

impl SetupSpec {
    /// Check a setup request and normalise it; errors name fields as `names` says.
    pub fn from_request(
        req: &CreateSetupRequest,
        public_url: &str,
        names: FieldNames,
    ) -> Result<SetupSpec, SetupError> {
        let name = |field| names.of(field);

        validate_user(name(Field::User), &req.user)?;
        let public_url = normalize_origin(name(Field::PublicUrl), public_url)?;

        let ttl = match req.ttl_seconds {
            None => DEFAULT_TTL,
            Some(0) => {
                return Err(SetupError::ZeroTtl {
                    field: name(Field::Ttl),
                });
            }
            Some(seconds) if seconds > MAX_TTL.as_secs() => {
                return Err(SetupError::TtlTooLong {
                    field: name(Field::Ttl),
                    seconds,
                });
            }
            Some(seconds) => Duration::from_secs(seconds),
        };

        let mcp = match (&req.mcp_url, &req.mcp_name) {
            (Some(url), server_name) => {
                validate_url(name(Field::McpUrl), url)?;
                let server_name = server_name.as_deref().unwrap_or(DEFAULT_MCP_NAME);
                validate_server_name(name(Field::McpName), server_name)?;
                Some(McpChoice {
                    name: server_name.to_string(),
                    url: url.clone(),
                })
            }
            (None, Some(_)) => {
                return Err(SetupError::Orphan {
                    field: name(Field::McpName),
                    needs: name(Field::McpUrl),
                });
            }
            (None, None) => None,
        };

        let skills = match &req.skills_url {
            Some(clone_url) => {
                let clone_url = &resolve_clone_url(clone_url, &public_url);
                validate_url(name(Field::SkillsUrl), clone_url)?;
                let marketplace = req.marketplace.as_deref().ok_or(SetupError::Missing {
                    needs: name(Field::Marketplace),
                    with: name(Field::SkillsUrl),
                })?;
                validate_name(name(Field::Marketplace), marketplace)?;
                let plugins = checked_plugins(name(Field::Plugins), &req.plugins)?;
                Some(SkillsChoice {
                    clone_url: Secret::new(clone_url.clone()),
                    marketplace: marketplace.to_string(),
                    plugins,
                })
            }
            None => {
                let orphan = if req.marketplace.is_some() {
                    Some(Field::Marketplace)
                } else if !req.plugins.is_empty() {
                    Some(Field::Plugins)
                } else {
                    None
                };
                if let Some(field) = orphan {
                    return Err(SetupError::Orphan {
                        field: name(field),
                        needs: name(Field::SkillsUrl),
                    });
                }
                None
            }
        };

        let spec = SetupSpec {
            user: req.user.clone(),
            mode: req.mode,
            provider: req.provider,
            mcp,
            skills,
            public_url,
            ttl,
        };

        // The pieces passed one by one; the assembled payload is what the installer will
        // check, so check it too, with a stand-in key of the real shape.
        let stand_in = Secret::new(format!("arch_{}", "0".repeat(64)));
        spec.payload(DEFAULT_APP_NAME, &stand_in).validate()?;
        Ok(spec)
    }

    /// Return the kind of key a redemption of this setup creates.
    pub fn key_kind(&self) -> KeyKind {
        match self.mode {
            AuthMode::ProviderKey => KeyKind::Passthrough,
            AuthMode::VirtualKey => KeyKind::Standard,
        }
    }

    /// Return the display name of the key a redemption creates, as Archestra names it.
    pub fn key_name(&self) -> String {
        match self.key_kind() {
            KeyKind::Passthrough => format!("Connection passthrough — {}", self.user),
            KeyKind::Standard => format!("Connection setup — {}", self.user),
        }
    }

    /// Assemble the payload the installer receives, carrying `key` for this machine.
    pub fn payload(&self, app_name: &str, key: &Secret) -> SetupPayload {
        let provider_path = match self.provider {
            Provider::Anthropic => "/v1/anthropic",
            Provider::Bedrock => "/v1/bedrock",
        };
        let (virtual_key, passthrough_virtual_key) = match self.mode {
            AuthMode::VirtualKey => (Some(key.clone()), None),
            AuthMode::ProviderKey => (None, Some(key.clone())),
        };
        SetupPayload {
            client_id: CLIENT_ID_CLAUDE_CODE.to_string(),
            app_name: app_name.to_string(),
            mcp: self.mcp.as_ref().map(|mcp| McpSection {
                server_name: mcp.name.clone(),
                url: mcp.url.clone(),
                legacy_server_names: Vec::new(),
            }),
            proxy: Some(ProxySection {
                auth_mode: self.mode,
                provider: self.provider,
                url: format!("{}{provider_path}", self.public_url),
                virtual_key,
                virtual_key_name: Some(self.key_name()),
                passthrough_virtual_key,
            }),
            skills: self.skills.as_ref().map(|skills| SkillsSection {
                clone_url: skills.clone_url.clone(),
                marketplace_name: skills.marketplace.clone(),
                has_skills: true,
                plugin_names: skills.plugins.clone(),
            }),
            health_url: Some(format!("{}{HEALTH_PATH}", self.public_url)),
        }
    }
}

/// Check that `user` looks like an e-mail address: one `@`, plain characters, bounded length.
///
/// Stricter than RFC 5322 on purpose: the address ends up in key names and listings, and
/// nobody's work address needs quotes, spaces or non-ASCII characters there.
pub fn validate_user(field: &'static str, user: &str) -> Result<(), SetupError> {
    let bad = |reason: &str| SetupError::BadUser {
        field,
        reason: reason.to_string(),
    };
    if user.is_empty() {
        return Err(bad("it is empty"));
    }
    if user.chars().count() > MAX_USER_LEN {
        return Err(bad(&format!("it is longer than {MAX_USER_LEN} characters")));
    }
    if user.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    if user.starts_with('-') {
        return Err(bad("it starts with `-`"));
    }
    let Some((local, domain)) = user.split_once('@') else {
        return Err(bad("it has no `@`"));
    };
    if domain.contains('@') {
        return Err(bad("it has more than one `@`"));
    }
    if local.is_empty() || domain.is_empty() {
        return Err(bad("it needs text on both sides of the `@`"));
    }
    let local_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    if let Some(ch) = local.chars().find(|c| !local_ok(*c)) {
        return Err(bad(&format!("`{}` is not allowed", ch.escape_default())));
    }
    let domain_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    if let Some(ch) = domain.chars().find(|c| !domain_ok(*c)) {
        return Err(bad(&format!("`{}` is not allowed", ch.escape_default())));
    }
    Ok(())
}

/// Check a public origin and return it without a trailing slash.
pub fn normalize_origin(field: &'static str, origin: &str) -> Result<String, SetupError> {
    let trimmed = origin.trim_end_matches('/');
    validate_url(field, trimmed)?;
    let parsed = url::Url::parse(trimmed).map_err(|e| SetupError::BadOrigin {
        field,
        reason: e.to_string(),
    })?;
    if parsed.query().is_some() {
        return Err(SetupError::BadOrigin {
            field,
            reason: "it has a query string".into(),
        });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SetupError::BadOrigin {
            field,
            reason: "it carries credentials".into(),
        });
    }
    Ok(trimmed.to_string())
}

fn checked_plugins(field: &'static str, plugins: &[String]) -> Result<Vec<String>, SetupError> {
    if plugins.len() > MAX_PLUGINS {
        return Err(PayloadError::TooMany {
            field: field.into(),
            len: plugins.len(),
            max: MAX_PLUGINS,
        }
        .into());
    }
    let mut kept: Vec<String> = Vec::with_capacity(plugins.len());
    for plugin in plugins {
        validate_name(field, plugin)?;
        if !kept.contains(plugin) {
            kept.push(plugin.clone());
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateSetupRequest {
        crate::test_support::request("ada@example.com")
    }

    fn spec(req: &CreateSetupRequest) -> Result<SetupSpec, SetupError> {
        SetupSpec::from_request(req, "https://archestra.example.com/", FieldNames::Flags)
    }

    #[test]
    fn defaults_give_a_fifteen_minute_passthrough_setup() {
        let spec = spec(&request()).unwrap();
        assert_eq!(spec.ttl, DEFAULT_TTL);
        assert_eq!(spec.public_url, "https://archestra.example.com");
        assert_eq!(spec.key_kind(), KeyKind::Passthrough);
        assert_eq!(spec.key_name(), "Connection passthrough — ada@example.com");
        assert!(spec.mcp.is_none() && spec.skills.is_none());
    }

    #[test]
    fn passthrough_payload_carries_the_key_as_attribution_only() {
        let key = Secret::new(format!("arch_{}", "ab".repeat(32)));
        let payload = spec(&request()).unwrap().payload("Archestra", &key);
        payload.validate().unwrap();
        let proxy = payload.proxy.unwrap();
        assert_eq!(proxy.auth_mode, AuthMode::ProviderKey);
        assert_eq!(proxy.url, "https://archestra.example.com/v1/anthropic");
        assert_eq!(proxy.passthrough_virtual_key, Some(key));
        assert_eq!(proxy.virtual_key, None);
        assert_eq!(
            payload.health_url.as_deref(),
            Some("https://archestra.example.com/v1/health")
        );
    }

    #[test]
    fn virtual_key_mode_on_bedrock_hands_out_a_standard_key() {
        let mut req = request();
        req.mode = AuthMode::VirtualKey;
        req.provider = Provider::Bedrock;
        let spec = spec(&req).unwrap();
        assert_eq!(spec.key_name(), "Connection setup — ada@example.com");
        let key = Secret::new(format!("arch_{}", "cd".repeat(32)));
        let proxy = spec.payload("Archestra", &key).proxy.unwrap();
        assert_eq!(proxy.url, "https://archestra.example.com/v1/bedrock");
        assert_eq!(proxy.virtual_key, Some(key));
        assert_eq!(proxy.passthrough_virtual_key, None);
    }

    #[test]
    fn mcp_and_skills_sections_follow_the_request() {
        let mut req = request();
        req.mcp_url = Some("https://archestra.example.com/v1/mcp/default".into());
        req.skills_url = Some("https://archestra.example.com/skills/marketplace.git".into());
        req.marketplace = Some("acme-skills".into());
        req.plugins = vec!["review".into(), "review".into(), "deploy".into()];
        let spec = spec(&req).unwrap();
        assert_eq!(spec.mcp.as_ref().unwrap().name, DEFAULT_MCP_NAME);
        assert_eq!(spec.skills.as_ref().unwrap().plugins, ["review", "deploy"]);
    }

    #[test]
    fn hostile_values_are_refused_naming_the_flag() {
        type Change = fn(&mut CreateSetupRequest);
        let cases: Vec<(Change, &str)> = vec![
            (
                |r| {
                    r.mcp_url = Some("https://h.example/mcp".into());
                    r.mcp_name = Some("--scope".into());
                },
                "`--mcp-name` starts with `-`",
            ),
            (
                |r| r.mcp_url = Some("file:///x".into()),
                "`--mcp-url` uses the `file` scheme",
            ),
            (
                |r| r.mcp_url = Some("https://h/$(id)".into()),
                "`--mcp-url` holds `$`",
            ),
            (
                |r| {
                    r.skills_url = Some("https://h.example/m.git".into());
                    r.marketplace = Some("m".into());
                    r.plugins = vec!["a;b".into()];
                },
                "`--plugin` holds `;`",
            ),
            (
                |r| r.user = "ada\n@example.com".into(),
                "`--user` is not an e-mail address",
            ),
            (
                |r| r.user = format!("{}@example.com", "a".repeat(300)),
                "`--user`",
            ),
            (
                |r| r.mcp_url = Some(format!("https://h.example/{}", "a".repeat(3000))),
                "`--mcp-url` is too long",
            ),
            (
                |r| r.ttl_seconds = Some(0),
                "`--ttl` must be at least one second",
            ),
            (
                |r| r.ttl_seconds = Some(8 * 86400),
                "`--ttl` is 691200 seconds",
            ),
            (
                |r| r.skills_url = Some("https://h.example/m.git".into()),
                "`--marketplace` is required",
            ),
            (
                |r| r.plugins = vec!["x".into()],
                "`--plugin` was given without `--skills-url`",
            ),
        ];
        for (change, expected) in cases {
            let mut req = request();
            change(&mut req);
            let err = spec(&req).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn json_naming_names_body_fields() {
        let mut req = request();
        req.mcp_name = Some("x".into());
        let err = SetupSpec::from_request(&req, DEFAULT_PUBLIC_URL, FieldNames::Json).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`mcpName` was given without `mcpUrl`, so it would be ignored"
        );
    }

    #[test]
    fn users_must_look_like_plain_addresses() {
        for ok in ["a@b", "first.last+tag@mail.example.com"] {
            validate_user("user", ok).unwrap();
        }
        for bad in [
            "", "ab", "a@b@c", "@b", "a@", "a b@c", "-a@b", "a'@b", "ä@b",
        ] {
            assert!(validate_user("user", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_must_be_bare() {
        assert_eq!(
            normalize_origin("o", "http://127.0.0.1:8787/").unwrap(),
            "http://127.0.0.1:8787"
        );
        assert!(normalize_origin("o", "https://h.example/?a=1").is_err());
        assert!(normalize_origin("o", "https://u:p@h.example").is_err());
        assert!(normalize_origin("o", "ftp://h.example").is_err());
    }
}

//! The setup payload and the small request and response bodies around it.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Everything the installer needs to connect Claude Code, as the redemption route answers it.
///
/// Each section is `null` when it was not selected on the server. Unknown fields are
/// ignored, so a newer server can add fields without breaking older installers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupPayload {
    /// Always [`crate::CLIENT_ID_CLAUDE_CODE`] for this installer.
    pub client_id: String,
    /// The deployment's display name, `Archestra` unless white-labelled.
    pub app_name: String,
    /// The MCP gateway to register, if selected.
    pub mcp: Option<McpSection>,
    /// The LLM proxy to route Claude Code through, if selected.
    pub proxy: Option<ProxySection>,
    /// The shared-skills marketplace to add, if selected.
    pub skills: Option<SkillsSection>,
    /// `GET` this URL for a health verdict on the gateway and proxy.
    #[serde(default)]
    pub health_url: Option<String>,
}

/// The MCP gateway section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpSection {
    /// Name to register the gateway under in Claude Code.
    pub server_name: String,
    /// Streamable-HTTP URL of the gateway.
    pub url: String,
    /// Names an earlier setup may have registered the same gateway under.
    #[serde(default)]
    pub legacy_server_names: Vec<String>,
}

/// How Claude Code authenticates to the LLM proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Passthrough: the user's own credential goes upstream; a passthrough key attributes.
    ProviderKey,
    /// Claude Code sends an `arch_` key that the proxy swaps for a stored provider key.
    VirtualKey,
}

impl AuthMode {
    /// Return the wire name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::ProviderKey => "provider-key",
            AuthMode::VirtualKey => "virtual-key",
        }
    }
}

/// The LLM provider Claude Code talks to through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Anthropic,
    Bedrock,
}

impl Provider {
    /// Return the wire name of the provider.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Bedrock => "bedrock",
        }
    }
}

/// The LLM proxy section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySection {
    pub auth_mode: AuthMode,
    pub provider: Provider,
    /// Base URL Claude Code sends its API traffic to, e.g. `https://host/v1/anthropic`.
    pub url: String,
    /// The standard virtual key, present in virtual-key mode only.
    #[serde(default)]
    pub virtual_key: Option<Secret>,
    /// Display name of the key, e.g. `Connection setup — user@example.com`.
    #[serde(default)]
    pub virtual_key_name: Option<String>,
    /// The attribution key sent as a header, present in provider-key mode only.
    #[serde(default)]
    pub passthrough_virtual_key: Option<Secret>,
}

impl ProxySection {
    /// Return the key this machine received, whichever mode it was minted for.
    pub fn machine_key(&self) -> Option<&Secret> {
        self.virtual_key
            .as_ref()
            .or(self.passthrough_virtual_key.as_ref())
    }
}

/// The shared-skills marketplace section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillsSection {
    /// Git URL of the marketplace; it may carry a per-user credential in its user part.
    pub clone_url: Secret,
    /// Name the marketplace declares for itself.
    pub marketplace_name: String,
    /// Whether the marketplace has a skills plugin named after the marketplace.
    #[serde(default = "default_true")]
    pub has_skills: bool,
    /// Further plugins to install from the marketplace.
    #[serde(default)]
    pub plugin_names: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Body of `POST /api/connection-setups`, and the options of `archestra-proxy setups create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSetupRequest {
    /// E-mail address of the user the setup is for.
    pub user: String,
    #[serde(default = "default_mode")]
    pub mode: AuthMode,
    #[serde(default = "default_provider")]
    pub provider: Provider,
    #[serde(default)]
    pub mcp_url: Option<String>,
    #[serde(default)]
    pub mcp_name: Option<String>,
    #[serde(default)]
    pub skills_url: Option<String>,
    #[serde(default)]
    pub marketplace: Option<String>,
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Lifetime of the token in seconds; 15 minutes when absent.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

fn default_mode() -> AuthMode {
    AuthMode::ProviderKey
}

fn default_provider() -> Provider {
    Provider::Anthropic
}

/// What minting a setup returns: the one-time command and how to show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedSetup {
    /// `archestra-connect setup '<url>'`, the command the user runs.
    pub command: String,
    /// The redemption URL, carrying the raw token.
    pub url: String,
    /// RFC 3339 time after which the token no longer redeems.
    pub expires_at: String,
    /// The token's first characters, safe to display.
    pub token_start: String,
}

/// One verdict of `GET /v1/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Down,
}

/// Body of `GET /v1/health`; a field is absent when it was not asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<HealthState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<HealthState>,
}

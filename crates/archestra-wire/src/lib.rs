//! Wire types shared by `archestra-connect` and `archestra-proxy`.
//!
//! The setup payload mirrors the context Archestra renders its Connect script from, so a
//! real Archestra server could answer with the same JSON. Both programs validate it with
//! [`SetupPayload::validate`]: the server before it hands a payload out, the installer
//! before it changes anything on the user's machine. `docs/protocol.md` describes the
//! routes, statuses and error bodies around it.

#[cfg(feature = "cli-docs")]
pub mod cli_docs;
mod connection;
mod error;
mod payload;
mod secret;
mod validate;

pub use connection::{
    CLIENT_CONNECTIONS_PATH, CLIENT_CONNECTIONS_POLL_PATH, ConnectionStatus, PollConnectionRequest,
    PollConnectionResponse, StartConnectionRequest, StartedConnection, device_setup_token,
    is_device_code, is_user_code,
};
pub use error::{ApiError, ApiErrorBody};
pub use payload::{
    AuthMode, CreateSetupRequest, HealthReport, HealthState, McpSection, MintedSetup, Provider,
    ProxySection, SetupPayload, SkillsSection,
};
pub use secret::{Secret, mask_secret, redact_url};
pub use validate::{
    MAX_PAYLOAD_BYTES, PayloadError, is_archestra_key, is_setup_token, validate_name,
    validate_server_name, validate_url,
};

/// Client id of Claude Code in setup payloads.
pub const CLIENT_ID_CLAUDE_CODE: &str = "claude-code";

/// Prefix of a one-time setup token.
pub const SETUP_TOKEN_PREFIX: &str = "archestra_con_";

/// Prefix of every virtual key the server issues today.
pub const VIRTUAL_KEY_PREFIX: &str = "arch_";

/// Prefixes of Archestra keys, current and legacy, used to recognise values we may replace.
pub const ARCHESTRA_KEY_PREFIXES: [&str; 2] = ["arch_", "archestra_"];

/// Path prefix of the redemption route; the token follows it.
pub const SETUP_SCRIPT_PATH: &str = "/api/connection-setups/script/";

/// Path of the minting route.
pub const SETUPS_PATH: &str = "/api/connection-setups";

/// Path of the route that revokes the virtual key presented in its own request.
pub const SELF_REVOKE_PATH: &str = "/api/virtual-keys/self";

/// Path of the health route.
pub const HEALTH_PATH: &str = "/v1/health";

/// Header naming the Claude Code client in proxied requests.
pub const AGENT_ID_HEADER: &str = "X-Archestra-Agent-Id";

/// Header carrying the passthrough attribution key in proxied requests.
pub const VIRTUAL_KEY_HEADER: &str = "X-Archestra-Virtual-Key";

/// Header the installer sends on redemption so that the minted key names the machine.
pub const DEVICE_NAME_HEADER: &str = "X-Archestra-Device-Name";

/// Value of [`AGENT_ID_HEADER`] for Claude Code.
pub const CLAUDE_CODE_AGENT_ID: &str = "anthropic_claude_code";

//! `archestra-proxy`, the companion server of `archestra-connect`.
//!
//! It mints one-time Connect setups, hands each out once as a JSON payload carrying a fresh
//! virtual key for the machine that redeems it, lets a machine revoke its own key, and keeps
//! all of it in a SQLite database that several server processes may share. Its data plane
//! forwards Claude Code's Messages API traffic to the provider, streaming both ways, and logs
//! who used how many tokens. `docs/protocol.md` describes the routes.

mod config;
mod proxy;
mod secrets;
mod server;
mod setup;
mod skills;
mod store;
#[cfg(test)]
mod test_support;

pub use config::{
    DEFAULT_CONNECT_INTERVAL, DEFAULT_CONNECT_TTL, DEFAULT_HEADER_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_REDEEM_LIMIT, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_SKILLS_CHECK_INTERVAL, DEFAULT_UPSTREAM, DEFAULT_UPSTREAM_TIMEOUT, ServerConfig,
};
pub use server::{BackgroundServer, Server};
pub use setup::{
    DEFAULT_APP_NAME, DEFAULT_MCP_NAME, DEFAULT_PUBLIC_URL, DEFAULT_TTL, Field, FieldNames,
    KeyKind, MAX_TTL, McpChoice, SetupError, SetupSpec, SkillsChoice, normalize_origin,
    validate_user,
};
pub use skills::{CREDENTIAL_PREFIX as MARKETPLACE_CREDENTIAL_PREFIX, MARKETPLACE_PATH};
pub use store::{
    ConnectionError, Decided, KeyRecord, MarketplaceCredential, NewConnection, Outcome,
    RedeemError, Redemption, RevokeOutcome, Store, StoreError, TokenState, TokenUsage, UsageQuery,
    UsageRecord, UsageRow, Verdict, normalize_user_code, schema_version,
};

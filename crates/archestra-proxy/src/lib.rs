//! `archestra-proxy`, the companion server of `archestra-connect`.
//!
//! It mints one-time Connect setups, hands each out once as a JSON payload carrying a fresh
//! virtual key for the machine that redeems it, lets a machine revoke its own key, and keeps
//! all of it in a SQLite database that several server processes may share. Forwarding LLM
//! traffic is not part of it yet. `docs/protocol.md` describes the routes.

mod config;
mod secrets;
mod server;
mod setup;
mod store;
#[cfg(test)]
mod test_support;

pub use config::{DEFAULT_LISTEN, DEFAULT_REDEEM_LIMIT, DEFAULT_SHUTDOWN_GRACE, ServerConfig};
pub use server::{BackgroundServer, Server};
pub use setup::{
    DEFAULT_APP_NAME, DEFAULT_MCP_NAME, DEFAULT_PUBLIC_URL, DEFAULT_TTL, Field, FieldNames,
    KeyKind, MAX_TTL, McpChoice, SetupError, SetupSpec, SkillsChoice, normalize_origin,
    validate_user,
};
pub use store::{
    KeyRecord, RedeemError, Redemption, RevokeOutcome, Store, StoreError, TokenState,
    schema_version,
};

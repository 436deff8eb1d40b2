//! The server's settings, as a plain struct with defaults; the binary fills it from flags.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use archestra_wire::{Secret, mask_secret};
use url::Url;

use crate::setup::DEFAULT_APP_NAME;

/// Address the server listens on unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8787);

/// Redemptions one client address may make per minute unless told otherwise.
pub const DEFAULT_REDEEM_LIMIT: u32 = 10;

/// How long requests in flight may take to finish once shutdown begins, unless told otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a browser approval request stays open unless told otherwise, as in Archestra.
pub const DEFAULT_CONNECT_TTL: Duration = Duration::from_secs(10 * 60);

/// Time between polls that clients of browser approval are told, unless told otherwise.
pub const DEFAULT_CONNECT_INTERVAL: Duration = Duration::from_secs(3);

/// Where the data plane forwards Messages API traffic unless told otherwise.
pub const DEFAULT_UPSTREAM: &str = "https://api.anthropic.com";

/// How long the upstream may take to answer with its response headers unless told otherwise.
///
/// Long enough for a non-streaming Messages request that thinks for minutes; Claude Code's own
/// client gives up after ten.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// How often, at most, the skills folder is looked at for changes unless told otherwise.
pub const DEFAULT_SKILLS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's headers unless told otherwise.
///
/// The same deadline closes a keep-alive connection left idle that long; HTTP clients such as
/// Node's close theirs after a few seconds, well before it.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once unless told otherwise.
///
/// A forwarded request holds two descriptors (downstream and upstream), so this stays well
/// under the 1024 descriptors a process is often allowed.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 384;

/// Everything a server needs to start.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The SQLite database file, created if missing.
    pub db_path: PathBuf,
    /// Origin clients are told to use; `None` means `http://<bound address>`.
    pub public_url: Option<String>,
    /// Bearer token that `POST /api/connection-setups` requires; `None` turns the route off.
    pub admin_token: Option<String>,
    /// Redemptions allowed per client address per minute; 0 turns the limit off.
    pub redeem_limit_per_minute: u32,
    /// Display name of the deployment in payloads.
    pub app_name: String,
    /// URL whose answer decides the `mcp` verdict of `/v1/health`; `None` reports `down`.
    pub mcp_health_url: Option<String>,
    /// How long requests in flight may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers (or leave a keep-alive
    /// connection idle) before the connection is closed.
    pub header_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: u32,
    /// Base URL of the LLM provider the data plane forwards to, e.g. `https://api.anthropic.com`.
    pub upstream: Url,
    /// How long the upstream may take to send its response headers before the answer is 504.
    pub upstream_timeout: Duration,
    /// Provider key swapped in for virtual keys of the `standard` kind; `None` refuses them.
    pub provider_key: Option<Secret>,
    /// Whether each forwarded request gets a row in the usage log.
    pub record_usage: bool,
    /// How long a browser approval request stays open.
    pub connect_ttl: Duration,
    /// Time between polls that clients of browser approval are told (whole seconds).
    pub connect_poll_interval: Duration,
    /// Marketplace folder served as a git repository at `/skills/marketplace.git`; `None`
    /// serves none.
    pub skills_dir: Option<PathBuf>,
    /// Shortest time between two looks at the skills folder for changes; zero looks on
    /// every request for the refs.
    pub skills_check_interval: Duration,
}

impl ServerConfig {
    /// Make a configuration with every default, storing its data in `db_path`.
    pub fn new(db_path: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            db_path,
            public_url: None,
            admin_token: None,
            redeem_limit_per_minute: DEFAULT_REDEEM_LIMIT,
            app_name: DEFAULT_APP_NAME.to_string(),
            mcp_health_url: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upstream: Url::parse(DEFAULT_UPSTREAM).expect("the default upstream is a valid URL"),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            provider_key: None,
            record_usage: true,
            connect_ttl: DEFAULT_CONNECT_TTL,
            connect_poll_interval: DEFAULT_CONNECT_INTERVAL,
            skills_dir: None,
            skills_check_interval: DEFAULT_SKILLS_CHECK_INTERVAL,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("db_path", &self.db_path)
            .field("public_url", &self.public_url)
            .field("admin_token", &self.admin_token.as_deref().map(mask_secret))
            .field("redeem_limit_per_minute", &self.redeem_limit_per_minute)
            .field("app_name", &self.app_name)
            .field("mcp_health_url", &self.mcp_health_url)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("header_timeout", &self.header_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "upstream",
                &archestra_wire::redact_url(self.upstream.as_str()),
            )
            .field("upstream_timeout", &self.upstream_timeout)
            .field("provider_key", &self.provider_key)
            .field("record_usage", &self.record_usage)
            .field("connect_ttl", &self.connect_ttl)
            .field("connect_poll_interval", &self.connect_poll_interval)
            .field("skills_dir", &self.skills_dir)
            .field("skills_check_interval", &self.skills_check_interval)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_masks_the_admin_token() {
        let mut config = ServerConfig::new("x.db".into());
        config.admin_token = Some("very-secret-admin-token-1234".into());
        config.provider_key = Some(Secret::new("sk-ant-api03-provider-secret-9876"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(!shown.contains("provider-secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:8787"), "{shown}");
    }
}

//! The HTTP server: the control plane's routes, the data plane's forwarding route, shared
//! state, and the server that runs them.
//!
//! [`Server`] binds and serves until a shutdown signal; [`BackgroundServer`] runs one on its
//! own thread and runtime for tests and embedding.

mod accept;
mod connect;
pub(crate) mod error;
mod forward;
mod health;
mod limited_body;
mod mint;
mod rate_limit;
mod redeem;
mod request_log;
mod revoke;
mod skills;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, bail};
use archestra_wire::{
    CLIENT_CONNECTIONS_PATH, CLIENT_CONNECTIONS_POLL_PATH, HEALTH_PATH, SELF_REVOKE_PATH,
    SETUP_SCRIPT_PATH, SETUPS_PATH, Secret, validate_url,
};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, delete, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use accept::Limits;

use crate::config::ServerConfig;
use crate::proxy::DataPlane;
use crate::setup::normalize_origin;
use crate::skills::{Marketplace, project_root_for};
use crate::store::Store;

use error::ApiFailure;
use health::McpProbe;
use rate_limit::RateLimiter;

/// Shortest admin token accepted; anything shorter is guessable.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Longest app name accepted, as the payload validation allows.
const MAX_APP_NAME_LEN: usize = 200;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    store: Arc<Store>,
    /// Origin clients are told to use, without a trailing slash.
    public_url: String,
    app_name: String,
    admin_token: Option<Secret>,
    limiter: RateLimiter,
    mcp_probe: McpProbe,
    data_plane: DataPlane,
    connect: connect::ConnectState,
    /// The marketplace folder served at `/skills/marketplace.git`, if any.
    skills: Option<Arc<Marketplace>>,
}

/// Build the router over `state`.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(SETUPS_PATH, post(mint::create_setup))
        .route(
            &format!("{SETUP_SCRIPT_PATH}{{token}}"),
            get(redeem::redeem),
        )
        .route(SELF_REVOKE_PATH, delete(revoke::revoke_self))
        .route(HEALTH_PATH, get(health::health))
        .route(CLIENT_CONNECTIONS_PATH, post(connect::start))
        .route(CLIENT_CONNECTIONS_POLL_PATH, post(connect::poll))
        .route(connect::APPROVAL_PAGE_PATH, get(connect::page))
        .route(skills::ROUTE, any(skills::serve_git))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(request_log::log_request))
        // Merged after the log layer: the data plane logs usage rows instead of lines, and
        // passes the upstream's headers on unchanged.
        .merge(forward::routes())
        .with_state(state)
}

async fn no_route() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "this server has no such route; see docs/protocol.md for the routes it answers",
    )
}

async fn wrong_method() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "this route does not answer that method; see docs/protocol.md",
    )
}

/// Run a store operation on the blocking pool.
async fn run_blocking<T, F>(state: &AppState, operation: F) -> Result<T, ApiFailure>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> T + Send + 'static,
{
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || operation(&store))
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "store task failed");
            ApiFailure::internal(
                "the server failed while handling this request; try again in a moment",
            )
        })
}

/// A bound server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    addr: SocketAddr,
    shutdown_grace: std::time::Duration,
    limits: Limits,
}

impl Server {
    /// Check `config`, open the database (migrating it) and bind the listening socket.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        check_app_name(&config.app_name)?;
        let admin_token = config
            .admin_token
            .as_deref()
            .map(check_admin_token)
            .transpose()?;
        if let Some(url) = &config.mcp_health_url {
            validate_url("--mcp-health-url", url)?;
        }
        let limits = check_limits(&config)?;
        let mcp_probe = McpProbe::new(config.mcp_health_url.clone())
            .context("could not build the client that probes the MCP gateway")?;

        let db_path = config.db_path.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&db_path))
            .await
            .context("the task opening the database failed")?
            .with_context(|| format!("could not open the store `{}`", config.db_path.display()))?;
        let store = Arc::new(store);
        let data_plane = {
            let config = config.clone();
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || DataPlane::open(&config, store))
                .await
                .context("the task starting the data plane failed")?
                .context("could not start the LLM proxy")?
        };

        let skills = match &config.skills_dir {
            Some(folder) => Some(Arc::new(open_marketplace(&config, folder).await?)),
            None => None,
        };

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?;
        let addr = listener
            .local_addr()
            .context("could not read the address the server listens on")?;
        let public_url = match &config.public_url {
            Some(url) => normalize_origin("--public-url", url)?,
            None => {
                if addr.ip().is_unspecified() {
                    tracing::warn!(%addr, "listening on every interface without --public-url; clients will be told an address they cannot reach");
                }
                format!("http://{addr}")
            }
        };

        let state = AppState {
            store,
            public_url,
            app_name: config.app_name,
            admin_token,
            limiter: RateLimiter::new(config.redeem_limit_per_minute),
            mcp_probe,
            data_plane,
            connect: connect::ConnectState::new(config.connect_ttl, config.connect_poll_interval),
            skills,
        };
        Ok(Server {
            listener,
            state: Arc::new(state),
            addr,
            shutdown_grace: config.shutdown_grace,
            limits,
        })
    }

    /// Return the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Return the origin clients are told to use.
    pub fn origin(&self) -> &str {
        &self.state.public_url
    }

    /// Serve until `shutdown` completes, then give requests in flight the configured grace
    /// period to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = Arc::clone(&self.state);
        let watching = state.data_plane.watch_keys();
        let app = router(self.state);
        let open = accept::accept_until(self.listener, app, self.limits, shutdown).await;

        // The listener is closed now. Connections finish the request they are on, or are
        // dropped once the grace period is over, so that a client that never finishes its
        // request cannot keep the server up for ever.
        let grace = self.shutdown_grace;
        if tokio::time::timeout(grace, open.shutdown()).await.is_err() {
            tracing::warn!(
                ?grace,
                "requests still in flight after the grace period; stopping anyway"
            );
        }

        // Every request that finished has queued its usage row by now; write them all.
        watching.abort();
        state.data_plane.stop().await;
    }
}

/// Check the skills folder and make its repository beside the database.
async fn open_marketplace(
    config: &ServerConfig,
    folder: &std::path::Path,
) -> anyhow::Result<Marketplace> {
    let folder = folder.to_path_buf();
    let project_root = project_root_for(&config.db_path);
    let interval = config.skills_check_interval;
    let shown = folder.display().to_string();
    let marketplace =
        tokio::task::spawn_blocking(move || Marketplace::open(&folder, &project_root, interval))
            .await
            .context("the task preparing the skills marketplace failed")?
            .with_context(|| format!("could not serve the skills folder `{shown}`"))?;
    tracing::info!(
        marketplace = marketplace.name(),
        folder = %marketplace.folder().display(),
        "serving the skills marketplace at {}",
        crate::skills::MARKETPLACE_PATH
    );
    Ok(marketplace)
}

fn check_limits(config: &ServerConfig) -> anyhow::Result<Limits> {
    if config.header_timeout.is_zero() {
        bail!("the header timeout is zero; no request could arrive in time");
    }
    if config.max_connections == 0 {
        bail!("`--max-connections` is 0; the server would accept no client");
    }
    Ok(Limits {
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
    })
}

fn check_app_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("`--app-name` is empty");
    }
    if name.chars().count() > MAX_APP_NAME_LEN {
        bail!("`--app-name` is longer than {MAX_APP_NAME_LEN} characters");
    }
    if name.chars().any(char::is_control) {
        bail!("`--app-name` holds a control character");
    }
    Ok(())
}

fn check_admin_token(token: &str) -> anyhow::Result<Secret> {
    if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
        bail!(
            "the admin token is shorter than {MIN_ADMIN_TOKEN_LEN} characters; use a long random value"
        );
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("the admin token holds whitespace or a control character");
    }
    Ok(Secret::new(token))
}

/// A server running on its own thread with its own runtime; stopped on [`stop`] or drop.
///
/// [`stop`]: BackgroundServer::stop
#[derive(Debug)]
pub struct BackgroundServer {
    addr: SocketAddr,
    origin: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundServer {
    /// Start a server and return once it listens.
    pub fn start(config: ServerConfig) -> anyhow::Result<BackgroundServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("archestra-proxy-worker")
            .build()
            .context("could not start the server's async runtime")?;
        let server = runtime.block_on(Server::bind(config))?;
        let addr = server.addr();
        let origin = server.origin().to_string();

        let (shutdown, stop_signal) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("archestra-proxy-server".into())
            .spawn(move || {
                let stopped = async {
                    // A dropped sender means the handle is gone; stop then too.
                    let _ = stop_signal.await;
                };
                runtime.block_on(server.run(stopped));
            })
            .context("could not start the server thread")?;

        Ok(BackgroundServer {
            addr,
            origin,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Return the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Return the origin clients are told to use, e.g. `http://127.0.0.1:41234`.
    pub fn origin(&self) -> String {
        self.origin.clone()
    }

    /// Stop the server, letting in-flight requests finish, and wait for its thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests;

//! `archestra-proxy serve`: resolve the settings, bind, print the address, serve until a
//! signal, then let requests in flight finish.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use archestra_proxy::{Server, ServerConfig};
use archestra_wire::{Secret, redact_url};

use super::resolve_db;
use crate::cli::ServeArgs;

/// Environment variable holding the admin token when no file is given.
const ADMIN_TOKEN_ENV: &str = "ARCHESTRA_PROXY_ADMIN_TOKEN";

/// Environment variable holding the provider key when no file is given.
const PROVIDER_KEY_ENV: &str = "ARCHESTRA_PROXY_PROVIDER_KEY";

/// Run the server until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(resolve_db(&args.db)?);
    config.listen = args.listen;
    config.public_url = args.public_url;
    config.admin_token = read_secret(
        "admin token",
        args.admin_token_file.as_deref(),
        ADMIN_TOKEN_ENV,
    )?;
    config.app_name = args.app_name;
    config.mcp_health_url = args.mcp_health_url;
    config.redeem_limit_per_minute = args.redeem_limit;
    config.max_connections = args.max_connections;
    config.upstream = url::Url::parse(&args.upstream).with_context(|| {
        format!(
            "`--upstream` is not a URL: `{}`",
            redact_url(&args.upstream)
        )
    })?;
    config.upstream_timeout = std::time::Duration::from_secs(args.upstream_timeout);
    config.provider_key = read_secret(
        "provider key",
        args.provider_key_file.as_deref(),
        PROVIDER_KEY_ENV,
    )?
    .map(Secret::new);
    config.record_usage = !args.no_usage_log;
    config.skills_dir = args.skills_dir;
    config.skills_check_interval = std::time::Duration::from_secs(args.skills_check_interval);
    let upstream = redact_url(config.upstream.as_str());
    let virtual_keys = config.provider_key.is_some();
    let db_path = config.db_path.clone();
    let minting = config.admin_token.is_some();
    let config_usage_log = config.record_usage;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        // Install the handlers before announcing the address, so that a signal sent as soon
        // as the address appears already shuts down cleanly.
        let shutdown = shutdown_signal().context("could not install the signal handlers")?;
        let server = Server::bind(config).await?;
        println!("listening on http://{}", server.addr());
        tracing::info!(
            public_url = server.origin(),
            db = %db_path.display(),
            minting_over_http = minting,
            %upstream,
            virtual_keys,
            usage_log = config_usage_log,
            "serving setups and the LLM proxy"
        );
        server.run(shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Read a secret (`what`) from `file`, else from the environment variable `env`; `None` when
/// neither has one.
fn read_secret(what: &str, file: Option<&Path>, env: &str) -> anyhow::Result<Option<String>> {
    if let Some(path) = file {
        warn_if_shared(what, path);
        let text = fs::read_to_string(path)
            .with_context(|| format!("could not read the {what} file `{}`", path.display()))?;
        let secret = text.trim();
        if secret.is_empty() {
            bail!("the {what} file `{}` is empty", path.display());
        }
        return Ok(Some(secret.to_string()));
    }
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_string())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{env} is not valid UTF-8"),
    }
}

/// Warn when a secret's file can be read by other users.
fn warn_if_shared(what: &str, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the {what} file is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path);
}

/// Return a future that completes on SIGINT or SIGTERM; the handlers are installed now.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down; letting requests in flight finish");
    })
}

/// Return a future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down; letting requests in flight finish");
    })
}

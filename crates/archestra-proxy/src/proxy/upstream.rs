//! The HTTP client that talks to the upstream provider: rustls with the operating system's
//! certificate roots, a keep-alive pool, and `TCP_NODELAY`.
//!
//! TLS is set up only for an `https` upstream: loading the system's roots costs memory and
//! fails on hosts without any, which a plain `http` sidecar or mock does not need.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::ConfigVerifierExt;
use thiserror::Error;
use url::Url;

use super::body::RequestBody;

/// How long opening a connection to the upstream may take before the answer is 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled client of the upstream.
#[derive(Debug, Clone)]
pub enum UpstreamClient {
    /// For an `http` upstream.
    Plain(Client<HttpConnector, RequestBody>),
    /// For an `https` upstream.
    Tls(Client<HttpsConnector<HttpConnector>, RequestBody>),
}

impl UpstreamClient {
    /// Send `request` upstream, over a pooled connection when one is idle.
    pub fn request(&self, request: hyper::Request<RequestBody>) -> ResponseFuture {
        match self {
            UpstreamClient::Plain(client) => client.request(request),
            UpstreamClient::Tls(client) => client.request(request),
        }
    }
}

/// Why the upstream could not be set up.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("`--upstream` must be an http or https URL, not `{0}`")]
    Scheme(String),
    #[error("`--upstream` must not carry a query or a fragment")]
    QueryOrFragment,
    #[error("`--upstream` must not carry a user name or password")]
    Credentials,
    #[error("`--upstream` has no host")]
    NoHost,
    #[error("could not load the operating system's certificate roots for TLS")]
    Tls(#[source] rustls::Error),
}

/// Where requests go: the upstream's origin and base path, without a trailing slash.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    prefix: String,
}

impl UpstreamBase {
    /// Check `url` and keep it as a prefix for request paths.
    pub fn new(url: &Url) -> Result<UpstreamBase, UpstreamError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UpstreamError::Scheme(url.scheme().to_string()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamError::QueryOrFragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamError::Credentials);
        }
        if url.host_str().is_none() {
            return Err(UpstreamError::NoHost);
        }
        let prefix = url.as_str().trim_end_matches('/').to_string();
        Ok(UpstreamBase { prefix })
    }

    /// Return the upstream URL for an API path (starting with `/`) and its query.
    pub fn join(&self, path: &str, query: Option<&str>) -> String {
        let mut target =
            String::with_capacity(self.prefix.len() + path.len() + query.map_or(0, str::len) + 1);
        target.push_str(&self.prefix);
        target.push_str(path);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        target
    }

    /// Return the upstream as it may be shown.
    pub fn display(&self) -> &str {
        &self.prefix
    }
}

/// Build the pooled client for `base`; plain `http` upstreams are allowed for local mocks
/// and sidecars.
pub fn build_client(base: &Url) -> Result<UpstreamClient, UpstreamError> {
    let mut http = HttpConnector::new();
    // Without it, small SSE writes can wait on delayed ACKs for tens of milliseconds.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new());

    if base.scheme() != "https" {
        return Ok(UpstreamClient::Plain(builder.build(http)));
    }
    http.enforce_http(false);
    // Name the provider: in a build where some other crate turns on rustls's `ring` feature
    // too, rustls cannot pick one by itself and would panic. A second call is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = rustls::ClientConfig::with_platform_verifier().map_err(UpstreamError::Tls)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(UpstreamClient::Tls(builder.build(https)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_join_the_base_unchanged() {
        let base = UpstreamBase::new(&Url::parse("https://api.anthropic.com").unwrap()).unwrap();
        assert_eq!(
            base.join("/v1/messages", Some("beta=true")),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        let nested = UpstreamBase::new(&Url::parse("http://127.0.0.1:9/gw/").unwrap()).unwrap();
        assert_eq!(
            nested.join("/v1/messages/count_tokens", None),
            "http://127.0.0.1:9/gw/v1/messages/count_tokens"
        );
    }

    #[test]
    fn tls_is_set_up_for_https_upstreams_only() {
        let plain = build_client(&Url::parse("http://127.0.0.1:9").unwrap()).unwrap();
        assert!(matches!(plain, UpstreamClient::Plain(_)));
        // Building the TLS client needs the system's roots; this image has them.
        let tls = build_client(&Url::parse("https://api.anthropic.com").unwrap()).unwrap();
        assert!(matches!(tls, UpstreamClient::Tls(_)));
    }

    #[test]
    fn unusable_upstreams_are_refused() {
        for bad in [
            "ftp://example.com",
            "https://example.com/?a=b",
            "https://user:pw@example.com",
        ] {
            assert!(
                UpstreamBase::new(&Url::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}

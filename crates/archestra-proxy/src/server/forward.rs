//! The data plane route: `/v1/anthropic[/<proxy-id>]/v1/…` forwarded to the upstream.
//!
//! For each request, in order:
//! 1. Answer the `HEAD` probe Claude Code sends to the base URL, locally.
//! 2. Find the virtual key (`X-Archestra-Virtual-Key`, else an `arch_` bearer token or
//!    `x-api-key`) and refuse the request when it is missing, unknown or revoked.
//! 3. Copy the headers upstream, dropping hop-by-hop and `X-Archestra-*` headers; in
//!    virtual-key mode swap the client's credentials for the provider key.
//! 4. Stream the request body up and the answer down, chunk by chunk, metering the answer
//!    for the usage log.
//!
//! There is no request body limit here, unlike the JSON routes: a conversation is as large as
//! the provider allows, so the provider's own limit (and 413) decides, and nothing is held.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use archestra_wire::{AGENT_ID_HEADER, VIRTUAL_KEY_HEADER, is_archestra_key};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, request};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::error::{ApiFailure, error_chain};
use super::mint::bearer_token;
use crate::proxy::body::{Meter, MeteredBody, micros};
use crate::proxy::keys::KnownKey;
use crate::proxy::usage::UsageScanner;
use crate::setup::KeyKind;
use crate::store::{Outcome, TokenUsage, UsageRecord};

/// Where Claude Code's `ANTHROPIC_BASE_URL` points on this server.
pub const ANTHROPIC_PREFIX: &str = "/v1/anthropic";

/// Longest agent id or path kept in a usage row.
const MAX_LOGGED_LEN: usize = 200;

/// `x-api-key`, the header Anthropic reads API keys from.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Headers that describe one connection, never forwarded (RFC 9110, section 7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Build the data plane's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(ANTHROPIC_PREFIX, any(forward))
        .route(&format!("{ANTHROPIC_PREFIX}/"), any(forward))
        .route(&format!("{ANTHROPIC_PREFIX}/{{*rest}}"), any(forward))
}

/// What a request path under [`ANTHROPIC_PREFIX`] asks for.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// The base URL itself, with or without a proxy id.
    Base,
    /// An API path such as `/v1/messages`, to forward.
    Api(&'a str),
    /// Something after the prefix that is not an API path.
    Malformed,
}

/// Split `/v1/anthropic[/<proxy-id>]/v1/…` into the API path the upstream gets.
fn target(path: &str) -> Target<'_> {
    let Some(rest) = path.strip_prefix(ANTHROPIC_PREFIX) else {
        return Target::Malformed;
    };
    if rest.is_empty() || rest == "/" {
        return Target::Base;
    }
    if !rest.starts_with('/') {
        return Target::Malformed;
    }
    let is_api = |p: &str| p == "/v1" || p.starts_with("/v1/");
    if is_api(rest) {
        return Target::Api(rest);
    }
    // Otherwise the first segment is a proxy id, which this server does not need.
    let after_id = rest[1..].find('/').map_or("", |at| &rest[1 + at..]);
    if after_id.is_empty() || after_id == "/" {
        Target::Base
    } else if is_api(after_id) {
        Target::Api(after_id)
    } else {
        Target::Malformed
    }
}

/// Forward one request to the upstream and stream its answer back.
pub async fn forward(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();

    let api_path = match target(parts.uri.path()) {
        Target::Api(path) => path,
        Target::Base if matches!(parts.method, Method::HEAD | Method::GET) => {
            // Claude Code probes the base URL before its first request.
            return StatusCode::OK.into_response();
        }
        Target::Base => {
            let failure = ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "this is the base URL of the LLM proxy; API requests go to paths under it, such as /v1/messages",
            );
            return refuse(&state, &parts, started, None, failure);
        }
        Target::Malformed => {
            let failure = ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the path after /v1/anthropic (and an optional proxy id) must be an API path starting with /v1/, such as /v1/messages",
            );
            return refuse(&state, &parts, started, None, failure);
        }
    };

    // Find whose request this is.
    let Some(raw_key) = presented_key(&parts.headers) else {
        return refuse(&state, &parts, started, None, ApiFailure::no_virtual_key());
    };
    let known = match state.data_plane.keys.lookup(raw_key).await {
        Ok(Some(known)) => known,
        Ok(None) => return refuse(&state, &parts, started, None, ApiFailure::unknown_key()),
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "could not look up a virtual key");
            let failure = ApiFailure::internal(
                "the proxy could not check the virtual key; try again in a moment",
            );
            return refuse(&state, &parts, started, None, failure);
        }
    };
    if known.revoked {
        return refuse(
            &state,
            &parts,
            started,
            Some(&known),
            ApiFailure::revoked_key(),
        );
    }
    let provider_key = match (known.kind, &state.data_plane.provider_key) {
        (KeyKind::Passthrough, _) => None,
        (KeyKind::Standard, Some(key)) => Some(key),
        (KeyKind::Standard, None) => {
            let failure = ApiFailure::no_provider_key();
            return refuse(&state, &parts, started, Some(&known), failure);
        }
    };

    // Build the upstream request around the downstream body, which streams through.
    let uri = state.data_plane.upstream.join(api_path, parts.uri.query());
    let mut upstream_request = hyper::Request::new(body);
    *upstream_request.method_mut() = parts.method.clone();
    *upstream_request.uri_mut() = match uri.parse() {
        Ok(uri) => uri,
        Err(_) => {
            let failure = ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the request path or query cannot be forwarded; check the URL",
            );
            return refuse(&state, &parts, started, Some(&known), failure);
        }
    };
    copy_request_headers(&parts.headers, upstream_request.headers_mut(), provider_key);

    let sent = tokio::time::timeout(
        state.data_plane.timeout,
        state.data_plane.client.request(upstream_request),
    )
    .await;
    let upstream_response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            if downstream_body_failed(&err) {
                tracing::debug!(error = %error_chain(&err), "the downstream request body broke off");
                let failure = ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "the request body could not be read; send it again",
                );
                return refuse(&state, &parts, started, Some(&known), failure);
            }
            tracing::warn!(
                upstream = state.data_plane.upstream.display(),
                error = %error_chain(&err),
                "could not reach the upstream"
            );
            let failure = ApiFailure::upstream_unreachable(state.data_plane.upstream.display());
            return fail(
                &state,
                &parts,
                started,
                &known,
                failure,
                Outcome::UpstreamUnreachable,
            );
        }
        Err(_elapsed) => {
            tracing::warn!(
                upstream = state.data_plane.upstream.display(),
                timeout = ?state.data_plane.timeout,
                "the upstream sent no answer in time"
            );
            let failure = ApiFailure::upstream_timeout(state.data_plane.timeout.as_secs());
            return fail(
                &state,
                &parts,
                started,
                &known,
                failure,
                Outcome::UpstreamTimeout,
            );
        }
    };

    // Hand the answer down as it comes, metered for the usage log.
    let (mut head, upstream_body) = upstream_response.into_parts();
    remove_hop_by_hop(&mut head.headers);
    let body = match &state.data_plane.recorder {
        Some(recorder) => {
            let scanner = if head.status.is_success() {
                UsageScanner::for_content_type(
                    head.headers
                        .get(header::CONTENT_TYPE)
                        .map(HeaderValue::as_bytes),
                )
            } else {
                None
            };
            let record = usage_record(&parts, Some(&known), head.status);
            let meter = Meter {
                record,
                started,
                scanner,
                recorder: recorder.clone(),
            };
            Body::new(MeteredBody::new(upstream_body, meter))
        }
        None => Body::new(upstream_body),
    };
    Response::from_parts(head, body)
}

/// Answer `failure` for a request the proxy turned away, and log it.
fn refuse(
    state: &AppState,
    parts: &request::Parts,
    started: Instant,
    key: Option<&KnownKey>,
    failure: ApiFailure,
) -> Response {
    record_failure(state, parts, started, key, failure.status, Outcome::Refused);
    failure.into_response()
}

/// Answer `failure` for a request the upstream did not answer, and log it.
fn fail(
    state: &AppState,
    parts: &request::Parts,
    started: Instant,
    key: &KnownKey,
    failure: ApiFailure,
    outcome: Outcome,
) -> Response {
    record_failure(state, parts, started, Some(key), failure.status, outcome);
    failure.into_response()
}

fn record_failure(
    state: &AppState,
    parts: &request::Parts,
    started: Instant,
    key: Option<&KnownKey>,
    status: StatusCode,
    outcome: Outcome,
) {
    if let Some(recorder) = &state.data_plane.recorder {
        let mut record = usage_record(parts, key, status);
        record.latency_us = micros(started);
        record.outcome = outcome;
        recorder.record(record);
    }
}

/// Start a usage row for this request; timing, usage and outcome come later.
fn usage_record(parts: &request::Parts, key: Option<&KnownKey>, status: StatusCode) -> UsageRecord {
    let path = match target(parts.uri.path()) {
        Target::Api(path) => path,
        Target::Base | Target::Malformed => parts.uri.path(),
    };
    UsageRecord {
        at_ms: now_ms(),
        user: key.map(|k| k.user.to_string()),
        key_id: key.map(|k| k.id),
        agent_id: parts
            .headers
            .get(AGENT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| bounded(v.trim()).to_string()),
        method: parts.method.as_str().to_string(),
        path: bounded(path).to_string(),
        model: None,
        status: status.as_u16(),
        latency_us: 0,
        ttfb_us: None,
        usage: TokenUsage::default(),
        outcome: Outcome::Completed,
    }
}

/// Return the first characters of `text`, at most [`MAX_LOGGED_LEN`] of them.
fn bounded(text: &str) -> &str {
    match text.char_indices().nth(MAX_LOGGED_LEN) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Return the virtual key the request presents: the `X-Archestra-Virtual-Key` header of
/// passthrough mode, else an Archestra key sent as the credential in virtual-key mode.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(VIRTUAL_KEY_HEADER) {
        return value.to_str().ok().map(str::trim).filter(|v| !v.is_empty());
    }
    let api_key = headers
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    [bearer_token(headers), api_key]
        .into_iter()
        .flatten()
        .find(|value| is_archestra_key(value))
}

/// Copy the downstream headers for the upstream request.
///
/// Dropped: hop-by-hop headers and those `Connection` names, `Host` (the client sets the
/// upstream's), every `X-Archestra-*` header, and any credential holding an Archestra key.
/// With `provider_key`, the client's own `Authorization` and `x-api-key` are dropped too and
/// the provider key goes as `x-api-key`. `Accept-Encoding` becomes `identity`, so the usage
/// scanner reads plain bytes; nothing is recompressed on the way.
fn copy_request_headers(from: &HeaderMap, to: &mut HeaderMap, provider_key: Option<&HeaderValue>) {
    let named_by_connection: Vec<HeaderName> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();

    to.reserve(from.len() + 1);
    for (name, value) in from {
        let dropped = HOP_BY_HOP.contains(name)
            || named_by_connection.contains(name)
            || name == header::HOST
            || name == header::ACCEPT_ENCODING
            || name.as_str().starts_with("x-archestra-")
            || (is_credential(name) && (provider_key.is_some() || carries_archestra_key(value)));
        if !dropped {
            to.append(name.clone(), value.clone());
        }
    }
    if let Some(key) = provider_key {
        to.insert(X_API_KEY.clone(), key.clone());
    }
    to.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

fn is_credential(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == X_API_KEY
}

/// Tell whether a credential header's value is an Archestra key, bare or after a scheme.
fn carries_archestra_key(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    let token = text.split_once(' ').map_or(text, |(_, token)| token.trim());
    is_archestra_key(text) || is_archestra_key(token)
}

/// Drop the hop-by-hop headers of the upstream's answer.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Tell whether the upstream request failed because the downstream body broke off.
fn downstream_body_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current.downcast_ref::<axum::Error>().is_some() {
            return true;
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_a_proxy_id_reach_the_same_api_path() {
        assert_eq!(target("/v1/anthropic"), Target::Base);
        assert_eq!(target("/v1/anthropic/"), Target::Base);
        assert_eq!(target("/v1/anthropic/pid-1"), Target::Base);
        assert_eq!(target("/v1/anthropic/pid-1/"), Target::Base);
        assert_eq!(
            target("/v1/anthropic/v1/messages"),
            Target::Api("/v1/messages")
        );
        assert_eq!(
            target("/v1/anthropic/0f3c-proxy/v1/messages/count_tokens"),
            Target::Api("/v1/messages/count_tokens")
        );
        assert_eq!(target("/v1/anthropic/pid/admin"), Target::Malformed);
        assert_eq!(target("/v1/anthropicx/v1/messages"), Target::Malformed);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn passthrough_keeps_the_users_credentials_and_drops_ours() {
        let from = headers(&[
            ("authorization", "Bearer sk-ant-oat01-user"),
            ("x-api-key", "sk-ant-api03-user"),
            (
                "anthropic-beta",
                "claude-code-20250219,brand-new-flag-2031-01-01",
            ),
            ("anthropic-version", "2023-06-01"),
            ("X-Archestra-Virtual-Key", "arch_1234"),
            ("X-Archestra-Agent-Id", "anthropic_claude_code"),
            ("x-archestra-anything", "1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "hop"),
            ("host", "proxy.example"),
            ("accept-encoding", "gzip, br"),
            ("content-length", "12"),
        ]);
        let mut to = HeaderMap::new();
        copy_request_headers(&from, &mut to, None);
        assert_eq!(to["authorization"], "Bearer sk-ant-oat01-user");
        assert_eq!(to["x-api-key"], "sk-ant-api03-user");
        assert_eq!(
            to["anthropic-beta"],
            "claude-code-20250219,brand-new-flag-2031-01-01"
        );
        assert_eq!(to["content-length"], "12");
        assert_eq!(to["accept-encoding"], "identity");
        for gone in [
            "x-archestra-virtual-key",
            "x-archestra-agent-id",
            "x-archestra-anything",
            "connection",
            "x-private",
            "host",
        ] {
            assert!(!to.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn virtual_key_mode_swaps_every_client_credential_for_the_provider_key() {
        let from = headers(&[
            ("authorization", "Bearer arch_1234"),
            ("x-api-key", "arch_1234"),
            ("anthropic-version", "2023-06-01"),
        ]);
        let provider = HeaderValue::from_static("sk-ant-api03-provider");
        let mut to = HeaderMap::new();
        copy_request_headers(&from, &mut to, Some(&provider));
        assert!(!to.contains_key("authorization"));
        assert_eq!(to.get_all("x-api-key").iter().count(), 1);
        assert_eq!(to["x-api-key"], "sk-ant-api03-provider");

        // A passthrough key sent as the credential never goes upstream either.
        let mut to = HeaderMap::new();
        copy_request_headers(&from, &mut to, None);
        assert!(!to.contains_key("authorization") && !to.contains_key("x-api-key"));
    }

    #[test]
    fn the_header_key_wins_over_a_bearer_key() {
        let both = headers(&[
            ("authorization", "Bearer arch_bearer"),
            ("x-archestra-virtual-key", "arch_header"),
        ]);
        assert_eq!(presented_key(&both), Some("arch_header"));
        let api_key = headers(&[
            ("authorization", "Bearer sk-ant-user"),
            ("x-api-key", "arch_k"),
        ]);
        assert_eq!(presented_key(&api_key), Some("arch_k"));
        let none = headers(&[("authorization", "Bearer sk-ant-user")]);
        assert_eq!(presented_key(&none), None);
    }
}

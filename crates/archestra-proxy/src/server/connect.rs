//! `POST /api/client-connections` and `POST /api/client-connections/poll`: browser approval.
//!
//! Steps of a start: count it against the client's start limit, check the body, store the
//! request (the device code only as hashes), answer the codes and the approval page's path.
//! A poll counts against its own, looser limit and answers where the request stands. A person
//! decides the request with `archestra-proxy approve`; the client then redeems
//! `archestra_con_<deviceCode>` on the usual route. `GET /connection`, the page the client
//! opens in the browser, shows the request's code and the command that approves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use archestra_wire::{
    CLIENT_ID_CLAUDE_CODE, PollConnectionRequest, PollConnectionResponse, StartConnectionRequest,
    StartedConnection, is_device_code,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ApiFailure, error_chain};
use super::limited_body::read_limited;
use super::rate_limit::RateLimiter;
use super::{AppState, run_blocking};
use crate::store::ConnectionView;

/// Path of the approval page the client opens; the query names the request.
pub const APPROVAL_PAGE_PATH: &str = "/connection";

/// Starts one client address may make per minute, as in Archestra.
const START_LIMIT_PER_MINUTE: u32 = 10;

/// Polls one client address may make per minute, as in Archestra.
const POLL_LIMIT_PER_MINUTE: u32 = 120;

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 4 * 1024;

/// Longest device name kept with a request.
const MAX_DEVICE_NAME: usize = 100;

/// Platforms a client may say it runs on.
const PLATFORMS: [&str; 3] = ["linux", "macos", "windows"];

/// What the two routes share.
#[derive(Debug)]
pub struct ConnectState {
    ttl: Duration,
    interval: Duration,
    starts: RateLimiter,
    polls: RateLimiter,
}

impl ConnectState {
    /// Keep requests open for `ttl` and tell clients to poll every `interval`.
    pub fn new(ttl: Duration, interval: Duration) -> ConnectState {
        ConnectState {
            ttl,
            interval,
            starts: RateLimiter::new(START_LIMIT_PER_MINUTE),
            polls: RateLimiter::new(POLL_LIMIT_PER_MINUTE),
        }
    }
}

fn bad_request(message: impl Into<String>) -> ApiFailure {
    ApiFailure::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<T, ApiFailure> {
    let bytes = read_limited(headers, body, MAX_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|_| {
        bad_request(format!(
            "the body is not {what}; see docs/protocol.md for its fields"
        ))
    })
}

/// Start a connection request.
pub async fn start(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    state
        .connect
        .starts
        .check(peer.ip(), Instant::now())
        .map_err(ApiFailure::rate_limited)?;
    let request: StartConnectionRequest = read_json(&headers, body, "a connection request").await?;
    if request.client_id != CLIENT_ID_CLAUDE_CODE {
        return Err(bad_request(format!(
            "`clientId` must be `{CLIENT_ID_CLAUDE_CODE}`: this server connects Claude Code only"
        )));
    }
    if !PLATFORMS.contains(&request.platform.as_str()) {
        return Err(bad_request(
            "`platform` must be `linux`, `macos` or `windows`",
        ));
    }
    let device_name = request.device_name.as_deref().and_then(clean_device_name);

    let ttl = state.connect.ttl;
    let public_url = state.public_url.clone();
    let platform = request.platform.clone();
    let stored_name = device_name.clone();
    let started = run_blocking(&state, move |store| {
        store.start_connection(
            CLIENT_ID_CLAUDE_CODE,
            &platform,
            stored_name.as_deref(),
            &public_url,
            ttl,
        )
    })
    .await?
    .map_err(|err| {
        tracing::error!(error = %error_chain(&err), "could not store a connection request");
        ApiFailure::internal(
            "the server could not start the connection request; try again in a moment",
        )
    })?;

    tracing::info!(
        id = %started.id,
        device = device_name.as_deref().unwrap_or("-"),
        "connection request started"
    );
    let answer = StartedConnection {
        verification_path: format!(
            "/connection?clientId={CLIENT_ID_CLAUDE_CODE}&platform={}&connectRequest={}",
            request.platform, started.id
        ),
        id: started.id,
        device_code: started.device_code,
        user_code: started.user_code,
        expires_at: started.expires_at,
        interval: state.connect.interval.as_secs().max(1),
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// Say where a connection request stands.
pub async fn poll(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    state
        .connect
        .polls
        .check(peer.ip(), Instant::now())
        .map_err(ApiFailure::rate_limited)?;
    let request: PollConnectionRequest = read_json(&headers, body, "a poll request").await?;
    if !is_device_code(request.device_code.expose()) {
        return Err(unknown_request());
    }
    let status = run_blocking(&state, move |store| {
        store.connection_status(request.device_code.expose())
    })
    .await?
    .map_err(|err| {
        tracing::error!(error = %error_chain(&err), "could not read a connection request");
        ApiFailure::internal(
            "the server could not read the connection request; poll again in a moment",
        )
    })?
    .ok_or_else(unknown_request)?;
    Ok((StatusCode::OK, Json(PollConnectionResponse { status })).into_response())
}

fn unknown_request() -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "this server has no connection request with that device code; start a new one",
    )
}

/// Strip control characters and cut the name to 100 characters; `None` when nothing is left.
fn clean_device_name(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_DEVICE_NAME)
        .collect();
    let cleaned = cleaned.trim_end().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// The approval page's query; only `connectRequest` matters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    connect_request: Option<String>,
}

/// Show a request's code and how to decide it. This server has no sign-in, so approving is
/// done where its database is, with `archestra-proxy approve`.
pub async fn page(
    State(state): State<Arc<AppState>>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiFailure> {
    let id = query
        .connect_request
        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit()));
    let view = match id {
        Some(id) => run_blocking(&state, move |store| store.connection_by_id(&id))
            .await?
            .map_err(|err| {
                tracing::error!(error = %error_chain(&err), "could not read a connection request");
                ApiFailure::internal(
                    "the server could not read the connection request; reload in a moment",
                )
            })?,
        None => None,
    };
    let html = render_page(view.as_ref());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response())
}

fn render_page(view: Option<&ConnectionView>) -> String {
    let body = match view {
        None => "<p>This server knows no such connection request. Run <code>archestra-connect setup --server …</code> again to start a new one.</p>".to_string(),
        Some(view) => {
            let machine = escape_html(view.device_name.as_deref().unwrap_or("a machine"));
            let code = escape_html(&view.user_code);
            let state = match view.status {
                archestra_wire::ConnectionStatus::Pending => format!(
                    "<p>Check that the machine shows this code, then approve it where this server's database is:</p>\n<pre>archestra-proxy approve {code} --user you@example.com</pre>\n<p>Add the setup options of <code>setups create</code> (<code>--mcp-url</code>, <code>--mode</code>, …) as needed, or <code>--deny</code> to refuse it.</p>"
                ),
                archestra_wire::ConnectionStatus::Approved => "<p>This request was approved; the machine sets itself up now.</p>".into(),
                archestra_wire::ConnectionStatus::Denied => "<p>This request was denied.</p>".into(),
                archestra_wire::ConnectionStatus::Expired => "<p>This request expired. Run the command on the machine again to start a new one.</p>".into(),
            };
            format!(
                "<p>Connection request from <strong>{machine}</strong> ({}), code</p>\n<p><strong style=\"font-size: 2em\">{code}</strong></p>\n{state}",
                escape_html(&view.platform)
            )
        }
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Connect Claude Code</title></head>\n<body>\n<h1>Connect Claude Code</h1>\n{body}\n</body></html>\n"
    )
}

fn escape_html(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

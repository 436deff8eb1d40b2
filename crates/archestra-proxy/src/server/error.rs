//! Error answers: every route that fails answers `{"type": "error", "error": {"type",
//! "message"}}` from here, the shape Anthropic's API uses, so Claude Code shows the message.
//!
//! Messages are for the person who ran the command, so each says what to do next. They never
//! carry a token, a key or a stored URL.

use archestra_wire::ApiErrorBody;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Where a new one-time command comes from, named in every message about a spent link.
const NEW_COMMAND_HINT: &str = "generate a new command on the Connect page";

/// What a user whose proxy requests are refused should run, named in every such message.
const STATUS_CHECK_HINT: &str = "run `archestra-connect status --check` to see what is wrong";

/// The status that refuses a data-plane request whose key is missing, unknown or revoked.
///
/// Claude Code 2.1.197 retries a 401 for more than a minute without showing anything, while
/// it shows a 403's message and stops after one attempt (docs/protocol.md has the details).
const KEY_REFUSED: StatusCode = StatusCode::FORBIDDEN;

/// A failed request, ready to become a JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds to send in `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    /// Build a failure from its status, machine-readable kind and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Answer a redemption of a token the server never minted.
    pub fn unknown_token() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!(
                "this setup link is not known to this server; check that the whole command was copied, or {NEW_COMMAND_HINT}"
            ),
        )
    }

    /// Answer a redemption of a token that was already redeemed.
    pub fn token_used() -> Self {
        Self::new(
            StatusCode::GONE,
            "token_used",
            format!(
                "this setup link was already used, and each link works only once; {NEW_COMMAND_HINT}"
            ),
        )
    }

    /// Answer a redemption of a token whose time ran out.
    pub fn token_expired() -> Self {
        Self::new(
            StatusCode::GONE,
            "token_expired",
            format!("this setup link has expired; {NEW_COMMAND_HINT}"),
        )
    }

    /// Answer a client that redeemed too often; it may try again after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        ApiFailure {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "too many setup attempts from this address; wait {seconds} seconds and run the command again"
                ),
            )
        }
    }

    /// Answer a data-plane request that carries no virtual key.
    pub fn no_virtual_key() -> Self {
        Self::new(
            KEY_REFUSED,
            "permission_error",
            format!(
                "this Archestra LLM proxy needs a virtual key, and the request carried none; {STATUS_CHECK_HINT}"
            ),
        )
    }

    /// Answer a data-plane request whose virtual key this server does not know.
    pub fn unknown_key() -> Self {
        Self::new(
            KEY_REFUSED,
            "permission_error",
            format!(
                "the Archestra virtual key in this request is not known to the proxy; {STATUS_CHECK_HINT}"
            ),
        )
    }

    /// Answer a data-plane request whose virtual key was revoked.
    pub fn revoked_key() -> Self {
        Self::new(
            KEY_REFUSED,
            "permission_error",
            format!(
                "the Archestra virtual key in this request was revoked; {STATUS_CHECK_HINT}, then set up again with a new command from the Connect page"
            ),
        )
    }

    /// Answer a virtual-key request on a server that holds no provider key to swap in.
    pub fn no_provider_key() -> Self {
        Self::new(
            KEY_REFUSED,
            "permission_error",
            "this Archestra LLM proxy holds no provider key for virtual keys; ask your admin to start it with --provider-key-file, or set up again in passthrough mode",
        )
    }

    /// Answer a request whose upstream could not be reached.
    pub fn upstream_unreachable(upstream: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            format!(
                "the Archestra LLM proxy could not reach the provider at {upstream}; try again in a moment"
            ),
        )
    }

    /// Answer a request whose upstream sent no answer within `seconds`.
    pub fn upstream_timeout(seconds: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            format!("the provider did not start answering within {seconds} seconds; try again"),
        )
    }

    /// Answer a fault inside the server; the details go to the log, not to the client.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
    }
}

/// The error body with Anthropic's top-level `"type": "error"`.
#[derive(Serialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: ApiErrorBody,
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = Json(Envelope {
            kind: "error",
            body: ApiErrorBody::new(self.kind, self.message),
        });
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Join an error and its sources into one line for the log.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_answer_json_with_retry_after_when_limited() {
        let response = ApiFailure::rate_limited(42).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(raw["type"], "error");
        let body: ApiErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.kind, "rate_limit_error");
        assert!(
            body.error.message.contains("wait 42 seconds"),
            "{}",
            body.error.message
        );
    }

    #[test]
    fn spent_links_point_to_the_connect_page() {
        for failure in [
            ApiFailure::unknown_token(),
            ApiFailure::token_used(),
            ApiFailure::token_expired(),
        ] {
            assert!(
                failure
                    .message
                    .contains("generate a new command on the Connect page")
            );
        }
    }
}

//! The small request bodies of the control routes, read within a size limit.

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiFailure;

/// Return the whole body, or refuse with 413 one larger than `limit` bytes.
///
/// A `Content-Length` over the limit is refused before a byte of the body is read; a body
/// without one is read only until it passes the limit. Either way a huge body is never
/// held or read whole.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiFailure> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    to_bytes(body, limit).await.map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> ApiFailure {
    ApiFailure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!(
            "the request body is larger than {limit} bytes; see docs/protocol.md for what this route expects"
        ),
    )
}

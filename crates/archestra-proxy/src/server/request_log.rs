//! One log line per request, with every token and key masked, and the headers every answer
//! carries.

use std::time::Instant;

use archestra_wire::{SETUP_SCRIPT_PATH, mask_secret};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Log the request once it is answered, and mark the answer as not to be stored or sniffed.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The query is left out: nothing in it is needed to follow a request.
    let path = redact_path(request.uri().path());

    let mut response = next.run(request).await;

    // Answers carry one-time tokens, keys and payloads; no cache may keep any of them.
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        latency = ?started.elapsed(),
        "request"
    );
    response
}

/// Return `path` fit for a log: the redemption token masked whole, and any other segment that
/// looks like an Archestra token or key masked too.
pub fn redact_path(path: &str) -> String {
    if let Some(token) = path.strip_prefix(SETUP_SCRIPT_PATH) {
        // Whatever follows the prefix is treated as a token, even when it does not look like
        // one: a mistyped token is still most of a real one.
        return format!("{SETUP_SCRIPT_PATH}{}", mask_secret(token));
    }
    path.split('/')
        .map(|segment| {
            if segment.starts_with("arch") && segment.len() > 8 {
                mask_secret(segment)
            } else {
                segment.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redemption_paths_lose_their_token() {
        let token = "archestra_con_0123456789abcdefghijABCDEFGHIJKL";
        let shown = redact_path(&format!("/api/connection-setups/script/{token}"));
        assert_eq!(shown, "/api/connection-setups/script/archestra_con_…IJKL");

        let shown = redact_path("/api/connection-setups/script/not-a-token-but-secret-ish");
        assert_eq!(shown, "/api/connection-setups/script/…-ish");
    }

    #[test]
    fn key_shaped_segments_are_masked_elsewhere() {
        let key = format!("arch_{}", "ab".repeat(32));
        assert_eq!(redact_path(&format!("/x/{key}/y")), "/x/arch_…abab/y");
        assert_eq!(redact_path("/v1/health"), "/v1/health");
        assert_eq!(
            redact_path("/api/virtual-keys/self"),
            "/api/virtual-keys/self"
        );
    }
}

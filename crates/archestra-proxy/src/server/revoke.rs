//! `DELETE /api/virtual-keys/self`: a machine revokes the key it holds, and only that key.

use std::sync::Arc;

use archestra_wire::{VIRTUAL_KEY_HEADER, is_archestra_key};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::error::{ApiFailure, error_chain};
use super::mint::bearer_token;
use super::{AppState, run_blocking};

/// Revoke the virtual key the request presents; 204 when this request revoked it.
pub async fn revoke_self(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiFailure> {
    let Some(key) = presented_key(&headers) else {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "send the virtual key to revoke as `Authorization: Bearer arch_…`",
        ));
    };

    let presented = key.clone();
    let revoked = run_blocking(&state, move |store| store.revoke_presented_key(&presented))
        .await?
        .map_err(|err| {
            tracing::error!(error = %error_chain(&err), "revocation failed");
            ApiFailure::internal("the server could not revoke the key; try again in a moment")
        })?;

    match revoked {
        Some(key_id) => {
            // The data plane refuses the key from the next request on, not a second later.
            state.data_plane.keys.forget(&key);
            tracing::info!(key_id, "virtual key revoked by its holder");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this virtual key is unknown or already revoked, so there is nothing left to revoke",
        )),
    }
}

/// Return the first Archestra key found in `Authorization`, `x-api-key` or
/// `X-Archestra-Virtual-Key`, in that order.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let from_bearer = bearer_token(headers);
    let from_header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    [
        from_bearer,
        from_header("x-api-key"),
        from_header(VIRTUAL_KEY_HEADER),
    ]
    .into_iter()
    .flatten()
    .find(|value| is_archestra_key(value))
    .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_key_may_come_in_any_of_three_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-ant-not-ours"),
        );
        assert_eq!(presented_key(&headers), None);
        headers.insert(
            "x-archestra-virtual-key",
            HeaderValue::from_static("arch_abc"),
        );
        assert_eq!(presented_key(&headers).as_deref(), Some("arch_abc"));
        headers.insert("x-api-key", HeaderValue::from_static("arch_def"));
        assert_eq!(presented_key(&headers).as_deref(), Some("arch_def"));
        headers.insert("authorization", HeaderValue::from_static("bearer arch_ghi"));
        assert_eq!(presented_key(&headers).as_deref(), Some("arch_ghi"));
    }
}

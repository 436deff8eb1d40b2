//! `POST /api/connection-setups`: mint a setup over HTTP, for an admin holding the token.

use std::sync::Arc;

use archestra_wire::CreateSetupRequest;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiFailure, error_chain};
use super::limited_body::read_limited;
use super::{AppState, run_blocking};
use crate::secrets::secrets_match;
use crate::store::StoreError;

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// Check the admin token, then mint the setup the body describes.
pub async fn create_setup(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiFailure> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "minting setups over HTTP is turned off on this server; start it with ARCHESTRA_PROXY_ADMIN_TOKEN set or with --admin-token-file, or run `archestra-proxy setups create` where the database is",
        ));
    };
    let Some(presented) = bearer_token(&headers) else {
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this route needs the server's admin token as `Authorization: Bearer <token>`",
        ));
    };
    if !secrets_match(presented, expected.expose()) {
        tracing::warn!("setup minting refused: wrong admin token");
        return Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "the admin token is wrong; use the value the server was started with",
        ));
    }

    let bytes = read_limited(&headers, body, MAX_BODY).await?;
    let mut request: CreateSetupRequest = serde_json::from_slice(&bytes).map_err(|err| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the body is not a setup request: {err}; see docs/protocol.md for its fields"),
        )
    })?;

    super::skills::complete_request(&state, &mut request)?;

    let public_url = state.public_url.clone();
    let minted = run_blocking(&state, move |store| {
        store.create_setup(&request, &public_url)
    })
    .await?
    .map_err(|err| match err {
        StoreError::Setup(err) => ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the setup was refused: {err}"),
        ),
        err => {
            tracing::error!(error = %error_chain(&err), "minting failed");
            ApiFailure::internal("the server could not store the setup; try again in a moment")
        }
    })?;

    tracing::info!("setup minted over HTTP");
    Ok((StatusCode::CREATED, Json(minted)).into_response())
}

/// Return the value of `Authorization: Bearer <value>`, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

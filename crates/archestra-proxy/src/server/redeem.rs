//! `GET /api/connection-setups/script/<token>`: hand a setup payload to the installer, once.
//!
//! Steps, in order: count the attempt against the client's rate limit; refuse what is not
//! token-shaped; answer a plain script (without claiming) when the client did not ask for
//! JSON; otherwise claim the token, create this machine's key and answer the payload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use archestra_wire::{DEVICE_NAME_HEADER, SETUP_SCRIPT_PATH, is_setup_token};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiFailure, error_chain};
use super::{AppState, run_blocking};
use crate::store::RedeemError;

/// Longest device name kept with a key.
const MAX_DEVICE_NAME: usize = 100;

/// Query parameter that may carry the device name instead of the header.
const DEVICE_NAME_PARAM: &str = "deviceName";

/// Answer a redemption request.
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    token: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    state
        .limiter
        .check(peer.ip(), Instant::now())
        .map_err(ApiFailure::rate_limited)?;

    let Ok(Path(token)) = token else {
        return Err(ApiFailure::unknown_token());
    };
    if !is_setup_token(&token) {
        return Err(ApiFailure::unknown_token());
    }
    if !accepts_json(&headers) {
        return Ok(installer_hint(&state.public_url, &token));
    }

    let device = device_name(&headers, query.as_deref());
    let app_name = state.app_name.clone();
    let device_for_store = device.clone();
    let outcome = run_blocking(&state, move |store| {
        store.redeem(&token, device_for_store.as_deref(), &app_name)
    })
    .await?;

    match outcome {
        Ok(redemption) => {
            tracing::info!(
                setup_id = redemption.setup_id,
                key_id = redemption.key_id,
                device = device.as_deref().unwrap_or("-"),
                "setup redeemed"
            );
            Ok((StatusCode::OK, Json(redemption.payload)).into_response())
        }
        Err(RedeemError::Unknown) => Err(ApiFailure::unknown_token()),
        Err(RedeemError::Used) => Err(ApiFailure::token_used()),
        Err(RedeemError::Expired) => Err(ApiFailure::token_expired()),
        Err(err @ RedeemError::Invalid(_)) => {
            tracing::error!(error = %error_chain(&err), "refused to hand out a setup");
            Err(ApiFailure::internal(
                "this setup's stored settings no longer pass validation, so the server will not hand them out; the link was not used up, but it will keep failing: generate a new command on the Connect page",
            ))
        }
        Err(RedeemError::Store(err)) => {
            tracing::error!(error = %error_chain(&err), "redemption failed");
            Err(ApiFailure::internal(
                "the server could not complete this setup; the link was not used up, so run the same command again in a moment",
            ))
        }
    }
}

/// Tell whether the client listed `application/json` among the types it accepts.
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.split(';').next())
        .any(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Return the device name from the header or the query, stripped of control characters and
/// cut to 100 characters; `None` when there is none left.
fn device_name(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(DEVICE_NAME_HEADER)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let from_query = || {
        url::form_urlencoded::parse(query?.as_bytes())
            .find(|(key, _)| key == DEVICE_NAME_PARAM)
            .map(|(_, value)| value.into_owned())
    };
    let raw = from_header.or_else(from_query)?;
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

/// Answer a client that did not ask for JSON, such as `curl … | bash`, with a script that
/// only explains which command to run; the token is not claimed.
fn installer_hint(public_url: &str, token: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        hint_script(public_url, token),
    )
        .into_response()
}

/// Write the script of [`installer_hint`]: it prints the installer command and exits 1.
fn hint_script(public_url: &str, token: &str) -> String {
    // Both values are checked: the origin by `normalize_origin` at start-up, the token by
    // `is_setup_token`; neither can hold a quote or a line that ends the heredoc.
    let command = format!("archestra-connect setup '{public_url}{SETUP_SCRIPT_PATH}{token}'");
    format!(
        "#!/bin/sh\n\
         # This server hands setups to the archestra-connect installer, not to a shell.\n\
         cat >&2 <<'ARCHESTRA_CONNECT_HINT'\n\
         This setup link is meant for the archestra-connect installer.\n\
         The link has not been used up. Run:\n\
         \n    {command}\n\n\
         ARCHESTRA_CONNECT_HINT\n\
         exit 1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn json_must_be_asked_for_explicitly() {
        assert!(accepts_json(&headers(&[("accept", "application/json")])));
        assert!(accepts_json(&headers(&[(
            "accept",
            "text/html, Application/JSON;q=0.9"
        )])));
        assert!(!accepts_json(&headers(&[("accept", "*/*")])));
        assert!(!accepts_json(&headers(&[])));
    }

    #[test]
    fn device_names_are_cleaned_and_capped() {
        let h = headers(&[("x-archestra-device-name", "  ada-laptop\t ")]);
        assert_eq!(device_name(&h, None).as_deref(), Some("ada-laptop"));

        let long = "x".repeat(300);
        let h = headers(&[("x-archestra-device-name", &long)]);
        assert_eq!(device_name(&h, None).unwrap().len(), MAX_DEVICE_NAME);

        let q = Some("other=1&deviceName=build%0Abox%20one");
        assert_eq!(
            device_name(&HeaderMap::new(), q).as_deref(),
            Some("buildbox one")
        );
        assert_eq!(
            device_name(&headers(&[("x-archestra-device-name", " ")]), None),
            None
        );
        assert_eq!(device_name(&HeaderMap::new(), None), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_shell_hint_prints_the_installer_command_and_fails() {
        let token = format!("archestra_con_{}", "A".repeat(32));
        let script = hint_script("https://h.example", &token);
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8(output.stderr).unwrap();
        let command = format!(
            "archestra-connect setup 'https://h.example/api/connection-setups/script/{token}'"
        );
        assert!(stderr.contains(&command), "{stderr}");
    }
}

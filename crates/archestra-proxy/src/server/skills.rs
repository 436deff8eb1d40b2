//! `/skills/marketplace.git/…`: the companion's own marketplace over git's smart HTTP
//! protocol, read-only, for holders of a marketplace credential.
//!
//! Steps, in order: answer 404 when no folder is served; challenge a request without a
//! credential (401); refuse an unknown or revoked one (403); refuse pushes and the dumb
//! protocol; before advertising refs, let the repository catch up with the folder; run
//! `git http-backend`. Answers are plain text, which git shows to its user as `remote: …`.

use std::sync::Arc;

use archestra_wire::CreateSetupRequest;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiFailure, error_chain};
use super::{AppState, run_blocking};
use crate::skills::cgi::{self, CgiError, CgiRequest};
use crate::skills::credential::{Presented, is_own_clone_url, presented_credential};
use crate::skills::{MARKETPLACE_PATH, Marketplace};

/// Route of every request to the served repository; `rest` is what follows it.
pub const ROUTE: &str = "/skills/marketplace.git/{*rest}";

/// Realm of the Basic challenge; git shows it to nobody, but HTTP requires one.
const CHALLENGE: &str = "Basic realm=\"archestra skills\", charset=\"UTF-8\"";

/// The service a smart-HTTP client asks for when it fetches.
const UPLOAD_PACK: &str = "git-upload-pack";

/// What a request to the repository asks for.
#[derive(Debug, PartialEq, Eq)]
enum GitRoute {
    /// `GET info/refs?service=git-upload-pack`: the refs, first step of a clone or fetch.
    Refs,
    /// `POST git-upload-pack`: the objects.
    UploadPack,
    /// Anything of `git-receive-pack`.
    Push,
    /// The dumb protocol's files, or a method a route does not answer.
    Other,
}

/// Answer one request to the served repository.
pub async fn serve_git(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(marketplace) = state.skills.clone() else {
        return plain(
            StatusCode::NOT_FOUND,
            "this server serves no skills marketplace; its admin can start it with `archestra-proxy serve --skills-dir DIR`",
        );
    };

    let credential = match presented_credential(&headers) {
        Presented::Nothing => return challenge(),
        Presented::Malformed => {
            tracing::warn!("marketplace request refused: not a marketplace credential");
            return refused_credential("is not a marketplace credential");
        }
        Presented::Credential(credential) => credential,
    };
    let lookup = run_blocking(&state, move |store| {
        store.marketplace_credential(credential.expose())
    })
    .await;
    let record = match lookup {
        Ok(Ok(record)) => record,
        Ok(Err(err)) => {
            tracing::error!(error = %error_chain(&err), "could not look up a marketplace credential");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server could not check the marketplace credential; try again in a moment",
            );
        }
        Err(failure) => return failure.into_response(),
    };
    let credential_id = match record {
        None => {
            tracing::warn!("marketplace request refused: unknown credential");
            return refused_credential("is not known to this server");
        }
        Some(record) if record.revoked => {
            tracing::warn!(
                credential_id = record.id,
                "marketplace request refused: revoked credential"
            );
            return refused_credential("was revoked");
        }
        Some(record) => record.id,
    };

    let query = query.unwrap_or_default();
    let route = classify(&method, &rest, &query);
    tracing::debug!(credential_id, ?route, "marketplace request");
    match route {
        GitRoute::Refs => {
            marketplace.refresh().await;
            run_backend(&marketplace, &method, &rest, &query, &headers, body).await
        }
        // The query is dropped: git's smart POST routes take none.
        GitRoute::UploadPack => run_backend(&marketplace, &method, &rest, "", &headers, body).await,
        GitRoute::Push => plain(
            StatusCode::FORBIDDEN,
            "this marketplace is read-only; pushes are refused, so change the folder on the server instead",
        ),
        GitRoute::Other => plain(
            StatusCode::NOT_FOUND,
            "this marketplace is served over git's smart HTTP protocol only; clone it with `git` or add it with `claude plugin marketplace add`",
        ),
    }
}

/// Tell what a request asks for from its method, its path below the repository and its query.
fn classify(method: &Method, rest: &str, query: &str) -> GitRoute {
    let service = url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "service")
        .map(|(_, value)| value.into_owned());
    match (rest, service.as_deref()) {
        ("git-receive-pack", _) | ("info/refs", Some("git-receive-pack")) => GitRoute::Push,
        ("info/refs", Some(UPLOAD_PACK)) if method == Method::GET => GitRoute::Refs,
        (UPLOAD_PACK, _) if method == Method::POST => GitRoute::UploadPack,
        _ => GitRoute::Other,
    }
}

async fn run_backend(
    marketplace: &Marketplace,
    method: &Method,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let request = CgiRequest {
        project_root: marketplace.project_root(),
        method: method.as_str(),
        path_info: format!("/marketplace.git/{rest}"),
        query,
        headers,
    };
    match cgi::run(marketplace.slots(), request, body).await {
        Ok(response) => response,
        Err(err) => {
            let message = match &err {
                CgiError::Busy => {
                    tracing::warn!(error = %err, "marketplace request refused");
                    "the server is busy serving other clones of the marketplace; try again in a moment".to_string()
                }
                CgiError::TooLarge => err.to_string(),
                CgiError::Spawn(_) | CgiError::TimedOut | CgiError::BadHead(_) => {
                    tracing::error!(error = %error_chain(&err), "git http-backend gave no answer");
                    "the server could not run git for this request; its log says why".to_string()
                }
            };
            plain(err.status(), &message)
        }
    }
}

/// Ask for credentials: git then retries with the user part of its clone URL.
fn challenge() -> Response {
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "this marketplace needs the credential that came with your setup; add it with the clone URL `archestra-connect setup` gave Claude Code",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    response
}

/// Refuse a credential that was presented but does not grant access.
///
/// 403, not 401: a 401 would make git ask for another password, which no one can type.
fn refused_credential(why: &str) -> Response {
    plain(
        StatusCode::FORBIDDEN,
        &format!(
            "this marketplace credential {why}; ask your admin for a new setup link and run `archestra-connect setup` with it"
        ),
    )
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Check a setup request over HTTP that names this server's own marketplace: the server must
/// serve one, under the name given; a missing name is filled in.
pub fn complete_request(
    state: &AppState,
    request: &mut CreateSetupRequest,
) -> Result<(), ApiFailure> {
    let Some(url) = &request.skills_url else {
        return Ok(());
    };
    if url != MARKETPLACE_PATH && !is_own_clone_url(url, &state.public_url) {
        return Ok(());
    }
    let refuse = |message: String| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the setup was refused: {message}"),
        )
    };
    let Some(marketplace) = &state.skills else {
        return Err(refuse(
            "`skillsUrl` names this server's own marketplace, but it serves none; start it with --skills-dir".into(),
        ));
    };
    match &request.marketplace {
        None => request.marketplace = Some(marketplace.name().to_string()),
        Some(name) if name == marketplace.name() => {}
        Some(name) => {
            return Err(refuse(format!(
                "`marketplace` is `{name}`, but this server's marketplace is named `{}`",
                marketplace.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_method_path_and_service() {
        let cases = [
            (
                Method::GET,
                "info/refs",
                "service=git-upload-pack",
                GitRoute::Refs,
            ),
            (Method::POST, "git-upload-pack", "", GitRoute::UploadPack),
            (
                Method::GET,
                "info/refs",
                "service=git-receive-pack",
                GitRoute::Push,
            ),
            (Method::POST, "git-receive-pack", "", GitRoute::Push),
            (Method::GET, "info/refs", "", GitRoute::Other),
            (Method::GET, "HEAD", "", GitRoute::Other),
            (Method::GET, "objects/info/packs", "", GitRoute::Other),
            (Method::GET, "git-upload-pack", "", GitRoute::Other),
            (
                Method::POST,
                "info/refs",
                "service=git-upload-pack",
                GitRoute::Other,
            ),
        ];
        for (method, rest, query, expected) in cases {
            assert_eq!(
                classify(&method, rest, query),
                expected,
                "{method} {rest}?{query}"
            );
        }
    }
}

//! Router tests through `oneshot`, without a socket.

use std::net::SocketAddr;

use archestra_wire::ApiErrorBody;
use axum::body::{Body, to_bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use tower::ServiceExt;

use super::*;
use crate::store::TokenState;

struct Fixture {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db");
    let store = Arc::new(Store::open(&db).unwrap());
    let mut config = ServerConfig::new(db);
    config.record_usage = false;
    let data_plane = DataPlane::open(&config, Arc::clone(&store)).unwrap();
    let state = AppState {
        store,
        public_url: "http://proxy.test".into(),
        app_name: "Archestra".into(),
        admin_token: None,
        limiter: RateLimiter::new(10),
        mcp_probe: McpProbe::new(None).unwrap(),
        data_plane,
        connect: super::connect::ConnectState::new(
            config.connect_ttl,
            config.connect_poll_interval,
        ),
        skills: None,
    };
    Fixture {
        _dir: dir,
        state: Arc::new(state),
    }
}

async fn send(fixture: &Fixture, request: Request<Body>) -> Response {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    router(Arc::clone(&fixture.state))
        .layer(MockConnectInfo(peer))
        .oneshot(request)
        .await
        .unwrap()
}

async fn error_kind(response: Response) -> String {
    let bytes = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
    let body: ApiErrorBody = serde_json::from_slice(&bytes).unwrap();
    body.error.kind
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let fixture = fixture();
    let response = send(&fixture, get("/nothing/here")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        response.headers()[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff"
    );
    assert_eq!(error_kind(response).await, "not_found_error");

    let post = Request::post(HEALTH_PATH).body(Body::empty()).unwrap();
    let response = send(&fixture, post).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_kind(response).await, "invalid_request_error");
}

#[tokio::test]
async fn health_answers_only_what_was_asked() {
    let fixture = fixture();
    let body = |response: Response| async {
        let bytes = to_bytes(response.into_body(), 4096).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let response = send(&fixture, get("/v1/health?llm=anthropic")).await;
    assert_eq!(body(response).await, r#"{"llm":"ok"}"#);
    // No MCP gateway is configured, so the truthful verdict is `down`.
    let response = send(&fixture, get("/v1/health?mcp=archestra&llm=x")).await;
    assert_eq!(body(response).await, r#"{"mcp":"down","llm":"ok"}"#);
    let response = send(&fixture, get("/v1/health")).await;
    assert_eq!(body(response).await, "{}");
}

#[tokio::test]
async fn a_shell_fetch_gets_a_hint_and_leaves_the_token_unclaimed() {
    let fixture = fixture();
    let request = crate::test_support::request("ada@example.com");
    let minted = fixture
        .state
        .store
        .create_setup(&request, "http://proxy.test")
        .unwrap();
    let token = minted.url.rsplit('/').next().unwrap().to_string();
    let path = format!("{SETUP_SCRIPT_PATH}{token}");

    let response = send(&fixture, get(&path)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let bytes = to_bytes(response.into_body(), 4096).await.unwrap();
    let script = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(script.contains(&minted.command), "{script}");
    assert_eq!(
        fixture.state.store.token_state(&token).unwrap(),
        TokenState::Unused
    );

    let json = Request::get(&path)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    let response = send(&fixture, json).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        fixture.state.store.token_state(&token).unwrap(),
        TokenState::Used
    );
}

#[tokio::test]
async fn malformed_tokens_are_unknown_without_a_lookup() {
    let fixture = fixture();
    for token in [
        "short",
        "archestra_con_$(id)xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let response = send(&fixture, get(&format!("{SETUP_SCRIPT_PATH}{token}"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{token}");
        assert_eq!(error_kind(response).await, "not_found_error");
    }
}

#[tokio::test]
async fn minting_is_off_without_an_admin_token() {
    let fixture = fixture();
    let request = Request::post(SETUPS_PATH)
        .header(header::AUTHORIZATION, "Bearer whatever-it-may-be-here")
        .body(Body::from("{}"))
        .unwrap();
    let response = send(&fixture, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_kind(response).await, "permission_error");
}

#[test]
fn short_admin_tokens_and_bad_app_names_are_refused() {
    assert!(check_admin_token("short").is_err());
    assert!(check_admin_token("has a space in it, long enough").is_err());
    assert!(check_admin_token("0123456789abcdef").is_ok());
    assert!(check_app_name("Arch\nestra").is_err());
    assert!(check_app_name(" ").is_err());
    assert!(check_app_name("Acme AI").is_ok());
}

#[tokio::test]
async fn the_data_plane_answers_the_probe_and_refuses_requests_without_a_key() {
    let fixture = fixture();
    for path in ["/v1/anthropic", "/v1/anthropic/", "/v1/anthropic/proxy-7"] {
        let probe = Request::head(path).body(Body::empty()).unwrap();
        assert_eq!(
            send(&fixture, probe).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }

    let request = Request::post("/v1/anthropic/v1/messages?beta=true")
        .header("x-api-key", "sk-ant-api03-user")
        .body(Body::from("{}"))
        .unwrap();
    let response = send(&fixture, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let bytes = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("archestra-connect status --check"),
        "{message}"
    );

    let request = Request::post("/v1/anthropic/some-id/not-an-api")
        .body(Body::empty())
        .unwrap();
    let response = send(&fixture, request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(response).await, "invalid_request_error");
}

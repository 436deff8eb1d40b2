use archestra_proxy::{BackgroundServer, Store, TokenState};
use archestra_wire::MintedSetup;

use crate::common::*;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Start a server that mints over HTTP; return it with its minting route.
fn start_minting(scratch: &Scratch) -> (BackgroundServer, String) {
    let mut config = config(&scratch.db());
    config.admin_token = Some(ADMIN_TOKEN.into());
    let server = BackgroundServer::start(config).unwrap();
    let route = format!("{}/api/connection-setups", server.origin());
    (server, route)
}

#[test]
fn minting_over_http_needs_the_admin_bearer() {
    let scratch = Scratch::new();
    let (server, route) = start_minting(&scratch);
    let client = client();
    let body =
        serde_json::json!({"user": "ada@example.com", "mcpUrl": "https://gateway.example/mcp"});

    let missing = client.post(&route).json(&body).send().unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(error_of(missing).0, "authentication_error");
    let wrong = client
        .post(&route)
        .bearer_auth("test-admin-token-0123456780")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let right = client
        .post(&route)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(right.status(), 201);
    let raw: serde_json::Value = right.json().unwrap();
    let fields: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["command", "url", "expiresAt", "tokenStart"]);
    let minted: MintedSetup = serde_json::from_value(raw).unwrap();
    assert!(minted.url.starts_with(&format!(
        "{}/api/connection-setups/script/archestra_con_",
        server.origin()
    )));
    assert_eq!(
        minted.command,
        format!("archestra-connect setup '{}'", minted.url)
    );

    let payload: serde_json::Value = redeem(&client, &minted.url, "box").json().unwrap();
    assert_eq!(payload["mcp"]["url"], "https://gateway.example/mcp");
}

#[test]
fn hostile_requests_over_http_are_refused_naming_the_field() {
    let scratch = Scratch::new();
    let (_server, route) = start_minting(&scratch);
    let client = client();

    let cases = [
        (
            serde_json::json!({"user": "ada@example.com", "mcpUrl": "https://h/x", "mcpName": "--scope"}),
            "`mcpName`",
        ),
        (
            serde_json::json!({"user": "ada@example.com", "mcpUrl": "file:///x"}),
            "`mcpUrl`",
        ),
        (
            serde_json::json!({"user": "ada\u{7}@example.com"}),
            "`user`",
        ),
        (
            serde_json::json!({"user": "ada@example.com", "ttlSeconds": 0}),
            "`ttlSeconds`",
        ),
        (
            serde_json::json!({"user": "ada@example.com", "mode": "root"}),
            "unknown variant",
        ),
        (
            serde_json::json!({"mode": "virtual-key"}),
            "missing field `user`",
        ),
    ];
    for (body, expected) in cases {
        let response = client
            .post(&route)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let (kind, message) = error_of(response);
        assert_eq!(kind, "invalid_request_error");
        assert!(
            message.contains(expected),
            "{message:?} should name {expected}"
        );
    }
    let store = Store::open(&scratch.db()).unwrap();
    assert!(store.list_keys(None).unwrap().is_empty());
    let unknown = format!("archestra_con_{}", "C".repeat(32));
    assert_eq!(store.token_state(&unknown).unwrap(), TokenState::Unknown);
}

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use archestra_proxy::{Store, TokenState};
use archestra_wire::{AuthMode, Provider, SetupPayload};

use crate::common::*;

const GUIDANCE: &str = "generate a new command on the Connect page";

#[test]
fn a_redeem_answers_the_payload_once_then_410() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let origin = server.origin();
    let mut req = request("ada@example.com");
    req.mcp_url = Some("https://gateway.example/v1/mcp/default".into());
    req.skills_url = Some("https://gateway.example/skills/marketplace.git".into());
    req.marketplace = Some("acme-skills".into());
    req.plugins = vec!["review".into()];
    let minted = mint(&scratch.db(), &req, &origin);
    let client = client();

    let response = redeem(&client, &minted.url, "ada-laptop");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["content-type"], "application/json");
    let payload: serde_json::Value = response.json().unwrap();
    let key = key_of(&payload);
    let expected = serde_json::json!({
        "clientId": "claude-code",
        "appName": "Archestra",
        "mcp": {
            "serverName": "archestra",
            "url": "https://gateway.example/v1/mcp/default",
            "legacyServerNames": []
        },
        "proxy": {
            "authMode": "provider-key",
            "provider": "anthropic",
            "url": format!("{origin}/v1/anthropic"),
            "virtualKey": null,
            "virtualKeyName": "Connection passthrough — ada@example.com",
            "passthroughVirtualKey": key,
        },
        "skills": {
            "cloneUrl": "https://gateway.example/skills/marketplace.git",
            "marketplaceName": "acme-skills",
            "hasSkills": true,
            "pluginNames": ["review"]
        },
        "healthUrl": format!("{origin}/v1/health"),
    });
    assert_eq!(payload, expected);
    let typed: SetupPayload = serde_json::from_value(payload).unwrap();
    typed.validate().unwrap();
    assert_eq!(key.len(), "arch_".len() + 64);

    let record = Store::open(&scratch.db())
        .unwrap()
        .key_state(&key)
        .unwrap()
        .unwrap();
    assert_eq!(record.device_name.as_deref(), Some("ada-laptop"));
    assert_eq!(record.user, "ada@example.com");
    assert!(!record.revoked);

    let again = redeem(&client, &minted.url, "ada-laptop");
    assert_eq!(again.status(), 410);
    assert_eq!(again.headers()["content-type"], "application/json");
    let (kind, message) = error_of(again);
    assert_eq!(kind, "token_used");
    assert!(message.contains(GUIDANCE), "{message}");
}

#[test]
fn unselected_sections_are_null() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());
    let payload: serde_json::Value = redeem(&client(), &minted.url, "box").json().unwrap();
    assert!(payload["mcp"].is_null() && payload.get("mcp").is_some());
    assert!(payload["skills"].is_null() && payload.get("skills").is_some());
}

#[test]
fn virtual_key_mode_hands_out_a_standard_key() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let mut req = request("ada@example.com");
    req.mode = AuthMode::VirtualKey;
    req.provider = Provider::Bedrock;
    let minted = mint(&scratch.db(), &req, &server.origin());

    let payload: serde_json::Value = redeem(&client(), &minted.url, "box").json().unwrap();
    let proxy = &payload["proxy"];
    assert_eq!(proxy["authMode"], "virtual-key");
    assert_eq!(proxy["url"], format!("{}/v1/bedrock", server.origin()));
    assert_eq!(
        proxy["virtualKeyName"],
        "Connection setup — ada@example.com"
    );
    assert!(proxy["passthroughVirtualKey"].is_null());
    let key = proxy["virtualKey"].as_str().unwrap();
    let record = Store::open(&scratch.db())
        .unwrap()
        .key_state(key)
        .unwrap()
        .unwrap();
    assert_eq!(record.kind, archestra_proxy::KeyKind::Standard);
}

#[test]
fn an_unknown_token_is_404_with_guidance() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let url = format!(
        "{}/api/connection-setups/script/archestra_con_{}",
        server.origin(),
        "A".repeat(32)
    );
    let response = redeem(&client(), &url, "box");
    assert_eq!(response.status(), 404);
    let (kind, message) = error_of(response);
    assert_eq!(kind, "not_found_error");
    assert!(message.contains(GUIDANCE), "{message}");
}

#[test]
fn an_expired_token_is_410() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let mut req = request("ada@example.com");
    req.ttl_seconds = Some(1);
    let minted = mint(&scratch.db(), &req, &server.origin());
    thread::sleep(Duration::from_millis(1200));

    let response = redeem(&client(), &minted.url, "box");
    assert_eq!(response.status(), 410);
    let (kind, message) = error_of(response);
    assert_eq!(kind, "token_expired");
    assert!(message.contains(GUIDANCE), "{message}");
    let store = Store::open(&scratch.db()).unwrap();
    assert_eq!(
        store.token_state(&token_of(&minted)).unwrap(),
        TokenState::Expired
    );
}

/// Fire `count` redemptions of `urls` (round robin) at once; return their statuses.
fn redeem_all_at_once(urls: &[String], count: usize) -> Vec<u16> {
    let client = client();
    let barrier = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let client = client.clone();
            let barrier = Arc::clone(&barrier);
            let url = urls[i % urls.len()].clone();
            thread::spawn(move || {
                barrier.wait();
                redeem(&client, &url, &format!("machine-{i}"))
                    .status()
                    .as_u16()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn assert_exactly_one_winner(statuses: &[u16]) {
    let wins = statuses.iter().filter(|s| **s == 200).count();
    let gone = statuses.iter().filter(|s| **s == 410).count();
    assert_eq!(wins, 1, "{statuses:?}");
    assert_eq!(gone, statuses.len() - 1, "{statuses:?}");
}

#[test]
fn two_hundred_concurrent_redeems_have_exactly_one_winner() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 0);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());

    let statuses = redeem_all_at_once(std::slice::from_ref(&minted.url), 200);
    assert_exactly_one_winner(&statuses);
    let keys = Store::open(&scratch.db()).unwrap().list_keys(None).unwrap();
    assert_eq!(keys.len(), 1);
}

#[test]
fn two_servers_on_one_database_let_exactly_one_redeem_win() {
    let scratch = Scratch::new();
    let first = start(&scratch.db(), 0);
    let second = start(&scratch.db(), 0);
    for round in 0..3 {
        let minted = mint(&scratch.db(), &request("ada@example.com"), &first.origin());
        let other_url = minted.url.replace(&first.origin(), &second.origin());
        assert_ne!(other_url, minted.url);

        let statuses = redeem_all_at_once(&[minted.url.clone(), other_url], 100);
        assert_exactly_one_winner(&statuses);
        let keys = Store::open(&scratch.db()).unwrap().list_keys(None).unwrap();
        assert_eq!(keys.len(), round + 1);
    }
}

#[test]
fn more_than_the_limit_per_minute_gets_429_with_retry_after() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());
    let client = client();
    let unknown = format!(
        "{}/api/connection-setups/script/archestra_con_{}",
        server.origin(),
        "B".repeat(32)
    );
    for _ in 0..10 {
        assert_eq!(redeem(&client, &unknown, "box").status(), 404);
    }

    let response = redeem(&client, &minted.url, "box");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (kind, message) = error_of(response);
    assert_eq!(kind, "rate_limit_error");
    assert!(message.contains("wait"), "{message}");
    // The refused attempt did not touch the token.
    let store = Store::open(&scratch.db()).unwrap();
    assert_eq!(
        store.token_state(&token_of(&minted)).unwrap(),
        TokenState::Unused
    );
}

#[test]
fn a_server_fault_after_the_claim_leaves_the_token_redeemable() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());
    let client = client();

    // Make every key insert fail, as a full disk or a broken schema would.
    let conn = rusqlite::Connection::open(scratch.db()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse_keys BEFORE INSERT ON virtual_keys
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    .unwrap();
    let response = redeem(&client, &minted.url, "box");
    assert_eq!(response.status(), 500);
    let (kind, message) = error_of(response);
    assert_eq!(kind, "api_error");
    assert!(message.contains("not used up"), "{message}");
    let store = Store::open(&scratch.db()).unwrap();
    assert_eq!(
        store.token_state(&token_of(&minted)).unwrap(),
        TokenState::Unused
    );

    conn.execute_batch("DROP TRIGGER refuse_keys").unwrap();
    assert_eq!(redeem(&client, &minted.url, "box").status(), 200);
}

#[test]
fn a_restart_keeps_setups_and_keys() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let origin = server.origin();
    let used = mint(&scratch.db(), &request("ada@example.com"), &origin);
    let waiting = mint(&scratch.db(), &request("ada@example.com"), &origin);
    let client = client();
    let payload: serde_json::Value = redeem(&client, &used.url, "box").json().unwrap();
    let key = key_of(&payload);
    server.stop();

    // The new server gets another port; point the minted URLs at it.
    let restarted = start(&scratch.db(), 10);
    let moved = |url: &str| url.replace(&origin, &restarted.origin());

    assert_eq!(redeem(&client, &moved(&used.url), "box").status(), 410);
    assert_eq!(redeem(&client, &moved(&waiting.url), "box").status(), 200);
    let store = Store::open(&scratch.db()).unwrap();
    assert!(!store.key_state(&key).unwrap().unwrap().revoked);
    let revoke = client
        .delete(format!("{}/api/virtual-keys/self", restarted.origin()))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(revoke.status(), 204);
}

#[test]
fn a_shell_fetch_gets_a_script_and_leaves_the_token() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());
    let response = client().get(&minted.url).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let script = response.text().unwrap();
    assert!(
        script.contains(&minted.command) && script.contains("exit 1"),
        "{script}"
    );
    let store = Store::open(&scratch.db()).unwrap();
    assert_eq!(
        store.token_state(&token_of(&minted)).unwrap(),
        TokenState::Unused
    );
}

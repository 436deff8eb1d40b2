//! The LLM proxy end to end with the real client: `archestra-connect setup` against the
//! companion, then the real Claude Code CLI in print mode through the companion's data plane
//! to a mock Anthropic upstream on 127.0.0.1.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use archestra_proxy::UsageQuery;
use archestra_wire::Secret;
use common::keyring::KeyringSession;
use common::mock_upstream::{MODEL, MockUpstream, REPLY_TEXT, TOKENS};
use common::{World, passthrough, real_claude, show, virtual_key};
use wait_timeout::ChildExt;

/// The user's own Anthropic credential, which passthrough mode must hand upstream unchanged.
const USERS_OWN_KEY: &str = "sk-ant-api03-the-users-own-key-e2e";

/// The provider key the companion swaps in for virtual keys.
const PROVIDER_KEY: &str = "sk-ant-api03-the-companions-provider-key-e2e";

/// Run the real `claude` in `world` with the user's own API key; bounded so that a proxy
/// that makes it retry for ever fails the test instead of hanging it.
fn claude_print(world: &World, prompt: &str) -> Output {
    claude_print_with(world, prompt, &[("ANTHROPIC_API_KEY", USERS_OWN_KEY)])
}

/// Run the real `claude` in `world` with extra environment and no credential of its own.
fn claude_print_with(world: &World, prompt: &str, extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(real_claude());
    command
        .args(["-p", prompt])
        .current_dir(world.dir.path())
        .env("HOME", &world.home)
        .env("CLAUDE_CONFIG_DIR", &world.config)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_BASE_URL");
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the real claude starts");
    if child
        .wait_timeout(Duration::from_secs(180))
        .unwrap()
        .is_none()
    {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

/// A world whose companion forwards to `upstream`, set up in passthrough mode (without an
/// MCP gateway, which these tests do not need).
fn passthrough_world(upstream: &MockUpstream) -> World {
    let world = World::with_server(|config| {
        config.upstream = upstream.origin.parse().unwrap();
    });
    let mut req = passthrough(&world.origin);
    req.mcp_url = None;
    req.mcp_name = None;
    let link = world.mint(&req);
    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    world
}

#[test]
fn claude_print_mode_goes_through_the_proxy_with_the_users_credential_and_is_logged() {
    let upstream = MockUpstream::start();
    let mut world = passthrough_world(&upstream);
    let settings = world.read_json(&world.settings());
    assert_eq!(
        settings["env"]["ANTHROPIC_BASE_URL"],
        format!("{}/v1/anthropic", world.origin)
    );

    // The reply reaches the user.
    let out = claude_print(&world, "hello");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(REPLY_TEXT), "{}", show(&out));

    // The upstream saw the user's own credential and none of ours.
    let seen = upstream.seen();
    let messages: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.target.starts_with("/v1/messages"))
        .collect();
    assert!(
        !messages.is_empty(),
        "no Messages request arrived: {seen:#?}"
    );
    for request in &seen {
        assert_eq!(
            request.header("x-api-key"),
            Some(USERS_OWN_KEY),
            "{request:#?}"
        );
        let ours: Vec<_> = request
            .headers
            .keys()
            .filter(|name| name.starts_with("x-archestra-"))
            .collect();
        assert!(ours.is_empty(), "{ours:?} went upstream");
        assert!(request.header("anthropic-version").is_some());
        let all = format!("{:?}", request.headers);
        assert!(!all.contains("arch_"), "a virtual key went upstream: {all}");
    }
    assert!(
        messages[0].target.contains("beta=true"),
        "{}",
        messages[0].target
    );

    // Stopping the companion writes every usage row; the Messages calls are attributed.
    world.server.take().unwrap().stop();
    let rows = world.store().usage_log(&UsageQuery::default()).unwrap();
    let row = rows
        .iter()
        .find(|row| row.model.as_deref() == Some(MODEL))
        .unwrap_or_else(|| panic!("no row for the mock's reply: {rows:#?}"));
    assert_eq!(row.user.as_deref(), Some("dev@example.com"));
    assert_eq!(row.agent_id.as_deref(), Some("anthropic_claude_code"));
    assert_eq!(row.status, 200);
    assert_eq!(row.outcome, "completed");
    let (input, output, cache_write, cache_read) = TOKENS;
    assert_eq!(row.usage.input_tokens, Some(input));
    assert_eq!(row.usage.output_tokens, Some(output));
    assert_eq!(row.usage.cache_creation_input_tokens, Some(cache_write));
    assert_eq!(row.usage.cache_read_input_tokens, Some(cache_read));
    assert_eq!(rows.len(), messages.len(), "{rows:#?}");
}

/// Set up `world` in virtual-key mode with `store`, run `claude -p` through the companion,
/// and check that only the provider key went upstream and that the usage row is there.
fn virtual_key_round_trip(
    mut world: World,
    upstream: &MockUpstream,
    store: &str,
    claude_env: &[(&str, &str)],
) -> serde_json::Value {
    let mut req = virtual_key(&world.origin);
    req.mcp_url = None;
    req.mcp_name = None;
    let link = world.mint(&req);
    let out = world.connect(&["setup", &link, "--yes", "--secret-store", store]);
    assert!(out.status.success(), "{}", show(&out));
    let settings = world.read_json(&world.settings());

    let out = claude_print_with(&world, "hello", claude_env);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(REPLY_TEXT),
        "{}",
        show(&out)
    );

    let seen = upstream.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(
            request.header("x-api-key"),
            Some(PROVIDER_KEY),
            "{request:#?}"
        );
        assert_eq!(request.headers.get("x-api-key").map(Vec::len), Some(1));
        assert!(request.header("authorization").is_none(), "{request:#?}");
        let all = format!("{:?}", request.headers);
        assert!(!all.contains("arch_"), "a virtual key went upstream: {all}");
    }

    world.server.take().unwrap().stop();
    let rows = world.store().usage_log(&UsageQuery::default()).unwrap();
    let row = rows
        .iter()
        .find(|row| row.model.as_deref() == Some(MODEL))
        .unwrap_or_else(|| panic!("no row for the mock's reply: {rows:#?}"));
    assert_eq!(row.user.as_deref(), Some("dev@example.com"));
    assert_eq!(row.usage.output_tokens, Some(TOKENS.1));
    settings
}

#[test]
fn claude_with_a_bearer_virtual_key_gets_the_provider_key_swapped_in() {
    let upstream = MockUpstream::start();
    let world = World::with_server(|config| {
        config.upstream = upstream.origin.parse().unwrap();
        config.provider_key = Some(Secret::new(PROVIDER_KEY));
    });
    // The file store writes ANTHROPIC_AUTH_TOKEN, which Claude Code sends as a bearer token.
    let settings = virtual_key_round_trip(world, &upstream, "file", &[]);
    let token = settings["env"]["ANTHROPIC_AUTH_TOKEN"].as_str().unwrap();
    assert!(token.starts_with("arch_"), "{settings}");
}

#[test]
fn claude_with_the_keyring_helper_gets_the_provider_key_swapped_in() {
    let upstream = MockUpstream::start();
    let mut world = World::with_server(|config| {
        config.upstream = upstream.origin.parse().unwrap();
        config.provider_key = Some(Secret::new(PROVIDER_KEY));
    });
    let session = KeyringSession::start(&world.home, world.dir.path());
    world.env.extend(session.env());
    let env: Vec<(String, String)> = session.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The helper's output goes as both `x-api-key` and `Authorization: Bearer`.
    let settings = virtual_key_round_trip(world, &upstream, "keyring", &env);
    assert!(settings["apiKeyHelper"].is_string(), "{settings}");
    drop(session);
}

#[test]
fn claude_with_a_revoked_key_shows_the_proxys_message_at_once() {
    let upstream = MockUpstream::start();
    let world = passthrough_world(&upstream);

    // The admin revokes the user's keys; the running server refuses the next request.
    assert_eq!(
        world.store().revoke_user_keys("dev@example.com").unwrap(),
        1
    );
    let started = Instant::now();
    let out = claude_print(&world, "hello");
    let took = started.elapsed();

    // Claude Code shows the proxy's message instead of retrying: with a plain 401 it would
    // retry silently for over a minute. The bound is generous; it only tells the two apart.
    assert!(!out.status.success(), "{}", show(&out));
    let said = show(&out);
    assert!(said.contains("was revoked"), "{said}");
    assert!(said.contains("archestra-connect status --check"), "{said}");
    assert!(took < Duration::from_secs(45), "took {took:?}: {said}");
    // Nothing reached the provider.
    assert!(
        upstream
            .seen()
            .iter()
            .all(|r| !r.target.starts_with("/v1/messages")),
        "{:#?}",
        upstream.seen()
    );
}

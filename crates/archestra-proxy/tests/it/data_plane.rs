//! The data plane against a real mock upstream on 127.0.0.1: streaming, header handling,
//! key swap, refusals, usage rows, cancellation and request-body streaming.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use archestra_proxy::{BackgroundServer, ServerConfig, Store, UsageQuery, UsageRow};
use archestra_wire::{AuthMode, Secret};
use reqwest::blocking::{Client, RequestBuilder, Response};

use crate::common::*;
use crate::upstream::{JSON_REPLY, MockUpstream, OVERLOADED_REPLY, wait_until};

const PROVIDER_KEY: &str = "sk-ant-api03-provider-key-for-tests";
const USER_KEY: &str = "sk-ant-api03-the-users-own-key";

/// A proxy in front of a mock upstream, with one passthrough and one standard key.
struct Rig {
    scratch: Scratch,
    upstream: MockUpstream,
    proxy: Option<BackgroundServer>,
    origin: String,
    passthrough: String,
    standard: String,
    client: Client,
}

impl Rig {
    fn start() -> Rig {
        Rig::start_with(|_| {})
    }

    fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Rig {
        let scratch = Scratch::new();
        let upstream = MockUpstream::start();
        let mut config = config(&scratch.db());
        config.upstream = upstream.origin.parse().unwrap();
        config.provider_key = Some(Secret::new(PROVIDER_KEY));
        adjust(&mut config);
        let proxy = BackgroundServer::start(config).unwrap();
        let origin = proxy.origin();
        let passthrough = new_key(&scratch.db(), "ada@example.com", AuthMode::ProviderKey);
        let standard = new_key(&scratch.db(), "bob@example.com", AuthMode::VirtualKey);
        Rig {
            scratch,
            upstream,
            proxy: Some(proxy),
            origin,
            passthrough,
            standard,
            client: client(),
        }
    }

    /// A Messages request as Claude Code sends it in passthrough mode.
    fn passthrough_request(&self, mode: &str) -> RequestBuilder {
        self.client
            .post(format!(
                "{}/v1/anthropic/v1/messages?beta=true&mode={mode}",
                self.origin
            ))
            .header("x-api-key", USER_KEY)
            .header("anthropic-version", "2023-06-01")
            .header("X-Archestra-Agent-Id", "anthropic_claude_code")
            .header("X-Archestra-Virtual-Key", &self.passthrough)
            .body(r#"{"model":"claude-mock","max_tokens":16,"messages":[]}"#)
    }

    /// Stop the proxy, which writes every queued usage row, and read the log.
    fn stop_and_read_usage(&mut self) -> Vec<UsageRow> {
        self.proxy.take().unwrap().stop();
        Store::open(&self.scratch.db())
            .unwrap()
            .usage_log(&UsageQuery::default())
            .unwrap()
    }
}

fn body_of(mut response: Response) -> String {
    let mut text = String::new();
    response.read_to_string(&mut text).unwrap();
    text
}

/// Read from `response` until `needle` has arrived; return everything read.
fn read_until(response: &mut Response, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = response.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before `{needle}` arrived");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

#[test]
fn an_sse_event_reaches_the_client_before_the_upstream_sends_the_next() {
    let rig = Rig::start();
    let mut response = rig.passthrough_request("sse-gated").send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // The mock holds the second delta back until the first one has reached us; a proxy that
    // buffers would leave both sides waiting here.
    let first = read_until(&mut response, "\"text\":\"first\"");
    assert!(first.starts_with("event: message_start\n"), "{first}");
    assert!(!first.contains("second"));
    rig.upstream.shared.gate.add_permits(1);
    let rest = body_of(response);
    assert!(rest.contains("\"text\":\"second\""), "{rest}");
    assert!(rest.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[test]
fn passthrough_sends_the_users_credentials_and_no_archestra_header_upstream() {
    let rig = Rig::start();
    let beta = "claude-code-20250219,some-future-flag-2031-01-01";
    for path in [
        "/v1/anthropic/v1/messages",
        "/v1/anthropic/proxy-7/v1/messages",
    ] {
        let response = rig
            .client
            .post(format!("{}{path}?beta=true&x=a%20b", rig.origin))
            .header("authorization", "Bearer sk-ant-oat01-users-oauth-token")
            .header("x-api-key", USER_KEY)
            .header("anthropic-beta", beta)
            .header("anthropic-version", "2023-06-01")
            .header("x-app", "cli")
            .header("X-Archestra-Agent-Id", "anthropic_claude_code")
            .header("X-Archestra-Virtual-Key", &rig.passthrough)
            .header("X-Archestra-Device-Name", "laptop")
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["request-id"], "req_mock_1");
        assert_eq!(body_of(response), JSON_REPLY);
    }

    let seen = rig.upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/v1/messages?beta=true&x=a%20b");
        let headers = &request.headers;
        assert_eq!(
            headers["authorization"],
            "Bearer sk-ant-oat01-users-oauth-token"
        );
        assert_eq!(headers["x-api-key"], USER_KEY);
        assert_eq!(headers["anthropic-beta"], beta);
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers["x-app"], "cli");
        let ours: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("x-archestra-"))
            .collect();
        assert!(ours.is_empty(), "{ours:?}");
        assert_eq!(request.body, b"{}");
    }
}

#[test]
fn virtual_keys_are_swapped_for_the_provider_key() {
    let rig = Rig::start();
    let url = format!("{}/v1/anthropic/v1/messages?beta=true", rig.origin);
    // Claude Code sends ANTHROPIC_AUTH_TOKEN as a bearer token; an apiKeyHelper's output goes
    // as both headers.
    let bearer = rig.client.post(&url).bearer_auth(&rig.standard);
    let helper = rig
        .client
        .post(&url)
        .bearer_auth(&rig.standard)
        .header("x-api-key", &rig.standard);
    let api_key = rig.client.post(&url).header("x-api-key", &rig.standard);
    for request in [bearer, helper, api_key] {
        let response = request.body("{}").send().unwrap();
        assert_eq!(response.status(), 200);
    }

    let seen = rig.upstream.seen();
    assert_eq!(seen.len(), 3);
    for request in seen {
        assert!(request.headers.get("authorization").is_none());
        let keys: Vec<_> = request.headers.get_all("x-api-key").iter().collect();
        assert_eq!(keys, [PROVIDER_KEY]);
        let text = format!("{:?}", request.headers);
        assert!(!text.contains("arch_"), "{text}");
    }
}

#[test]
fn a_key_revoked_through_the_self_revoke_route_is_refused_at_once() {
    let rig = Rig::start();
    assert_eq!(
        rig.passthrough_request("json").send().unwrap().status(),
        200
    );

    let revoked = rig
        .client
        .delete(format!("{}/api/virtual-keys/self", rig.origin))
        .bearer_auth(&rig.passthrough)
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 204);

    let refused = rig.passthrough_request("json").send().unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("was revoked"), "{message}");
    assert!(
        message.contains("archestra-connect status --check"),
        "{message}"
    );
    assert_eq!(
        rig.upstream.seen().len(),
        1,
        "the refused request went upstream"
    );
}

#[test]
fn a_key_revoked_by_another_process_is_refused_once_the_watcher_looks() {
    let rig = Rig::start();
    assert_eq!(
        rig.passthrough_request("json").send().unwrap().status(),
        200
    );

    // What `archestra-proxy keys revoke` does: a change through another connection.
    let store = Store::open(&rig.scratch.db()).unwrap();
    assert_eq!(store.revoke_user_keys("ada@example.com").unwrap(), 1);
    wait_until("the proxy refuses the revoked key", || {
        rig.passthrough_request("json").send().unwrap().status() == 403
    });
}

#[test]
fn requests_without_a_known_key_are_refused_with_the_status_hint() {
    let rig = Rig::start();
    let url = format!("{}/v1/anthropic/v1/messages", rig.origin);
    let stranger = format!("arch_{}", "0".repeat(64));
    let cases = [
        rig.client.post(&url).header("x-api-key", USER_KEY),
        rig.client
            .post(&url)
            .header("X-Archestra-Virtual-Key", &stranger),
        rig.client.post(&url).bearer_auth(&stranger),
    ];
    for request in cases {
        let response = request.body("{}").send().unwrap();
        assert_eq!(response.status(), 403);
        let (kind, message) = error_of(response);
        assert_eq!(kind, "permission_error");
        assert!(
            message.contains("archestra-connect status --check"),
            "{message}"
        );
    }
    assert!(rig.upstream.seen().is_empty());

    // A standard key on a proxy without a provider key cannot be swapped.
    let bare = Rig::start_with(|config| config.provider_key = None);
    let response = bare
        .client
        .post(format!("{}/v1/anthropic/v1/messages", bare.origin))
        .bearer_auth(&bare.standard)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(error_of(response).1.contains("--provider-key-file"));
    assert!(bare.upstream.seen().is_empty());
}

#[test]
fn usage_rows_carry_user_agent_and_tokens_for_json_and_sse_replies() {
    let mut rig = Rig::start();
    assert_eq!(
        body_of(rig.passthrough_request("json").send().unwrap()),
        JSON_REPLY
    );
    let stream = body_of(rig.passthrough_request("sse").send().unwrap());
    assert!(stream.contains("message_stop"));
    let response = rig
        .client
        .post(format!(
            "{}/v1/anthropic/v1/messages/count_tokens",
            rig.origin
        ))
        .bearer_auth(&rig.standard)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = body_of(response);

    let rows = rig.stop_and_read_usage();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let (json, sse, standard) = (&rows[0], &rows[1], &rows[2]);

    assert_eq!(json.user.as_deref(), Some("ada@example.com"));
    assert_eq!(json.agent_id.as_deref(), Some("anthropic_claude_code"));
    assert_eq!(json.path, "/v1/messages");
    assert_eq!(json.method, "POST");
    assert_eq!(json.status, 200);
    assert_eq!(json.outcome, "completed");
    assert_eq!(json.model.as_deref(), Some("claude-mock-json"));
    assert_eq!(
        (
            json.usage.input_tokens,
            json.usage.output_tokens,
            json.usage.cache_creation_input_tokens,
            json.usage.cache_read_input_tokens
        ),
        (Some(11), Some(7), Some(2), Some(3))
    );
    let ttfb = json.ttfb_us.expect("a time to first byte");
    assert!(ttfb <= json.latency_us);

    assert_eq!(sse.model.as_deref(), Some("claude-mock-sse"));
    assert_eq!(
        (
            sse.usage.input_tokens,
            sse.usage.output_tokens,
            sse.usage.cache_creation_input_tokens,
            sse.usage.cache_read_input_tokens
        ),
        (Some(25), Some(15), Some(4), Some(100))
    );
    assert_eq!(sse.outcome, "completed");
    assert_eq!(sse.key_id, json.key_id);

    assert_eq!(standard.user.as_deref(), Some("bob@example.com"));
    assert_eq!(standard.path, "/v1/messages/count_tokens");
    assert_eq!(standard.agent_id, None);
    assert_ne!(standard.key_id, json.key_id);
}

#[test]
fn no_usage_row_is_lost_on_a_clean_shutdown_and_none_is_written_when_off() {
    let mut rig = Rig::start();
    for _ in 0..40 {
        let _ = body_of(rig.passthrough_request("json").send().unwrap());
    }
    assert_eq!(rig.stop_and_read_usage().len(), 40);

    let mut off = Rig::start_with(|config| config.record_usage = false);
    let _ = body_of(off.passthrough_request("json").send().unwrap());
    assert_eq!(off.upstream.seen().len(), 1);
    assert!(off.stop_and_read_usage().is_empty());
}

#[test]
fn a_client_that_disconnects_cancels_the_upstream_request() {
    let mut rig = Rig::start();
    let mut response = rig.passthrough_request("endless").send().unwrap();
    read_until(&mut response, "tick");
    assert!(!rig.upstream.shared.stream_cancelled.load(Ordering::SeqCst));
    drop(response);

    wait_until("the upstream stream is cancelled", || {
        rig.upstream.shared.stream_cancelled.load(Ordering::SeqCst)
    });
    let rows = rig.stop_and_read_usage();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "client_gone");
}

#[test]
fn a_one_mebibyte_request_body_streams_through() {
    const SIZE: usize = 1024 * 1024;
    let rig = Rig::start();
    let body: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    let addr = rig.origin.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "POST /v1/anthropic/v1/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {SIZE}\r\nX-Archestra-Virtual-Key: {}\r\nConnection: close\r\n\r\n",
        rig.passthrough
    )
    .unwrap();

    // Half the body goes first; it must reach the upstream while the rest is still unsent,
    // which a proxy that collected the body before forwarding could not do.
    socket.write_all(&body[..SIZE / 2]).unwrap();
    wait_until("the first half reaches the upstream", || {
        rig.upstream.shared.body_bytes.load(Ordering::SeqCst) > 0
    });
    assert!(rig.upstream.shared.body_bytes.load(Ordering::SeqCst) <= SIZE / 2);
    socket.write_all(&body[SIZE / 2..]).unwrap();

    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let seen = rig.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body == body, "the upstream got a different body");
}

#[test]
fn upstream_failures_answer_502_and_504_and_upstream_errors_pass_through() {
    // An upstream status and body reach the client unchanged.
    let rig = Rig::start();
    let response = rig.passthrough_request("overloaded").send().unwrap();
    assert_eq!(response.status(), 529);
    assert_eq!(body_of(response), OVERLOADED_REPLY);

    // Nobody listens on the upstream's port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable = Rig::start_with(|config| config.upstream = dead.parse().unwrap());
    let response = unreachable.passthrough_request("json").send().unwrap();
    assert_eq!(response.status(), 502);
    let (kind, message) = error_of(response);
    assert_eq!(kind, "api_error");
    assert!(
        message.contains("could not reach the provider"),
        "{message}"
    );
    let rows = unreachable.stop_and_read_usage();
    assert_eq!(rows[0].outcome, "upstream_unreachable");
    assert_eq!(rows[0].status, 502);

    // The upstream takes longer than allowed to answer.
    let slow = Rig::start_with(|config| config.upstream_timeout = Duration::from_millis(300));
    let response = slow.passthrough_request("hang").send().unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(error_of(response).0, "timeout_error");
}

#[test]
fn a_malformed_request_answers_400() {
    let rig = Rig::start();
    let response = rig
        .client
        .post(format!("{}/v1/anthropic/proxy-7/admin", rig.origin))
        .header("X-Archestra-Virtual-Key", &rig.passthrough)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).0, "invalid_request_error");

    // A chunked body whose chunk size is not a number breaks off mid-stream.
    let addr = rig.origin.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "POST /v1/anthropic/v1/messages HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nX-Archestra-Virtual-Key: {}\r\n\r\n5\r\nhello\r\nzz\r\n",
        rig.passthrough
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("invalid_request_error"), "{answer}");
}

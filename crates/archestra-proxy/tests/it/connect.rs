use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_archestra-proxy");

/// Run `archestra-proxy approve …` on `db`, away from the real home.
fn approve(scratch: &Scratch, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("approve")
        .args(args)
        .arg("--db")
        .arg(scratch.db())
        .env("HOME", scratch.dir.path())
        .env("XDG_DATA_HOME", scratch.dir.path().join("data"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn start_request(origin: &str, body: Value) -> reqwest::blocking::Response {
    client()
        .post(format!("{origin}/api/client-connections"))
        .json(&body)
        .send()
        .unwrap()
}

fn poll(origin: &str, device_code: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{origin}/api/client-connections/poll"))
        .json(&json!({ "deviceCode": device_code }))
        .send()
        .unwrap()
}

fn status_of(origin: &str, device_code: &str) -> String {
    let answer = poll(origin, device_code);
    assert_eq!(answer.status(), 200);
    answer.json::<Value>().unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn claude_code(platform: &str) -> Value {
    json!({ "clientId": "claude-code", "platform": platform, "deviceName": "laptop\u{7}" })
}

#[test]
fn an_approved_request_redeems_once_as_archestra_con_device_code() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 100);
    let origin = server.origin();

    let answer = start_request(&origin, claude_code("linux"));
    assert_eq!(answer.status(), 200);
    let started: Value = answer.json().unwrap();
    let device_code = started["deviceCode"].as_str().unwrap().to_string();
    let user_code = started["userCode"].as_str().unwrap().to_string();
    let id = started["id"].as_str().unwrap();
    assert_eq!(device_code.len(), 43, "{started}");
    assert!(archestra_wire::is_user_code(&user_code), "{started}");
    assert_eq!(
        started["verificationPath"],
        format!("/connection?clientId=claude-code&platform=linux&connectRequest={id}")
    );
    assert_eq!(started["interval"], 3);
    let expires = time::OffsetDateTime::parse(
        started["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 590 && left.whole_seconds() <= 600,
        "{left}"
    );
    assert_eq!(status_of(&origin, &device_code), "pending");

    // The page the installer opens shows the code and the command that approves it.
    let page = client()
        .get(format!(
            "{origin}{}",
            started["verificationPath"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().unwrap();
    assert!(
        page.contains(&format!("archestra-proxy approve {user_code}")),
        "{page}"
    );
    assert!(page.contains("<strong>laptop</strong>"), "{page}");
    assert!(!page.contains(&device_code), "{page}");

    let mcp_url = format!("{origin}/v1/mcp/default");
    let out = approve(
        &scratch,
        &[
            &user_code.to_lowercase(),
            "--user",
            "dev@example.com",
            "--mcp-url",
            &mcp_url,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Approved") && said.contains("laptop"),
        "{said}"
    );
    assert!(!said.contains(&device_code), "{said}");
    assert_eq!(status_of(&origin, &device_code), "approved");

    let url = format!("{origin}/api/connection-setups/script/archestra_con_{device_code}");
    let answer = redeem(&client(), &url, "laptop");
    assert_eq!(answer.status(), 200);
    let payload: Value = answer.json().unwrap();
    assert_eq!(payload["mcp"]["url"], mcp_url);
    assert_eq!(redeem(&client(), &url, "laptop").status(), 410);

    // Deciding twice is refused.
    let out = approve(
        &scratch,
        &[&user_code, "--user", "dev@example.com", "--deny"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approved already"),
        "{out:?}"
    );
}

#[test]
fn a_denied_request_answers_denied_and_mints_nothing() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 100);
    let origin = server.origin();
    let started: Value = start_request(&origin, claude_code("macos")).json().unwrap();
    let device_code = started["deviceCode"].as_str().unwrap();
    let user_code = started["userCode"].as_str().unwrap();

    let out = approve(
        &scratch,
        &[user_code, "--user", "dev@example.com", "--deny"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status_of(&origin, device_code), "denied");
    let url = format!("{origin}/api/connection-setups/script/archestra_con_{device_code}");
    assert_eq!(redeem(&client(), &url, "laptop").status(), 404);
}

#[test]
fn malformed_and_unknown_requests_are_refused() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 100);
    let origin = server.origin();

    let answer = start_request(
        &origin,
        json!({ "clientId": "cursor", "platform": "linux" }),
    );
    assert_eq!(answer.status(), 400);
    let answer = start_request(
        &origin,
        json!({ "clientId": "claude-code", "platform": "plan9" }),
    );
    assert_eq!(answer.status(), 400);
    let answer = start_request(&origin, json!("not an object"));
    assert_eq!(answer.status(), 400);

    assert_eq!(poll(&origin, &"A".repeat(43)).status(), 404);

    let answer = start_request(
        &origin,
        json!({ "clientId": "claude-code", "platform": "linux", "deviceName": "<script>x</script>" }),
    );
    let id = answer.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = client()
        .get(format!("{origin}/connection?connectRequest={id}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    let page = client()
        .get(format!("{origin}/connection?connectRequest=ffff"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("knows no such connection request"), "{page}");
    assert_eq!(poll(&origin, "short").status(), 404);

    let out = approve(&scratch, &["ABCD-EFGH", "--user", "dev@example.com"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending connection request"),
        "{out:?}"
    );
    let out = approve(&scratch, &["ABCD-EFGH", "--user", "not-an-email"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn starting_requests_is_limited_per_address() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 100);
    let origin = server.origin();
    for _ in 0..10 {
        assert_eq!(start_request(&origin, claude_code("linux")).status(), 200);
    }
    let answer = start_request(&origin, claude_code("linux"));
    assert_eq!(answer.status(), 429);
    assert!(answer.headers().get("retry-after").is_some());
}

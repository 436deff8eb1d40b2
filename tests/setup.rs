//! `archestra-connect setup` end to end: the companion server on 127.0.0.1 mints real
//! tokens, the real Claude Code CLI makes the registrations, and the fake `claude` injects
//! failures.

mod common;

use std::fs;
use std::path::Path;

use archestra_proxy::TokenState;
use common::{
    World, assert_both_plugins_installed, fake_claude, key_in_headers, mode,
    own_marketplace_passthrough, passthrough, real_claude, show, stderr, virtual_key,
    with_own_marketplace,
};
use serde_json::Value;

fn root_dir() -> std::path::PathBuf {
    common::root()
}

#[test]
fn setup_with_the_real_claude_registers_gateway_env_and_plugins() {
    let world = World::with_marketplace();
    let link = world.mint(&own_marketplace_passthrough(&world.origin));

    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));

    // The gateway is a user-scope entry in $CLAUDE_CONFIG_DIR/.claude.json.
    let cj = world.read_json(&world.claude_json());
    assert_eq!(
        cj["mcpServers"]["archestra"],
        serde_json::json!({"type": "http", "url": format!("{}/v1/mcp/default", world.origin)})
    );

    // The env block points at the proxy and carries the attribution key.
    let settings = world.read_json(&world.settings());
    let env = &settings["env"];
    assert_eq!(
        env["ANTHROPIC_BASE_URL"],
        format!("{}/v1/anthropic", world.origin)
    );
    assert!(env.get("ANTHROPIC_AUTH_TOKEN").is_none());
    let key = key_in_headers(&settings);
    assert!(key.starts_with("arch_") && key.len() == 69, "{key}");
    assert!(
        env["ANTHROPIC_CUSTOM_HEADERS"]
            .as_str()
            .unwrap()
            .starts_with("X-Archestra-Agent-Id: anthropic_claude_code\n")
    );
    let record = world
        .store()
        .key_state(&key)
        .unwrap()
        .expect("the server knows the key");
    assert!(!record.revoked);

    // The marketplace is declared with auto-update and both plugins are installed.
    assert_eq!(
        settings["extraKnownMarketplaces"]["acme-skills"]["autoUpdate"],
        true
    );
    assert_both_plugins_installed(&world);

    // Secrets stay private: settings.json and the state record are 0600.
    assert_eq!(mode(&world.settings()), 0o600);
    assert_eq!(mode(&world.state_file()), 0o600);
    let state = world.read_json(&world.state_file());
    assert_eq!(state["phase"], "complete");
    assert_eq!(world.token_state(&link), TokenState::Used);

    // Nothing printed holds the key or the token.
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let token = link.rsplit('/').next().unwrap();
    assert!(
        !printed.contains(&key) && !printed.contains(token),
        "{printed}"
    );
}

#[test]
fn setup_keeps_the_users_keys_lines_indentation_and_unicode() {
    let world = World::new();
    let original =
        fs::read_to_string(root_dir().join("fixtures/settings/large-unicode.json")).unwrap();
    fs::write(world.settings(), &original).unwrap();
    fs::set_permissions(
        world.settings(),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let link = world.mint(&virtual_key(&world.origin));

    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));

    let text = fs::read_to_string(world.settings()).unwrap();
    assert!(
        text.contains("\n    \"spinnerTipsEnabled\": false"),
        "indentation lost:\n{text}"
    );
    assert!(
        text.contains("Read(~/Документы/日本語/**)"),
        "unicode escaped:\n{text}"
    );
    assert!(
        text.contains("\"RATIO\": \"2.50 — ✓\""),
        "value rewritten:\n{text}"
    );
    let settings: Value = serde_json::from_str(&text).unwrap();
    let env = &settings["env"];
    assert_eq!(
        env["ANTHROPIC_API_KEY"],
        "sk-ant-api03-user-own-key-0000000000000000"
    );
    assert_eq!(env["MY_FLAG"], "1");
    assert!(
        env["ANTHROPIC_AUTH_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("arch_")
    );
    assert_eq!(
        env["ANTHROPIC_CUSTOM_HEADERS"],
        "X-Team: platform ✓\nX-Trace: on\nX-Archestra-Agent-Id: anthropic_claude_code"
    );
    assert_eq!(settings["hooks"]["PreToolUse"][0]["matcher"], "Bash");
    // The key made the file private; the backup keeps the original bytes and mode.
    assert_eq!(mode(&world.settings()), 0o600);
    let backup = world.config.join("settings.json.archestra-backup");
    assert_eq!(fs::read_to_string(&backup).unwrap(), original);
    assert_eq!(mode(&backup), 0o640);
}

#[test]
fn running_setup_twice_converges_and_revokes_the_first_key() {
    let world = World::new();
    fs::write(world.settings(), "{\n  \"theme\": \"light\"\n}\n").unwrap();
    let first = world.mint(&passthrough(&world.origin));
    let out = world.connect(&["setup", &first, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    let first_key = key_in_headers(&world.read_json(&world.settings()));
    let backup = fs::read(world.config.join("settings.json.archestra-backup")).unwrap();

    let second = world.mint(&passthrough(&world.origin));
    let out = world.connect(&["setup", &second, "--yes", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let result: Value = serde_json::from_slice(&out.stdout).expect("--json prints one object");
    assert_eq!(result["status"], "connected");
    // The gateway is registered already, so only `--version` runs.
    assert_eq!(result["claudeCalls"], 1, "{result}");

    let settings = world.read_json(&world.settings());
    let headers = settings["env"]["ANTHROPIC_CUSTOM_HEADERS"]
        .as_str()
        .unwrap();
    assert_eq!(headers.lines().count(), 2, "{headers}");
    let second_key = key_in_headers(&settings);
    assert_ne!(first_key, second_key);
    assert!(
        world
            .store()
            .key_state(&first_key)
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !world
            .store()
            .key_state(&second_key)
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        fs::read(world.config.join("settings.json.archestra-backup")).unwrap(),
        backup
    );
    let cj = world.read_json(&world.claude_json());
    assert_eq!(cj["mcpServers"].as_object().unwrap().len(), 1);
}

#[test]
fn setup_writes_through_a_symlinked_settings_file() {
    let world = World::new();
    let dotfiles = world.dir.path().join("dotfiles");
    fs::create_dir_all(&dotfiles).unwrap();
    fs::write(
        dotfiles.join("claude-settings.json"),
        "{\"theme\": \"dark\"}",
    )
    .unwrap();
    std::os::unix::fs::symlink(dotfiles.join("claude-settings.json"), world.settings()).unwrap();
    let link = world.mint(&passthrough(&world.origin));

    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        fs::symlink_metadata(world.settings())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let target: Value =
        serde_json::from_str(&fs::read_to_string(dotfiles.join("claude-settings.json")).unwrap())
            .unwrap();
    assert_eq!(target["theme"], "dark");
    assert!(target["env"]["ANTHROPIC_BASE_URL"].is_string());
}

#[test]
fn invalid_settings_stop_setup_before_the_link_is_used() {
    let world = World::new();
    let text =
        fs::read_to_string(root_dir().join("fixtures/settings/invalid-comment.json")).unwrap();
    fs::write(world.settings(), &text).unwrap();
    let link = world.mint(&passthrough(&world.origin));

    let out = world.connect(&["setup", &link, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("line 5, column 3"), "{err}");
    assert!(err.contains("settings.json"), "{err}");
    assert!(err.contains("the link was not used"), "{err}");
    assert_eq!(fs::read_to_string(world.settings()).unwrap(), text);
    assert_eq!(world.token_state(&link), TokenState::Unused);
    assert!(!world.state_file().exists());
}

#[test]
fn a_missing_or_old_claude_stops_setup_before_the_link_is_used() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));

    let missing = world.dir.path().join("no-such-claude");
    let out = world.connect_with(
        &["setup", &link, "--yes"],
        &[("ARCHESTRA_CLAUDE_BIN", missing.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("install Claude Code"),
        "{}",
        show(&out)
    );

    let out = world.connect_with(
        &["setup", &link, "--yes"],
        &[
            ("ARCHESTRA_CLAUDE_BIN", fake_claude().to_str().unwrap()),
            ("FAKE_CLAUDE_VERSION", "1.0.40"),
            ("FAKE_CLAUDE_REAL", real_claude().to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("too old"), "{}", show(&out));
    assert_eq!(world.token_state(&link), TokenState::Unused);
    assert!(!world.settings().exists());
}

#[test]
fn spent_and_unknown_links_say_what_to_do() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    assert!(world.connect(&["setup", &link, "--yes"]).status.success());

    let out = world.connect(&["setup", &link, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("expired or was already used"),
        "{}",
        show(&out)
    );
    assert!(stderr(&out).contains("Connect page"), "{}", show(&out));

    let unknown = format!(
        "{}/api/connection-setups/script/archestra_con_{}",
        world.origin,
        "Z".repeat(32)
    );
    let out = world.connect(&["setup", &unknown, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("does not know this setup link"),
        "{}",
        show(&out)
    );

    let mut short = passthrough(&world.origin);
    short.ttl_seconds = Some(1);
    let expired = world.mint(&short);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = world.connect(&["setup", &expired, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("expired or was already used"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_second_setup_waits_for_none_and_leaves_its_link_unused() {
    let world = World::new();
    let first = world.mint(&passthrough(&world.origin));
    let second = world.mint(&passthrough(&world.origin));
    let log = world.dir.path().join("claude.log");

    // The first setup holds the lock while its `claude mcp add` sleeps.
    let mut slow = std::process::Command::new(env!("CARGO_BIN_EXE_archestra-connect"));
    slow.args(["setup", &first, "--yes"])
        .env("HOME", &world.home)
        .env("CLAUDE_CONFIG_DIR", &world.config)
        .env("ARCHESTRA_CLAUDE_BIN", fake_claude())
        .env("FAKE_CLAUDE_REAL", real_claude())
        .env("FAKE_CLAUDE_LOG", &log)
        .env("FAKE_CLAUDE_SLEEP_ON", "^mcp add")
        .env("FAKE_CLAUDE_SLEEP", "4")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = slow.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("mcp add")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first setup never reached `mcp add`"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let out = world.connect(&["setup", &second, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("another archestra-connect"),
        "{}",
        show(&out)
    );
    assert_eq!(world.token_state(&second), TokenState::Unused);

    let first_out = child.wait_with_output().unwrap();
    assert!(first_out.status.success(), "{}", show(&first_out));
    assert!(world.read_json(&world.settings())["env"]["ANTHROPIC_BASE_URL"].is_string());
}

/// Run setup with the fake `claude` failing on `pattern`; return the output.
fn setup_failing_on(world: &World, link: &str, pattern: &str) -> std::process::Output {
    world.connect_with(
        &["setup", link, "--yes"],
        &[
            ("ARCHESTRA_CLAUDE_BIN", fake_claude().to_str().unwrap()),
            ("FAKE_CLAUDE_REAL", real_claude().to_str().unwrap()),
            ("FAKE_CLAUDE_FAIL", pattern),
        ],
    )
}

#[test]
fn a_failure_at_each_step_leaves_valid_files_and_resume_finishes() {
    for (pattern, check) in [
        ("^mcp remove", "removed"),
        ("^mcp add", "registered"),
        ("^plugin marketplace add", "marketplace"),
    ] {
        let world = World::with_marketplace();
        let original = "{\n  \"env\": {\n    \"KEEP\": \"me\"\n  }\n}\n";
        fs::write(world.settings(), original).unwrap();
        // An earlier local-scope registration that setup must remove first.
        let project = world.dir.path().join("project");
        fs::create_dir_all(&project).unwrap();
        let out = std::process::Command::new(real_claude())
            .args([
                "mcp",
                "add",
                "--scope",
                "local",
                "--transport",
                "http",
                "archestra",
                "https://old.example/v1/mcp/x",
            ])
            .current_dir(&project)
            .env("HOME", &world.home)
            .env("CLAUDE_CONFIG_DIR", &world.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));

        let link = world.mint(&with_own_marketplace(passthrough(&world.origin)));

        let out = setup_failing_on(&world, &link, pattern);
        assert_eq!(out.status.code(), Some(3), "{pattern}: {}", show(&out));
        assert!(stderr(&out).contains("injected failure"), "{}", show(&out));
        assert!(stderr(&out).contains("setup --resume"), "{}", show(&out));

        // settings.json is valid and the env block untouched: it is merged last.
        let settings = world.read_json(&world.settings());
        assert_eq!(
            settings["env"],
            serde_json::json!({"KEEP": "me"}),
            "{pattern}"
        );
        // The record says exactly how far setup got.
        let state = world.read_json(&world.state_file());
        assert_eq!(state["phase"], "in-progress");
        assert_eq!(
            state["envDone"].as_bool().or(state["env_done"].as_bool()),
            Some(false)
        );
        let cj = world.read_json(&world.claude_json());
        let registered = cj["mcpServers"].get("archestra").is_some();
        assert_eq!(state["mcp"]["registered"], registered, "{pattern}: {state}");
        match check {
            "removed" => assert_eq!(state["mcp"]["removed"].as_array().unwrap().len(), 0),
            "registered" => {
                assert_eq!(state["mcp"]["removed"].as_array().unwrap().len(), 1);
                assert!(!registered);
            }
            _ => {
                assert!(registered);
                assert!(state["skills"]["marketplace_added"] == false);
            }
        }

        // Running again with the real claude finishes the job.
        let out = world.connect(&["setup", "--resume", "--yes"]);
        assert!(out.status.success(), "{pattern}: {}", show(&out));
        let state = world.read_json(&world.state_file());
        assert_eq!(state["phase"], "complete");
        let settings = world.read_json(&world.settings());
        assert_eq!(settings["env"]["KEEP"], "me");
        assert!(settings["env"]["ANTHROPIC_BASE_URL"].is_string());
        let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
        assert!(
            installed["plugins"]
                .get("acme-skills@acme-skills")
                .is_some()
        );
        let cj = world.read_json(&world.claude_json());
        assert!(cj["mcpServers"].get("archestra").is_some());
        let project_key = project.to_str().unwrap();
        assert!(
            cj["projects"][project_key]["mcpServers"]
                .get("archestra")
                .is_none(),
            "the shadowing local entry is still there: {}",
            cj["projects"]
        );
    }
}

#[test]
fn a_failed_plugin_install_is_a_warning() {
    let world = World::with_marketplace();
    let link = world.mint(&own_marketplace_passthrough(&world.origin));

    let out = setup_failing_on(&world, &link, "^plugin install .*extra@");
    assert!(out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("warning:"), "{}", show(&out));
    let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
    assert!(
        installed["plugins"]
            .get("acme-skills@acme-skills")
            .is_some()
    );
    assert!(installed["plugins"].get("extra@acme-skills").is_none());
}

#[test]
fn dry_run_changes_nothing() {
    let world = World::new();
    fs::write(world.settings(), "{}\n").unwrap();
    let link = world.mint(&virtual_key(&world.origin));
    let out = world.connect(&["setup", &link, "--dry-run", "--secret-store", "file"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("register the MCP gateway `archestra`"),
        "{err}"
    );
    assert!(err.contains("set ANTHROPIC_AUTH_TOKEN = arch_…"), "{err}");
    assert_eq!(fs::read_to_string(world.settings()).unwrap(), "{}\n");
    assert!(
        !world.claude_json().exists()
            || world
                .read_json(&world.claude_json())
                .get("mcpServers")
                .is_none()
    );
    assert!(!world.state_file().exists());

    // By default the plan offers the keyring first.
    let link = world.mint(&virtual_key(&world.origin));
    let out = world.connect(&["setup", &link, "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("in the OS keyring"), "{}", show(&out));
    assert!(
        !stderr(&out).contains("set ANTHROPIC_AUTH_TOKEN"),
        "{}",
        show(&out)
    );
}

#[test]
fn setup_on_a_machine_without_settings_creates_it_and_takes_no_backup() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(world.settings().exists());
    assert!(!Path::new(&world.config.join("settings.json.archestra-backup")).exists());
    let state = world.read_json(&world.state_file());
    assert!(state["settings"]["original"].is_null());
}

#[test]
fn claude_runs_without_update_checks_or_telemetry_unless_the_user_says_otherwise() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    let seen = world.dir.path().join("claude-env.log");
    let out = world
        .connect_command(&["setup", &link, "--yes"])
        .env_remove("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
        .env("DISABLE_AUTOUPDATER", "0")
        .env("ARCHESTRA_CLAUDE_BIN", fake_claude())
        .env("FAKE_CLAUDE_REAL", real_claude())
        .env("FAKE_CLAUDE_EXEC_ON", ".")
        .env(
            "FAKE_CLAUDE_EXEC",
            format!(
                "env | grep -E '^(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC|DISABLE_AUTOUPDATER)=' | sort | tr '\\n' ' ' >> '{}'; echo >> '{}'",
                seen.display(),
                seen.display()
            ),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let seen = fs::read_to_string(&seen).unwrap();
    assert!(seen.lines().count() >= 2, "{seen}");
    for line in seen.lines() {
        // Set where the user had not set it; the user's own value kept.
        assert_eq!(
            line.trim(),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=0",
            "{seen}"
        );
    }
}

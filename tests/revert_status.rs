//! `archestra-connect revert` and `status` end to end, with the real Claude Code CLI.

mod common;

use std::fs;

use common::{World, fake_claude, passthrough, real_claude, show, stderr, virtual_key};
use serde_json::Value;

fn root_dir() -> std::path::PathBuf {
    common::root()
}

/// Assert that nothing of the setup is left in Claude Code's files.
fn assert_nothing_left(world: &World) {
    let cj = if world.claude_json().exists() {
        world.read_json(&world.claude_json())
    } else {
        serde_json::json!({})
    };
    let servers = cj
        .get("mcpServers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    assert!(
        servers.get("archestra").is_none(),
        "gateway left: {servers:?}"
    );
    let known = world.config.join("plugins/known_marketplaces.json");
    if known.exists() {
        let known = world.read_json(&known);
        assert!(
            known.get("acme-skills").is_none(),
            "marketplace left: {known}"
        );
    }
    let installed = world.config.join("plugins/installed_plugins.json");
    if installed.exists() {
        let installed = world.read_json(&installed);
        let plugins = installed["plugins"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(plugins.is_empty(), "plugins left: {plugins:?}");
    }
    assert!(!world.state_file().exists());
}

#[test]
fn setup_then_revert_leaves_settings_byte_identical() {
    for fixture in [None, Some("minimal.json"), Some("large-unicode.json")] {
        let world = World::with_marketplace();
        let original =
            fixture.map(|f| fs::read(root_dir().join("fixtures/settings").join(f)).unwrap());
        if let Some(bytes) = &original {
            fs::write(world.settings(), bytes).unwrap();
        }
        let link = world.mint(&common::own_marketplace_passthrough(&world.origin));
        let out = world.connect(&["setup", &link, "--yes"]);
        assert!(out.status.success(), "{fixture:?}: {}", show(&out));

        let out = world.connect(&["revert", "--yes"]);
        assert!(out.status.success(), "{fixture:?}: {}", show(&out));
        match &original {
            Some(bytes) => assert_eq!(
                String::from_utf8_lossy(&fs::read(world.settings()).unwrap()),
                String::from_utf8_lossy(bytes),
                "{fixture:?}"
            ),
            None => assert!(
                !world.settings().exists(),
                "settings.json should be gone again"
            ),
        }
        assert!(!world.config.join("settings.json.archestra-backup").exists());
        assert_nothing_left(&world);

        // A second revert finds nothing to do.
        let out = world.connect(&["revert", "--yes"]);
        assert!(out.status.success(), "{}", show(&out));
        assert!(stderr(&out).contains("Nothing to revert"), "{}", show(&out));
    }
}

#[test]
fn a_user_edit_made_after_setup_survives_revert() {
    let world = World::new();
    fs::write(
        world.settings(),
        "{\n  \"env\": {\n    \"KEEP\": \"1\"\n  }\n}\n",
    )
    .unwrap();
    let link = world.mint(&virtual_key(&world.origin));
    assert!(world.connect(&["setup", &link, "--yes"]).status.success());

    let mut settings = world.read_json(&world.settings());
    settings["env"]["ANTHROPIC_BASE_URL"] = "https://mine.example/v1".into();
    settings["env"]["LATER"] = "yes".into();
    settings["permissions"] = serde_json::json!({"allow": ["Bash(ls)"]});
    fs::write(
        world.settings(),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();

    let out = world.connect(&["revert", "--yes", "--revoke-key"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("kept ANTHROPIC_BASE_URL"),
        "{}",
        show(&out)
    );
    let after = world.read_json(&world.settings());
    assert_eq!(
        after["env"]["ANTHROPIC_BASE_URL"],
        "https://mine.example/v1"
    );
    assert_eq!(after["env"]["LATER"], "yes");
    assert_eq!(after["env"]["KEEP"], "1");
    assert!(after["env"].get("ANTHROPIC_AUTH_TOKEN").is_none());
    assert!(after["env"].get("ANTHROPIC_CUSTOM_HEADERS").is_none());
    assert_eq!(after["permissions"]["allow"][0], "Bash(ls)");
    let key = settings["env"]["ANTHROPIC_AUTH_TOKEN"].as_str().unwrap();
    assert!(world.store().key_state(key).unwrap().unwrap().revoked);
}

#[test]
fn revert_after_a_setup_interrupted_at_each_step_restores_the_original() {
    for pattern in ["^mcp add", "^plugin marketplace add", "^plugin install"] {
        let world = World::with_marketplace();
        let original = fs::read(root_dir().join("fixtures/settings/minimal.json")).unwrap();
        fs::write(world.settings(), &original).unwrap();
        let link = world.mint(&common::own_marketplace_passthrough(&world.origin));
        let out = world.connect_with(
            &["setup", &link, "--yes"],
            &[
                ("ARCHESTRA_CLAUDE_BIN", fake_claude().to_str().unwrap()),
                ("FAKE_CLAUDE_REAL", real_claude().to_str().unwrap()),
                ("FAKE_CLAUDE_FAIL", pattern),
            ],
        );
        assert!(!stderr(&out).is_empty(), "{}", show(&out));

        let out = world.connect(&["revert", "--yes"]);
        assert!(out.status.success(), "{pattern}: {}", show(&out));
        assert_eq!(fs::read(world.settings()).unwrap(), original, "{pattern}");
        assert_nothing_left(&world);
    }
}

#[test]
fn status_tells_connected_drifted_and_disconnected_apart() {
    let world = World::new();
    let out = world.connect(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Not connected"));

    let link = world.mint(&passthrough(&world.origin));
    assert!(world.connect(&["setup", &link, "--yes"]).status.success());
    let out = world.connect(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["connection"], "connected");
    assert_eq!(report["origin"], world.origin);
    assert_eq!(report["mode"], "provider-key");
    // On a terminal the mode is said in words, and the header lines stay in their column.
    let out = world.connect(&["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("mode          passthrough (provider-key): your own Claude credential"),
        "{shown}"
    );
    assert!(
        shown.contains("anthropic_claude_code\n                X-Archestra-Virtual-Key: arch_…"),
        "{shown}"
    );
    assert_eq!(report["gateway"]["name"], "archestra");
    assert_eq!(report["gateway"]["scope"], "user");
    assert_eq!(report["secretStore"], "settings.json");
    let lines = report["headerLines"].as_array().unwrap();
    assert_eq!(
        lines[1].as_str().unwrap().len(),
        "X-Archestra-Virtual-Key: arch_…".len() + 4
    );
    let base = report["effective"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "ANTHROPIC_BASE_URL")
        .unwrap();
    assert!(
        base["source"]
            .as_str()
            .unwrap()
            .starts_with("user settings")
    );
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    // No secret reaches the report.
    let key = world.read_json(&world.settings())["env"]["ANTHROPIC_CUSTOM_HEADERS"]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));

    // Drift: the header line removed by hand and the gateway removed with claude.
    let mut settings = world.read_json(&world.settings());
    settings["env"]["ANTHROPIC_CUSTOM_HEADERS"] =
        "X-Archestra-Agent-Id: anthropic_claude_code".into();
    fs::write(
        world.settings(),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    assert!(
        world
            .claude(&["mcp", "remove", "--scope", "user", "archestra"])
            .status
            .success()
    );
    let out = world.connect(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is gone from ANTHROPIC_CUSTOM_HEADERS"),
        "{err}"
    );
    assert!(err.contains("was removed after setup"), "{err}");
    // Status repairs nothing.
    assert!(
        world.read_json(&world.claude_json())["mcpServers"]
            .get("archestra")
            .is_none()
    );

    // A shell variable and a project setting that defeat the setup are named.
    let project = world.dir.path().join("proj/.claude");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("settings.json"),
        r#"{"env": {"ANTHROPIC_BASE_URL": "https://elsewhere.example"}}"#,
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_archestra-connect"));
    let out = cmd
        .args(["status", "--json"])
        .current_dir(world.dir.path().join("proj"))
        .env("HOME", &world.home)
        .env("CLAUDE_CONFIG_DIR", &world.config)
        .env("ANTHROPIC_API_KEY", "sk-ant-shell-0000000000000000")
        .env(
            "ARCHESTRA_MANAGED_SETTINGS_DIR",
            world.dir.path().join("no-managed"),
        )
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("overrides the value setup wrote"),
        "{problems}"
    );
    assert!(
        problems.contains("ANTHROPIC_API_KEY (sk-ant-…0000) is set in the shell"),
        "{problems}"
    );
}

#[test]
fn status_check_reports_the_health_of_the_deployment() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    assert!(world.connect(&["setup", &link, "--yes"]).status.success());
    let out = world.connect(&["status", "--check", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let health = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "health")
        .unwrap();
    assert_eq!(health["ok"], true, "{report}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "proxy")
    );
}

#[test]
fn revert_handles_a_machine_set_up_by_the_old_script() {
    let world = World::new();
    let key = format!("arch_{}", "7".repeat(64));
    let before = "{\n  \"theme\": \"dark\"\n}\n";
    fs::write(world.config.join("settings.json.archestra-backup"), before).unwrap();
    let settings = serde_json::json!({
        "theme": "dark",
        "env": {
            "ANTHROPIC_BASE_URL": format!("{}/v1/anthropic", world.origin),
            "ANTHROPIC_CUSTOM_HEADERS": format!("X-Team: a\nX-Archestra-Agent-Id: anthropic_claude_code\nX-Archestra-Virtual-Key: {key}"),
            "MINE": "1"
        }
    });
    fs::write(
        world.settings(),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let url = format!("{}/v1/mcp/default", world.origin);
    assert!(
        world
            .claude(&[
                "mcp",
                "add",
                "--scope",
                "user",
                "--transport",
                "http",
                "archestra",
                &url
            ])
            .status
            .success()
    );

    let out = world.connect(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("by the old setup script"),
        "{}",
        show(&out)
    );

    // Without a terminal and without --yes, revert shows the plan and refuses.
    let out = world.connect(&["revert"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("found by their Archestra marks"),
        "{}",
        show(&out)
    );

    let out = world.connect(&["revert", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    let after = world.read_json(&world.settings());
    assert_eq!(
        after["env"],
        serde_json::json!({"ANTHROPIC_CUSTOM_HEADERS": "X-Team: a", "MINE": "1"})
    );
    assert!(
        world.read_json(&world.claude_json())["mcpServers"]
            .get("archestra")
            .is_none()
    );
    assert!(world.config.join("settings.json.archestra-backup").exists());
}

#[test]
fn restore_backup_puts_the_backup_back_whole() {
    let world = World::new();
    let before = "{\n  \"theme\": \"light\"\n}\n";
    fs::write(world.settings(), before).unwrap();
    let link = world.mint(&passthrough(&world.origin));
    assert!(world.connect(&["setup", &link, "--yes"]).status.success());
    let mut s = world.read_json(&world.settings());
    s["later"] = 1.into();
    fs::write(world.settings(), s.to_string()).unwrap();

    let out = world.connect(&["revert", "--restore-backup", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("discard `later`"), "{}", show(&out));
    assert_eq!(fs::read_to_string(world.settings()).unwrap(), before);
    assert!(!world.config.join("settings.json.archestra-backup").exists());
    assert_nothing_left(&world);
}

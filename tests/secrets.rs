//! Secrets off disk: the virtual key in a real Secret Service read back through
//! `apiKeyHelper`, the file fallback without one, and a canary scan for leaks.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use archestra_proxy::{MARKETPLACE_CREDENTIAL_PREFIX, TokenState};
use common::keyring::KeyringSession;
use common::mock_upstream::{MockUpstream, REPLY_TEXT};
use common::{
    World, fake_claude, mode, passthrough, real_claude, show, stderr, virtual_key,
    with_own_marketplace,
};
use serde_json::Value;

/// A world whose installer runs reach a real, unlocked Secret Service.
fn keyring_world() -> (World, KeyringSession) {
    keyring_world_from(World::new())
}

/// Give `world` a Secret Service of its own.
fn keyring_world_from(mut world: World) -> (World, KeyringSession) {
    let session = KeyringSession::start(&world.home, world.dir.path());
    world.env.extend(session.env());
    (world, session)
}

/// Run the `apiKeyHelper` command the way Claude Code does: through `/bin/sh -c`.
fn run_helper(world: &World, helper: &str) -> std::process::Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", helper])
        .env_clear()
        .env("HOME", &world.home);
    for (k, v) in &world.env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_virtual_key_lives_in_the_keyring_and_reaches_the_api_through_the_helper() {
    let (world, _session) = keyring_world();
    let mock = MockUpstream::start();
    // The payload's proxy URL points at the mock; the link itself goes to the companion.
    let minted = world
        .store()
        .create_setup(&virtual_key(&world.origin), &mock.origin)
        .unwrap();
    let link = minted.url.replace(&mock.origin, &world.origin);

    let out = world.connect(&["setup", &link, "--yes", "--secret-store", "keyring"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("Stored the virtual key in the OS keyring"),
        "{}",
        show(&out)
    );

    let settings = world.read_json(&world.settings());
    assert!(
        settings["env"].get("ANTHROPIC_AUTH_TOKEN").is_none(),
        "{settings}"
    );
    let helper = settings["apiKeyHelper"]
        .as_str()
        .expect("an apiKeyHelper")
        .to_string();
    assert!(helper.contains(" credential --account "), "{helper}");

    // The helper prints the key, and it is a live key on the server.
    let printed = run_helper(&world, &helper);
    assert!(printed.status.success(), "{}", show(&printed));
    let key = String::from_utf8(printed.stdout)
        .unwrap()
        .trim()
        .to_string();
    let record = world
        .store()
        .key_state(&key)
        .unwrap()
        .expect("the server knows the key");
    assert!(!record.revoked);

    // Neither settings.json nor the state record holds the key.
    for file in [world.settings(), world.state_file()] {
        assert!(
            !fs::read_to_string(&file).unwrap().contains(&key),
            "{}",
            file.display()
        );
    }

    // The real Claude Code, in print mode, sends the helper's key to the API.
    let mut claude = Command::new(real_claude());
    claude
        .args(["-p", "hello"])
        .current_dir(world.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", &world.home)
        .env("CLAUDE_CONFIG_DIR", &world.config)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .stdin(std::process::Stdio::null());
    for (k, v) in &world.env {
        claude.env(k, v);
    }
    let out = claude.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(REPLY_TEXT),
        "{}",
        show(&out)
    );
    let messages: Vec<_> = mock
        .seen()
        .into_iter()
        .filter(|r| r.target.contains("/v1/messages"))
        .collect();
    assert!(!messages.is_empty(), "no request reached the mock");
    for request in messages {
        assert_eq!(request.header("x-api-key"), Some(key.as_str()));
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
    }

    // status knows where the key lives, and --check can read it.
    let out = world.connect(&["status", "--json", "--check"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["secretStore"], "keyring", "{report}");
    let keyring_check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keyring")
        .unwrap();
    assert_eq!(keyring_check["ok"], true);

    // revert removes the helper and the keyring entry, and can revoke the key.
    let out = world.connect(&["revert", "--yes", "--revoke-key"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        !world.settings().exists(),
        "setup created settings.json; revert removes it"
    );
    assert!(
        !run_helper(&world, &helper).status.success(),
        "the keyring entry is still there"
    );
    assert!(world.store().key_state(&key).unwrap().unwrap().revoked);
}

#[test]
fn without_a_keyring_the_key_falls_back_to_a_private_settings_file() {
    let world = World::new();
    let link = world.mint(&virtual_key(&world.origin));
    // No session bus at all: the keyring fails at once.
    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("no keyring answered"), "{err}");
    assert!(err.contains("readable by you only"), "{err}");
    let settings = world.read_json(&world.settings());
    assert!(
        settings["env"]["ANTHROPIC_AUTH_TOKEN"]
            .as_str()
            .unwrap()
            .starts_with("arch_")
    );
    assert!(settings.get("apiKeyHelper").is_none());
    assert_eq!(mode(&world.settings()), 0o600);
    let report: Value =
        serde_json::from_slice(&world.connect(&["status", "--json"]).stdout).unwrap();
    assert_eq!(report["secretStore"], "settings.json");
}

#[test]
fn asking_for_the_keyring_without_one_fails_before_the_link_is_used() {
    let world = World::new();
    let link = world.mint(&virtual_key(&world.origin));
    let out = world.connect(&["setup", &link, "--yes", "--secret-store", "keyring"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("--secret-store file"),
        "{}",
        show(&out)
    );
    assert_eq!(world.token_state(&link), TokenState::Unused);
    assert!(!world.settings().exists());
}

/// Every file under `dir`, except those in `skip`.
fn files_under(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if skip.contains(&path) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&path, skip, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn a_canary_secret_never_leaks_into_output_logs_argv_or_other_files() {
    for (mode_name, keyring) in [("virtual-key", true), ("passthrough", false)] {
        let (mut world, session) = keyring_world_from(World::with_marketplace());
        if !keyring {
            drop(session);
            world.env.clear();
        }
        let req = with_own_marketplace(if keyring {
            virtual_key(&world.origin)
        } else {
            passthrough(&world.origin)
        });
        let link = world.mint(&req);
        let token = link.rsplit('/').next().unwrap().to_string();

        // Run everything verbosely, with a debug log, through the argv-recording fake claude.
        let argv_log = world.dir.path().join("argv.log");
        let extra: Vec<(&str, String)> = vec![
            ("ARCHESTRA_CLAUDE_BIN", fake_claude().display().to_string()),
            ("FAKE_CLAUDE_REAL", real_claude().display().to_string()),
            ("FAKE_CLAUDE_LOG", argv_log.display().to_string()),
            ("ARCHESTRA_CONNECT_LOG", "trace".into()),
        ];
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let captured = std::cell::RefCell::new(String::new());
        let run = |args: &[&str]| {
            let out = world.connect_with(args, &extra);
            let mut all = captured.borrow_mut();
            all.push_str(&String::from_utf8_lossy(&out.stdout));
            all.push_str(&String::from_utf8_lossy(&out.stderr));
            out
        };
        let out = run(&["-v", "setup", &link, "--yes", "--json"]);
        assert!(out.status.success(), "{mode_name}: {}", show(&out));

        // The canary: this machine's key, found where it is meant to be.
        let settings = world.read_json(&world.settings());
        let key = if keyring {
            let helper = settings["apiKeyHelper"].as_str().unwrap().to_string();
            String::from_utf8(run_helper(&world, &helper).stdout)
                .unwrap()
                .trim()
                .to_string()
        } else {
            settings["env"]["ANTHROPIC_CUSTOM_HEADERS"]
                .as_str()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert!(
            key.starts_with("arch_") && key.len() == 69,
            "{mode_name}: {key}"
        );

        run(&["-v", "status"]);
        run(&["status", "--json", "--check"]);
        run(&["-v", "setup", "--resume", "--yes"]);
        let out = run(&["-v", "revert", "--yes", "--dry-run"]);
        assert!(out.status.success(), "{}", show(&out));

        for secret in [&key, &token] {
            let all = captured.borrow();
            assert!(
                !all.contains(secret.as_str()),
                "{mode_name}: a secret reached the output:\n{all}"
            );
        }
        let argv = fs::read_to_string(&argv_log).unwrap();
        assert!(
            !argv.contains(&key) && !argv.contains(&token),
            "{mode_name}: argv: {argv}"
        );

        // The marketplace credential: Claude Code takes a git source only as a URL argument,
        // so it may be on that one command line (as the docs say), in the files where Claude
        // Code keeps its marketplace sources, and in the state record (0600), from which
        // `setup --resume` adds the marketplace; nowhere else.
        let at = argv
            .find(MARKETPLACE_CREDENTIAL_PREFIX)
            .expect("the clone URL reached `plugin marketplace add`");
        let credential = &argv[at..at + 46];
        for line in argv.lines().filter(|line| line.contains(credential)) {
            assert!(
                line.contains("plugin marketplace add"),
                "{mode_name}: {line}"
            );
        }
        assert!(
            !captured.borrow().contains(credential),
            "{mode_name}: the marketplace credential reached the output"
        );
        let mut files = Vec::new();
        files_under(
            &world.home,
            &[
                world.settings(),
                world.config.join("plugins"),
                world.state_file(),
            ],
            &mut files,
        );
        assert_eq!(mode(&world.settings()), 0o600, "{mode_name}");
        // Claude Code keeps the URL in files it makes readable by others; setup closes
        // their folder instead.
        assert_eq!(mode(&world.config.join("plugins")), 0o700, "{mode_name}");
        assert_eq!(mode(&world.state_file()), 0o600, "{mode_name}");
        for file in files {
            let text = String::from_utf8_lossy(&fs::read(&file).unwrap()).to_string();
            assert!(
                !text.contains(credential),
                "{mode_name}: the marketplace credential is in {}",
                file.display()
            );
        }

        // Every file written, except where the passthrough key is meant to be: settings.json
        // (Claude Code sends it from there) and the state record (0600, for `--revoke-key`).
        let mut files = Vec::new();
        let intended = if keyring {
            vec![]
        } else {
            vec![world.settings(), world.state_file()]
        };
        files_under(&world.home, &intended, &mut files);
        files.push(argv_log.clone());
        assert!(files.len() > 3, "{files:?}");
        for file in files {
            let bytes = fs::read(&file).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&key),
                "{mode_name}: the key is in {}",
                file.display()
            );
            assert!(
                !text.contains(&token),
                "{mode_name}: the token is in {}",
                file.display()
            );
        }

        // And revert, for real, leaves no trace of the key anywhere under HOME.
        let out = run(&["-v", "revert", "--yes"]);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(mode(&world.config.join("plugins")), 0o755, "{mode_name}");
        assert!(!captured.borrow().contains(&key), "{mode_name}");
        let mut files = Vec::new();
        files_under(&world.home, &[], &mut files);
        for file in files {
            let text = String::from_utf8_lossy(&fs::read(&file).unwrap()).to_string();
            assert!(
                !text.contains(&key),
                "{mode_name}: after revert the key is in {}",
                file.display()
            );
        }
    }
}

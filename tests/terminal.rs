//! The installer on a real terminal, driven through tmux: the confirmation prompt, the
//! progress lines, and Ctrl-C in the middle of setup.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use archestra_proxy::TokenState;
use common::{World, fake_claude, passthrough, real_claude};

/// A tmux server of our own, running one command in a pane.
struct Pane {
    socket: String,
    log: PathBuf,
}

impl Pane {
    /// Start `args` of the installer in a new pane, with this world's environment.
    fn start(world: &World, args: &[&str], extra: &[(&str, String)]) -> Pane {
        let socket = format!(
            "archestra-test-{}-{}",
            std::process::id(),
            world.dir.path().file_name().unwrap().to_string_lossy()
        );
        let log = world.dir.path().join("exit-code");
        let script = world.dir.path().join("run.sh");
        // The wrapper shell outlives a Ctrl-C (caught, not ignored, so the installer still
        // gets the default disposition) to record the exit code.
        let mut text = String::from("#!/bin/sh\ntrap : INT\n");
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap()),
            ("HOME".into(), world.home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR".into(),
                world.config.display().to_string(),
            ),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
            (
                "ARCHESTRA_CLAUDE_BIN".into(),
                real_claude().display().to_string(),
            ),
            ("TERM".into(), "xterm-256color".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        for (k, v) in env {
            text.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
        }
        text.push_str(&format!("'{}'", env!("CARGO_BIN_EXE_archestra-connect")));
        for a in args {
            text.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        text.push_str(&format!("\necho $? > '{}'\nsleep 60\n", log.display()));
        fs::write(&script, text).unwrap();
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "160", "-y", "50"])
            .arg(format!("sh {}", script.display()))
            .env_remove("TMUX")
            .status()
            .expect("tmux is missing: run scripts/test.sh, which installs it");
        assert!(status.success());
        Pane { socket, log }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-J", "-S", "-200"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait until the screen shows `text`; panic with the screen after 60 seconds.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "`{text}` never appeared:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the command to end and return its exit code.
    fn exit_code(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(text) = fs::read_to_string(&self.log)
                && let Ok(code) = text.trim().parse()
            {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "the command never ended:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn state(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_prompt_defaults_to_no_and_a_no_changes_nothing() {
    let world = World::new();
    fs::write(world.settings(), "{}\n").unwrap();
    let link = world.mint(&passthrough(&world.origin));
    let pane = Pane::start(&world, &["setup", &link], &[]);
    let screen = pane.wait_for("Apply these changes? [y/N]");
    assert!(
        screen.contains("register the MCP gateway `archestra`"),
        "{screen}"
    );
    pane.keys(&["Enter"]);
    assert_eq!(pane.exit_code(), 1, "{}", pane.screen());
    assert!(
        pane.screen()
            .contains("setup cancelled; nothing was changed")
    );
    assert_eq!(fs::read_to_string(world.settings()).unwrap(), "{}\n");
    assert!(!world.state_file().exists());
    // The link is spent by then, so the key it minted is revoked rather than left alive.
    assert_eq!(world.token_state(&link), TokenState::Used);
    let keys = world.store().list_keys(None).unwrap();
    assert!(keys.iter().all(|k| k.revoked), "{keys:?}");
}

#[test]
fn a_yes_applies_the_plan_and_prints_each_step() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    let pane = Pane::start(&world, &["setup", &link], &[]);
    pane.wait_for("Apply these changes? [y/N]");
    pane.keys(&["y", "Enter"]);
    let screen = pane.wait_for("Sign in to the gateway now?");
    assert!(
        screen.contains("✓ Registered the MCP gateway `archestra` at user scope"),
        "{screen}"
    );
    assert!(
        screen.contains("✓ Pointed Claude Code at the LLM proxy"),
        "{screen}"
    );
    assert!(
        screen.contains("To undo everything setup did: archestra-connect revert"),
        "{screen}"
    );
    pane.keys(&["Enter"]);
    assert_eq!(pane.exit_code(), 0, "{}", pane.screen());
}

#[test]
fn ctrl_c_in_the_middle_of_setup_stops_between_steps_and_resume_finishes() {
    let world = World::new();
    let link = world.mint(&passthrough(&world.origin));
    let argv = world.dir.path().join("argv.log");
    let pane = Pane::start(
        &world,
        &["setup", &link, "--yes"],
        &[
            ("ARCHESTRA_CLAUDE_BIN", fake_claude().display().to_string()),
            ("FAKE_CLAUDE_REAL", real_claude().display().to_string()),
            ("FAKE_CLAUDE_LOG", argv.display().to_string()),
            ("FAKE_CLAUDE_SLEEP_ON", "^mcp add".into()),
            ("FAKE_CLAUDE_SLEEP", "2".into()),
        ],
    );
    // Press Ctrl-C while `claude mcp add` runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&argv)
        .unwrap_or_default()
        .contains("mcp add")
    {
        assert!(
            Instant::now() < deadline,
            "setup never reached `mcp add`:\n{}",
            pane.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pane.keys(&["C-c"]);
    assert_eq!(pane.exit_code(), 130, "{}", pane.screen());
    let screen = pane.screen();
    assert!(screen.contains("setup was interrupted"), "{screen}");
    assert!(screen.contains("setup --resume"), "{screen}");

    // The step in progress finished and is recorded; nothing after it ran.
    let record = state(&world.state_file());
    assert_eq!(record["phase"], "in-progress");
    assert_eq!(record["mcp"]["registered"], true, "{record}");
    assert_eq!(record["env_done"], false);
    assert!(!world.settings().exists());

    let out = world.connect(&["setup", "--resume", "--yes"]);
    assert!(out.status.success(), "{}", common::show(&out));
    assert_eq!(state(&world.state_file())["phase"], "complete");
}

//! Reliability: SIGKILL at every step of setup and revert, a full disk and a read-only
//! config directory, setup and revert started together, and a hostile server.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use archestra_proxy::TokenState;
use common::{World, passthrough, show, stderr};
use serde_json::Value;

fn root_dir() -> std::path::PathBuf {
    common::root()
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9)
}

/// Check what must hold after any crash: settings.json parses, and the state record is true.
fn assert_consistent(world: &World, context: &str) {
    if world.settings().exists() {
        let text = fs::read_to_string(world.settings()).unwrap();
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("{context}: settings.json is not JSON ({e}):\n{text}"));
    }
    if !world.state_file().exists() {
        return;
    }
    let state = world.read_json(&world.state_file());
    let settings = if world.settings().exists() {
        world.read_json(&world.settings())
    } else {
        serde_json::json!({})
    };
    let cj = if world.claude_json().exists() {
        world.read_json(&world.claude_json())
    } else {
        serde_json::json!({})
    };
    if state["mcp"]["registered"] == true {
        assert!(
            cj["mcpServers"].get("archestra").is_some(),
            "{context}: the record says registered: {state}"
        );
    }
    if state["env_done"] == true {
        assert!(
            settings["env"]["ANTHROPIC_BASE_URL"].is_string(),
            "{context}: the record says env done"
        );
    }
    if state["skills"]["marketplace_added"] == true {
        assert!(
            settings["extraKnownMarketplaces"]
                .get("acme-skills")
                .is_some(),
            "{context}: {state}"
        );
    }
    for id in state["skills"]["plugins_installed"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
        assert!(
            installed["plugins"].get(id.as_str().unwrap()).is_some(),
            "{context}: {id}"
        );
    }
}

/// Mint a setup of the companion's own marketplace (the world serves it).
fn skills_setup(world: &World) -> String {
    world.mint(&common::with_own_marketplace(passthrough(&world.origin)))
}

/// Kill setup at crash point `at`; return false once setup finishes before reaching it.
fn crash_setup_at(at: usize, original: &[u8]) -> bool {
    let world = World::with_marketplace();
    fs::write(world.settings(), original).unwrap();
    let link = skills_setup(&world);
    let at_text = at.to_string();
    let out = world.connect_with(
        &["setup", &link, "--yes"],
        &[("ARCHESTRA_CONNECT_CRASH_AT", &at_text)],
    );
    if !killed(&out) {
        assert!(out.status.success(), "{}", show(&out));
        return false;
    }
    let context = format!("killed at crash point {at}");
    assert_consistent(&world, &context);

    let out = world.connect(&["setup", "--resume", "--yes"]);
    assert!(out.status.success(), "{context}: resume: {}", show(&out));
    assert_eq!(
        world.read_json(&world.state_file())["phase"],
        "complete",
        "{context}"
    );

    let out = world.connect(&["revert", "--yes"]);
    assert!(out.status.success(), "{context}: revert: {}", show(&out));
    assert_eq!(fs::read(world.settings()).unwrap(), original, "{context}");
    true
}

#[test]
fn a_kill_at_every_step_of_setup_leaves_consistent_files_that_resume_and_revert_finish() {
    let original = fs::read(root_dir().join("fixtures/settings/large-unicode.json")).unwrap();
    // Two workers take every other crash point, each until setup outruns its point.
    let workers: Vec<_> = (1..=2)
        .map(|first| {
            let original = original.clone();
            std::thread::spawn(move || {
                (first..)
                    .step_by(2)
                    .take_while(|at| crash_setup_at(*at, &original))
                    .count()
            })
        })
        .collect();
    let points: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("setup was killed at {points} crash points; every one resumed and reverted");
    assert!(points >= 8, "only {points} crash points were reached");
}

#[test]
fn a_kill_at_every_step_of_revert_is_finished_by_reverting_again() {
    let original = fs::read(root_dir().join("fixtures/settings/minimal.json")).unwrap();
    let mut points = 0;
    for at in 1.. {
        let world = World::with_marketplace();
        fs::write(world.settings(), &original).unwrap();
        let link = skills_setup(&world);
        assert!(world.connect(&["setup", &link, "--yes"]).status.success());

        let at_text = at.to_string();
        let out = world.connect_with(
            &["revert", "--yes"],
            &[("ARCHESTRA_CONNECT_CRASH_AT", &at_text)],
        );
        if !killed(&out) {
            assert!(out.status.success(), "{}", show(&out));
            assert_eq!(fs::read(world.settings()).unwrap(), original);
            break;
        }
        points += 1;
        let context = format!("revert killed at crash point {at}");
        assert_consistent(&world, &context);
        let out = world.connect(&["revert", "--yes"]);
        assert!(out.status.success(), "{context}: {}", show(&out));
        assert_eq!(fs::read(world.settings()).unwrap(), original, "{context}");
        assert!(!world.state_file().exists(), "{context}");
        let cj = world.read_json(&world.claude_json());
        assert!(cj["mcpServers"].get("archestra").is_none(), "{context}");
    }
    eprintln!("revert was killed at {points} crash points; every one finished by reverting again");
    assert!(points >= 4, "only {points} crash points were reached");
}

/// A small tmpfs mounted under the test's directory; unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: std::path::PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        // Root ignores permission bits, so read-only and full file systems need a mount;
        // the tests and CI run as root on these machines.
        assert!(
            status.success(),
            "could not mount a tmpfs at {}",
            path.display()
        );
        Tmpfs { path }
    }

    fn read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_disk_that_fills_up_during_the_write_keeps_the_original_and_resume_finishes() {
    let world = World::new();
    let disk = Tmpfs::mount(world.dir.path().join("small-disk"), "256k");
    let original = fs::read(root_dir().join("fixtures/settings/large-unicode.json")).unwrap();
    fs::write(disk.path.join("settings.json"), &original).unwrap();
    std::os::unix::fs::symlink(disk.path.join("settings.json"), world.settings()).unwrap();
    let link = world.mint(&passthrough(&world.origin));

    // The disk fills up while `claude mcp add` runs, after every check has passed.
    let fill = format!(
        "dd if=/dev/zero of={}/filler bs=4k 2>/dev/null || true",
        disk.path.display()
    );
    let out = world.connect_with(
        &["setup", &link, "--yes"],
        &[
            (
                "ARCHESTRA_CLAUDE_BIN",
                common::fake_claude().to_str().unwrap(),
            ),
            ("FAKE_CLAUDE_REAL", common::real_claude().to_str().unwrap()),
            ("FAKE_CLAUDE_EXEC_ON", "^mcp add"),
            ("FAKE_CLAUDE_EXEC", &fill),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("could not write") && err.contains("settings.json"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("setup --resume"), "{err}");
    assert_eq!(fs::read(world.settings()).unwrap(), original);
    assert_consistent(&world, "disk full");
    assert_eq!(world.read_json(&world.state_file())["env_done"], false);

    fs::remove_file(disk.path.join("filler")).unwrap();
    let out = world.connect(&["setup", "--resume", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(world.read_json(&world.settings())["env"]["ANTHROPIC_BASE_URL"].is_string());
}

#[test]
fn a_read_only_settings_file_or_config_directory_is_found_before_the_link_is_used() {
    let world = World::new();
    let disk = Tmpfs::mount(world.dir.path().join("ro-disk"), "1m");
    let original = b"{\n  \"theme\": \"dark\"\n}\n";
    fs::write(disk.path.join("settings.json"), original).unwrap();
    disk.read_only();

    // settings.json on a read-only file system, through a symlink.
    std::os::unix::fs::symlink(disk.path.join("settings.json"), world.settings()).unwrap();
    let link = world.mint(&passthrough(&world.origin));
    let out = world.connect(&["setup", &link, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("the link was not used"), "{err}");
    assert_eq!(world.token_state(&link), TokenState::Unused);
    assert_eq!(fs::read(disk.path.join("settings.json")).unwrap(), original);

    // The whole config directory read-only: the lock, the first write, fails.
    let disk_text = disk.path.display().to_string();
    let out = world.connect_with(
        &["setup", &link, "--yes"],
        &[("CLAUDE_CONFIG_DIR", &disk_text)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        show(&out)
    );
    assert_eq!(world.token_state(&link), TokenState::Unused);
    assert_eq!(fs::read(disk.path.join("settings.json")).unwrap(), original);
}

#[test]
fn setup_and_revert_started_together_do_not_interleave() {
    let world = World::new();
    let first = world.mint(&passthrough(&world.origin));
    assert!(world.connect(&["setup", &first, "--yes"]).status.success());
    let second = world.mint(&passthrough(&world.origin));
    let argv = world.dir.path().join("argv.log");
    let mut slow = std::process::Command::new(env!("CARGO_BIN_EXE_archestra-connect"));
    slow.args(["revert", "--yes"])
        .env("HOME", &world.home)
        .env("CLAUDE_CONFIG_DIR", &world.config)
        .env("ARCHESTRA_CLAUDE_BIN", common::fake_claude())
        .env("FAKE_CLAUDE_REAL", common::real_claude())
        .env("FAKE_CLAUDE_LOG", &argv)
        .env("FAKE_CLAUDE_SLEEP_ON", "^mcp remove")
        .env("FAKE_CLAUDE_SLEEP", "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = slow.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&argv)
        .unwrap_or_default()
        .contains("mcp remove")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "revert never reached `mcp remove`"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = world.connect(&["setup", &second, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("another archestra-connect"),
        "{}",
        show(&out)
    );
    assert_eq!(world.token_state(&second), TokenState::Unused);
    let revert = child.wait_with_output().unwrap();
    assert!(revert.status.success(), "{}", show(&revert));
    assert!(!world.state_file().exists());
    assert!(!world.settings().exists());
}

/// A server that answers every request with the same raw bytes, slowly if asked.
fn hostile_server(response: Vec<u8>, trickle: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(8) {
            let response = response.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                if trickle {
                    for byte in &response {
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                } else {
                    let _ = stream.write_all(&response);
                }
            });
        }
    });
    format!(
        "http://{addr}/api/connection-setups/script/archestra_con_{}",
        "H".repeat(32)
    )
}

fn http(status: &str, content_type: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn payload_with(edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut p = serde_json::json!({
        "clientId": "claude-code",
        "appName": "Archestra",
        "mcp": {"serverName": "archestra", "url": "https://h.example/v1/mcp/x", "legacyServerNames": []},
        "proxy": null,
        "skills": null,
        "healthUrl": null
    });
    edit(&mut p);
    serde_json::to_vec(&p).unwrap()
}

#[test]
fn a_hostile_server_is_refused_with_a_clear_error_and_changes_no_file() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("oversized body", http("200 OK", "application/json", &vec![b' '; 5 * 1024 * 1024], ""), false, "larger than"),
        ("slow trickle", b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 900\r\n\r\n{{{{{{{{{{".to_vec(), true, "did not answer within"),
        ("wrong content type", http("200 OK", "text/html", b"<html>hi</html>", ""), false, "text/html"),
        ("redirect elsewhere", http("302 Found", "text/plain", b"", "location: http://evil.example/x\r\n"), false, "redirected"),
        ("invalid UTF-8", http("200 OK", "application/json", b"{\"clientId\": \"\xff\xfe\"}", ""), false, "not valid JSON"),
        ("deep nesting", http("200 OK", "application/json", deep.as_bytes(), ""), false, "not valid JSON"),
        ("flag-like name", http("200 OK", "application/json", &payload_with(|p| p["mcp"]["serverName"] = "--scope".into()), ""), false, "would be read as a command-line flag"),
        ("shell-like URL", http("200 OK", "application/json", &payload_with(|p| p["mcp"]["url"] = "https://h.example/$(touch /tmp/x)".into()), ""), false, "has no place in a setup URL"),
        ("huge field", http("200 OK", "application/json", &payload_with(|p| p["appName"] = "A".repeat(20_000).into()), ""), false, "too long"),
        ("control character", http("200 OK", "application/json", &payload_with(|p| p["appName"] = "Arch\u{1b}[31mestra".into()), ""), false, "control character"),
        ("non-http scheme", http("200 OK", "application/json", &payload_with(|p| p["mcp"]["url"] = "file:///etc/passwd".into()), ""), false, "only http and https"),
    ];
    let total = cases.len();
    for (name, response, trickle, expected) in cases {
        let world = World::new();
        let original = b"{\n  \"theme\": \"dark\"\n}\n";
        fs::write(world.settings(), original).unwrap();
        let link = hostile_server(response, trickle);
        let out = world.connect(&["setup", &link, "--yes", "--timeout", "3"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "{name}: expected `{expected}` in:\n{err}"
        );
        assert!(err.contains("hint:"), "{name}: no hint in:\n{err}");
        assert!(
            err.len() < 2000,
            "{name}: the error is {} bytes long",
            err.len()
        );
        assert_eq!(fs::read(world.settings()).unwrap(), original, "{name}");
        assert!(!world.state_file().exists(), "{name}");
        assert!(
            !Path::new(&world.claude_json()).exists()
                || world
                    .read_json(&world.claude_json())
                    .get("mcpServers")
                    .is_none(),
            "{name}"
        );
    }
    assert_eq!(total, 11);
}

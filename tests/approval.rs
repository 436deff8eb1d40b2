//! `archestra-connect setup --server <origin>` without a link: browser approval against the
//! companion, with a fake `xdg-open` first on PATH that records what would have opened.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use archestra_proxy::Verdict;
use archestra_wire::is_user_code;
use common::{World, passthrough, real_claude};

/// A directory holding a fake `xdg-open` that appends its argument to `opened`.
struct FakeOpener {
    bin: PathBuf,
    opened: PathBuf,
}

impl FakeOpener {
    fn new(world: &World) -> FakeOpener {
        let bin = world.dir.path().join("fake-bin");
        fs::create_dir_all(&bin).unwrap();
        let opened = world.dir.path().join("opened.txt");
        let script = bin.join("xdg-open");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
                opened.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        FakeOpener { bin, opened }
    }

    /// What was opened, waiting a little for a detached opener to finish.
    fn opened(&self) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(5);
        while !self.opened.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        fs::read_to_string(&self.opened)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// `archestra-connect setup` running as a child, its stderr read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(world: &World, opener: &FakeOpener, args: &[&str]) -> Running {
        let path = format!(
            "{}:{}",
            opener.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_archestra-connect"));
        cmd.args(args)
            .current_dir(world.dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", &world.home)
            .env("CLAUDE_CONFIG_DIR", &world.config)
            .env("NO_COLOR", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("ARCHESTRA_CLAUDE_BIN", real_claude())
            .env("TMPDIR", world.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &world.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("archestra-connect starts");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for the user code the installer shows.
    fn user_code(&mut self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let code = line.trim().to_string();
                    self.seen.push(line);
                    if is_user_code(&code) {
                        return code;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no user code shown:\n{}", self.seen.join("\n"));
    }

    /// Wait for the installer to exit; return its status and everything it printed.
    fn finish(mut self) -> (ExitStatus, String) {
        let until = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("setup did not finish:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"))
    }
}

/// A world whose companion polls fast, with approval requests open for `ttl`.
fn world(ttl: Duration) -> World {
    World::with_server(|config| {
        config.connect_ttl = ttl;
        config.connect_poll_interval = Duration::from_secs(1);
    })
}

fn approval_page_prefix(world: &World) -> String {
    format!(
        "{}/connection?clientId=claude-code&platform=linux&connectRequest=",
        world.origin
    )
}

fn nothing_changed(world: &World) {
    assert!(!world.settings().exists(), "settings.json was written");
    assert!(!world.state_file().exists(), "a state record was written");
    assert!(
        !world.claude_json().exists() || {
            let cj = world.read_json(&world.claude_json());
            cj.get("mcpServers")
                .and_then(|m| m.as_object())
                .is_none_or(|m| m.is_empty())
        }
    );
}

#[test]
fn setup_approved_in_the_browser_connects_the_machine() {
    let world = world(Duration::from_secs(600));
    let opener = FakeOpener::new(&world);
    let mut run = Running::start(
        &world,
        &opener,
        &["setup", "--server", &world.origin, "--yes"],
    );
    let code = run.user_code();
    world
        .store()
        .decide_connection(
            &code,
            "dev@example.com",
            &Verdict::Approve(passthrough(&world.origin)),
        )
        .unwrap();
    let (status, printed) = run.finish();
    assert!(status.success(), "{printed}");

    // The browser was asked to open the approval page of this request, and the page's
    // address was printed too.
    let opened = opener.opened();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(
        opened[0].starts_with(&approval_page_prefix(&world)),
        "{opened:?}"
    );
    assert!(printed.contains(&opened[0]), "{printed}");
    assert!(printed.contains("Approved in the browser"), "{printed}");

    let settings = world.read_json(&world.settings());
    assert_eq!(
        settings["env"]["ANTHROPIC_BASE_URL"],
        format!("{}/v1/anthropic", world.origin)
    );
    let cj = world.read_json(&world.claude_json());
    assert_eq!(
        cj["mcpServers"]["archestra"]["url"],
        format!("{}/v1/mcp/default", world.origin)
    );
    assert!(!printed.contains("archestra_con_"), "{printed}");
}

#[test]
fn setup_denied_in_the_browser_changes_nothing() {
    let world = world(Duration::from_secs(600));
    let opener = FakeOpener::new(&world);
    let mut run = Running::start(
        &world,
        &opener,
        &["setup", "--server", &world.origin, "--yes"],
    );
    let code = run.user_code();
    world
        .store()
        .decide_connection(&code, "dev@example.com", &Verdict::Deny)
        .unwrap();
    let (status, printed) = run.finish();
    assert_eq!(status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("error: the request was denied in the browser; nothing was changed"),
        "{printed}"
    );
    assert!(printed.contains("hint:"), "{printed}");
    assert_eq!(opener.opened().len(), 1);
    nothing_changed(&world);
}

#[test]
fn an_approval_request_that_expires_ends_setup_with_nothing_changed() {
    let world = world(Duration::from_secs(2));
    let opener = FakeOpener::new(&world);
    let mut run = Running::start(
        &world,
        &opener,
        &["setup", "--server", &world.origin, "--yes", "--no-open"],
    );
    run.user_code();
    let started = Instant::now();
    let (status, printed) = run.finish();
    assert_eq!(status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("the approval request expired after 2 seconds; nothing was changed"),
        "{printed}"
    );
    assert!(printed.contains("run the same command again"), "{printed}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // `--no-open` prints the address and opens nothing.
    assert!(printed.contains(&approval_page_prefix(&world)), "{printed}");
    assert!(
        !Path::new(&opener.opened).exists(),
        "the browser was opened"
    );
    nothing_changed(&world);
}

#[test]
fn ctrl_c_while_waiting_for_approval_stops_with_130_and_changes_nothing() {
    let world = world(Duration::from_secs(600));
    let opener = FakeOpener::new(&world);
    let mut run = Running::start(
        &world,
        &opener,
        &["setup", "--server", &world.origin, "--yes"],
    );
    run.user_code();
    let pid = run.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, printed) = run.finish();
    assert_eq!(status.code(), Some(130), "{printed}");
    assert!(printed.contains("nothing was changed"), "{printed}");
    nothing_changed(&world);
}

#[test]
fn local_problems_stop_setup_before_any_approval_is_asked_for() {
    let world = world(Duration::from_secs(600));
    let opener = FakeOpener::new(&world);
    fs::write(world.settings(), "{ \"env\": { , } }").unwrap();
    let run = Running::start(
        &world,
        &opener,
        &["setup", "--server", &world.origin, "--yes"],
    );
    let (status, printed) = run.finish();
    assert_eq!(status.code(), Some(1), "{printed}");
    assert!(!printed.contains("Approval page"), "{printed}");
    assert!(
        !Path::new(&opener.opened).exists(),
        "the browser was opened"
    );
}

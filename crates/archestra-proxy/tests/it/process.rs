//! `archestra-proxy` as a child process, on a temporary home and database.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::Scratch;

pub const BIN: &str = env!("CARGO_BIN_EXE_archestra-proxy");

/// A command for the binary that cannot reach the real home or data folder.
pub fn proxy(scratch: &Scratch) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("HOME", scratch.dir.path())
        .env("XDG_DATA_HOME", scratch.dir.path().join("data"))
        .env_remove("ARCHESTRA_PROXY_ADMIN_TOKEN")
        .env_remove("ARCHESTRA_PROXY_PROVIDER_KEY")
        .env_remove("RUST_LOG");
    command
}

pub fn run(scratch: &Scratch, args: &[&str]) -> Output {
    proxy(scratch).args(args).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "the server did not stop within {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `archestra-proxy serve` running as a child process.
pub struct ServeProcess {
    child: Child,
    pub origin: String,
    first_line: String,
    rest_of_stdout: thread::JoinHandle<String>,
    stderr_path: PathBuf,
}

impl ServeProcess {
    /// Start `serve` on `db` and wait for its `listening on` line.
    pub fn start(scratch: &Scratch, db: &Path, name: &str) -> ServeProcess {
        ServeProcess::start_with(scratch, db, name, &[])
    }

    /// Start `serve` on `db` with `extra` flags and wait for its `listening on` line.
    pub fn start_with(scratch: &Scratch, db: &Path, name: &str, extra: &[&str]) -> ServeProcess {
        let stderr_path = scratch.dir.path().join(format!("{name}.stderr"));
        let mut child = proxy(scratch)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--redeem-limit",
                "0",
                "--db",
            ])
            .arg(db)
            .args(extra)
            // Relative paths in `extra` are relative to the scratch folder.
            .current_dir(scratch.dir.path())
            // Even at debug level, nothing may show a token or a key.
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).unwrap();
        let origin = first_line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
            .to_string();
        let rest_of_stdout = thread::spawn(move || {
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).unwrap();
            rest
        });
        ServeProcess {
            child,
            origin,
            first_line,
            rest_of_stdout,
            stderr_path,
        }
    }

    /// Return the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM, wait for the exit, and return the status with everything printed.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = wait_for_exit(&mut self.child, Duration::from_secs(15));
        let stdout = self.rest_of_stdout.join().unwrap();
        let stderr = fs::read_to_string(&self.stderr_path).unwrap();
        (exit, format!("{}{stdout}{stderr}", self.first_line))
    }
}

//! Running the `claude` CLI: found once, called with argv only, never through a shell.
//!
//! Every call gets stdin from `/dev/null` (no prompt can wait for an answer), captured
//! output, a timeout, and an empty temporary working directory, because some `claude`
//! commands pick a scope from the directory they run in.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;
use wait_timeout::ChildExt;

/// The oldest Claude Code with `mcp add --scope user` and `plugin marketplace` commands.
pub const MIN_VERSION: (u32, u32, u32) = (2, 0, 12);

/// Why a `claude` call failed.
#[derive(Debug, Error)]
pub enum ClaudeError {
    #[error("the `claude` command was not found{}", searched.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    NotFound { searched: Option<String> },
    #[error("could not run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`claude {args}` did not finish within {secs} seconds and was stopped")]
    Timeout { args: String, secs: u64 },
    #[error("`claude {args}` failed (exit {code}){}", stderr_block(stderr))]
    Failed {
        args: String,
        code: String,
        stderr: String,
    },
    #[error("could not read the version from `claude --version` (it printed `{0}`)")]
    UnknownVersion(String),
    #[error(
        "Claude Code {found} is too old: archestra-connect needs {}.{}.{} or newer",
        MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
    )]
    TooOld { found: String },
}

fn stderr_block(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(":\n    {}", trimmed.replace('\n', "\n    "))
    }
}

/// What a finished call printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Return stdout and stderr together, for matching on Claude Code's wording.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A located `claude` executable and the settings every call shares.
#[derive(Debug, Clone)]
pub struct Claude {
    pub program: PathBuf,
    pub version: String,
    timeout: Duration,
    /// Every call made, for `-v` output and `--json` counts, with secrets masked.
    calls: std::cell::RefCell<Vec<String>>,
    /// Secret values to mask in anything shown from a call (arguments, its output).
    secrets: Vec<String>,
}

/// Replace every secret in `text` by its masked form.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), &archestra_wire::mask_secret(secret));
        }
    }
    out
}

/// Find `claude`: an explicit path, else `ARCHESTRA_CLAUDE_BIN`, else `PATH`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ClaudeError> {
    if let Some(path) = explicit {
        return which::which(path).map_err(|_| ClaudeError::NotFound {
            searched: Some(format!("`{}` is not an executable file", path.display())),
        });
    }
    if let Some(path) = std::env::var_os("ARCHESTRA_CLAUDE_BIN").filter(|p| !p.is_empty()) {
        return which::which(&path).map_err(|_| ClaudeError::NotFound {
            searched: Some(format!(
                "`ARCHESTRA_CLAUDE_BIN` names `{}`, which is not an executable file",
                PathBuf::from(path).display()
            )),
        });
    }
    which::which("claude").map_err(|_| ClaudeError::NotFound {
        searched: Some("searched every directory on PATH".into()),
    })
}

/// Parse `2.1.197 (Claude Code)` into its numbers.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

impl Claude {
    /// Run `claude --version` and check it is new enough.
    pub fn new(program: PathBuf, timeout: Duration) -> Result<Claude, ClaudeError> {
        let mut claude = Claude {
            program,
            version: String::new(),
            timeout,
            calls: Default::default(),
            secrets: Vec::new(),
        };
        let out = claude.run(&["--version"])?;
        let text = out.stdout.trim().to_string();
        let version =
            parse_version(&text).ok_or_else(|| ClaudeError::UnknownVersion(text.clone()))?;
        if version < MIN_VERSION {
            return Err(ClaudeError::TooOld { found: text });
        }
        claude.version = format!("{}.{}.{}", version.0, version.1, version.2);
        Ok(claude)
    }

    /// Mask these values wherever a call is shown: in `-v` output, errors and their stderr.
    ///
    /// A URL's user part counts too, so that a marketplace credential is masked even
    /// where Claude Code or git prints the URL back.
    pub fn add_secret(&mut self, secret: &str) {
        self.secrets.push(secret.to_string());
    }

    /// Show arguments with secrets masked.
    fn show_args(&self, args: &[&str]) -> String {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains("://") {
                    archestra_wire::redact_url(a)
                } else {
                    a.to_string()
                }
            })
            .collect();
        scrub(&shown.join(" "), &self.secrets)
    }

    /// Return every call made so far, as `claude <args>` strings.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Run `claude <args>` in a neutral directory; a non-zero exit is an error.
    pub fn run(&self, args: &[&str]) -> Result<Output, ClaudeError> {
        let out = self.run_in(args, None, None)?;
        if out.success {
            Ok(out)
        } else {
            Err(self.failure(args, &out))
        }
    }

    /// Build the error for a call that exited non-zero.
    pub fn failure(&self, args: &[&str], out: &Output) -> ClaudeError {
        let stderr = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        ClaudeError::Failed {
            args: self.show_args(args),
            code: out
                .code
                .map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
            stderr: scrub(stderr, &self.secrets),
        }
    }

    /// Run `claude <args>` and return its output whatever the exit status.
    ///
    /// `cwd` is the working directory (a neutral temporary one when `None`); `timeout`
    /// overrides the default for slow commands such as cloning a marketplace.
    pub fn run_in(
        &self,
        args: &[&str],
        cwd: Option<&Path>,
        timeout: Option<Duration>,
    ) -> Result<Output, ClaudeError> {
        let neutral;
        let dir = match cwd {
            Some(dir) => dir,
            None => {
                neutral = tempfile::Builder::new()
                    .prefix("archestra-connect-")
                    .tempdir()
                    .map_err(|source| self.spawn_error(source))?;
                neutral.path()
            }
        };
        let shown = self.show_args(args);
        self.calls.borrow_mut().push(format!("claude {shown}"));
        tracing::debug!(args = %shown, cwd = %dir.display(), "running claude");

        let started = Instant::now();
        let mut command = Command::new(&self.program);
        // Its own process group: Ctrl-C in the terminal reaches us, not the step in progress,
        // which finishes so that the state record can say it is done.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // These calls only change configuration: no telemetry, error reports or update checks
        // are needed, and without them each call starts about 60 ms sooner (the tests run
        // Claude Code this way too). A value the user set is kept.
        for name in [
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_AUTOUPDATER",
        ] {
            if std::env::var_os(name).is_none() {
                command.env(name, "1");
            }
        }
        let mut child = command
            .args(args.iter().map(OsString::from))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;

        // Read both pipes on their own threads so a chatty child never blocks on a full pipe.
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });

        let limit = timeout.unwrap_or(self.timeout);
        let status = match child
            .wait_timeout(limit)
            .map_err(|source| self.spawn_error(source))?
        {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClaudeError::Timeout {
                    args: shown,
                    secs: limit.as_secs(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        tracing::debug!(
            args = %shown,
            code = ?status.code(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "claude finished"
        );
        Ok(Output {
            success: status.success(),
            code: status.code(),
            stdout,
            stderr,
        })
    }

    fn spawn_error(&self, source: std::io::Error) -> ClaudeError {
        ClaudeError::Spawn {
            program: self.program.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("2.1.197 (Claude Code)"), Some((2, 1, 197)));
        assert_eq!(parse_version("1.0.3"), Some((1, 0, 3)));
        assert_eq!(parse_version("2.0"), Some((2, 0, 0)));
        assert_eq!(parse_version("claude"), None);
        assert!(parse_version("1.0.99").unwrap() < MIN_VERSION);
    }
}

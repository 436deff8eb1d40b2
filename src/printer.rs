//! Everything the user reads goes through the printer: progress and notes on stderr, data
//! (a `--json` result, a status report) on stdout.
//!
//! Colour is used only on a terminal with `NO_COLOR` unset and `TERM` not `dumb`. The
//! spinner is decoration on an interactive stderr; every step's result is also printed as
//! a plain line, because indicatif draws nothing when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// The one writer for user-facing text.
#[derive(Debug, Clone)]
pub struct Printer {
    pub verbosity: Verbosity,
    colour: bool,
    interactive: bool,
}

fn colour_wanted(is_tty: bool) -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    is_tty && !no_colour && !dumb
}

impl Printer {
    /// Build the printer from `-q`/`-v` and what stderr is connected to.
    pub fn new(verbosity: Verbosity) -> Printer {
        let tty = std::io::stderr().is_terminal();
        Printer {
            verbosity,
            colour: colour_wanted(tty),
            interactive: tty && std::env::var("TERM").map_or(true, |t| t != "dumb"),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }

    /// Print a heading or plain note (hidden by `-q`).
    pub fn note(&self, text: &str) {
        if self.verbosity != Verbosity::Quiet {
            self.line(text);
        }
    }

    /// Print a finished step.
    pub fn done(&self, text: &str) {
        if self.verbosity != Verbosity::Quiet {
            self.line(&format!("{} {text}", self.paint("32", "✓")));
        }
    }

    /// Print a step that was not needed.
    pub fn skipped(&self, text: &str) {
        if self.verbosity != Verbosity::Quiet {
            self.line(&format!("{} {text}", self.paint("2", "·")));
        }
    }

    /// Print a detail shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbosity == Verbosity::Verbose {
            self.line(&self.paint("2", &format!("  {text}")));
        }
    }

    /// Print a warning (shown even with `-q`).
    pub fn warn(&self, text: &str) {
        self.line(&format!("{} {text}", self.paint("33;1", "warning:")));
    }

    /// Print an error (shown even with `-q`).
    pub fn error(&self, text: &str) {
        self.line(&format!("{} {text}", self.paint("31;1", "error:")));
    }

    /// Print what to do next after an error or warning.
    pub fn hint(&self, text: &str) {
        self.line(&format!("{} {text}", self.paint("36", "hint:")));
    }

    /// Start a spinner for a step, on an interactive stderr only.
    pub fn spinner(&self, text: &str) -> Option<ProgressBar> {
        if !self.interactive || self.verbosity == Verbosity::Quiet {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("the spinner template is valid"),
        );
        bar.set_message(text.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Ask a yes/no question on the terminal; the answer defaults to no.
    ///
    /// Reads from the controlling terminal, so it works even when stdin is a pipe.
    pub fn confirm(&self, question: &str) -> bool {
        let answer = read_tty_line(&format!("{question} [y/N] "));
        matches!(
            answer.as_deref().map(str::trim),
            Some("y" | "Y" | "yes" | "Yes" | "YES")
        )
    }
}

/// Tell whether the process can ask the user a question at a terminal.
pub fn can_prompt() -> bool {
    std::io::stderr().is_terminal() && std::fs::File::open("/dev/tty").is_ok()
}

fn read_tty_line(prompt: &str) -> Option<String> {
    use std::io::BufRead;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut writer = tty.try_clone().ok()?;
    let _ = write!(writer, "{prompt}");
    let _ = writer.flush();
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    Some(line)
}

//! Exit codes, and the error type commands return so that `main` can pick one.

use std::fmt;

/// Everything went as asked.
pub const SUCCESS: i32 = 0;
/// Failed before changing anything, or the user answered no.
pub const FAILED: i32 = 1;
/// Setup or revert stopped part way; the state record says what was done.
pub const PARTIAL: i32 = 3;
/// Interrupted by Ctrl-C (the shell's convention, 128 + SIGINT).
pub const INTERRUPTED: i32 = 130;

/// A command's failure: the error, what to do about it, and the exit code.
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
    pub hints: Vec<String>,
}

impl Failure {
    /// Build a failure with an exit code and no hint.
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code,
            error: error.into(),
            hints: Vec::new(),
        }
    }

    /// Add a line telling the user what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hints.push(hint.into());
        self
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::new(FAILED, error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({}, {:#})", self.code, self.error)
    }
}

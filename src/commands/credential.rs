//! `archestra-connect credential`: print the virtual key for Claude Code's `apiKeyHelper`.
//!
//! It runs on every `claude` start, so it does one keyring read and nothing else.

use std::io::Write;

use anyhow::anyhow;

use crate::cli::CredentialArgs;
use crate::exit::{FAILED, Failure};
use crate::secret_store::{self, KEYRING_TIMEOUT};

/// Print the key stored under the account, followed by a newline.
pub fn credential(args: &CredentialArgs) -> Result<(), Failure> {
    let key = secret_store::load(&args.account, KEYRING_TIMEOUT).map_err(|e| {
        Failure::new(FAILED, anyhow!("could not read the Archestra key: {e}"))
            .hint("unlock your keyring, or run `archestra-connect status` to see what is wrong")
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{key}").map_err(|e| Failure::new(FAILED, e))?;
    Ok(())
}

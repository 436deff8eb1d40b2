//! Where the virtual key lives: the OS keyring when one answers, else settings.json (0600).
//!
//! Every keyring call runs on its own thread with a deadline: a locked keychain can wait
//! for a prompt forever, and the `credential` helper runs on every `claude` start. A
//! missing entry is a state to report, not a failure.

use std::sync::mpsc;
use std::time::Duration;

use thiserror::Error;

/// The keyring service name of our entries.
pub const SERVICE: &str = "archestra-connect";

/// How long a keyring call may take before we give up on it.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a keyring call failed.
#[derive(Debug, Error)]
pub enum KeyringError {
    #[error("no keyring answered ({0})")]
    Unavailable(String),
    #[error("the keyring did not answer within {} seconds", .0.as_secs())]
    Timeout(Duration),
    #[error("the keyring has no entry for `{0}`")]
    NoEntry(String),
}

/// Where setup put the key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum StoreChoice {
    /// The keyring when one answers, else the settings file.
    Auto,
    /// The OS keyring (Secret Service, Keychain, Credential Manager); fail without one.
    Keyring,
    /// settings.json, readable by you only.
    File,
}

fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    let (tx, rx) = mpsc::channel();
    // The thread is left behind on a timeout; the process ends soon after anyway.
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(timeout)
        .map_err(|_| KeyringError::Timeout(timeout))?
}

fn classify(account: &str, e: keyring::Error) -> KeyringError {
    match e {
        keyring::Error::NoEntry => KeyringError::NoEntry(account.to_string()),
        other => KeyringError::Unavailable(other.to_string()),
    }
}

fn entry(account: &str) -> Result<keyring::Entry, KeyringError> {
    keyring::Entry::new(SERVICE, account).map_err(|e| classify(account, e))
}

/// Store `secret` under `account`, replacing any earlier value, and read it back.
pub fn store(account: &str, secret: &str, timeout: Duration) -> Result<(), KeyringError> {
    let (account, secret) = (account.to_string(), secret.to_string());
    with_deadline(timeout, move || {
        let entry = entry(&account)?;
        entry
            .set_password(&secret)
            .map_err(|e| classify(&account, e))?;
        // A store that accepts a write it cannot return is no store at all.
        match entry.get_password() {
            Ok(read) if read == secret => Ok(()),
            Ok(_) => Err(KeyringError::Unavailable(
                "it returned a different value than was stored".into(),
            )),
            Err(e) => Err(classify(&account, e)),
        }
    })
}

/// Read the secret stored under `account`.
pub fn load(account: &str, timeout: Duration) -> Result<String, KeyringError> {
    let account = account.to_string();
    with_deadline(timeout, move || {
        entry(&account)?
            .get_password()
            .map_err(|e| classify(&account, e))
    })
}

/// Delete the entry for `account`; a missing entry counts as deleted.
pub fn delete(account: &str, timeout: Duration) -> Result<(), KeyringError> {
    let account = account.to_string();
    with_deadline(timeout, move || {
        match entry(&account)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(classify(&account, e)),
        }
    })
}

/// Name the keyring entry of a deployment and a Claude Code config dir.
///
/// Two config dirs connected to one deployment hold different keys, so both are in it.
pub fn account_for(origin: &str, config_dir: &std::path::Path) -> String {
    format!("{origin} {}", config_dir.display())
}

/// Quote a word for `/bin/sh`: Claude Code runs `apiKeyHelper` through a shell.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Build the `apiKeyHelper` command that prints the key stored under `account`.
pub fn helper_command(program: &std::path::Path, account: &str) -> String {
    format!(
        "{} credential --account {}",
        shell_quote(&program.display().to_string()),
        shell_quote(account)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_quote("/a b/x"), "'/a b/x'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
        assert_eq!(
            helper_command(
                std::path::Path::new("/opt/My Tools/archestra-connect"),
                "https://h /c"
            ),
            "'/opt/My Tools/archestra-connect' credential --account 'https://h /c'"
        );
    }

    #[test]
    fn a_slow_call_times_out() {
        let err = with_deadline(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, KeyringError::Timeout(_)));
    }
}

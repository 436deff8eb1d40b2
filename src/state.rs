//! The state record: setup's journal of what it changes, kept so revert can undo exactly that.
//!
//! It is written (mode 0600, atomically) before the first change and again after each step,
//! so it is truthful at every moment: a step is marked done only once its change is made.
//! An interrupted setup is finished by `setup --resume` or undone by `revert`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use archestra_wire::{Secret, SetupPayload};

use crate::env_block::EnvJournal;
use crate::settings::write_atomic;

/// Format version of the record; a newer one is refused rather than misread.
pub const STATE_VERSION: u32 = 1;

/// Why the state record could not be read or written.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("could not read the state record `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the state record `{path}` is damaged ({reason})")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "the state record `{path}` was written by a newer archestra-connect (format {found}); update archestra-connect"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("could not write the state record")]
    Write(#[source] crate::settings::SettingsError),
}

/// Whether setup finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    InProgress,
    Complete,
}

/// What setup knew of settings.json before it changed anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRecord {
    /// The exact text before the first setup; `None` when the file did not exist.
    pub original: Option<String>,
    /// Setup made `settings.json.archestra-backup` (an older backup is never replaced).
    pub backup_created: bool,
}

/// An MCP server entry setup removed before registering its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedServer {
    pub name: String,
    /// `user`, or `local` with the project directory it was registered for.
    pub scope: String,
    pub project: Option<PathBuf>,
    /// The entry as `.claude.json` held it.
    pub entry: Value,
}

/// What setup did for the MCP gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpRecord {
    pub name: String,
    pub url: String,
    pub removed: Vec<RemovedServer>,
    /// Our user-scope registration is in place.
    pub registered: bool,
}

/// What setup did for the skills marketplace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillsRecord {
    pub marketplace: String,
    /// Setup declared the marketplace (it was not declared before the first setup).
    pub marketplace_added: bool,
    /// Setup turned on `autoUpdate` (the user had not set it either way).
    pub auto_update_set: bool,
    /// Plugins setup installed (those installed before are not listed).
    pub plugins_installed: Vec<String>,
    /// Plugins whose install failed, reported as warnings.
    pub plugins_failed: Vec<String>,
    pub done: bool,
    /// The permission bits of Claude Code's plugins folder before setup made it private
    /// (the marketplace URL it keeps there carries a credential); `None` when setup left
    /// them alone.
    #[serde(default)]
    pub plugins_dir_mode: Option<u32>,
}

/// The whole record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupState {
    pub version: u32,
    pub phase: Phase,
    /// The deployment's origin, e.g. `https://archestra.example.com`.
    pub origin: String,
    pub started_at: String,
    pub updated_at: String,
    /// The payload being applied; it holds this machine's key, hence the file's mode.
    pub payload: SetupPayload,
    pub settings: SettingsRecord,
    pub mcp: Option<McpRecord>,
    pub skills: Option<SkillsRecord>,
    pub env: EnvJournal,
    /// The env block has been merged and written.
    pub env_done: bool,
    /// Keys of earlier setups on this machine still to revoke on the server.
    #[serde(default)]
    pub keys_to_revoke: Vec<Secret>,
    /// The keyring entry holding the virtual key; then `payload` holds no key.
    #[serde(default)]
    pub keyring_account: Option<String>,
}

impl SetupState {
    /// Return this machine's key: from the payload, else from the keyring.
    pub fn machine_key(&self) -> Option<Secret> {
        if let Some(key) = self.payload.proxy.as_ref().and_then(|p| p.machine_key()) {
            return Some(key.clone());
        }
        let account = self.keyring_account.as_ref()?;
        crate::secret_store::load(account, crate::secret_store::KEYRING_TIMEOUT)
            .ok()
            .map(Secret::new)
    }
}

impl SetupState {
    /// Read the record at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<SetupState>, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| StateError::Parse {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let version = value.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
        if version > STATE_VERSION {
            return Err(StateError::TooNew {
                path: path.into(),
                found: version,
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StateError::Parse {
                path: path.into(),
                reason: e.to_string(),
            })
    }

    /// Write the record atomically with mode 0600, stamping `updated_at`.
    ///
    /// A key kept in the keyring is left out of the file, whatever the payload in memory says.
    pub fn save(&mut self, path: &Path) -> Result<(), StateError> {
        self.updated_at = now_rfc3339();
        let mut on_disk = self.clone();
        if on_disk.keyring_account.is_some()
            && let Some(proxy) = on_disk.payload.proxy.as_mut()
        {
            proxy.virtual_key = None;
        }
        let mut text = serde_json::to_string_pretty(&on_disk).expect("the state record serialises");
        text.push('\n');
        write_atomic(path, text.as_bytes(), true).map_err(StateError::Write)?;
        crash_point();
        Ok(())
    }

    /// Delete the record; a missing record is not an error.
    pub fn remove(path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The current time as RFC 3339, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a current UTC time always formats")
}

/// Test hook: with `ARCHESTRA_CONNECT_CRASH_AT=N` set, the process kills itself with SIGKILL
/// at its N-th crash point (after each saved step of setup, after each step of revert), so
/// that the crash tests can stop it at every step. Unset, it costs one environment lookup.
pub fn crash_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static REACHED: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = std::env::var("ARCHESTRA_CONNECT_CRASH_AT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        // SIGKILL is delivered before `kill` returns; never go on past a crash point.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

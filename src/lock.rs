//! The exclusive lock that keeps two setups, or a setup and a revert, from interleaving.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why the lock could not be taken.
#[derive(Debug, Error)]
pub enum LockError {
    #[error(
        "another archestra-connect is changing this Claude Code configuration right now{}",
        holder.as_ref().map(|p| format!(" (process {p})")).unwrap_or_default()
    )]
    Busy { holder: Option<String> },
    #[error("could not open the lock file `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct InstallLock {
    _file: File,
}

/// Create `dir` (and parents) with mode 0700 when it does not exist.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl InstallLock {
    /// Take the lock at `path` without waiting; a held lock is reported with its holder's pid.
    pub fn acquire(path: &Path) -> Result<InstallLock, LockError> {
        let open_err = |source| LockError::Open {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(LockError::Busy {
                    holder: (!holder.is_empty()).then_some(holder),
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        // The pid is only a hint for the message above; failing to write it is harmless.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(InstallLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lock");
        let first = InstallLock::acquire(&path).unwrap();
        let err = InstallLock::acquire(&path).unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        InstallLock::acquire(&path).unwrap();
    }
}

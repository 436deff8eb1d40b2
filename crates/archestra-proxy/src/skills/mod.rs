//! The companion's own shared-skills marketplace: a folder served as a git repository over
//! git's smart HTTP protocol, to holders of a per-machine credential.
//!
//! [`Marketplace`] owns the folder and the bare repository made from it; the repository is
//! re-made as a new commit when the folder changes, checked at most once per interval when a
//! client asks for the refs. [`credential`] makes and reads the credentials, [`cgi`] runs
//! `git http-backend`. The routes live in `server/skills.rs`.

pub mod cgi;
pub mod credential;
mod snapshot;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::server::error::error_chain;
use snapshot::Fingerprint;

pub use credential::CREDENTIAL_PREFIX;

/// Path of the served repository; clone URLs are the public origin followed by this.
pub const MARKETPLACE_PATH: &str = "/skills/marketplace.git";

/// Name of the bare repository inside its project root, as `git http-backend` sees it.
const REPO_NAME: &str = "marketplace.git";

/// `git http-backend` processes that may run at once.
const GIT_SLOTS: usize = 8;

/// Why the marketplace folder cannot be served.
#[derive(Debug, Error)]
pub enum SkillsError {
    #[error(
        "the skills folder has no `.claude-plugin/marketplace.json` (looked for `{path}`); point --skills-dir at a Claude Code marketplace folder"
    )]
    NoManifest { path: PathBuf, source: io::Error },
    #[error("the marketplace manifest `{path}` is not usable: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("could not read the skills folder `{path}`")]
    ReadFolder { path: PathBuf, source: io::Error },
    #[error("could not create the folder `{path}` for the served repository")]
    CreateRepoDir { path: PathBuf, source: io::Error },
    #[error("could not run `git`; the skills marketplace needs git installed and on PATH")]
    GitSpawn { source: io::Error },
    #[error("`{what}` failed: {stderr}")]
    GitFailed { what: &'static str, stderr: String },
    #[error(
        "git has no `http-backend` (looked for `{path}`); install git's full package to serve the skills marketplace"
    )]
    NoHttpBackend { path: PathBuf },
    #[error("another process kept moving the marketplace branch; try again")]
    Raced,
    #[error("the task taking a snapshot of the skills folder failed")]
    Task,
}

/// A marketplace folder and the repository served from it.
#[derive(Debug)]
pub struct Marketplace {
    name: String,
    folder: PathBuf,
    /// The folder holding the bare repository: `GIT_PROJECT_ROOT` for `git http-backend`.
    project_root: PathBuf,
    check_interval: Duration,
    freshness: Mutex<Freshness>,
    slots: Arc<Semaphore>,
}

/// What the last look at the folder found, and when it was taken.
#[derive(Debug)]
struct Freshness {
    fingerprint: Fingerprint,
    checked_at: Instant,
}

impl Marketplace {
    /// Check `folder` and `git`, then make or update the repository under `project_root`;
    /// blocks while git runs.
    pub fn open(
        folder: &Path,
        project_root: &Path,
        check_interval: Duration,
    ) -> Result<Marketplace, SkillsError> {
        // git runs in other directories than this process, so relative paths would point
        // elsewhere for it.
        let folder = &std::path::absolute(folder).map_err(|source| SkillsError::ReadFolder {
            path: folder.to_path_buf(),
            source,
        })?;
        let project_root =
            &std::path::absolute(project_root).map_err(|source| SkillsError::CreateRepoDir {
                path: project_root.to_path_buf(),
                source,
            })?;
        let name = snapshot::read_marketplace_name(folder)?;
        let version = snapshot::check_git()?;
        create_private_dir(project_root)?;
        let repo = project_root.join(REPO_NAME);
        snapshot::init_repo(&repo)?;

        let fingerprint =
            snapshot::fingerprint(folder).map_err(|source| SkillsError::ReadFolder {
                path: folder.to_path_buf(),
                source,
            })?;
        let commit = snapshot::commit_snapshot(&repo, folder, &name)?;
        tracing::debug!(git = %version, commit = ?commit, "marketplace repository ready");

        Ok(Marketplace {
            name,
            folder: folder.to_path_buf(),
            project_root: project_root.to_path_buf(),
            check_interval,
            freshness: Mutex::new(Freshness {
                fingerprint,
                checked_at: Instant::now(),
            }),
            slots: Arc::new(Semaphore::new(GIT_SLOTS)),
        })
    }

    /// Return the name the marketplace declares for itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Return the folder being served.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Return the folder holding the bare repository.
    pub fn project_root(&self) -> &Path {
        &self.project_root
    }

    /// Return the pool of `git http-backend` slots.
    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Re-make the repository if the folder changed since the last look, looking at most
    /// once per check interval.
    ///
    /// Failures are logged, not returned: clients keep getting the last good snapshot. A
    /// folder whose manifest went missing, broke or renamed the marketplace is not
    /// snapshotted either, for the same reason.
    pub async fn refresh(&self) {
        // Concurrent requests wait here for one look at the folder, not one each.
        let mut freshness = self.freshness.lock().await;
        if freshness.checked_at.elapsed() < self.check_interval {
            return;
        }
        let folder = self.folder.clone();
        let repo = self.project_root.join(REPO_NAME);
        let name = self.name.clone();
        let known = freshness.fingerprint;
        let outcome =
            tokio::task::spawn_blocking(move || refresh_blocking(&folder, &repo, &name, known))
                .await
                .unwrap_or(Err(SkillsError::Task));
        freshness.checked_at = Instant::now();
        match outcome {
            Ok(Some(fingerprint)) => freshness.fingerprint = fingerprint,
            Ok(None) => {}
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "could not update the skills marketplace; serving the previous snapshot");
            }
        }
    }
}

/// Look at the folder; when its fingerprint differs from `known`, snapshot it. Return the
/// new fingerprint when the folder changed and was dealt with.
fn refresh_blocking(
    folder: &Path,
    repo: &Path,
    name: &str,
    known: Fingerprint,
) -> Result<Option<Fingerprint>, SkillsError> {
    let fingerprint = snapshot::fingerprint(folder).map_err(|source| SkillsError::ReadFolder {
        path: folder.to_path_buf(),
        source,
    })?;
    if fingerprint == known {
        return Ok(None);
    }
    match snapshot::read_marketplace_name(folder) {
        Ok(found) if found == name => {}
        Ok(found) => {
            tracing::warn!(expected = name, %found, "the marketplace folder now declares another name; restart the server to serve it under the new name");
            return Ok(Some(fingerprint));
        }
        Err(err) => {
            tracing::warn!(error = %err, "the marketplace folder's manifest is not usable; keeping the previous snapshot");
            return Ok(Some(fingerprint));
        }
    }
    match snapshot::commit_snapshot(repo, folder, name)? {
        Some(commit) => {
            tracing::info!(%commit, "the skills folder changed; serving a new snapshot")
        }
        None => tracing::debug!("the skills folder was touched but its content is the same"),
    }
    Ok(Some(fingerprint))
}

/// Return the folder for the served repository that belongs with the database `db_path`:
/// `<db file name>-skills` beside it, so that a restart continues the same history.
pub fn project_root_for(db_path: &Path) -> PathBuf {
    let file_name = db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archestra-proxy.db".into());
    db_path.with_file_name(format!("{file_name}-skills"))
}

/// Create `path` (0700 on Unix) when it is missing.
fn create_private_dir(path: &Path) -> Result<(), SkillsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|source| SkillsError::CreateRepoDir {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".claude-plugin")).unwrap();
        std::fs::write(
            dir.path().join(snapshot::MANIFEST),
            r#"{"name": "acme-skills", "plugins": []}"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_repository_lives_beside_the_database() {
        assert_eq!(
            project_root_for(Path::new("/srv/data/proxy.db")),
            Path::new("/srv/data/proxy.db-skills")
        );
    }

    #[tokio::test]
    async fn a_changed_folder_becomes_a_new_commit_and_a_broken_one_does_not() {
        let dir = folder();
        let root = tempfile::tempdir().unwrap();
        let project_root = root.path().join("proxy.db-skills");
        let marketplace = Marketplace::open(dir.path(), &project_root, Duration::ZERO).unwrap();
        assert_eq!(marketplace.name(), "acme-skills");
        let repo = project_root.join(REPO_NAME);
        let first = snapshot::branch_tip(&repo).unwrap().unwrap();

        marketplace.refresh().await;
        assert_eq!(snapshot::branch_tip(&repo).unwrap().unwrap(), first);

        std::fs::write(dir.path().join("NOTES.md"), "new").unwrap();
        marketplace.refresh().await;
        let second = snapshot::branch_tip(&repo).unwrap().unwrap();
        assert_ne!(second, first);

        std::fs::write(dir.path().join(snapshot::MANIFEST), "{ not json").unwrap();
        marketplace.refresh().await;
        assert_eq!(snapshot::branch_tip(&repo).unwrap().unwrap(), second);

        // Reopening, as after a restart, continues the same history.
        std::fs::write(
            dir.path().join(snapshot::MANIFEST),
            r#"{"name": "acme-skills", "plugins": []}"#,
        )
        .unwrap();
        drop(marketplace);
        Marketplace::open(dir.path(), &project_root, Duration::ZERO).unwrap();
        assert_eq!(snapshot::branch_tip(&repo).unwrap().unwrap(), second);
    }

    #[tokio::test]
    async fn the_folder_is_looked_at_once_per_interval() {
        let dir = folder();
        let root = tempfile::tempdir().unwrap();
        let project_root = root.path().join("skills");
        let marketplace =
            Marketplace::open(dir.path(), &project_root, Duration::from_secs(3600)).unwrap();
        let repo = project_root.join(REPO_NAME);
        let first = snapshot::branch_tip(&repo).unwrap().unwrap();
        std::fs::write(dir.path().join("NOTES.md"), "new").unwrap();
        marketplace.refresh().await;
        assert_eq!(snapshot::branch_tip(&repo).unwrap().unwrap(), first);
    }

    #[test]
    fn a_folder_without_a_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let err = Marketplace::open(dir.path(), root.path(), Duration::ZERO).unwrap_err();
        assert!(matches!(err, SkillsError::NoManifest { .. }), "{err}");
    }
}

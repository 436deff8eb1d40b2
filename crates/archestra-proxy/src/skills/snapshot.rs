//! The served repository: a bare git repository whose `main` is a commit of the marketplace
//! folder's current content.
//!
//! A snapshot is taken with git's own plumbing and a private index file, so the folder is only
//! read, never written: `add -A` into the index, `write-tree`, and a new commit on top of the
//! previous one only when the tree differs. History stays linear, so clients fast-forward.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use archestra_wire::validate_name;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::SkillsError;

/// The branch the repository serves; `HEAD` points at it.
pub const BRANCH: &str = "refs/heads/main";

/// Where, inside the folder, the marketplace declares itself.
pub const MANIFEST: &str = ".claude-plugin/marketplace.json";

/// Times a snapshot is retried when another process moved the branch meanwhile.
const COMMIT_ATTEMPTS: usize = 3;

/// A digest of the folder's file names, types, sizes and change times; equal digests mean
/// nothing was added, removed or rewritten.
pub type Fingerprint = [u8; 32];

/// Read the marketplace name from the folder's manifest, and check it is a valid name.
pub fn read_marketplace_name(folder: &Path) -> Result<String, SkillsError> {
    #[derive(Deserialize)]
    struct Manifest {
        name: Option<String>,
    }

    let path = folder.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|source| SkillsError::NoManifest {
        path: path.clone(),
        source,
    })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|err| SkillsError::BadManifest {
            path: path.clone(),
            reason: err.to_string(),
        })?;
    let name = manifest.name.ok_or_else(|| SkillsError::BadManifest {
        path: path.clone(),
        reason: "it has no `name`".into(),
    })?;
    validate_name("name", &name).map_err(|err| SkillsError::BadManifest {
        path,
        reason: err.to_string(),
    })?;
    Ok(name)
}

/// Fingerprint the folder: every entry's relative path, type, size and modification and
/// change times. `.git` folders are skipped, as git itself skips them.
pub fn fingerprint(folder: &Path) -> io::Result<Fingerprint> {
    let mut entries = Vec::new();
    collect_entries(folder, Path::new(""), &mut entries)?;
    entries.sort();
    let mut hasher = Sha256::new();
    for entry in &entries {
        hasher.update(entry.as_bytes());
        hasher.update([0]);
    }
    Ok(hasher.finalize().into())
}

fn collect_entries(folder: &Path, relative: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(folder.join(relative))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == OsStr::new(".git") {
            continue;
        }
        let path = relative.join(&name);
        // Not followed: a symbolic link is committed as a link, so its own times count.
        let meta = fs::symlink_metadata(folder.join(&path))?;
        out.push(describe(&path, &meta));
        if meta.is_dir() {
            collect_entries(folder, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn describe(path: &Path, meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    // The change time moves on every write and cannot be set back by `touch` or `cp -p`,
    // so a rewrite of the same size within the same second is still seen.
    format!(
        "{}\t{:o}\t{}\t{}.{}\t{}.{}",
        path.display(),
        meta.mode(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

#[cfg(not(unix))]
fn describe(path: &Path, meta: &fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!(
        "{}\t{}\t{}\t{}",
        path.display(),
        meta.is_dir(),
        meta.len(),
        modified.as_nanos()
    )
}

/// Check that `git` runs and has `http-backend`; return its version line.
pub fn check_git() -> Result<String, SkillsError> {
    let version = run_git(Command::new("git").arg("--version"), "git --version")?;
    let exec_path = run_git(Command::new("git").arg("--exec-path"), "git --exec-path")?;
    let backend = Path::new(&exec_path).join("git-http-backend");
    if !backend.exists() {
        return Err(SkillsError::NoHttpBackend { path: backend });
    }
    Ok(version)
}

/// Create the bare repository `repo` when it is missing, with `HEAD` on [`BRANCH`].
pub fn init_repo(repo: &Path) -> Result<(), SkillsError> {
    if repo.join("HEAD").exists() {
        return Ok(());
    }
    let mut command = git_command(repo, None);
    command.args(["init", "--quiet", "--bare"]).arg(repo);
    run_git(&mut command, "git init --bare")?;
    let mut command = git_command(repo, None);
    command.args(["symbolic-ref", "HEAD", BRANCH]);
    run_git(&mut command, "git symbolic-ref HEAD")?;
    Ok(())
}

/// Commit the folder's current content to [`BRANCH`] unless the branch already holds that
/// content; return the new commit's id, or `None` when nothing changed.
///
/// Safe against other processes snapshotting the same repository: the branch moves only
/// from the commit this snapshot was made on, and a lost race is retried on the new tip.
pub fn commit_snapshot(
    repo: &Path,
    folder: &Path,
    name: &str,
) -> Result<Option<String>, SkillsError> {
    // A private index per process: two servers sharing the repository never share one.
    let index = repo.join(format!("archestra-index-{}", std::process::id()));
    let result = snapshot_with_index(repo, folder, name, &index);
    let _ = fs::remove_file(&index);
    result
}

fn snapshot_with_index(
    repo: &Path,
    folder: &Path,
    name: &str,
    index: &Path,
) -> Result<Option<String>, SkillsError> {
    let _ = fs::remove_file(index);
    let mut add = git_command(repo, Some((folder, index)));
    // TODO(skills): a `.gitignore` inside the folder is honoured and a nested git checkout
    // becomes a submodule entry that clients cannot fetch; both are unusual in a
    // marketplace folder, and git's own rules are the least surprising ones to follow.
    add.args(["add", "--all", "--", "."]);
    run_git(&mut add, "git add")?;
    let mut write_tree = git_command(repo, Some((folder, index)));
    write_tree.arg("write-tree");
    let tree = run_git(&mut write_tree, "git write-tree")?;

    for _ in 0..COMMIT_ATTEMPTS {
        let parent = branch_tip(repo)?;
        if let Some(parent) = &parent {
            let mut parent_tree = git_command(repo, None);
            parent_tree.args(["rev-parse", &format!("{parent}^{{tree}}")]);
            if run_git(&mut parent_tree, "git rev-parse")? == tree {
                return Ok(None);
            }
        }

        let mut commit_tree = git_command(repo, None);
        commit_tree
            .args(["commit-tree", &tree, "-m"])
            .arg(format!("Snapshot of the {name} marketplace folder"));
        if let Some(parent) = &parent {
            commit_tree.args(["-p", parent]);
        }
        let commit = run_git(&mut commit_tree, "git commit-tree")?;

        // The expected old value makes this a compare-and-swap; an empty one means "absent".
        let mut update = git_command(repo, None);
        update
            .args(["update-ref", BRANCH, &commit])
            .arg(parent.as_deref().unwrap_or(""));
        match run_git(&mut update, "git update-ref") {
            Ok(_) => return Ok(Some(commit)),
            Err(err) => {
                tracing::debug!(error = %err, "the marketplace branch moved meanwhile; retrying");
            }
        }
    }
    Err(SkillsError::Raced)
}

/// Return the commit [`BRANCH`] points at, if it exists yet.
pub fn branch_tip(repo: &Path) -> Result<Option<String>, SkillsError> {
    let mut command = git_command(repo, None);
    command.args([
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{BRANCH}^{{commit}}"),
    ]);
    let output = command
        .output()
        .map_err(|source| SkillsError::GitSpawn { source })?;
    if output.status.success() {
        Ok(Some(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ))
    } else {
        Ok(None)
    }
}

/// A `git` command on `repo` that ignores every system and user configuration file, with the
/// work tree and index of a snapshot when given.
fn git_command(repo: &Path, work: Option<(&Path, &Path)>) -> Command {
    let mut command = Command::new("git");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_DIR", repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", null_device())
        .env("HOME", repo)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "archestra-proxy")
        .env("GIT_AUTHOR_EMAIL", "archestra-proxy@localhost")
        .env("GIT_COMMITTER_NAME", "archestra-proxy")
        .env("GIT_COMMITTER_EMAIL", "archestra-proxy@localhost")
        .stdin(Stdio::null());
    if let Some((folder, index)) = work {
        command
            .env("GIT_WORK_TREE", folder)
            .env("GIT_INDEX_FILE", index)
            .current_dir(folder);
    } else {
        command.current_dir(repo.parent().unwrap_or(repo));
    }
    command
}

fn null_device() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from("NUL")
    } else {
        PathBuf::from("/dev/null")
    }
}

/// Run a git command; return its trimmed stdout, or an error carrying its trimmed stderr.
fn run_git(command: &mut Command, what: &'static str) -> Result<String, SkillsError> {
    let output: Output = command
        .output()
        .map_err(|source| SkillsError::GitSpawn { source })?;
    if !output.status.success() {
        return Err(SkillsError::GitFailed {
            what,
            stderr: String::from_utf8_lossy(&output.stderr)
                .trim()
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".claude-plugin")).unwrap();
        fs::write(
            dir.path().join(MANIFEST),
            r#"{"name": "acme-skills", "plugins": []}"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_name_comes_from_the_manifest_and_must_be_valid() {
        let dir = folder();
        assert_eq!(read_marketplace_name(dir.path()).unwrap(), "acme-skills");

        fs::write(dir.path().join(MANIFEST), r#"{"name": "--scope"}"#).unwrap();
        let err = read_marketplace_name(dir.path()).unwrap_err().to_string();
        assert!(err.contains("starts with `-`"), "{err}");

        fs::write(dir.path().join(MANIFEST), r#"{"plugins": []}"#).unwrap();
        let err = read_marketplace_name(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has no `name`"), "{err}");

        fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        let err = read_marketplace_name(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("no `.claude-plugin/marketplace.json`"),
            "{err}"
        );
    }

    #[test]
    fn the_fingerprint_changes_with_content_and_names_but_not_with_git_folders() {
        let dir = folder();
        let first = fingerprint(dir.path()).unwrap();
        assert_eq!(first, fingerprint(dir.path()).unwrap());

        fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        assert_eq!(first, fingerprint(dir.path()).unwrap());

        // Same size, rewritten: the change time still moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(
            dir.path().join(MANIFEST),
            r#"{"name": "acme-skillz", "plugins": []}"#,
        )
        .unwrap();
        let second = fingerprint(dir.path()).unwrap();
        assert_ne!(first, second);

        fs::create_dir_all(dir.path().join("plugins/new")).unwrap();
        assert_ne!(second, fingerprint(dir.path()).unwrap());
    }

    #[test]
    fn snapshots_commit_only_changes_and_keep_history_linear() {
        let dir = folder();
        let repo_root = tempfile::tempdir().unwrap();
        let repo = repo_root.path().join("marketplace.git");
        init_repo(&repo).unwrap();
        init_repo(&repo).unwrap();
        assert_eq!(branch_tip(&repo).unwrap(), None);

        let first = commit_snapshot(&repo, dir.path(), "acme-skills")
            .unwrap()
            .expect("a first commit");
        assert_eq!(branch_tip(&repo).unwrap().as_deref(), Some(first.as_str()));
        assert_eq!(
            commit_snapshot(&repo, dir.path(), "acme-skills").unwrap(),
            None
        );

        fs::write(dir.path().join("README.md"), "hello").unwrap();
        let second = commit_snapshot(&repo, dir.path(), "acme-skills")
            .unwrap()
            .expect("a second commit");
        let mut parent = git_command(&repo, None);
        parent.args(["rev-parse", &format!("{second}^")]);
        assert_eq!(run_git(&mut parent, "rev-parse").unwrap(), first);

        // The folder was only read, and no index file is left behind.
        assert!(!dir.path().join(".git").exists());
        let leftovers: Vec<_> = fs::read_dir(&repo)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("archestra-index")
            })
            .collect();
        assert!(leftovers.is_empty());
    }
}

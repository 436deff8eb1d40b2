//! Where Claude Code keeps its files, resolved once per run.
//!
//! `CLAUDE_CONFIG_DIR` moves both `settings.json` and `.claude.json`: with it set, the latter
//! is `$CLAUDE_CONFIG_DIR/.claude.json`, not `~/.claude.json`. Every step uses the same
//! resolved paths, so a setup never writes half its changes to one place and half to another.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The resolved locations of every file the installer reads or writes.
#[derive(Debug, Clone)]
pub struct ClaudePaths {
    /// The user's home directory.
    pub home: PathBuf,
    /// `CLAUDE_CONFIG_DIR`, else `~/.claude`.
    pub config_dir: PathBuf,
    /// Whether `config_dir` came from `CLAUDE_CONFIG_DIR`.
    pub config_dir_from_env: bool,
    /// `<config_dir>/settings.json`.
    pub settings: PathBuf,
    /// `<config_dir>/settings.json.archestra-backup`.
    pub backup: PathBuf,
    /// `$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`.
    pub claude_json: PathBuf,
    /// `<config_dir>/plugins`.
    pub plugins_dir: PathBuf,
    /// `<config_dir>/.archestra-connect`, our own folder (mode 0700).
    pub state_dir: PathBuf,
}

impl ClaudePaths {
    /// Resolve the paths from the environment.
    pub fn from_env() -> Result<ClaudePaths> {
        let home = dirs::home_dir()
            .filter(|h| !h.as_os_str().is_empty())
            .context("could not find your home directory; set `HOME` and run again")?;
        let config_env = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|v| !v.is_empty());
        Self::resolve(home, config_env.map(PathBuf::from))
    }

    /// Resolve the paths for a given home and optional `CLAUDE_CONFIG_DIR`.
    pub fn resolve(home: PathBuf, config_dir: Option<PathBuf>) -> Result<ClaudePaths> {
        if !home.is_absolute() {
            bail!(
                "the home directory `{}` is not an absolute path",
                home.display()
            );
        }
        let (config_dir, from_env) = match config_dir {
            Some(dir) if dir.is_absolute() => (dir, true),
            Some(dir) => bail!(
                "`CLAUDE_CONFIG_DIR` is `{}`, which is not an absolute path; Claude Code and this installer could disagree on where it points",
                dir.display()
            ),
            None => (home.join(".claude"), false),
        };
        let claude_json = if from_env {
            config_dir.join(".claude.json")
        } else {
            home.join(".claude.json")
        };
        Ok(ClaudePaths {
            settings: config_dir.join("settings.json"),
            backup: config_dir.join("settings.json.archestra-backup"),
            plugins_dir: config_dir.join("plugins"),
            state_dir: config_dir.join(".archestra-connect"),
            claude_json,
            config_dir,
            config_dir_from_env: from_env,
            home,
        })
    }

    /// `<state_dir>/state.json`, the setup journal.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// `<state_dir>/lock`, held for the whole of a setup or revert.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }

    /// Show a path with the home directory written as `~`.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_puts_claude_json_in_home() {
        let p = ClaudePaths::resolve("/h".into(), None).unwrap();
        assert_eq!(p.settings, Path::new("/h/.claude/settings.json"));
        assert_eq!(p.claude_json, Path::new("/h/.claude.json"));
        assert_eq!(p.display(&p.settings), "~/.claude/settings.json");
    }

    #[test]
    fn config_dir_moves_both_files() {
        let p = ClaudePaths::resolve("/h".into(), Some("/c".into())).unwrap();
        assert_eq!(p.settings, Path::new("/c/settings.json"));
        assert_eq!(p.claude_json, Path::new("/c/.claude.json"));
        assert!(ClaudePaths::resolve("/h".into(), Some("rel".into())).is_err());
    }
}

//! Completion scripts and man pages generated from a clap definition, for both binaries'
//! `completions` and `manpages` subcommands (which install/install.sh calls).
//!
//! Only built with the `cli-docs` feature, so that a user of the wire types alone does not
//! pull in clap. The generators used return errors instead of panicking, so that
//! `completions bash | head` ends quietly.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use clap_complete::Generator;
/// The shells completion scripts are made for, re-exported for the binaries' flags.
pub use clap_complete::Shell;

/// Flags of a `completions` subcommand.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Flags of a `manpages` subcommand.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write the man pages into (`<program>*.1`); created when missing
    pub dir: PathBuf,
}

/// Why a completion script or a man page could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CliDocsError {
    #[error("could not generate the {shell} completion script")]
    GenerateCompletions {
        shell: Shell,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the completion script to stdout")]
    WriteCompletions(#[source] std::io::Error),
    #[error("could not create the man page directory `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not render the man page `{name}`")]
    RenderPage {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the man page `{}`", path.display())]
    WritePage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Print the completion script of `cmd` for `shell` on stdout; a closed stdout is no error.
pub fn print_completions(mut cmd: clap::Command, shell: Shell) -> Result<(), CliDocsError> {
    // The scripts name the program as typed, which is the command's own name.
    let name = cmd.get_name().to_string();
    cmd.set_bin_name(name);
    cmd.build();
    let mut script = Vec::new();
    shell
        .try_generate(&cmd, &mut script)
        .map_err(|source| CliDocsError::GenerateCompletions { shell, source })?;
    match std::io::stdout().lock().write_all(&script) {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliDocsError::WriteCompletions),
    }
}

/// Write a man page for `cmd` and one for each subcommand not hidden (nor `help`) into `dir`
/// (created when missing), as `<name>.1` and `<name>-<subcommand>.1`; return the files written.
///
/// Existing pages of the same names are replaced.
pub fn write_manpages(mut cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, CliDocsError> {
    fs::create_dir_all(dir).map_err(|source| CliDocsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut pages = vec![(name.clone(), cmd.clone())];
    // clap's own `help` subcommand needs no page: every page already lists the commands.
    let documented = cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help");
    for sub in documented {
        let page_name = format!("{name}-{}", sub.get_name());
        pages.push((page_name.clone(), sub.clone().name(page_name)));
    }

    let mut written = Vec::new();
    for (name, page) in pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut text)
            .map_err(|source| CliDocsError::RenderPage {
                name: name.clone(),
                source,
            })?;
        let path = dir.join(format!("{name}.1"));
        fs::write(&path, text).map_err(|source| CliDocsError::WritePage {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

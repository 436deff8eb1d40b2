//! `completions` and `manpages`: what install/install.sh puts beside the binary.

use archestra_wire::cli_docs::{CompletionsArgs, ManpagesArgs, print_completions, write_manpages};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::Failure;

/// Print the completion script for a shell on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    print_completions(Cli::command(), args.shell)?;
    Ok(())
}

/// Write one man page per command into a directory.
pub fn manpages(args: &ManpagesArgs) -> Result<(), Failure> {
    write_manpages(Cli::command(), &args.dir)?;
    Ok(())
}

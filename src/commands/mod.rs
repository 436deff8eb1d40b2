//! One module per subcommand.

mod credential;
mod generate;
mod revert;
mod setup;
mod status;

use crate::cli::Command;
use crate::exit::Failure;
use crate::printer::Printer;

/// Run a subcommand.
pub fn run(command: Command, printer: &Printer) -> Result<(), Failure> {
    match command {
        Command::Setup(args) => setup::setup(&args, printer),
        Command::Revert(args) => revert::revert(&args, printer),
        Command::Status(args) => status::status(&args, printer),
        Command::Credential(args) => credential::credential(&args),
        Command::Completions(args) => generate::completions(&args),
        Command::Manpages(args) => generate::manpages(&args),
    }
}

//! One module per subcommand.

mod setup;

use crate::cli::Command;
use crate::exit::Failure;
use crate::printer::Printer;

/// Run a subcommand.
pub fn run(command: Command, printer: &Printer) -> Result<(), Failure> {
    match command {
        Command::Setup(args) => setup::setup(&args, printer),
    }
}

//! `archestra-connect`: connect Claude Code to an Archestra deployment, and undo it again.

use archestra_connect::printer::{Printer, Verbosity};
use archestra_connect::{cli, commands, exit};
use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    init_logging(verbosity);
    let printer = Printer::new(verbosity);
    archestra_connect::interrupt::install();

    let code = match commands::run(cli.command, &printer) {
        Ok(()) => exit::SUCCESS,
        Err(failure) => {
            report(&printer, &failure);
            failure.code
        }
    };
    std::process::exit(code);
}

/// Print an error with its causes, then its hints.
fn report(printer: &Printer, failure: &exit::Failure) {
    printer.error(&failure.error.to_string());
    for cause in failure.error.chain().skip(1) {
        printer.note(&format!("  caused by: {cause}"));
    }
    for hint in &failure.hints {
        printer.hint(hint);
    }
}

/// Send tracing output to stderr: silent unless `-v` or `ARCHESTRA_CONNECT_LOG` asks for it.
fn init_logging(verbosity: Verbosity) {
    use tracing_subscriber::EnvFilter;
    let default = if verbosity == Verbosity::Verbose {
        "archestra_connect=debug"
    } else {
        "off"
    };
    let filter = EnvFilter::try_from_env("ARCHESTRA_CONNECT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

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
///
/// `ARCHESTRA_CONNECT_LOG` takes `level` or `target=level,…` (e.g. `debug`, or
/// `archestra_connect=trace`). It is parsed without regular expressions, which keeps the
/// binary small and its start fast.
fn init_logging(verbosity: Verbosity) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let from_env = std::env::var("ARCHESTRA_CONNECT_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok());
    let filter = from_env.unwrap_or_else(|| {
        let level = if verbosity == Verbosity::Verbose {
            LevelFilter::DEBUG
        } else {
            LevelFilter::OFF
        };
        Targets::new().with_target("archestra_connect", level)
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time()
                .with_target(false),
        )
        .with(filter)
        .init();
}

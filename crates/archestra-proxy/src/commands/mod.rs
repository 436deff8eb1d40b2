//! The subcommands, one file each, and what they share: logging and the database path.

mod approve;
mod keys;
mod logs;
mod serve;
mod setups;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use archestra_wire::cli_docs;
use clap::CommandFactory;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, DbArg, KeysCommand, SetupsCommand};

/// Run the command the user asked for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging("archestra_proxy=info,warn");
            serve::serve(args)
        }
        Command::Setups(SetupsCommand::Create(args)) => {
            init_logging("warn");
            setups::create(args)
        }
        Command::Keys(KeysCommand::List(args)) => {
            init_logging("warn");
            keys::list(args)
        }
        Command::Keys(KeysCommand::Revoke(args)) => {
            init_logging("warn");
            keys::revoke(args)
        }
        Command::Logs(args) => {
            init_logging("warn");
            logs::logs(args)
        }
        Command::Approve(args) => {
            init_logging("warn");
            approve::approve(args)
        }
        Command::Completions(args) => {
            cli_docs::print_completions(Cli::command(), args.shell)?;
            Ok(())
        }
        Command::Manpages(args) => {
            cli_docs::write_manpages(Cli::command(), &args.dir)?;
            Ok(())
        }
    }
}

/// Send log lines to stderr, filtered by `RUST_LOG` or else by `default`.
fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}

/// Return the database path from `--db`, else the default in the user's data folder.
fn resolve_db(arg: &DbArg) -> anyhow::Result<PathBuf> {
    if let Some(path) = &arg.db {
        return Ok(path.clone());
    }
    let data = dirs::data_dir()
        .context("could not find the user's data folder; pass the database with --db PATH")?;
    Ok(data.join("archestra-proxy").join("archestra-proxy.db"))
}

//! `completions` and `manpages`: what install/install.sh puts beside the binary.
//!
//! Both use the generators that return errors instead of panicking, so that
//! `archestra-connect completions bash | head` ends quietly.

use std::fs;
use std::io::{ErrorKind, Write};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Generator;

use crate::cli::{Cli, CompletionsArgs, ManpagesArgs};
use crate::exit::Failure;

/// Print the completion script for a shell on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    cmd.set_bin_name("archestra-connect");
    cmd.build();
    let mut script = Vec::new();
    args.shell
        .try_generate(&cmd, &mut script)
        .context("could not generate the completion script")?;
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("could not write the completion script")?),
    }
}

/// Write one man page per command into a directory.
pub fn manpages(args: &ManpagesArgs) -> Result<(), Failure> {
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("could not create `{}`", args.dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut pages = vec![("archestra-connect".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("archestra-connect-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = args.dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .with_context(|| format!("could not render the man page `{name}`"))?;
        fs::write(&path, out).with_context(|| format!("could not write `{}`", path.display()))?;
    }
    Ok(())
}

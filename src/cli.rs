//! Command-line flags, and nothing else: the commands turn them into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    done
  1    failed before changing anything (or you answered no); the message says why
  2    the command line is wrong
  3    setup or revert stopped part way; its state record says what was done:
       run the same command again to finish, or `archestra-connect revert` to undo
  130  interrupted (Ctrl-C)";

/// Connect Claude Code to an Archestra deployment, and undo it again.
#[derive(Debug, Parser)]
#[command(name = "archestra-connect", version = env!("ARCHESTRA_VERSION"), after_help = EXIT_CODES)]
pub struct Cli {
    /// Print only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print every decision and every `claude` call.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect Claude Code to an Archestra deployment with a one-time setup link.
    #[command(after_help = SETUP_HELP)]
    Setup(SetupArgs),

    /// Undo what setup did, and nothing you changed since.
    #[command(after_help = REVERT_HELP)]
    Revert(RevertArgs),

    /// Show what this machine is connected to, from the files alone.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),

    /// Print this machine's virtual key from the OS keyring (Claude Code's `apiKeyHelper`).
    #[command(after_help = CREDENTIAL_HELP)]
    Credential(CredentialArgs),

    /// Print a shell completion script, e.g. `archestra-connect completions bash > …`.
    Completions(archestra_wire::cli_docs::CompletionsArgs),

    /// Write the man pages of every command into a directory (used by install/install.sh).
    #[command(hide = true)]
    Manpages(archestra_wire::cli_docs::ManpagesArgs),
}

const CREDENTIAL_HELP: &str = "\
Setup writes this command into settings.json as `apiKeyHelper` when the key lives in the
OS keyring; Claude Code runs it once per session and sends its one line of output as the
API key. It prints the key and nothing else, so run it yourself only to check it works.

Exit codes:
  0  the key was printed
  1  the keyring has no such entry or did not answer; run `archestra-connect status`";

const REVERT_HELP: &str = "\
What it changes:
  - uninstalls the plugins setup installed and removes the marketplace if setup added it
  - removes the MCP gateway with `claude mcp remove`, and puts back what setup replaced
  - takes ANTHROPIC_BASE_URL, the X-Archestra-* header lines and the other values setup
    wrote out of settings.json, and restores the values setup overwrote; a value you
    changed after setup is kept, with a warning. When nothing else changed, settings.json
    comes back byte for byte as it was before setup.
  - deletes the state record, last

Without a state record (a machine set up by the old shell script), revert finds the
Archestra entries by their marks, shows them, and asks (or takes `--yes`).
Every step is safe to repeat: an interrupted revert is finished by running it again.

Examples:
  archestra-connect revert --dry-run
  archestra-connect revert --revoke-key     # also revoke this machine's key on the server
  archestra-connect revert --restore-backup # put the pre-setup backup back whole";

const STATUS_HELP: &str = "\
Reads settings.json, .claude.json, the plugin registry and the state record; it never
runs `claude` and changes nothing. It names the base URL and credential Claude Code really
uses here (managed and project settings and the shell environment included) and reports
drift since setup, such as a header line removed by hand.

Exit codes:
  0  connected and healthy
  1  error
  2  not connected
  3  connected, with problems (drift, an override, a failed --check)";

/// Flags of `archestra-connect revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Apply the plan without asking.
    #[arg(short, long)]
    pub yes: bool,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Copy settings.json.archestra-backup over settings.json instead of taking out only
    /// what setup added (shows what that discards first), then remove the backup.
    #[arg(long)]
    pub restore_backup: bool,

    /// Also revoke this machine's key on the server; your other machines keep theirs.
    #[arg(long)]
    pub revoke_key: bool,

    /// The deployment's address, to recognise its entries when there is no state record.
    #[arg(long, env = "ARCHESTRA_URL", value_name = "URL")]
    pub server: Option<String>,

    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,

    /// The `claude` executable to use (default: `ARCHESTRA_CLAUDE_BIN`, then PATH).
    #[arg(long, value_name = "PATH")]
    pub claude: Option<PathBuf>,

    /// Seconds to wait for the server and for each `claude` call.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Flags of `archestra-connect status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also check the deployment's health and send one free request through the proxy.
    #[arg(long)]
    pub check: bool,

    /// Print one JSON object on stdout (fields: connection, origin, mode, gateway, env,
    /// headerLines, marketplace, plugins, backup, secretStore, stateFile, settingsFile,
    /// effective, problems, checks).
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for each live check.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
}

const SETUP_HELP: &str = "\
What it changes:
  - registers the MCP gateway with `claude mcp add --scope user` (in ~/.claude.json,
    or $CLAUDE_CONFIG_DIR/.claude.json), after removing older registrations of it
  - adds the shared-skills marketplace and installs its plugins with `claude plugin`
  - sets ANTHROPIC_BASE_URL and the X-Archestra-* header lines in the `env` block of
    settings.json (and, in virtual-key mode, ANTHROPIC_AUTH_TOKEN); your other keys and
    header lines stay as they are
  - backs settings.json up once, to settings.json.archestra-backup

Nothing is redeemed until the local checks pass (claude found and new enough,
settings.json valid, no other setup running), so a local problem never uses up the link.
Every change is recorded in a state record so that `archestra-connect revert` can undo
exactly what setup did. Running setup again with a new link converges.

Examples:
  archestra-connect setup 'https://archestra.example.com/api/connection-setups/script/archestra_con_…'
  archestra-connect setup archestra_con_… --server https://archestra.example.com
  archestra-connect setup --resume          # finish a setup that was interrupted";

/// Flags of `archestra-connect setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The setup link from the Connect page, a pasted `curl … | bash` line, or a bare
    /// `archestra_con_…` token (then with `--server`). Without one, `--server` starts
    /// browser approval instead.
    #[arg(
        value_name = "LINK-OR-TOKEN",
        required_unless_present_any = ["resume", "server"]
    )]
    pub link: Option<String>,

    /// The deployment's address, for a bare token. Given alone, without a link, setup asks
    /// the deployment for a connection and you approve this machine in the browser.
    #[arg(long, env = "ARCHESTRA_URL", value_name = "URL")]
    pub server: Option<String>,

    /// With browser approval: print the approval page's address instead of opening it.
    #[arg(long)]
    pub no_open: bool,

    /// Allow a plain http link to a host other than this machine.
    #[arg(long)]
    pub allow_http: bool,

    /// Apply the plan without asking.
    #[arg(short, long)]
    pub yes: bool,

    /// Redeem the link and print the plan, changing nothing. The link is used up by then.
    #[arg(long)]
    pub dry_run: bool,

    /// Finish an interrupted setup from its state record, without a new link.
    #[arg(long, conflicts_with = "link")]
    pub resume: bool,

    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,

    /// The `claude` executable to use (default: `ARCHESTRA_CLAUDE_BIN`, then PATH).
    #[arg(long, value_name = "PATH")]
    pub claude: Option<PathBuf>,

    /// Seconds to wait for the server and for each `claude` call.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,

    /// Where a virtual key goes: the OS keyring (read back through `apiKeyHelper`), or
    /// settings.json readable by you only. `auto` uses the keyring when one answers.
    #[arg(long, value_enum, default_value = "auto", value_name = "STORE")]
    pub secret_store: crate::secret_store::StoreChoice,
}

/// Flags of `archestra-connect credential`.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The keyring entry to read, as setup wrote it into `apiKeyHelper`.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: String,
}

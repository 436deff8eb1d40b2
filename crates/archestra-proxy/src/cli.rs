//! The command line of `archestra-proxy`: clap definitions and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use archestra_proxy::{
    DEFAULT_APP_NAME, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_PUBLIC_URL,
    DEFAULT_REDEEM_LIMIT, DEFAULT_SKILLS_CHECK_INTERVAL, DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_TIMEOUT,
};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::duration::{parse_since, parse_ttl};

const TOP_HELP: &str = "\
Examples:
  archestra-proxy serve --public-url https://archestra.example.com --skills-dir /srv/skills
  archestra-proxy setups create --user ada@example.com \\
      --mcp-url https://archestra.example.com/v1/mcp/default --mcp-name archestra
  archestra-proxy keys revoke --user ada@example.com
  archestra-proxy logs --since 1h

Exit status:
  0  success
  1  an error; the message says what failed and what to do
  2  the command line could not be parsed";

/// Companion server for archestra-connect: one-time Connect setups and per-machine virtual keys.
#[derive(Debug, Parser)]
#[command(name = "archestra-proxy", version = env!("ARCHESTRA_VERSION"), after_help = TOP_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Mint one-time setups, straight into the database.
    #[command(subcommand)]
    Setups(SetupsCommand),
    /// List and revoke the virtual keys that redeemed setups created.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show the usage log: one row per request the LLM proxy handled, oldest first.
    Logs(LogsArgs),
    /// Approve (or deny) a machine waiting in `archestra-connect setup --server`, by its code.
    Approve(ApproveArgs),
    /// Print a shell completion script, e.g. `archestra-proxy completions bash > …`.
    Completions(archestra_wire::cli_docs::CompletionsArgs),
    /// Write the man pages of every command into a directory (used by install/install.sh).
    #[command(hide = true)]
    Manpages(archestra_wire::cli_docs::ManpagesArgs),
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// The SQLite database [default: <data dir>/archestra-proxy/archestra-proxy.db]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The admin token for POST /api/connection-setups is read from --admin-token-file, else from the
ARCHESTRA_PROXY_ADMIN_TOKEN environment variable; without either, the route is off.

The provider key that replaces virtual keys in virtual-key mode is read from --provider-key-file,
else from the ARCHESTRA_PROXY_PROVIDER_KEY environment variable; without either, virtual-key
requests are refused and passthrough requests still work.")]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub db: DbArg,

    /// Origin clients are told to use, e.g. https://archestra.example.com [default: http://<listen address>]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// File holding the admin token that POST /api/connection-setups requires
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Display name of the deployment in setup payloads
    #[arg(long, value_name = "NAME", default_value = DEFAULT_APP_NAME)]
    pub app_name: String,

    /// URL whose answer decides the `mcp` verdict of /v1/health [default: none, so `mcp` is "down"]
    #[arg(long, value_name = "URL")]
    pub mcp_health_url: Option<String>,

    /// Redemptions allowed per client address per minute; 0 turns the limit off
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REDEEM_LIMIT)]
    pub redeem_limit: u32,

    /// Connections served at once; more clients wait until one closes. Each proxied request
    /// also holds a connection to the provider, so keep this under half the open-file limit
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Base URL of the LLM provider that /v1/anthropic/… requests are forwarded to
    #[arg(long, value_name = "URL", default_value = DEFAULT_UPSTREAM)]
    pub upstream: String,

    /// Seconds the provider may take to start answering before the request fails with 504
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_UPSTREAM_TIMEOUT.as_secs())]
    pub upstream_timeout: u64,

    /// File holding the provider key that replaces virtual keys in virtual-key mode
    #[arg(long, value_name = "PATH")]
    pub provider_key_file: Option<PathBuf>,

    /// Do not write the usage log (`archestra-proxy logs` then shows nothing new)
    #[arg(long)]
    pub no_usage_log: bool,

    /// Serve this marketplace folder (with `.claude-plugin/marketplace.json`) as a git
    /// repository at /skills/marketplace.git; setups minted with `--skills-url
    /// /skills/marketplace.git` hand each machine its own clone credential
    #[arg(long, value_name = "DIR")]
    pub skills_dir: Option<PathBuf>,

    /// Seconds between looks at the skills folder for changes; 0 looks on every fetch
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SKILLS_CHECK_INTERVAL.as_secs(), requires = "skills_dir")]
    pub skills_check_interval: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this user's requests
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,

    /// Only requests made in this last span of time: 90s, 15m, 2h or 1d
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,

    /// Show at most this many rows, the newest ones
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: u32,

    /// Print the rows as a JSON array
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum SetupsCommand {
    /// Mint a one-time setup and print the command that redeems it.
    Create(CreateArgs),
}

// Free-text values take leading hyphens, so that `--mcp-name --scope` reaches validation and
// is refused with a message naming the field, rather than as an unknown flag.
#[derive(Debug, Args)]
#[command(after_help = "\
The setup is written straight into the database; the server need not run. The printed command
works once, until the TTL runs out; `keys revoke` takes back what a redeemed setup gave.

Examples:
  archestra-proxy setups create --user ada@example.com --mode virtual-key --ttl 2h
  archestra-proxy setups create --user ada@example.com \\
      --skills-url /skills/marketplace.git --marketplace acme-skills --plugin extra --json")]
pub struct CreateArgs {
    /// E-mail address of the user the setup is for
    #[arg(long, value_name = "EMAIL", allow_hyphen_values = true)]
    pub user: String,

    /// How Claude Code authenticates to the LLM proxy
    #[arg(long, value_enum, default_value_t = ModeArg::Passthrough)]
    pub mode: ModeArg,

    /// LLM provider Claude Code talks to through the proxy
    #[arg(long, value_enum, default_value_t = ProviderArg::Anthropic)]
    pub provider: ProviderArg,

    /// MCP gateway URL to register in Claude Code
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub mcp_url: Option<String>,

    /// Name to register the MCP gateway under [default: archestra]
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub mcp_name: Option<String>,

    /// Git URL of a skills marketplace to add
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub skills_url: Option<String>,

    /// Name the marketplace declares for itself; required with --skills-url
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub marketplace: Option<String>,

    /// Plugin to install from the marketplace; repeat for more
    #[arg(long = "plugin", value_name = "NAME", allow_hyphen_values = true)]
    pub plugins: Vec<String>,

    /// How long the command stays valid: 90s, 15m, 2h or 1d, at most 7d
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Origin the command and the payload's URLs point at
    #[arg(long, value_name = "URL", default_value = DEFAULT_PUBLIC_URL, allow_hyphen_values = true)]
    pub public_url: String,

    #[command(flatten)]
    pub db: DbArg,

    /// Print {"command", "url", "expiresAt", "tokenStart"} as one JSON object
    #[arg(long)]
    pub json: bool,
}

// Free-text values take leading hyphens for the same reason as in `CreateArgs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Approving mints a setup for the waiting machine, with the options below, valid until the
request expires (10 minutes after the machine asked); the machine redeems it on its next poll.")]
pub struct ApproveArgs {
    /// The code the machine shows, e.g. ABCD-EFGH (case and dash do not matter)
    #[arg(value_name = "USER-CODE")]
    pub user_code: String,

    /// E-mail address of the user who approves, and whom the setup is for
    #[arg(long, value_name = "EMAIL", allow_hyphen_values = true)]
    pub user: String,

    /// Deny the request instead; the machine stops waiting and changes nothing
    #[arg(long, conflicts_with_all = ["mode", "provider", "mcp_url", "mcp_name", "skills_url", "marketplace", "plugins"])]
    pub deny: bool,

    /// How Claude Code authenticates to the LLM proxy
    #[arg(long, value_enum, default_value_t = ModeArg::Passthrough)]
    pub mode: ModeArg,

    /// LLM provider Claude Code talks to through the proxy
    #[arg(long, value_enum, default_value_t = ProviderArg::Anthropic)]
    pub provider: ProviderArg,

    /// MCP gateway URL to register in Claude Code
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub mcp_url: Option<String>,

    /// Name to register the MCP gateway under [default: archestra]
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub mcp_name: Option<String>,

    /// Git URL of a skills marketplace to add
    #[arg(long, value_name = "URL", allow_hyphen_values = true)]
    pub skills_url: Option<String>,

    /// Name the marketplace declares for itself; required with --skills-url
    #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
    pub marketplace: Option<String>,

    /// Plugin to install from the marketplace; repeat for more
    #[arg(long = "plugin", value_name = "NAME", allow_hyphen_values = true)]
    pub plugins: Vec<String>,

    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The user's own provider credential goes upstream; the key attributes traffic
    #[value(alias = "provider-key")]
    Passthrough,
    /// Claude Code sends the virtual key, which the proxy swaps for a provider key
    VirtualKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    Anthropic,
    Bedrock,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List virtual keys, oldest first.
    List(ListArgs),
    /// Revoke one key, or every key of a user; takes effect at once.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this user's keys
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,

    /// Print the keys as a JSON array
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "user"])))]
pub struct RevokeArgs {
    /// Id of the key to revoke, as `keys list` shows it
    #[arg(long, value_name = "ID")]
    pub id: Option<i64>,

    /// Revoke every key of this user, on every machine
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,

    #[command(flatten)]
    pub db: DbArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn revoke_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["archestra-proxy", "keys", "revoke"]).is_err());
        assert!(
            Cli::try_parse_from([
                "archestra-proxy",
                "keys",
                "revoke",
                "--id",
                "1",
                "--user",
                "a@b"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["archestra-proxy", "keys", "revoke", "--id", "1"]).is_ok());
    }
}

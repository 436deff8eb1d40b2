//! `archestra-proxy setups create`: check the request, then mint it straight into the
//! database; no server needs to run.

use std::io::Write;

use anyhow::Context;
use archestra_proxy::{FieldNames, SetupSpec, Store};
use archestra_wire::{AuthMode, CreateSetupRequest, Provider};

use super::resolve_db;
use crate::cli::{CreateArgs, ModeArg, ProviderArg};

/// Mint a setup and print its one-time command.
pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let request = CreateSetupRequest {
        user: args.user,
        mode: match args.mode {
            ModeArg::Passthrough => AuthMode::ProviderKey,
            ModeArg::VirtualKey => AuthMode::VirtualKey,
        },
        provider: match args.provider {
            ProviderArg::Anthropic => Provider::Anthropic,
            ProviderArg::Bedrock => Provider::Bedrock,
        },
        mcp_url: args.mcp_url,
        mcp_name: args.mcp_name,
        skills_url: args.skills_url,
        marketplace: args.marketplace,
        plugins: args.plugins,
        ttl_seconds: Some(args.ttl.as_secs()),
    };

    // Check everything before the database is touched, so a refused setup writes nothing.
    let spec = SetupSpec::from_request(&request, &args.public_url, FieldNames::Flags)
        .context("setup refused")?;

    let db = resolve_db(&args.db)?;
    let store =
        Store::open(&db).with_context(|| format!("could not open the store `{}`", db.display()))?;
    let minted = store
        .insert_setup(&spec)
        .context("could not store the setup")?;

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string(&minted).context("could not encode the setup")?;
        writeln!(out, "{json}")?;
    } else {
        eprintln!(
            "Setup minted for {}; it works once, until {}. Token starts with {}. Command:",
            spec.user, minted.expires_at, minted.token_start
        );
        writeln!(out, "{}", minted.command)?;
    }
    Ok(())
}

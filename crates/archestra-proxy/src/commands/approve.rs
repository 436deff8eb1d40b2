//! `archestra-proxy approve`: decide a browser approval request by its user code, straight in
//! the database; the waiting machine learns the verdict on its next poll.

use anyhow::Context;
use archestra_proxy::{Store, Verdict};
use archestra_wire::{AuthMode, CreateSetupRequest, Provider};

use super::resolve_db;
use crate::cli::{ApproveArgs, ModeArg, ProviderArg};

/// Approve or deny the request with the given user code.
pub fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    archestra_proxy::validate_user("--user", &args.user).context("approval refused")?;
    let verdict = if args.deny {
        Verdict::Deny
    } else {
        Verdict::Approve(CreateSetupRequest {
            user: args.user.clone(),
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
            ttl_seconds: None,
        })
    };

    let db = resolve_db(&args.db)?;
    let store =
        Store::open(&db).with_context(|| format!("could not open the store `{}`", db.display()))?;
    let decided = store
        .decide_connection(&args.user_code, &args.user, &verdict)
        .context("could not decide the connection request")?;

    let machine = decided.device_name.as_deref().unwrap_or("the machine");
    if args.deny {
        eprintln!(
            "Denied the connection request of {machine} ({}); it stops waiting and changes nothing.",
            decided.platform
        );
    } else {
        eprintln!(
            "Approved the connection request of {machine} ({}) for {}; it sets itself up on its next poll.",
            decided.platform, args.user
        );
    }
    Ok(())
}

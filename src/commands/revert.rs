//! `archestra-connect revert`: undo exactly what setup did, and nothing the user did since.
//!
//! The steps, in order; each is idempotent, so an interrupted revert is finished by
//! running it again:
//! 1. Preflight: config paths, the lock, the state record (or, without one, the Archestra
//!    entries found by their marks), `claude` when a registration must go.
//! 2. Show the plan; on a terminal ask unless `--yes`. `--dry-run` stops here.
//! 3. Uninstall the plugins setup installed; remove the marketplace if setup added it.
//! 4. Remove our MCP gateway from the scopes where it is; put back what setup replaced.
//! 5. Take our keys and header lines out of `env` where they still hold what setup wrote,
//!    and restore what it overwrote. When the content is then what it was before setup,
//!    write the original bytes back. `--restore-backup` copies the backup over instead.
//! 6. With `--revoke-key`, revoke this machine's key on the server.
//! 7. Delete the state record, last.
//!
//! A value the user changed after setup is kept, with a warning.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::{Map, Value, json};

use archestra_wire::{Secret, is_archestra_key, redact_url};

use crate::claude::{self, Claude};
use crate::claude_config::{all_mcp_entries, installed_plugins, mcp_entries, read_claude_json};
use crate::cli::RevertArgs;
use crate::env_block::{self, HEADERS_KEY, is_archestra_header};
use crate::exit::{FAILED, Failure, PARTIAL};
use crate::lock::InstallLock;
use crate::paths::ClaudePaths;
use crate::printer::{Printer, can_prompt};
use crate::redeem;
use crate::settings::{JsonFile, parse_object, write_atomic};
use crate::state::{SetupState, crash_point};
use std::path::PathBuf;

/// Env keys the old script or setup may have written, and that revert may take out.
const PROXY_KEYS: [&str; 7] = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BEDROCK_BASE_URL",
    "AWS_BEARER_TOKEN_BEDROCK",
    "CLAUDE_CODE_USE_BEDROCK",
    "AWS_REGION",
];

/// What revert will remove; built from the state record or from the marks in the files.
#[derive(Debug, Default)]
struct Undo {
    origin: Option<String>,
    plugins: Vec<String>,
    marketplace: Option<String>,
    /// Only `autoUpdate` is ours: setup did not add the marketplace.
    auto_update_only: Option<String>,
    /// (name, scope, project dir) of our registrations.
    servers: Vec<(String, &'static str, Option<std::path::PathBuf>)>,
    /// Entries setup removed and revert puts back.
    restore_servers: Vec<crate::state::RemovedServer>,
    /// Env keys to remove outright (found by marks, no record).
    env_keys: Vec<String>,
    keys_to_revoke: Vec<Secret>,
    /// The plugins folder's mode before setup made it private, while it is still private.
    plugins_dir_mode: Option<u32>,
}

/// Undo what setup did.
pub fn revert(args: &RevertArgs, printer: &Printer) -> Result<(), Failure> {
    let paths = ClaudePaths::from_env()?;
    let _lock = InstallLock::acquire(&paths.lock_file()).map_err(|e| {
        Failure::new(FAILED, e).hint("wait for it to finish, then run revert again")
    })?;
    let state = SetupState::load(&paths.state_file())?;
    let settings = JsonFile::read(&paths.settings).map_err(|e| {
        Failure::new(FAILED, e)
            .hint("fix the file (strict JSON), then run revert again; nothing was changed")
    })?;
    let claude_json = read_claude_json(&paths.claude_json).map_err(|e| {
        Failure::new(FAILED, e).hint("fix the file, then run revert again; nothing was changed")
    })?;

    let undo = match &state {
        Some(state) => from_state(state, &claude_json.root, &paths)?,
        None => from_marks(
            &settings.root,
            &claude_json.root,
            args.server.as_deref(),
            &paths,
        ),
    };
    let env_lines = env_preview(state.as_ref(), &settings.root, &undo);
    let nothing = undo.plugins.is_empty()
        && undo.marketplace.is_none()
        && undo.auto_update_only.is_none()
        && undo.plugins_dir_mode.is_none()
        && undo.servers.is_empty()
        && undo.restore_servers.is_empty()
        && env_lines.is_empty()
        && state.is_none()
        && !args.restore_backup;
    if nothing {
        if args.json {
            emit(&json!({"status": "not-connected", "changes": []}));
        }
        printer.note(
            "Nothing to revert: this Claude Code configuration is not connected to Archestra.",
        );
        return Ok(());
    }

    // Plan, and ask.
    let mut lines = plan_lines(&undo, &env_lines, &paths, args);
    if state.is_none() {
        lines.insert(
            0,
            "(no state record: these entries were found by their Archestra marks)".into(),
        );
    }
    if args.restore_backup {
        lines.extend(backup_discards(&paths, &settings)?);
    }
    printer.note(&format!(
        "\nRevert{} will:",
        undo.origin
            .as_ref()
            .map(|o| format!(" for {o}"))
            .unwrap_or_default()
    ));
    for line in &lines {
        printer.note(&format!("  - {line}"));
    }
    printer.note("");
    if args.dry_run {
        if args.json {
            emit(&json!({"status": "dry-run", "plan": lines}));
        }
        printer.note("Dry run: nothing was changed.");
        return Ok(());
    }
    let must_ask = state.is_none() || args.restore_backup;
    if !args.yes {
        if can_prompt() {
            if !printer.confirm("Revert these changes?") {
                return Err(Failure::new(
                    FAILED,
                    anyhow!("revert cancelled; nothing was changed"),
                ));
            }
        } else if must_ask {
            return Err(Failure::new(
                FAILED,
                anyhow!(
                    "revert needs confirmation for this plan, and there is no terminal to ask on"
                ),
            )
            .hint("read the plan above, then run `archestra-connect revert --yes`"));
        }
    }

    let mut warnings = Vec::new();
    crate::interrupt::set_applying(true);
    let result = apply(args, printer, &paths, state.as_ref(), &undo, &mut warnings);
    crate::interrupt::set_applying(false);
    if let Err(failure) = result {
        let mut failure = failure;
        failure.code = PARTIAL;
        return Err(failure
            .hint("run `archestra-connect revert` again to finish; every step is safe to repeat"));
    }
    if args.json {
        emit(&json!({"status": "reverted", "changes": lines, "warnings": warnings}));
    } else {
        printer.note("\nClaude Code is no longer connected to Archestra.");
        if !args.revoke_key && undo.keys_to_revoke.is_empty() && state.is_some() {
            printer.note("  This machine's key stays valid on the server; `archestra-connect revert --revoke-key` revokes it.");
        }
    }
    Ok(())
}

fn emit(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}

fn from_state(
    state: &SetupState,
    claude_json: &Map<String, Value>,
    paths: &ClaudePaths,
) -> Result<Undo, Failure> {
    let mut undo = Undo {
        origin: Some(state.origin.clone()),
        keys_to_revoke: state.keys_to_revoke.clone(),
        ..Undo::default()
    };
    if let Some(skills) = &state.skills {
        let installed = installed_plugins(&paths.plugins_dir).unwrap_or_default();
        undo.plugins = skills
            .plugins_installed
            .iter()
            .filter(|id| installed.contains(id))
            .cloned()
            .collect();
        let declared = JsonFile::read(&paths.settings).ok().and_then(|f| {
            f.root
                .get("extraKnownMarketplaces")?
                .get(&skills.marketplace)
                .cloned()
        });
        // A mode the user changed since is theirs to keep.
        undo.plugins_dir_mode = skills
            .plugins_dir_mode
            .filter(|_| crate::settings::mode(&paths.plugins_dir).ok() == Some(0o700));
        if skills.marketplace_added && declared.is_some() {
            undo.marketplace = Some(skills.marketplace.clone());
        } else if skills.auto_update_set
            && declared.is_some_and(|d| d.get("autoUpdate") == Some(&Value::Bool(true)))
        {
            undo.auto_update_only = Some(skills.marketplace.clone());
        }
    }
    if let Some(mcp) = &state.mcp {
        for entry in mcp_entries(claude_json, &mcp.name) {
            if entry.scope == "user" && entry.url() == Some(mcp.url.as_str()) {
                undo.servers.push((entry.name.clone(), "user", None));
            }
        }
        for removed in &mcp.removed {
            let present = mcp_entries(claude_json, &removed.name).iter().any(|e| {
                e.scope == removed.scope && e.project == removed.project && removed.name != mcp.name
            });
            if !present {
                undo.restore_servers.push(removed.clone());
            }
        }
    }
    Ok(undo)
}

/// Find Archestra's entries without a record: the old script's machines, or a lost record.
fn from_marks(
    settings: &Map<String, Value>,
    claude_json: &Map<String, Value>,
    server: Option<&str>,
    paths: &ClaudePaths,
) -> Undo {
    let env = settings.get("env").and_then(Value::as_object);
    let value = |k: &str| env.and_then(|e| e.get(k)).and_then(Value::as_str);
    let origin_of = |url: &str, marker: &str| url.find(marker).map(|i| url[..i].to_string());
    let origin = server
        .map(|s| s.trim_end_matches('/').to_string())
        .or_else(|| value("ANTHROPIC_BASE_URL").and_then(|u| origin_of(u, "/v1/anthropic")))
        .or_else(|| value("ANTHROPIC_BEDROCK_BASE_URL").and_then(|u| origin_of(u, "/v1/bedrock")))
        .or_else(|| {
            all_mcp_entries(claude_json)
                .iter()
                .find_map(|e| e.url().and_then(|u| origin_of(u, "/v1/mcp/")))
        });
    let same_origin = |url: &str| origin.as_ref().is_some_and(|o| url.starts_with(o.as_str()));

    let mut undo = Undo {
        origin: origin.clone(),
        ..Undo::default()
    };
    for key in PROXY_KEYS {
        let Some(v) = value(key) else { continue };
        let ours = match key {
            "ANTHROPIC_BASE_URL" | "ANTHROPIC_BEDROCK_BASE_URL" => same_origin(v),
            "CLAUDE_CODE_USE_BEDROCK" | "AWS_REGION" => {
                value("ANTHROPIC_BEDROCK_BASE_URL").is_some_and(same_origin)
            }
            _ => is_archestra_key(v),
        };
        if ours {
            undo.env_keys.push(key.to_string());
        }
    }
    for entry in all_mcp_entries(claude_json) {
        if entry
            .url()
            .is_some_and(|u| u.contains("/v1/mcp/") && (origin.is_none() || same_origin(u)))
        {
            undo.servers
                .push((entry.name.clone(), entry.scope, entry.project.clone()));
        }
    }
    if let Some(markets) = settings
        .get("extraKnownMarketplaces")
        .and_then(Value::as_object)
    {
        for (name, decl) in markets {
            let url = decl
                .get("source")
                .and_then(|s| s.get("url"))
                .and_then(Value::as_str);
            if url.is_some_and(same_origin) {
                let installed = installed_plugins(&paths.plugins_dir).unwrap_or_default();
                undo.plugins.extend(
                    installed
                        .into_iter()
                        .filter(|id| id.ends_with(&format!("@{name}"))),
                );
                undo.marketplace = Some(name.clone());
                break;
            }
        }
    }
    undo
}

/// The env changes revert will make, as lines; computed on a copy.
fn env_preview(
    state: Option<&SetupState>,
    settings: &Map<String, Value>,
    undo: &Undo,
) -> Vec<String> {
    let mut after = settings.clone();
    let kept = undo_env(&mut after, state, undo);
    let before_env = settings.get("env").and_then(Value::as_object);
    let after_env = after.get("env").and_then(Value::as_object);
    let mut lines = Vec::new();
    let mut keys: Vec<&String> = before_env.map(|e| e.keys().collect()).unwrap_or_default();
    keys.extend(
        after_env
            .map(|e| e.keys().collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    keys.sort();
    keys.dedup();
    for key in keys {
        let b = before_env.and_then(|e| e.get(key));
        let a = after_env.and_then(|e| e.get(key));
        match (b, a) {
            (Some(_), None) => lines.push(format!("remove {key} from settings.json")),
            (None, Some(_)) => lines.push(format!("restore {key} as it was before setup")),
            (Some(x), Some(y)) if x != y => {
                if key == HEADERS_KEY {
                    lines.push(format!("remove the X-Archestra-* lines from {key}"));
                } else {
                    lines.push(format!("restore {key} as it was before setup"));
                }
            }
            _ => {}
        }
    }
    for key in kept {
        lines.push(format!("keep {key}: it changed after setup"));
    }
    lines
}

/// Take our parts out of `env`; returns the keys kept because the user changed them.
fn undo_env(root: &mut Map<String, Value>, state: Option<&SetupState>, undo: &Undo) -> Vec<String> {
    match state {
        Some(state) => env_block::undo(root, &state.env)
            .into_iter()
            .map(|k| k.key)
            .collect(),
        None => {
            if let Some(env) = root.get_mut("env").and_then(Value::as_object_mut) {
                for key in &undo.env_keys {
                    env.remove(key);
                }
                if let Some(Value::String(h)) = env.get(HEADERS_KEY) {
                    let rest: Vec<&str> = h
                        .split('\n')
                        .filter(|l| !l.trim().is_empty() && !is_archestra_header(l))
                        .collect();
                    if rest.is_empty() {
                        env.remove(HEADERS_KEY);
                    } else {
                        let joined = rest.join("\n");
                        env.insert(HEADERS_KEY.into(), Value::String(joined));
                    }
                }
            }
            Vec::new()
        }
    }
}

fn plan_lines(
    undo: &Undo,
    env_lines: &[String],
    paths: &ClaudePaths,
    args: &RevertArgs,
) -> Vec<String> {
    let mut lines = Vec::new();
    for id in &undo.plugins {
        lines.push(format!("uninstall the plugin `{id}`"));
    }
    if let Some(m) = &undo.marketplace {
        lines.push(format!("remove the plugin marketplace `{m}`"));
    }
    if let Some(m) = &undo.auto_update_only {
        lines.push(format!(
            "turn off the auto-update setup turned on for `{m}`"
        ));
    }
    if let Some(mode) = undo.plugins_dir_mode {
        lines.push(format!(
            "give {} its mode from before setup back ({mode:o})",
            paths.display(&paths.plugins_dir)
        ));
    }
    for (name, scope, project) in &undo.servers {
        match project {
            Some(dir) => lines.push(format!(
                "remove the MCP server `{name}` (local scope, for {})",
                dir.display()
            )),
            None => lines.push(format!("remove the MCP server `{name}` ({scope} scope)")),
        }
    }
    for r in &undo.restore_servers {
        lines.push(format!(
            "put back the MCP server `{}` ({} scope) that setup replaced",
            r.name, r.scope
        ));
    }
    if args.restore_backup {
        lines.push(format!(
            "copy {} over {}, then remove the backup",
            paths.display(&paths.backup),
            paths.display(&paths.settings)
        ));
    } else {
        lines.extend(env_lines.iter().cloned());
    }
    let mut keys = undo.keys_to_revoke.clone();
    if args.revoke_key {
        lines.push("revoke this machine's key on the server".into());
    } else {
        keys.clear();
    }
    for key in keys {
        lines.push(format!(
            "revoke the earlier key {} on the server",
            key.masked()
        ));
    }
    lines.push("delete the state record".into());
    lines
}

/// Say what copying the backup over settings.json would throw away.
fn backup_discards(paths: &ClaudePaths, settings: &JsonFile) -> Result<Vec<String>, Failure> {
    let text = fs::read_to_string(&paths.backup).map_err(|e| {
        Failure::new(
            FAILED,
            anyhow::Error::new(e).context(format!(
                "could not read the backup `{}`",
                paths.backup.display()
            )),
        )
        .hint("run revert without `--restore-backup` to take out only what setup added")
    })?;
    let backup = parse_object(&paths.backup, &text)?;
    let mut lines = Vec::new();
    for (key, value) in &settings.root {
        if backup.get(key) != Some(value) {
            if key == "env" {
                let benv = backup.get("env").and_then(Value::as_object);
                for (k, v) in value.as_object().into_iter().flatten() {
                    if benv.and_then(|b| b.get(k)) != Some(v) {
                        lines.push(format!("discard env.{k} as it stands now"));
                    }
                }
            } else {
                lines.push(format!("discard `{key}` as it stands now"));
            }
        }
    }
    Ok(lines)
}

fn need_claude(args: &RevertArgs) -> Result<Claude, Failure> {
    let program = claude::locate(args.claude.as_deref()).map_err(|e| {
        Failure::new(FAILED, e).hint("revert needs `claude` to remove the gateway and plugins; pass `--claude /path/to/claude`")
    })?;
    Ok(Claude::new(
        program,
        Duration::from_secs(args.timeout.max(1)),
    )?)
}

fn apply(
    args: &RevertArgs,
    printer: &Printer,
    paths: &ClaudePaths,
    state: Option<&SetupState>,
    undo: &Undo,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    let needs_claude = !undo.plugins.is_empty()
        || undo.marketplace.is_some()
        || !undo.servers.is_empty()
        || !undo.restore_servers.is_empty();
    let claude = if needs_claude {
        Some(need_claude(args)?)
    } else {
        None
    };
    // Read the key before anything else: it may live in the keyring entry removed below.
    let machine_key = state.and_then(SetupState::machine_key);
    let mut record = Record {
        path: paths.state_file(),
        state: state.cloned(),
    };

    // Plugins, then the marketplace.
    if let Some(claude) = &claude {
        for id in &undo.plugins {
            let args = ["plugin", "uninstall", "--scope", "user", id.as_str()];
            let out = claude.run_in(&args, None, None)?;
            if !out.success && !out.text().contains("not found") {
                return Err(claude.failure(&args, &out).into());
            }
            printer.done(&format!("Uninstalled the plugin `{id}`"));
            record.update(|s| {
                if let Some(skills) = s.skills.as_mut() {
                    skills.plugins_installed.retain(|p| p != id);
                }
            })?;
        }
        if let Some(name) = &undo.marketplace {
            let args = [
                "plugin",
                "marketplace",
                "remove",
                "--scope",
                "user",
                name.as_str(),
            ];
            let out = claude.run_in(&args, None, None)?;
            if !out.success && !out.text().contains("not found") {
                return Err(claude.failure(&args, &out).into());
            }
            printer.done(&format!("Removed the plugin marketplace `{name}`"));
            record.update(|s| {
                if let Some(skills) = s.skills.as_mut() {
                    skills.marketplace_added = false;
                    skills.auto_update_set = false;
                }
            })?;
        }

        // The gateway, then what it replaced.
        for (name, scope, project) in &undo.servers {
            let args = ["mcp", "remove", "--scope", scope, name.as_str()];
            if project.as_ref().is_some_and(|d| !d.is_dir()) {
                continue;
            }
            let out = claude.run_in(&args, project.as_deref(), None)?;
            if !out.success && !out.text().contains("No MCP server") {
                return Err(claude.failure(&args, &out).into());
            }
            printer.done(&format!("Removed the MCP server `{name}` ({scope} scope)"));
            record.update(|s| {
                if let Some(mcp) = s.mcp.as_mut()
                    && mcp.name == *name
                {
                    mcp.registered = false;
                }
            })?;
        }
        for removed in &undo.restore_servers {
            let has_headers = removed
                .entry
                .get("headers")
                .is_some_and(|h| h.as_object().is_some_and(|o| !o.is_empty()));
            if has_headers || removed.project.as_ref().is_some_and(|d| !d.is_dir()) {
                let text = format!(
                    "did not put back the earlier MCP server `{}`: it carried headers, which would pass through the command line; add it again by hand if you still need it",
                    removed.name
                );
                printer.warn(&text);
                warnings.push(text);
                continue;
            }
            let entry = removed.entry.to_string();
            let args = [
                "mcp",
                "add-json",
                "--scope",
                removed.scope.as_str(),
                removed.name.as_str(),
                entry.as_str(),
            ];
            let out = claude.run_in(&args, removed.project.as_deref(), None)?;
            if !out.success && !out.text().contains("already exists") {
                return Err(claude.failure(&args, &out).into());
            }
            printer.done(&format!(
                "Put back the earlier MCP server `{}`",
                removed.name
            ));
            record.update(|s| {
                if let Some(mcp) = s.mcp.as_mut() {
                    mcp.removed.retain(|r| r != removed);
                }
            })?;
        }
    }

    if let Some(mode) = undo.plugins_dir_mode {
        let plugins = &paths.plugins_dir;
        match crate::settings::set_mode(plugins, mode) {
            Ok(()) => printer.done(&format!(
                "Gave {} its mode from before setup back",
                paths.display(plugins)
            )),
            // Gone with the plugins: nothing is left to give a mode to.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!(
                        "could not change the mode of `{}`",
                        plugins.display()
                    ))
                    .into());
            }
        }
        record.update(|s| {
            if let Some(skills) = s.skills.as_mut() {
                skills.plugins_dir_mode = None;
            }
        })?;
    }

    // settings.json, re-read now: the plugin commands above rewrote it.
    if args.restore_backup {
        restore_backup(paths, printer)?;
    } else {
        revert_settings(paths, state, undo, printer, warnings)?;
    }
    record.update(|s| {
        s.env = Default::default();
        s.env_done = false;
        if let Some(skills) = s.skills.as_mut() {
            skills.auto_update_set = false;
        }
    })?;

    // The server side.
    let mut keys = undo.keys_to_revoke.clone();
    if args.revoke_key
        && let Some(key) = machine_key
    {
        keys.push(key);
    }
    if let (Some(origin), false) = (&undo.origin, keys.is_empty()) {
        let client = redeem::http_client(Duration::from_secs(args.timeout.max(1)))?;
        for key in keys {
            match redeem::revoke_key(&client, origin, &key) {
                Ok(()) => printer.done(&format!("Revoked the key {} on the server", key.masked())),
                Err(e) => {
                    let text = format!(
                        "could not revoke the key {} on {}: {e}; revoke it on the Archestra LLM Proxy page",
                        key.masked(),
                        redact_url(origin)
                    );
                    printer.warn(&text);
                    warnings.push(text);
                }
            }
        }
    } else if args.revoke_key && state.is_none() {
        let text = "there is no state record, so this machine's key is unknown; revoke it on the Archestra LLM Proxy page".to_string();
        printer.warn(&text);
        warnings.push(text);
    }

    if let Some(account) = state.and_then(|s| s.keyring_account.as_ref()) {
        if let Err(e) = crate::secret_store::delete(account, crate::secret_store::KEYRING_TIMEOUT) {
            // Keep the record: a later revert retries the deletion.
            return Err(Failure::new(
                FAILED,
                anyhow!("could not delete the key from the keyring: {e}"),
            )
            .hint("unlock your keyring, then run `archestra-connect revert` again"));
        }
        printer.done("Deleted the key from the OS keyring");
        record.update(|s| s.keyring_account = None)?;
    }

    SetupState::remove(&paths.state_file()).with_context(|| {
        format!(
            "could not delete the state record `{}`",
            paths.state_file().display()
        )
    })?;
    Ok(())
}

fn revert_settings(
    paths: &ClaudePaths,
    state: Option<&SetupState>,
    undo: &Undo,
    printer: &Printer,
    warnings: &mut Vec<String>,
) -> Result<(), Failure> {
    let mut file = JsonFile::read(&paths.settings)?;
    let kept = undo_env(&mut file.root, state, undo);
    for key in kept {
        let text = format!("kept {key}: it changed after setup, so it is yours now");
        printer.warn(&text);
        warnings.push(text);
    }
    if let Some(name) = &undo.auto_update_only
        && let Some(decl) = file
            .root
            .get_mut("extraKnownMarketplaces")
            .and_then(|m| m.get_mut(name))
            .and_then(Value::as_object_mut)
    {
        decl.remove("autoUpdate");
    }

    let original = state.and_then(|s| s.settings.original.as_deref());
    let original_root = original.and_then(|t| parse_object(&paths.settings, t).ok());
    // Claude Code's plugin commands leave empty objects behind; drop those it had not.
    for key in ["enabledPlugins", "extraKnownMarketplaces"] {
        let empty = file
            .root
            .get(key)
            .is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        let had = original_root.as_ref().is_some_and(|o| o.contains_key(key));
        if empty && !had {
            file.root.remove(key);
        }
    }

    let display = paths.display(&paths.settings);
    match (state, original, &original_root) {
        (Some(_), Some(text), Some(root)) if *root == file.root => {
            let mode = fs::metadata(&paths.backup)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            write_atomic(&paths.settings, text.as_bytes(), false)?;
            if let Some(mode) = mode {
                let target = crate::settings::resolve_target(&paths.settings);
                let _ = fs::set_permissions(target, fs::Permissions::from_mode(mode));
            }
            if state.is_some_and(|s| s.settings.backup_created)
                && fs::read(&paths.backup).ok().as_deref() == Some(text.as_bytes())
            {
                let _ = fs::remove_file(&paths.backup);
            }
            printer.done(&format!(
                "Restored {display} exactly as it was before setup"
            ));
        }
        (Some(_), None, _) if file.root.is_empty() => {
            if paths.settings.exists() {
                fs::remove_file(crate::settings::resolve_target(&paths.settings))
                    .with_context(|| format!("could not remove `{}`", paths.settings.display()))?;
            }
            printer.done(&format!("Removed {display}, which setup had created"));
        }
        _ => {
            if file.original.is_some() && file.is_changed() {
                file.write(is_private(&paths.settings))?;
                printer.done(&format!("Took the Archestra settings out of {display}"));
            }
        }
    }
    Ok(())
}

fn is_private(path: &std::path::Path) -> bool {
    fs::metadata(crate::settings::resolve_target(path))
        .map(|m| m.permissions().mode() & 0o077 == 0)
        .unwrap_or(false)
}

fn restore_backup(paths: &ClaudePaths, printer: &Printer) -> Result<(), Failure> {
    let bytes = fs::read(&paths.backup)
        .with_context(|| format!("could not read the backup `{}`", paths.backup.display()))?;
    let mode = fs::metadata(&paths.backup)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    write_atomic(&paths.settings, &bytes, false)?;
    let target = crate::settings::resolve_target(&paths.settings);
    let _ = fs::set_permissions(&target, fs::Permissions::from_mode(mode));
    fs::remove_file(&paths.backup)
        .with_context(|| format!("could not remove the backup `{}`", paths.backup.display()))?;
    printer.done(&format!(
        "Restored {} from the backup, and removed the backup",
        paths.display(&paths.settings)
    ));
    Ok(())
}

/// The state record as revert takes setup's changes back: saved after each step, so that
/// it stays true when revert is stopped half way, and the next revert goes on from there.
struct Record {
    path: PathBuf,
    state: Option<SetupState>,
}

impl Record {
    /// Change the record after a step and save it; without a record, only mark the step.
    fn update(&mut self, change: impl FnOnce(&mut SetupState)) -> Result<(), Failure> {
        match self.state.as_mut() {
            Some(state) => {
                change(state);
                state.save(&self.path).with_context(|| {
                    format!("could not record progress in `{}`", self.path.display())
                })?;
            }
            None => crash_point(),
        }
        Ok(())
    }
}

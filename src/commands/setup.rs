//! `archestra-connect setup`: connect Claude Code to an Archestra deployment.
//!
//! The steps, in order; the link is redeemed only once nothing local can fail any more:
//! 1. Preflight: parse the link, find `claude` and check its version, resolve the config
//!    paths, parse settings.json and `.claude.json` strictly, take the lock.
//! 2. Redeem the link (or, with `--resume`, take the payload from the state record).
//! 3. Show the plan; on a terminal ask for confirmation unless `--yes`.
//! 4. Write the state record, then back up settings.json once.
//! 5. MCP gateway: remove older registrations of its names, register it at user scope.
//! 6. Skills: add the marketplace (unless declared already), turn on auto-update, install.
//! 7. Merge the `env` block last, re-reading settings.json right before writing it.
//! 8. Revoke on the server the key an earlier setup on this machine received.
//! 9. Mark the record complete and say what changed and how to undo it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use archestra_wire::{
    AuthMode, Provider, ProxySection, Secret, SetupPayload, mask_secret, redact_url,
};

use crate::approval;
use crate::claude::{self, Claude};
use crate::claude_config::{
    self, McpEntry, installed_plugins, is_our_http_entry, marketplace_declaration, mcp_entries,
    read_claude_json, source_matches,
};
use crate::cli::SetupArgs;
use crate::env_block::{self, EnvPlan, HEADERS_KEY, SECRET_KEYS};
use crate::exit::{FAILED, Failure, INTERRUPTED, PARTIAL};
use crate::interrupt;
use crate::lock::InstallLock;
use crate::paths::ClaudePaths;
use crate::printer::{Printer, can_prompt};
use crate::redeem::{self, SetupSource};
use crate::secret_store::{self, KEYRING_TIMEOUT, StoreChoice};
use crate::settings::{JsonFile, SettingsError};
use crate::state::{
    McpRecord, Phase, RemovedServer, SettingsRecord, SetupState, SkillsRecord, now_rfc3339,
};

/// How long `claude plugin marketplace add` may take: it clones a git repository, and
/// Claude Code's own clone timeout is two minutes.
const CLONE_TIMEOUT: Duration = Duration::from_secs(150);

/// Connect Claude Code as the link says.
pub fn setup(args: &SetupArgs, printer: &Printer) -> Result<(), Failure> {
    let timeout = Duration::from_secs(args.timeout.max(1));

    // Preflight: every check that can fail without the server comes first.
    let source = match &args.link {
        Some(link) => Some(
            redeem::parse_input(link, args.server.as_deref(), args.allow_http)
                .map_err(|e| Failure::new(FAILED, e).hint(input_hint(args)))?,
        ),
        None => None,
    };
    // With `--server` and no link, the user approves this machine in the browser instead.
    let approval_origin = match (&args.link, &args.server) {
        (None, Some(server)) if !args.resume => {
            Some(redeem::parse_server(server, args.allow_http).map_err(|e| {
                Failure::new(FAILED, e).hint(
                    "pass the deployment's address, e.g. `--server https://archestra.example.com`",
                )
            })?)
        }
        _ => None,
    };
    let paths = ClaudePaths::from_env()?;
    let mut claude = find_claude(args, timeout)?;
    printer.detail(&format!(
        "using Claude Code {} at {}",
        claude.version,
        claude.program.display()
    ));
    let settings = JsonFile::read(&paths.settings).map_err(unusable_file)?;
    check_settings_shape(&settings).map_err(unusable_file)?;
    let claude_json = read_claude_json(&paths.claude_json).map_err(unusable_file)?;
    crate::settings::probe_writable(&paths.settings).map_err(unwritable)?;
    let _lock = InstallLock::acquire(&paths.lock_file()).map_err(|e| {
        Failure::new(FAILED, e)
            .hint("wait for it to finish, then run this command again; the link was not used")
    })?;
    let previous = SetupState::load(&paths.state_file())?;
    let new_origin = source.as_ref().map(|s| s.origin.as_str());
    check_previous(
        previous.as_ref(),
        new_origin.or(approval_origin.as_deref()),
        args,
    )?;
    if args.secret_store == StoreChoice::Keyring {
        probe_keyring()?;
    }
    let previous_key = previous.as_ref().and_then(SetupState::machine_key);

    // Redeem, or take the payload the interrupted setup was applying.
    let client = redeem::http_client(timeout)?;
    let source = match approval_origin {
        Some(origin) => {
            let options = approval::Options {
                open_browser: !args.no_open,
                device_name: approval::device_name(),
            };
            let approved = approval::approve_in_browser(&client, &origin, &options, printer)
                .map_err(approval::ApprovalError::into_failure)?;
            Some(approved)
        }
        None => source,
    };
    let payload = match (&source, &previous) {
        (Some(source), _) => redeem_link(&client, source, printer, timeout)?,
        (None, Some(prev)) => {
            printer.note(&format!(
                "Resuming the setup for {} started {}",
                prev.origin, prev.started_at
            ));
            let mut payload = prev.payload.clone();
            restore_key(&mut payload, previous_key.as_ref())?;
            payload
        }
        (None, None) => unreachable!("check_previous refuses --resume without a record"),
    };
    let origin = source
        .as_ref()
        .map(|s| s.origin.clone())
        .or_else(|| previous.as_ref().map(|p| p.origin.clone()))
        .expect("either a link or a state record gives the origin");
    for key in payload.proxy.iter().filter_map(|p| p.machine_key()) {
        claude.add_secret(key.expose());
    }
    if let Some(skills) = &payload.skills {
        claude.add_secret(skills.clone_url.expose());
        if let Ok(url) = url::Url::parse(skills.clone_url.expose())
            && !url.username().is_empty()
        {
            claude.add_secret(url.username());
        }
    }

    // Plan, and ask.
    let plan = Plan::make(
        &paths,
        &payload,
        previous.as_ref(),
        previous_key.as_ref(),
        args.secret_store,
        &settings,
        &claude_json,
    )?;
    if !args.json || args.dry_run {
        print_plan(printer, &plan, &paths, &origin);
    }
    if args.dry_run {
        if args.json {
            emit_json(&json!({
                "status": "dry-run",
                "origin": origin,
                "plan": plan.lines(&paths),
            }));
        }
        printer.note("Dry run: nothing was changed. The setup link is used up; generate a new command to set up for real.");
        return Ok(());
    }
    if !args.yes && can_prompt() && !printer.confirm("Apply these changes?") {
        decline(&client, &origin, &payload, previous_key.as_ref(), printer);
        return Err(
            Failure::new(FAILED, anyhow!("setup cancelled; nothing was changed")).hint(
                "generate a new command on the Archestra Connect page when you want to set up",
            ),
        );
    }

    // From here on every step is journaled; a failure leaves a truthful record.
    let mut run = Run {
        paths: &paths,
        claude: &claude,
        printer,
        state: start_state(previous, &payload, &origin, &settings),
        warnings: Vec::new(),
        store_choice: args.secret_store,
        key_store: None,
    };
    interrupt::set_applying(true);
    run.save()?;
    let result = run.apply(&plan, &client);
    if let Err(failure) = result {
        return Err(partial(failure));
    }
    run.state.phase = Phase::Complete;
    run.save().map_err(partial)?;
    interrupt::set_applying(false);

    summarise(&run, &payload, &origin, args.json);
    if !args.json && !args.yes && can_prompt() {
        offer_sign_in(&run, &payload);
    }
    Ok(())
}

fn input_hint(args: &SetupArgs) -> String {
    if args.server.is_none() {
        "paste the whole link the Connect page shows, or a bare token with `--server https://your-archestra`".into()
    } else {
        "paste the link exactly as the Connect page shows it".into()
    }
}

fn find_claude(args: &SetupArgs, timeout: Duration) -> Result<Claude, Failure> {
    let program = claude::locate(args.claude.as_deref()).map_err(|e| {
        Failure::new(FAILED, e)
            .hint("install Claude Code (`npm install -g @anthropic-ai/claude-code`, or see https://docs.claude.com/en/docs/claude-code/setup), open a new terminal, and run this command again; the link was not used")
            .hint("if it is installed somewhere else, pass `--claude /path/to/claude`")
    })?;
    Claude::new(program, timeout).map_err(|e| {
        let too_old = matches!(e, claude::ClaudeError::TooOld { .. });
        let failure = Failure::new(FAILED, e);
        if too_old {
            failure.hint("update it with `claude update` (or `npm install -g @anthropic-ai/claude-code`), then run this command again; the link was not used")
        } else {
            failure.hint("check that `claude --version` works in this terminal; the link was not used")
        }
    })
}

fn unusable_file(e: SettingsError) -> Failure {
    let fix = match &e {
        SettingsError::Parse { .. }
        | SettingsError::NotObject { .. }
        | SettingsError::WrongType { .. } => {
            "fix the file (Claude Code needs strict JSON: no comments, no trailing commas), then run this command again; the link was not used"
        }
        _ => "check the file's permissions, then run this command again; the link was not used",
    };
    Failure::new(FAILED, e).hint(fix)
}

/// Check the parts of settings.json setup edits have the types it expects.
fn check_settings_shape(file: &JsonFile) -> Result<(), SettingsError> {
    let wrong = |key: &str, expected, value: &Value| SettingsError::WrongType {
        path: file.path.clone(),
        key: key.into(),
        expected,
        found: crate::settings::type_name(value),
    };
    for key in ["env", "extraKnownMarketplaces", "enabledPlugins"] {
        if let Some(value) = file.root.get(key)
            && !value.is_object()
        {
            return Err(wrong(key, "an object", value));
        }
    }
    if let Some(value) = file.root.get("env").and_then(|e| e.get(HEADERS_KEY))
        && !value.is_string()
    {
        return Err(wrong("env.ANTHROPIC_CUSTOM_HEADERS", "a string", value));
    }
    Ok(())
}

fn check_previous(
    previous: Option<&SetupState>,
    origin: Option<&str>,
    args: &SetupArgs,
) -> Result<(), Failure> {
    match (previous, origin) {
        (None, None) => Err(Failure::new(
            FAILED,
            anyhow!("there is no interrupted setup to resume"),
        )
        .hint("run `archestra-connect setup <link>` with a link from the Archestra Connect page")),
        (Some(prev), Some(origin)) if prev.origin != origin => Err(Failure::new(
            FAILED,
            anyhow!(
                "this machine is connected to {} already, and the link is for {}",
                prev.origin,
                origin
            ),
        )
        .hint(
            "run `archestra-connect revert` first, then this command again; the link was not used",
        )),
        (Some(prev), None) if args.resume && prev.phase == Phase::Complete => Ok(()),
        _ => Ok(()),
    }
}

fn redeem_link(
    client: &reqwest::blocking::Client,
    source: &SetupSource,
    printer: &Printer,
    timeout: Duration,
) -> Result<SetupPayload, Failure> {
    let spinner = printer.spinner(&format!("Redeeming the setup link at {}", source.origin));
    let result = redeem::redeem(client, source, &approval::device_name(), timeout);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match result {
        Ok(redeemed) => {
            printer.done(&format!("Redeemed the setup link at {}", source.origin));
            if redeemed.from_script {
                printer.note("  The server answered with a setup script (read, never run); its values passed the same checks as a JSON payload.");
            }
            Ok(redeemed.payload)
        }
        Err(e) => {
            let offer = e.link_is_spent() && can_prompt();
            let mut failure = Failure::new(FAILED, e);
            if let Some(hint) = failure
                .error
                .downcast_ref::<redeem::RedeemError>()
                .and_then(|e| e.hint())
            {
                failure = failure.hint(hint);
            }
            if offer && printer.confirm("Open the Connect page in your browser?") {
                let page = format!("{}/connection", source.origin);
                if open::that_detached(&page).is_err() {
                    printer.note(&format!("Open {page} in your browser."));
                }
            }
            Err(failure)
        }
    }
}

/// What setup will do, worked out from the files before anything changes.
struct Plan {
    backup: BackupPlan,
    mcp: Option<McpPlan>,
    skills: Option<SkillsPlan>,
    proxy: Option<ProxySection>,
    /// Setup will try the keyring for the virtual key.
    try_keyring: bool,
    /// Env lines to show: (key, shown value or `None` for a removal).
    env_lines: Vec<(String, Option<String>)>,
    private: bool,
    keys_to_revoke: Vec<Secret>,
}

enum BackupPlan {
    Create,
    KeepExisting,
    NoFile,
}

struct McpPlan {
    name: String,
    url: String,
    remove: Vec<McpEntry>,
    keep_ours: bool,
}

struct SkillsPlan {
    marketplace: String,
    clone_url: Secret,
    declared_same: bool,
    declared_other: bool,
    set_auto_update: bool,
    install: Vec<String>,
}

impl Plan {
    fn make(
        paths: &ClaudePaths,
        payload: &SetupPayload,
        previous: Option<&SetupState>,
        previous_key: Option<&Secret>,
        store: StoreChoice,
        settings: &JsonFile,
        claude_json: &JsonFile,
    ) -> Result<Plan, Failure> {
        let backup = if paths.backup.exists() {
            BackupPlan::KeepExisting
        } else if settings.original.is_some() {
            BackupPlan::Create
        } else {
            BackupPlan::NoFile
        };

        let mcp = payload.mcp.as_ref().map(|mcp| {
            let mut names = vec![mcp.server_name.clone()];
            names.extend(mcp.legacy_server_names.iter().cloned());
            if let Some(old) = previous.and_then(|p| p.mcp.as_ref()) {
                names.push(old.name.clone());
            }
            names.sort();
            names.dedup();
            let mut remove = Vec::new();
            let mut keep_ours = false;
            for name in &names {
                for entry in mcp_entries(&claude_json.root, name) {
                    if entry.scope == "user"
                        && *name == mcp.server_name
                        && is_our_http_entry(&entry.entry, &mcp.url)
                    {
                        keep_ours = true;
                    } else {
                        remove.push(entry);
                    }
                }
            }
            McpPlan {
                name: mcp.server_name.clone(),
                url: mcp.url.clone(),
                remove,
                keep_ours,
            }
        });

        let skills = match &payload.skills {
            None => None,
            Some(skills) => {
                let name = &skills.marketplace_name;
                let declaration = marketplace_declaration(&settings.root, name);
                let declared_same =
                    declaration.is_some_and(|d| source_matches(d, skills.clone_url.expose()));
                let set_auto_update = declaration.is_none_or(|d| d.get("autoUpdate").is_none());
                let installed = installed_plugins(&paths.plugins_dir).map_err(unusable_file)?;
                let mut wanted = Vec::new();
                if skills.has_skills {
                    wanted.push(format!("{name}@{name}"));
                }
                for plugin in &skills.plugin_names {
                    let id = format!("{plugin}@{name}");
                    if !wanted.contains(&id) {
                        wanted.push(id);
                    }
                }
                wanted.retain(|id| !installed.contains(id));
                Some(SkillsPlan {
                    marketplace: name.clone(),
                    clone_url: skills.clone_url.clone(),
                    declared_same,
                    declared_other: declaration.is_some() && !declared_same,
                    set_auto_update,
                    install: wanted,
                })
            }
        };

        let try_keyring = store != StoreChoice::File
            && payload.proxy.as_ref().is_some_and(|p| {
                p.auth_mode == AuthMode::VirtualKey && p.provider == Provider::Anthropic
            });
        // Preview with a stand-in helper; the real one is known once the key is stored.
        let preview_helper = try_keyring.then(|| "archestra-connect credential".to_string());
        let env = payload
            .proxy
            .as_ref()
            .map(|p| EnvPlan::for_proxy(p, preview_helper.clone()));
        let mut env_lines = Vec::new();
        let mut private = false;
        if let Some(env) = &env {
            let current = settings.root.get("env").and_then(Value::as_object);
            let value_of = |k: &str| current.and_then(|c| c.get(k)).and_then(Value::as_str);
            for key in &env.remove_archestra_values {
                if value_of(key).is_some_and(archestra_wire::is_archestra_key) {
                    env_lines.push((key.clone(), None));
                }
            }
            for (key, value) in &env.set {
                if value_of(key) != Some(value.as_str()) {
                    env_lines.push((key.clone(), Some(show_value(key, value))));
                }
            }
            for (key, value) in &env.set_if_absent {
                if current.is_none_or(|c| !c.contains_key(key)) {
                    env_lines.push((key.clone(), Some(value.clone())));
                }
            }
            let existing = value_of(HEADERS_KEY).unwrap_or("");
            for line in &env.header_lines {
                if !existing.lines().any(|l| l.trim_end_matches('\r') == line) {
                    env_lines.push((
                        format!("{HEADERS_KEY} line"),
                        Some(show_value(HEADERS_KEY, line)),
                    ));
                }
            }
            private = env.holds_secret();
        }
        // Claude Code writes the marketplace URL, credential included, into settings.json.
        private |= payload
            .skills
            .as_ref()
            .is_some_and(|s| url_has_credential(s.clone_url.expose()));

        let new_key = payload.proxy.as_ref().and_then(|p| p.machine_key());
        let mut keys_to_revoke: Vec<Secret> = previous
            .map(|p| p.keys_to_revoke.clone())
            .unwrap_or_default();
        if let Some(old) = previous_key
            && Some(old) != new_key
            && !keys_to_revoke.contains(old)
        {
            keys_to_revoke.push(old.clone());
        }

        Ok(Plan {
            backup,
            mcp,
            skills,
            proxy: payload.proxy.clone(),
            try_keyring,
            env_lines,
            private,
            keys_to_revoke,
        })
    }

    /// One line per change, for the terminal and for `--json`.
    fn lines(&self, paths: &ClaudePaths) -> Vec<String> {
        let settings = paths.display(&paths.settings);
        let mut lines = Vec::new();
        match self.backup {
            BackupPlan::Create => lines.push(format!(
                "back up {settings} to {}",
                paths.display(&paths.backup)
            )),
            BackupPlan::KeepExisting => lines.push(format!(
                "keep the existing backup {}",
                paths.display(&paths.backup)
            )),
            BackupPlan::NoFile => lines.push(format!("create {settings} (it does not exist yet)")),
        }
        if let Some(mcp) = &self.mcp {
            for entry in &mcp.remove {
                let place = match &entry.project {
                    Some(dir) => format!("local scope, for {}", dir.display()),
                    None => "user scope".into(),
                };
                lines.push(format!(
                    "remove the MCP server `{}` ({place}) registered earlier",
                    entry.name
                ));
            }
            if mcp.keep_ours {
                lines.push(format!(
                    "keep the MCP gateway `{}` (already registered)",
                    mcp.name
                ));
            } else {
                lines.push(format!(
                    "register the MCP gateway `{}` at user scope: {}",
                    mcp.name,
                    redact_url(&mcp.url)
                ));
            }
        }
        if let Some(skills) = &self.skills {
            if skills.declared_same {
                lines.push(format!(
                    "keep the plugin marketplace `{}` (already added)",
                    skills.marketplace
                ));
            } else {
                lines.push(format!(
                    "{} the plugin marketplace `{}` from {}",
                    if skills.declared_other {
                        "replace"
                    } else {
                        "add"
                    },
                    skills.marketplace,
                    redact_url(skills.clone_url.expose())
                ));
            }
            if skills.set_auto_update {
                lines.push(format!("turn on auto-update for `{}`", skills.marketplace));
            }
            for id in &skills.install {
                lines.push(format!("install the plugin `{id}`"));
            }
        }
        for (key, value) in &self.env_lines {
            match value {
                Some(v) => lines.push(format!("set {key} = {v} in {settings}")),
                None => lines.push(format!(
                    "remove {key} (an old Archestra key) from {settings}"
                )),
            }
        }
        if self.try_keyring
            && let Some(key) = self.proxy.as_ref().and_then(|p| p.virtual_key.as_ref())
        {
            lines.push(format!(
                "keep the virtual key {} in the OS keyring and set `apiKeyHelper` in {settings} to read it (if no keyring answers: ANTHROPIC_AUTH_TOKEN in {settings} instead)",
                key.masked()
            ));
        }
        if self.private {
            lines.push(format!(
                "make {settings} readable by you only (it will hold a secret)"
            ));
        }
        if let Some(skills) = &self.skills
            && !skills.declared_same
            && url_has_credential(skills.clone_url.expose())
            && !is_private(&paths.plugins_dir)
        {
            lines.push(format!(
                "make {} readable by you only (Claude Code keeps the marketplace URL with your credential there)",
                paths.display(&paths.plugins_dir)
            ));
        }
        for key in &self.keys_to_revoke {
            lines.push(format!(
                "revoke this machine's previous key {} on the server",
                key.masked()
            ));
        }
        lines
    }
}

fn show_value(key: &str, value: &str) -> String {
    if key == HEADERS_KEY {
        match value.split_once(':') {
            Some((name, v)) if archestra_wire::is_archestra_key(v.trim()) => {
                format!("{name}: {}", mask_secret(v.trim()))
            }
            _ => value.to_string(),
        }
    } else if SECRET_KEYS.contains(&key) {
        mask_secret(value)
    } else {
        value.to_string()
    }
}

fn print_plan(printer: &Printer, plan: &Plan, paths: &ClaudePaths, origin: &str) {
    printer.note(&format!("\nSetup for {origin} will:"));
    for line in plan.lines(paths) {
        printer.note(&format!("  - {line}"));
    }
    printer.note("");
}

/// The user said no after the link was spent: revoke the key it minted, so nothing unused
/// stays alive on the server.
fn decline(
    client: &reqwest::blocking::Client,
    origin: &str,
    payload: &SetupPayload,
    previous_key: Option<&Secret>,
    printer: &Printer,
) {
    if let Some(key) = payload.proxy.as_ref().and_then(|p| p.machine_key())
        && Some(key) != previous_key
        && let Err(e) = redeem::revoke_key(client, origin, key)
    {
        printer.warn(&format!(
            "could not revoke the unused key {} on the server: {e}",
            key.masked()
        ));
    }
}

fn start_state(
    previous: Option<SetupState>,
    payload: &SetupPayload,
    origin: &str,
    settings: &JsonFile,
) -> SetupState {
    match previous {
        Some(mut state) => {
            state.phase = Phase::InProgress;
            state.payload = payload.clone();
            state
        }
        None => SetupState {
            version: crate::state::STATE_VERSION,
            phase: Phase::InProgress,
            origin: origin.to_string(),
            started_at: now_rfc3339(),
            updated_at: String::new(),
            payload: payload.clone(),
            settings: SettingsRecord {
                original: settings.original.clone(),
                backup_created: false,
            },
            mcp: None,
            skills: None,
            env: Default::default(),
            env_done: false,
            keys_to_revoke: Vec::new(),
            keyring_account: None,
        },
    }
}

fn partial(failure: Failure) -> Failure {
    if interrupt::interrupted() {
        return Failure::new(
            INTERRUPTED,
            anyhow!("setup was interrupted; every step it finished is in the state record"),
        )
        .hint("run `archestra-connect setup --resume` to finish, or `archestra-connect revert` to undo it");
    }
    let mut failure = failure;
    failure.code = PARTIAL;
    failure
        .hint("the state record lists what was done; run `archestra-connect setup --resume` to finish, or `archestra-connect revert` to undo it")
}

fn emit_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}

/// One setup in progress: the journal and where to report.
struct Run<'a> {
    paths: &'a ClaudePaths,
    claude: &'a Claude,
    printer: &'a Printer,
    state: SetupState,
    warnings: Vec<String>,
    store_choice: StoreChoice,
    /// Where the key went: `keyring` or `file`, once decided.
    key_store: Option<&'static str>,
}

impl Run<'_> {
    fn save(&mut self) -> Result<(), Failure> {
        self.state
            .save(&self.paths.state_file())
            .with_context(|| {
                format!(
                    "could not record progress in `{}`",
                    self.paths.state_file().display()
                )
            })
            .map_err(Failure::from)
    }

    fn warn(&mut self, text: String) {
        self.printer.warn(&text);
        self.warnings.push(text);
    }

    fn apply(&mut self, plan: &Plan, client: &reqwest::blocking::Client) -> Result<(), Failure> {
        self.back_up()?;
        stop_if_interrupted()?;
        if let Some(mcp) = &plan.mcp {
            self.register_gateway(mcp)?;
            stop_if_interrupted()?;
        }
        if let Some(skills) = &plan.skills {
            self.install_skills(skills)?;
            stop_if_interrupted()?;
        }
        if let Some(proxy) = &plan.proxy {
            let helper = if plan.try_keyring {
                self.store_key(proxy)?
            } else {
                None
            };
            self.merge_env(&EnvPlan::for_proxy(proxy, helper))?;
            self.forget_old_keyring_entry()?;
        }
        self.state.keys_to_revoke = plan.keys_to_revoke.clone();
        self.save()?;
        self.revoke_old_keys(client)
    }

    /// Copy settings.json to the backup once; an existing backup is never replaced.
    fn back_up(&mut self) -> Result<(), Failure> {
        let paths = self.paths;
        if self.state.settings.backup_created || paths.backup.exists() {
            self.printer.skipped(&format!(
                "Kept the existing backup {}",
                paths.display(&paths.backup)
            ));
            return Ok(());
        }
        let bytes = match fs::read(&paths.settings) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.printer.skipped(&format!(
                    "No backup needed: {} does not exist yet",
                    paths.display(&paths.settings)
                ));
                return Ok(());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!(
                        "could not read `{}` to back it up",
                        paths.settings.display()
                    ))
                    .into());
            }
        };
        // Only the file as it was before the first setup is worth keeping: once setup has
        // changed it (an earlier, interrupted run), a copy would hold our values, keys included.
        if self.state.settings.original.as_deref().map(str::as_bytes) != Some(bytes.as_slice()) {
            self.printer.skipped(&format!(
                "No backup taken: {} already holds changes of an earlier setup",
                paths.display(&paths.settings)
            ));
            return Ok(());
        }
        let mode = fs::metadata(&paths.settings)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o600);
        create_backup(&paths.backup, &bytes, mode)
            .with_context(|| format!("could not write the backup `{}`", paths.backup.display()))?;
        self.state.settings.backup_created = true;
        self.save()?;
        self.printer.done(&format!(
            "Backed up {} to {}",
            paths.display(&paths.settings),
            paths.display(&paths.backup)
        ));
        Ok(())
    }

    fn register_gateway(&mut self, plan: &McpPlan) -> Result<(), Failure> {
        let record = self.state.mcp.get_or_insert_with(|| McpRecord {
            name: plan.name.clone(),
            url: plan.url.clone(),
            removed: Vec::new(),
            registered: false,
        });
        record.name = plan.name.clone();
        record.url = plan.url.clone();
        record.registered = plan.keep_ours;
        self.save()?;

        for entry in &plan.remove {
            let mut args = vec!["mcp", "remove", "--scope", entry.scope, entry.name.as_str()];
            let cwd = entry.project.as_deref();
            if let Some(dir) = cwd
                && !dir.is_dir()
            {
                self.printer.skipped(&format!(
                    "Left the local-scope `{}` for {}: that folder no longer exists, so it cannot shadow the gateway",
                    entry.name,
                    dir.display()
                ));
                continue;
            }
            let spinner = self
                .printer
                .spinner(&format!("Removing the earlier `{}`", entry.name));
            let out = self.claude.run_in(&args, cwd, None);
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            let out = out?;
            // Gone already (someone removed it since we read the file) is what we wanted.
            if !out.success && !out.text().contains("No MCP server") {
                args.truncate(5);
                return Err(self.claude.failure(&args, &out).into());
            }
            let record = self.state.mcp.as_mut().expect("set above");
            record.removed.push(RemovedServer {
                name: entry.name.clone(),
                scope: entry.scope.to_string(),
                project: entry.project.clone(),
                entry: entry.entry.clone(),
            });
            self.save()?;
            self.printer.done(&format!(
                "Removed the earlier MCP server `{}` ({} scope)",
                entry.name, entry.scope
            ));
        }

        if plan.keep_ours {
            self.printer.skipped(&format!(
                "The MCP gateway `{}` is registered already",
                plan.name
            ));
            return Ok(());
        }
        let spinner = self
            .printer
            .spinner(&format!("Registering the MCP gateway `{}`", plan.name));
        let result = self.claude.run(&[
            "mcp",
            "add",
            "--scope",
            "user",
            "--transport",
            "http",
            &plan.name,
            &plan.url,
        ]);
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        result?;
        self.state.mcp.as_mut().expect("set above").registered = true;
        self.save()?;
        self.printer.done(&format!(
            "Registered the MCP gateway `{}` at user scope",
            plan.name
        ));
        Ok(())
    }

    fn install_skills(&mut self, plan: &SkillsPlan) -> Result<(), Failure> {
        let name = plan.marketplace.as_str();
        let url = plan.clone_url.expose();
        let record = self.state.skills.get_or_insert_with(|| SkillsRecord {
            marketplace: name.to_string(),
            marketplace_added: false,
            auto_update_set: false,
            plugins_installed: Vec::new(),
            plugins_failed: Vec::new(),
            done: false,
            plugins_dir_mode: None,
        });
        record.done = false;
        record.plugins_failed.clear();
        self.save()?;

        if plan.declared_same {
            self.printer
                .skipped(&format!("The plugin marketplace `{name}` is added already"));
        } else {
            if plan.declared_other {
                self.remove_marketplace(name)?;
            }
            let spinner = self
                .printer
                .spinner(&format!("Adding the plugin marketplace `{name}`"));
            let add = ["plugin", "marketplace", "add", "--scope", "user", url];
            let mut out = self.claude.run_in(&add, None, Some(CLONE_TIMEOUT));
            if let Ok(o) = &out
                && !o.success
                && o.text().contains("differs from the one declared")
            {
                self.remove_marketplace(name)?;
                out = self.claude.run_in(&add, None, Some(CLONE_TIMEOUT));
            }
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            let out = out?;
            if !out.success {
                return Err(self.claude.failure(&add, &out).into());
            }
            let known = claude_config::known_marketplaces(&self.paths.plugins_dir)
                .map_err(Failure::from)?;
            if !known.iter().any(|k| k == name) {
                return Err(Failure::new(
                    PARTIAL,
                    anyhow!(
                        "the marketplace at {} does not call itself `{name}`, so its plugins cannot be installed",
                        redact_url(url)
                    ),
                )
                .hint("tell your Archestra administrator: the marketplace's name and the setup disagree"));
            }
            let record = self.state.skills.as_mut().expect("set above");
            if !plan.declared_other || record.marketplace_added {
                record.marketplace_added = true;
            }
            self.save()?;
            self.printer
                .done(&format!("Added the plugin marketplace `{name}`"));
        }
        // Also when the marketplace was there already: an interrupted setup may have added
        // it without getting this far.
        if url_has_credential(url) {
            self.protect_marketplace_credential()?;
        }

        if plan.set_auto_update {
            self.enable_auto_update(name)?;
        }

        for id in &plan.install {
            let spinner = self
                .printer
                .spinner(&format!("Installing the plugin `{id}`"));
            let out = self.claude.run_in(
                &["plugin", "install", "--scope", "user", id],
                None,
                Some(CLONE_TIMEOUT),
            );
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            let installed = installed_plugins(&self.paths.plugins_dir).unwrap_or_default();
            match out {
                Ok(o) if o.success || installed.contains(id) => {
                    let record = self.state.skills.as_mut().expect("set above");
                    if !record.plugins_installed.contains(id) {
                        record.plugins_installed.push(id.clone());
                    }
                    self.save()?;
                    self.printer.done(&format!("Installed the plugin `{id}`"));
                }
                Ok(o) => {
                    let err = self
                        .claude
                        .failure(&["plugin", "install", "--scope", "user", id], &o);
                    self.state
                        .skills
                        .as_mut()
                        .expect("set above")
                        .plugins_failed
                        .push(id.clone());
                    self.warn(format!("{err}"));
                }
                Err(e) => {
                    self.state
                        .skills
                        .as_mut()
                        .expect("set above")
                        .plugins_failed
                        .push(id.clone());
                    self.warn(format!("{e}"));
                }
            }
        }
        self.state.skills.as_mut().expect("set above").done = true;
        self.save()
    }

    fn remove_marketplace(&mut self, name: &str) -> Result<(), Failure> {
        let args = ["plugin", "marketplace", "remove", "--scope", "user", name];
        let out = self.claude.run_in(&args, None, None)?;
        if !out.success && !out.text().contains("not found") {
            return Err(self.claude.failure(&args, &out).into());
        }
        Ok(())
    }

    /// Keep the marketplace credential from other users of this machine: Claude Code writes
    /// the URL into settings.json (created readable by others when it was missing), and
    /// into files of its plugins folder that it makes readable by others.
    ///
    /// The folder rather than those files: Claude Code rewrites them with its own modes on
    /// every marketplace update.
    fn protect_marketplace_credential(&mut self) -> Result<(), Failure> {
        let could_not = |path: &std::path::Path, e: std::io::Error| {
            Failure::new(
                PARTIAL,
                anyhow!(
                    "could not make `{}` readable by you only: {e}",
                    path.display()
                ),
            )
        };
        let settings = self.paths.settings.clone();
        crate::settings::set_mode(&settings, 0o600).map_err(|e| could_not(&settings, e))?;
        let plugins = self.paths.plugins_dir.clone();
        let before = match crate::settings::mode(&plugins) {
            Ok(mode) => mode,
            // Claude Code kept nothing there, so there is nothing to protect.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(could_not(&plugins, e)),
        };
        if before & 0o077 == 0 {
            return Ok(());
        }
        // Journal first: a revert after a crash here restores the mode it finds, a no-op.
        let record = self.state.skills.as_mut().expect("set before");
        record.plugins_dir_mode.get_or_insert(before);
        self.save()?;
        crate::settings::set_mode(&plugins, 0o700).map_err(|e| could_not(&plugins, e))?;
        self.printer.done(&format!(
            "Made {} private: it holds the marketplace URL with your credential",
            self.paths.display(&plugins)
        ));
        Ok(())
    }

    /// Set `autoUpdate` for the marketplace unless the user set it either way.
    fn enable_auto_update(&mut self, name: &str) -> Result<(), Failure> {
        let mut file = JsonFile::read(&self.paths.settings).map_err(unusable_file)?;
        let markets = file
            .object_mut("extraKnownMarketplaces")
            .map_err(unusable_file)?;
        let Some(entry) = markets.get_mut(name).and_then(Value::as_object_mut) else {
            self.warn(format!(
                "could not turn on auto-update: `{name}` is not declared in {}; turn it on in Claude Code under /plugin > Marketplaces",
                self.paths.display(&self.paths.settings)
            ));
            return Ok(());
        };
        if entry.contains_key("autoUpdate") {
            return Ok(());
        }
        entry.insert("autoUpdate".into(), Value::Bool(true));
        let private = is_private(&self.paths.settings);
        file.write(private).map_err(unusable_file)?;
        self.state
            .skills
            .as_mut()
            .expect("set before")
            .auto_update_set = true;
        self.save()?;
        self.printer
            .done(&format!("Turned on auto-update for `{name}`"));
        Ok(())
    }

    /// Put the virtual key into the OS keyring; return the `apiKeyHelper` command to read it.
    ///
    /// With `--secret-store auto` a keyring that does not answer means the file instead,
    /// said as a warning; with `--secret-store keyring` it is an error.
    fn store_key(&mut self, proxy: &ProxySection) -> Result<Option<String>, Failure> {
        let Some(key) = proxy.virtual_key.as_ref() else {
            return Ok(None);
        };
        let account = secret_store::account_for(&self.state.origin, &self.paths.config_dir);
        match secret_store::store(&account, key.expose(), KEYRING_TIMEOUT) {
            Ok(()) => {
                let program = std::env::current_exe()
                    .and_then(|p| p.canonicalize())
                    .context("could not find this program's own path for `apiKeyHelper`")?;
                // The key lives in the keyring now: keep it out of the state record too.
                if let Some(p) = self.state.payload.proxy.as_mut() {
                    p.virtual_key = None;
                }
                self.state.keyring_account = Some(account.clone());
                self.save()?;
                self.key_store = Some("keyring");
                self.printer
                    .done("Stored the virtual key in the OS keyring");
                Ok(Some(secret_store::helper_command(&program, &account)))
            }
            Err(e) if self.store_choice == StoreChoice::Keyring => Err(Failure::new(
                PARTIAL,
                anyhow!("could not store the virtual key in the keyring: {e}"),
            )
            .hint("unlock the keyring and run `archestra-connect setup --resume`, or run it with `--secret-store file`")),
            Err(e) => {
                self.key_store = Some("file");
                self.warn(format!(
                    "{e}; the virtual key goes into {} instead, readable by you only",
                    self.paths.display(&self.paths.settings)
                ));
                Ok(None)
            }
        }
    }

    /// Delete a keyring entry an earlier setup made, once the key lives elsewhere.
    fn forget_old_keyring_entry(&mut self) -> Result<(), Failure> {
        let in_use = self.key_store == Some("keyring");
        if let Some(account) = self.state.keyring_account.clone()
            && !in_use
        {
            if let Err(e) = secret_store::delete(&account, KEYRING_TIMEOUT) {
                self.warn(format!(
                    "could not delete the earlier keyring entry `{account}`: {e}"
                ));
            }
            self.state.keyring_account = None;
            self.save()?;
        }
        Ok(())
    }

    /// Merge our keys into `env`, re-reading the file first: the plugin commands above
    /// rewrote it.
    fn merge_env(&mut self, plan: &EnvPlan) -> Result<(), Failure> {
        let mut file = JsonFile::read(&self.paths.settings).map_err(unusable_file)?;
        check_settings_shape(&file).map_err(unusable_file)?;
        env_block::apply(&mut file.root, plan, &mut self.state.env).map_err(|e| {
            anyhow!(
                "could not merge into `{}`: {e}",
                self.paths.settings.display()
            )
        })?;
        let private = plan.holds_secret() || is_private(&self.paths.settings);
        if file.is_changed() || private {
            file.write(private).map_err(unusable_file)?;
        }
        self.state.env_done = true;
        self.save()?;
        self.printer.done(&format!(
            "Pointed Claude Code at the LLM proxy in {}",
            self.paths.display(&self.paths.settings)
        ));
        Ok(())
    }

    fn revoke_old_keys(&mut self, client: &reqwest::blocking::Client) -> Result<(), Failure> {
        let keys = std::mem::take(&mut self.state.keys_to_revoke);
        let origin = self.state.origin.clone();
        for key in keys {
            match redeem::revoke_key(client, &origin, &key) {
                Ok(()) => self.printer.done(&format!(
                    "Revoked this machine's previous key {} on the server",
                    key.masked()
                )),
                Err(e) => {
                    self.warn(format!(
                        "could not revoke this machine's previous key {} on the server: {e}; the next setup or `archestra-connect revert --revoke-key` tries again",
                        key.masked()
                    ));
                    self.state.keys_to_revoke.push(key);
                }
            }
        }
        self.save()
    }
}

/// Tell whether a file is readable by its owner only (then it must stay so).
fn is_private(path: &std::path::Path) -> bool {
    crate::settings::mode(path).is_ok_and(|mode| mode & 0o077 == 0)
}

/// Tell whether a URL carries a credential in its user part.
fn url_has_credential(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// Write a new backup file; an existing one is never replaced, even by a racing writer.
fn create_backup(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".archestra-backup-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

fn summarise(run: &Run, payload: &SetupPayload, origin: &str, json_out: bool) {
    let paths = run.paths;
    let printer = run.printer;
    let backup = paths.backup.exists().then(|| paths.display(&paths.backup));
    if json_out {
        emit_json(&json!({
            "status": "connected",
            "origin": origin,
            "appName": payload.app_name,
            "mode": payload.proxy.as_ref().map(|p| p.auth_mode.as_str()),
            "provider": payload.proxy.as_ref().map(|p| p.provider.as_str()),
            "mcpServer": payload.mcp.as_ref().map(|m| m.server_name.clone()),
            "marketplace": payload.skills.as_ref().map(|s| s.marketplace_name.clone()),
            "pluginsInstalled": run.state.skills.as_ref().map(|s| s.plugins_installed.clone()).unwrap_or_default(),
            "warnings": run.warnings,
            "secretStore": key_location(run, payload),
            "settingsFile": paths.settings,
            "backup": backup.as_ref().map(|_| &paths.backup),
            "stateFile": paths.state_file(),
            "claudeCalls": run.claude.calls().len(),
            "ownCpuMs": own_cpu_ms(),
        }));
        return;
    }
    printer.note(&format!(
        "\nClaude Code is connected to {} ({origin}).",
        payload.app_name
    ));
    if let Some(proxy) = &payload.proxy {
        match proxy.auth_mode {
            AuthMode::ProviderKey => printer.note(
                "  LLM proxy: your own Claude credentials keep working; requests go through the proxy and are attributed to you.",
            ),
            AuthMode::VirtualKey => printer.note(
                "  LLM proxy: Claude Code uses a virtual key made for this machine.",
            ),
        }
    }
    if let Some(place) = key_location(run, payload) {
        let text = match place {
            "keyring" => {
                "in the OS keyring; Claude Code reads it through `apiKeyHelper`".to_string()
            }
            _ => format!(
                "in {}, readable by you only",
                paths.display(&paths.settings)
            ),
        };
        printer.note(&format!("  This machine's key is {text}."));
    }
    if let Some(backup) = &backup {
        printer.note(&format!("  Backup of your settings: {backup}"));
    }
    printer.note("  To undo everything setup did: archestra-connect revert");
    if let Some(mcp) = &payload.mcp {
        printer.note(&format!(
            "\nSign in to the {} tools: claude mcp login {}",
            payload.app_name, mcp.server_name
        ));
    }
    printer.note("Then open a new terminal and run: claude");
}

fn offer_sign_in(run: &Run, payload: &SetupPayload) {
    let Some(mcp) = &payload.mcp else { return };
    if !run
        .printer
        .confirm("Sign in to the gateway now? This opens your browser.")
    {
        return;
    }
    let status = std::process::Command::new(&run.claude.program)
        .args(["mcp", "login", &mcp.server_name])
        .status();
    match status {
        Ok(s) if s.success() => run.printer.done("Signed in"),
        _ => run.printer.warn(&format!(
            "sign-in did not finish; run `claude mcp login {}` later, or `/mcp` inside Claude Code",
            mcp.server_name
        )),
    }
}

/// Check that a keyring answers and takes a write, before the link is spent.
fn probe_keyring() -> Result<(), Failure> {
    let account = format!("probe {}", std::process::id());
    secret_store::store(&account, "probe", KEYRING_TIMEOUT)
        .and_then(|()| secret_store::delete(&account, KEYRING_TIMEOUT))
        .map_err(|e| {
            Failure::new(FAILED, anyhow!("`--secret-store keyring` was asked for, and {e}"))
                .hint("unlock your keyring, or run the same command with `--secret-store file`; the link was not used")
        })
}

/// Put the key of an interrupted setup back into its payload, from the keyring.
fn restore_key(payload: &mut SetupPayload, key: Option<&Secret>) -> Result<(), Failure> {
    if let Some(proxy) = payload.proxy.as_mut()
        && proxy.auth_mode == AuthMode::VirtualKey
        && proxy.virtual_key.is_none()
    {
        let key = key.ok_or_else(|| {
            Failure::new(FAILED, anyhow!("the key of the interrupted setup is in the keyring, which does not answer"))
                .hint("unlock your keyring and run `archestra-connect setup --resume` again, or run setup with a new link")
        })?;
        proxy.virtual_key = Some(key.clone());
    }
    Ok(())
}

/// Say where this machine's key lives, if it has one.
fn key_location(run: &Run, payload: &SetupPayload) -> Option<&'static str> {
    let proxy = payload.proxy.as_ref()?;
    proxy.machine_key()?;
    Some(run.key_store.unwrap_or("file"))
}

/// Stop between two steps when Ctrl-C was pressed; `partial` words the message.
fn stop_if_interrupted() -> Result<(), Failure> {
    if interrupt::interrupted() {
        return Err(Failure::new(INTERRUPTED, anyhow!("interrupted")));
    }
    Ok(())
}

/// Return the CPU time this process used itself, children excluded, in milliseconds.
///
/// Reported in `--json` so that the benchmark can tell our work from Claude Code's. The
/// scheduler's nanosecond counts of the live threads come first: the clock ticks of
/// `/proc/self/stat` (1/100 s) are coarser than everything setup does itself. Threads that
/// already ended are not counted by the former; the HTTP client's, the only others, do little.
fn own_cpu_ms() -> Option<f64> {
    thread_cpu_ns()
        .map(|ns| ns as f64 / 1e6)
        .or_else(cpu_ticks_ms)
}

/// Sum the CPU nanoseconds of this process's live threads, from `/proc/self/task/*/schedstat`.
fn thread_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir("/proc/self/task").ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Read user plus system time from `/proc/self/stat`, in clock ticks of 1/100 s.
fn cpu_ticks_ms() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which sits in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel reports in clock ticks of 1/100 s on every Linux we run on.
    Some(ticks * 10.0)
}

fn unwritable(e: SettingsError) -> Failure {
    Failure::new(FAILED, e).hint(
        "make room on that disk or make the folder writable, then run this command again; the link was not used",
    )
}

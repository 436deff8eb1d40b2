//! `archestra-connect status`: what this machine is connected to, from the files alone.
//!
//! It never runs `claude` (its `mcp get/list` health-check every server and can hang for
//! half a minute). It reports the effective configuration, merged the way Claude Code
//! merges it (managed settings, project settings, user settings, the process
//! environment), and drift from what setup wrote, which it never repairs. `--check` adds
//! live checks against the deployment.
//!
//! Exit codes: 0 connected and healthy, 1 error, 2 not connected, 3 connected with problems.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use archestra_wire::{HEALTH_PATH, is_archestra_key, mask_secret, redact_url};

use crate::claude_config::{all_mcp_entries, installed_plugins, mcp_entries};
use crate::cli::StatusArgs;
use crate::env_block::{HEADERS_KEY, SECRET_KEYS, is_archestra_header};
use crate::exit::Failure;
use crate::paths::ClaudePaths;
use crate::printer::Printer;
use crate::redeem;
use crate::secret_store;
use crate::settings::JsonFile;
use crate::state::{Phase, SetupState};

/// Exit code: not connected.
pub const NOT_CONNECTED: i32 = 2;
/// Exit code: connected, with problems.
pub const PROBLEMS: i32 = 3;

/// Keys whose effective value and source `status` reports.
const EFFECTIVE_KEYS: [&str; 7] = [
    "apiKeyHelper",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    HEADERS_KEY,
    "CLAUDE_CODE_USE_BEDROCK",
    "ANTHROPIC_BEDROCK_BASE_URL",
];

/// The report, printed as text or as `--json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `connected`, `partial` (setup interrupted), `script` (set up by the old script) or
    /// `not-connected`.
    pub connection: String,
    pub origin: Option<String>,
    pub mode: Option<String>,
    pub gateway: Option<Gateway>,
    /// The env keys of settings.json, secrets masked.
    pub env: Map<String, Value>,
    pub header_lines: Vec<String>,
    pub marketplace: Option<String>,
    pub plugins: Vec<String>,
    pub backup: Option<PathBuf>,
    /// Where the key lives: `settings.json` (the file, 0600) or none.
    pub secret_store: Option<String>,
    pub state_file: Option<PathBuf>,
    pub settings_file: PathBuf,
    /// The values Claude Code actually uses here, and where each comes from.
    pub effective: Vec<Effective>,
    pub problems: Vec<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    pub name: String,
    pub url: String,
    pub scope: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Effective {
    pub key: String,
    pub value: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn show(key: &str, value: &Value) -> Value {
    match value.as_str() {
        Some(s) if key == HEADERS_KEY => Value::String(
            s.split('\n')
                .map(mask_header)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Some(s) if SECRET_KEYS.contains(&key) || is_archestra_key(s) => {
            Value::String(mask_secret(s))
        }
        _ => value.clone(),
    }
}

fn mask_header(line: &str) -> String {
    match line.split_once(':') {
        Some((name, v))
            if is_archestra_key(v.trim()) || name.trim().eq_ignore_ascii_case("authorization") =>
        {
            format!("{name}: {}", mask_secret(v.trim()))
        }
        _ => line.to_string(),
    }
}

/// Report the connection; the exit code says connected, not connected or problems.
pub fn status(args: &StatusArgs, printer: &Printer) -> Result<(), Failure> {
    let paths = ClaudePaths::from_env()?;
    let report = build(&paths, args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        print_text(&report, &paths, printer);
    }
    let code = match report.connection.as_str() {
        "not-connected" => NOT_CONNECTED,
        _ if !report.problems.is_empty() || report.checks.iter().any(|c| !c.ok) => PROBLEMS,
        "partial" => PROBLEMS,
        _ => 0,
    };
    if code == 0 {
        Ok(())
    } else {
        // The report already says everything; exit quietly with the code.
        std::process::exit(code)
    }
}

fn build(paths: &ClaudePaths, args: &StatusArgs) -> Result<Report, Failure> {
    let mut problems = Vec::new();
    let state = SetupState::load(&paths.state_file())?;
    let settings = match JsonFile::read(&paths.settings) {
        Ok(f) => f.root,
        Err(e) => {
            problems.push(format!(
                "{e}: Claude Code ignores the whole file, so nothing set up there applies"
            ));
            Map::new()
        }
    };
    let claude_json = JsonFile::read(&paths.claude_json)
        .map(|f| f.root)
        .unwrap_or_default();
    let env = settings
        .get("env")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let header_lines: Vec<String> = env
        .get(HEADERS_KEY)
        .and_then(Value::as_str)
        .map(|h| {
            h.split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(mask_header)
                .collect()
        })
        .unwrap_or_default();

    let mut origin = state.as_ref().map(|s| s.origin.clone());
    let mut mode = state
        .as_ref()
        .and_then(|s| s.payload.proxy.as_ref())
        .map(|p| p.auth_mode.as_str().to_string());
    let mut gateway = None;
    let mut marketplace = None;
    let connection;

    if let Some(state) = &state {
        connection = if state.phase == Phase::Complete {
            "connected"
        } else {
            "partial"
        };
        if state.phase == Phase::InProgress {
            problems.push("setup did not finish; run `archestra-connect setup --resume` to finish it, or `archestra-connect revert`".into());
        }
        // Drift: what setup wrote and what the files say now.
        for change in &state.env.keys {
            let now = env.get(&change.key).and_then(Value::as_str);
            match (&change.written, now) {
                (Some(w), Some(n)) if w != n => {
                    problems.push(format!("{} changed after setup", change.key))
                }
                (Some(_), None) if state.env_done => {
                    problems.push(format!("{} was removed after setup", change.key))
                }
                _ => {}
            }
        }
        if let Some(h) = &state.env.headers
            && state.env_done
        {
            let current = env.get(HEADERS_KEY).and_then(Value::as_str).unwrap_or("");
            for line in &h.added {
                if !current
                    .split('\n')
                    .any(|l| l.trim_end_matches('\r') == line)
                {
                    problems.push(format!(
                        "the header line `{}` is gone from {HEADERS_KEY}",
                        mask_header(line)
                    ));
                }
            }
        }
        if let Some(mcp) = &state.mcp {
            let entries = mcp_entries(&claude_json, &mcp.name);
            let user = entries.iter().find(|e| e.scope == "user");
            gateway = Some(Gateway {
                name: mcp.name.clone(),
                url: redact_url(&mcp.url),
                scope: user.map(|_| "user".to_string()),
            });
            match user {
                None if mcp.registered => problems.push(format!(
                    "the MCP gateway `{}` was removed after setup",
                    mcp.name
                )),
                Some(e) if e.url() != Some(mcp.url.as_str()) => problems.push(format!(
                    "the MCP gateway `{}` points elsewhere now",
                    mcp.name
                )),
                _ => {}
            }
            for e in entries.iter().filter(|e| e.scope == "local") {
                problems.push(format!(
                    "a local-scope `{}` for {} shadows the gateway there",
                    e.name,
                    e.project
                        .as_deref()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(skills) = &state.skills {
            marketplace = Some(skills.marketplace.clone());
            let declared = settings
                .get("extraKnownMarketplaces")
                .and_then(|m| m.get(&skills.marketplace))
                .is_some();
            if !declared && skills.done {
                problems.push(format!(
                    "the plugin marketplace `{}` was removed after setup",
                    skills.marketplace
                ));
            }
            let installed = installed_plugins(&paths.plugins_dir).unwrap_or_default();
            for id in &skills.plugins_installed {
                if !installed.contains(id) {
                    problems.push(format!("the plugin `{id}` was uninstalled after setup"));
                }
            }
        }
    } else {
        // No record: recognise a machine set up by the old script by its marks.
        let base = env.get("ANTHROPIC_BASE_URL").and_then(Value::as_str);
        let marked_headers = header_lines.iter().any(|l| is_archestra_header(l));
        let server = all_mcp_entries(&claude_json)
            .into_iter()
            .find(|e| e.url().is_some_and(|u| u.contains("/v1/mcp/")));
        if marked_headers || base.is_some_and(|b| b.contains("/v1/anthropic")) || server.is_some() {
            connection = "script";
            origin = base
                .and_then(|b| b.find("/v1/anthropic").map(|i| b[..i].to_string()))
                .or_else(|| {
                    server
                        .as_ref()
                        .and_then(|s| s.url())
                        .and_then(|u| u.find("/v1/mcp/").map(|i| u[..i].to_string()))
                });
            mode = Some(
                if env
                    .get("ANTHROPIC_AUTH_TOKEN")
                    .and_then(Value::as_str)
                    .is_some_and(is_archestra_key)
                {
                    "virtual-key".into()
                } else {
                    "provider-key".into()
                },
            );
            gateway = server.map(|s| Gateway {
                name: s.name.clone(),
                url: redact_url(s.url().unwrap_or_default()),
                scope: Some(s.scope.to_string()),
            });
        } else {
            connection = "not-connected";
        }
    }

    let mut plugins = installed_plugins(&paths.plugins_dir).unwrap_or_default();
    if let Some(m) = &marketplace {
        plugins.retain(|p| p.ends_with(&format!("@{m}")));
    } else {
        plugins.clear();
    }

    let effective = effective_config(
        paths,
        &with_helper(&settings),
        &mut problems,
        origin.as_deref(),
    );
    let holds_secret = env.values().filter_map(Value::as_str).any(is_archestra_key)
        || header_lines.iter().any(|l| l.contains("arch_"));
    let in_keyring = state.as_ref().and_then(|s| s.keyring_account.clone());
    let secret_store = if in_keyring.is_some() {
        Some("keyring".to_string())
    } else {
        holds_secret.then(|| "settings.json".to_string())
    };

    let mut checks = Vec::new();
    if args.check
        && let Some(origin) = &origin
    {
        let mut helper_key = None;
        if let Some(account) = &in_keyring {
            let (ok, detail) = match secret_store::load(account, secret_store::KEYRING_TIMEOUT) {
                Ok(key) => {
                    helper_key = Some(key);
                    (true, "the key is in the OS keyring".to_string())
                }
                Err(e) => (false, format!("{e}; Claude Code cannot get its key")),
            };
            checks.push(Check {
                name: "keyring".into(),
                ok,
                detail,
            });
        }
        checks.extend(live_checks(origin, &effective, &env, args, helper_key));
    }

    Ok(Report {
        connection: connection.to_string(),
        origin,
        mode,
        gateway,
        env: env.iter().map(|(k, v)| (k.clone(), show(k, v))).collect(),
        header_lines,
        marketplace,
        plugins,
        backup: paths.backup.exists().then(|| paths.backup.clone()),
        secret_store,
        state_file: state.as_ref().map(|_| paths.state_file()),
        settings_file: paths.settings.clone(),
        effective,
        problems,
        checks,
    })
}

/// Where managed settings live; `ARCHESTRA_MANAGED_SETTINGS_DIR` moves it (tests use it).
fn managed_dir() -> PathBuf {
    std::env::var_os("ARCHESTRA_MANAGED_SETTINGS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/claude-code"))
}

/// Merge the layers key by key, highest first, as Claude Code does.
fn effective_config(
    paths: &ClaudePaths,
    user_env: &Map<String, Value>,
    problems: &mut Vec<String>,
    origin: Option<&str>,
) -> Vec<Effective> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut layers: Vec<(String, Map<String, Value>)> = Vec::new();
    let managed = managed_dir();
    let mut managed_files = vec![managed.join("managed-settings.json")];
    if let Ok(dir) = std::fs::read_dir(managed.join("managed-settings.d")) {
        let mut extra: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        extra.sort();
        managed_files.extend(extra);
    }
    for file in managed_files {
        layers.push((
            format!("managed settings {}", file.display()),
            env_of(&file),
        ));
    }
    for rel in [".claude/settings.local.json", ".claude/settings.json"] {
        let file = cwd.join(rel);
        if file != paths.settings {
            layers.push((
                format!("project settings {}", file.display()),
                env_of(&file),
            ));
        }
    }
    layers.push((
        format!("user settings {}", paths.display(&paths.settings)),
        user_env.clone(),
    ));
    let process: Map<String, Value> = std::env::vars()
        .filter(|(k, _)| EFFECTIVE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    layers.push(("the shell environment".into(), process.clone()));

    let user_source = format!("user settings {}", paths.display(&paths.settings));
    let mut out = Vec::new();
    for key in EFFECTIVE_KEYS {
        let Some((source, value)) = layers.iter().find_map(|(s, m)| m.get(key).map(|v| (s, v)))
        else {
            continue;
        };
        if *source != user_source && user_env.contains_key(key) && source != "the shell environment"
        {
            problems.push(format!(
                "{key} from {source} overrides the value setup wrote"
            ));
        }
        out.push(Effective {
            key: key.to_string(),
            value: show(key, value)
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string()),
            source: source.clone(),
        });
    }
    if let Some(v) = process.get("ANTHROPIC_API_KEY").and_then(Value::as_str)
        && !user_env.contains_key("ANTHROPIC_API_KEY")
    {
        problems.push(format!(
            "ANTHROPIC_API_KEY ({}) is set in the shell; Claude Code sends it beside the setup's credential",
            mask_secret(v)
        ));
    }
    if let (Some(o), Some(base)) = (origin, out.iter().find(|e| e.key == "ANTHROPIC_BASE_URL"))
        && !base.value.starts_with(o)
    {
        problems.push(format!(
            "Claude Code here sends its requests to {} ({}), not through {o}",
            base.value, base.source
        ));
    }
    if paths.config_dir_from_env {
        let default = ClaudePaths::resolve(paths.home.clone(), None).ok();
        if let Some(d) = default
            && d.state_file().exists()
            && !paths.state_file().exists()
        {
            problems.push(format!(
                "CLAUDE_CONFIG_DIR points at {}, but the setup was made in {}",
                paths.config_dir.display(),
                paths.display(&d.config_dir)
            ));
        }
    }
    out
}

/// The env block of a settings file, with its top-level `apiKeyHelper` beside it.
fn env_of(path: &Path) -> Map<String, Value> {
    match JsonFile::read(path) {
        Ok(file) => with_helper(&file.root),
        Err(_) => Map::new(),
    }
}

fn with_helper(root: &Map<String, Value>) -> Map<String, Value> {
    let mut env = root
        .get("env")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(helper) = root.get("apiKeyHelper") {
        env.insert("apiKeyHelper".into(), helper.clone());
    }
    env
}

fn live_checks(
    origin: &str,
    effective: &[Effective],
    env: &Map<String, Value>,
    args: &StatusArgs,
    helper_key: Option<String>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let Ok(client) = redeem::http_client(Duration::from_secs(args.timeout.max(1))) else {
        return checks;
    };
    let health = format!("{origin}{HEALTH_PATH}?llm=anthropic");
    checks.push(match client.get(&health).send() {
        Ok(r) if r.status().is_success() => Check {
            name: "health".into(),
            ok: true,
            detail: format!("{origin} answers"),
        },
        Ok(r) => Check {
            name: "health".into(),
            ok: false,
            detail: format!("{health} answered HTTP {}", r.status().as_u16()),
        },
        Err(e) => Check {
            name: "health".into(),
            ok: false,
            detail: format!("could not reach {origin}: {}", redact_url(&e.to_string())),
        },
    });

    let base = effective
        .iter()
        .find(|e| e.key == "ANTHROPIC_BASE_URL")
        .map(|e| e.value.clone());
    if let Some(base) = base {
        let raw = |k: &str| {
            env.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| std::env::var(k).ok())
        };
        let mut req = client
            .post(format!(
                "{}/v1/messages/count_tokens",
                base.trim_end_matches('/')
            ))
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"ping"}]}"#);
        if let Some(t) = raw("ANTHROPIC_AUTH_TOKEN") {
            req = req.bearer_auth(t);
        } else if let Some(k) = &helper_key {
            // What Claude Code does with an `apiKeyHelper`'s output: both headers.
            req = req.bearer_auth(k).header("x-api-key", k);
        }
        if let Some(k) = raw("ANTHROPIC_API_KEY") {
            req = req.header("x-api-key", k);
        }
        if let Some(h) = raw(HEADERS_KEY) {
            for line in h.split('\n') {
                if let Some((n, v)) = line.split_once(':') {
                    req = req.header(n.trim(), v.trim());
                }
            }
        }
        checks.push(match req.send() {
            Ok(r) if r.status().is_success() => Check { name: "proxy".into(), ok: true, detail: "a count_tokens request went through the proxy".into() },
            Ok(r) => Check {
                name: "proxy".into(),
                ok: false,
                detail: format!("count_tokens through {} answered HTTP {}; check the key with your Archestra administrator", redact_url(&base), r.status().as_u16()),
            },
            Err(e) => Check { name: "proxy".into(), ok: false, detail: format!("could not reach {}: {}", redact_url(&base), redact_url(&e.to_string())) },
        });
    }
    checks
}

fn print_text(r: &Report, paths: &ClaudePaths, printer: &Printer) {
    let mut out = String::new();
    let headline = match r.connection.as_str() {
        "connected" => format!("Connected to {}", r.origin.as_deref().unwrap_or("?")),
        "partial" => format!(
            "Setup for {} did not finish",
            r.origin.as_deref().unwrap_or("?")
        ),
        "script" => format!(
            "Connected to {} by the old setup script (no state record)",
            r.origin.as_deref().unwrap_or("an Archestra deployment")
        ),
        _ => "Not connected to Archestra".to_string(),
    };
    out.push_str(&headline);
    out.push('\n');
    // A value of several lines (the header lines) continues under its first line.
    let mut row = |k: &str, v: String| {
        let v = v.replace('\n', &format!("\n{:16}", ""));
        out.push_str(&format!("  {k:<14}{v}\n"));
    };
    if let Some(m) = &r.mode {
        row("mode", describe_mode(m));
    }
    if let Some(g) = &r.gateway {
        row(
            "gateway",
            format!(
                "{} {} ({})",
                g.name,
                g.url,
                g.scope.clone().unwrap_or_else(|| "missing".into())
            ),
        );
    }
    for (k, v) in &r.env {
        if k != HEADERS_KEY {
            row(
                "env",
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                ),
            );
        }
    }
    for line in &r.header_lines {
        row("header", line.clone());
    }
    if let Some(m) = &r.marketplace {
        row("marketplace", m.clone());
    }
    for p in &r.plugins {
        row("plugin", p.clone());
    }
    if let Some(s) = &r.secret_store {
        row("key stored in", format!("{s} (readable by you only)"));
    }
    if let Some(b) = &r.backup {
        row("backup", paths.display(b));
    }
    if let Some(s) = &r.state_file {
        row("state record", paths.display(s));
    }
    for e in &r.effective {
        row(
            "in effect",
            format!("{}={} (from {})", e.key, e.value, e.source),
        );
    }
    for c in &r.checks {
        row(
            if c.ok { "check ok" } else { "check FAILED" },
            format!("{}: {}", c.name, c.detail),
        );
    }
    print!("{out}");
    for p in &r.problems {
        printer.warn(p);
    }
    if r.connection == "not-connected" {
        printer.hint(
            "run `archestra-connect setup <link>` with a link from the Archestra Connect page",
        );
    } else if !r.problems.is_empty() {
        printer.hint("run `archestra-connect setup` with a new link to repair, or `archestra-connect revert` to disconnect");
    }
}

/// Say what a mode means for the user, after its wire name (which `--json` keeps).
fn describe_mode(mode: &str) -> String {
    match mode {
        "provider-key" => {
            "passthrough (provider-key): your own Claude credential, requests attributed to you"
                .to_string()
        }
        "virtual-key" => {
            "virtual key: the deployment's provider key is used in place of this machine's key"
                .to_string()
        }
        other => other.to_string(),
    }
}

//! Benchmark of the installer: `scripts/bench.sh` builds the release binaries and runs this.
//!
//! In one run, interleaved, on fresh temporary HOMEs and against the same kind of payload
//! (MCP gateway, passthrough proxy, a marketplace with two plugins the companion serves over git
//! smart HTTP), it times `archestra-connect setup` and a shell script doing the old script's
//! steps the old way (curl, python3 merges, the same `claude` calls), counts each one's
//! `claude` calls, and reads the installer's own CPU time (its `--json` result, from /proc,
//! children excluded). Then it times `status` and `--version` and weighs the binary. It prints each figure with
//! its goal and whether it was met, and exits 0 either way: it is a report, not a test.

#[path = "../tests/common/keyring.rs"]
mod keyring;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use archestra_proxy::{BackgroundServer, ServerConfig, Store};
use archestra_wire::{AuthMode, CreateSetupRequest, Provider};

const ROUNDS: usize = 5;
const STARTUP_RUNS: usize = 40;

/// The old script's steps, the old way: curl for the payload, python3 for every JSON edit,
/// and the `claude` calls it made. Inputs come from the environment, as the old script's did.
const OLD_SCRIPT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
command -v claude >/dev/null || { echo "claude not found" >&2; exit 1; }
payload="$(curl -fsSL -H 'Accept: application/json' "$SETUP_URL")"
export PAYLOAD="$payload"
field() { python3 -c 'import json,os,sys; d=json.loads(os.environ["PAYLOAD"]); v=d
for k in sys.argv[1].split("."): v=v[k]
print(v if not isinstance(v,list) else "\n".join(v))' "$1"; }
name="$(field mcp.serverName)"; url="$(field mcp.url)"
claude mcp remove --scope local "$name" >/dev/null 2>&1 || true
claude mcp remove --scope user "$name" >/dev/null 2>&1 || true
claude mcp add --scope user --transport http "$name" "$url"
settings="$HOME/.claude/settings.json"
mkdir -p "$(dirname "$settings")"
[ -f "$settings" ] && [ ! -f "$settings.archestra-backup" ] && cp "$settings" "$settings.archestra-backup"
python3 - <<'PY'
import json, os
p = os.path.join(os.environ["HOME"], ".claude", "settings.json")
d = json.load(open(p)) if os.path.exists(p) and open(p).read().strip() else {}
payload = json.loads(os.environ["PAYLOAD"])
env = d.setdefault("env", {})
for k in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"):
    if str(env.get(k, "")).startswith(("arch_", "archestra_")):
        del env[k]
env["ANTHROPIC_BASE_URL"] = payload["proxy"]["url"]
lines = [l for l in env.get("ANTHROPIC_CUSTOM_HEADERS", "").split("\n") if l.strip()
         and l.split(":")[0].strip().lower() not in ("x-archestra-agent-id", "x-archestra-virtual-key")]
lines.append("X-Archestra-Agent-Id: anthropic_claude_code")
if payload["proxy"].get("passthroughVirtualKey"):
    lines.append("X-Archestra-Virtual-Key: " + payload["proxy"]["passthroughVirtualKey"])
env["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(lines)
json.dump(d, open(p, "w"), indent=2)
PY
mkt="$(field skills.marketplaceName)"; clone="$(field skills.cloneUrl)"
state="$(python3 - "$mkt" <<'PY'
import json, os, sys
p = os.path.join(os.environ["HOME"], ".claude", "settings.json")
d = json.load(open(p))
print("matching" if sys.argv[1] in d.get("extraKnownMarketplaces", {}) else "add")
PY
)"
[ "$state" = matching ] || claude plugin marketplace add --scope user "$clone"
python3 - "$mkt" <<'PY'
import json, os, sys
p = os.path.join(os.environ["HOME"], ".claude", "settings.json")
d = json.load(open(p))
m = d.setdefault("extraKnownMarketplaces", {}).get(sys.argv[1])
if m is not None and "autoUpdate" not in m:
    m["autoUpdate"] = True
    json.dump(d, open(p, "w"), indent=2)
PY
claude plugin install "$mkt@$mkt" || echo "warning: install failed" >&2
for p in $(field skills.pluginNames); do
  claude plugin install "$p@$mkt" || echo "warning: install failed" >&2
done
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i]
}

struct Env<'a> {
    claude: &'a Path,
    counter: &'a Path,
    work: &'a Path,
}

impl Env<'_> {
    /// A fresh HOME and a command that runs in it, with `claude` counting its calls.
    fn command(&self, program: &Path, home: &Path, log: &Path) -> Command {
        let bin_dir = self.work.join("bin");
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("HOME", home)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("FAKE_CLAUDE_REAL", self.claude)
            .env("FAKE_CLAUDE_LOG", log)
            .env("ARCHESTRA_CLAUDE_BIN", self.counter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

fn main() {
    let claude = root().join(".tools/claude/node_modules/.bin/claude");
    if !claude.exists() {
        eprintln!(
            "error: the pinned Claude Code CLI is missing; run scripts/install-claude.sh first"
        );
        std::process::exit(1);
    }
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let connect = exe_dir.join("archestra-connect");
    if !connect.exists() {
        eprintln!(
            "error: {} is missing; run scripts/bench.sh, which builds it",
            connect.display()
        );
        std::process::exit(1);
    }
    let work = tempfile::tempdir().unwrap();
    let bin_dir = work.path().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    // `claude` on PATH for the old script is the counting wrapper around the real CLI.
    let counter = root().join("fixtures/fake-claude");
    std::os::unix::fs::symlink(&counter, bin_dir.join("claude")).unwrap();
    let env = Env {
        claude: &claude,
        counter: &counter,
        work: work.path(),
    };
    let old_script = work.path().join("old-setup.sh");
    fs::write(&old_script, OLD_SCRIPT).unwrap();

    let db = work.path().join("proxy.db");
    let mut config = ServerConfig::new(db.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.redeem_limit_per_minute = 0;
    // The companion serves the marketplace itself, as a self-contained deployment does.
    config.skills_dir = Some(root().join("fixtures/marketplace"));
    let server = BackgroundServer::start(config).unwrap();
    let origin = server.origin();
    let store = Store::open(&db).unwrap();
    let mint = || {
        let req = CreateSetupRequest {
            user: "bench@example.com".into(),
            mode: AuthMode::ProviderKey,
            provider: Provider::Anthropic,
            mcp_url: Some(format!("{origin}/v1/mcp/default")),
            mcp_name: Some("archestra".into()),
            skills_url: Some(archestra_proxy::MARKETPLACE_PATH.into()),
            marketplace: Some("acme-skills".into()),
            plugins: vec!["extra".into()],
            ttl_seconds: None,
        };
        store.create_setup(&req, &origin).unwrap().url
    };

    eprintln!("Running {ROUNDS} interleaved rounds of setup against the old script's steps…");
    let (mut ours, mut old, mut own_cpu, mut calls_ours, mut calls_old) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut run_ours = || {
            let home = work.path().join(format!("ours-{round}"));
            fs::create_dir_all(home.join(".claude")).unwrap();
            let log = home.join("calls.log");
            let link = mint();
            let started = Instant::now();
            let out = env
                .command(&connect, &home, &log)
                .args(["setup", &link, "--yes", "--json"])
                .output()
                .unwrap();
            let elapsed = started.elapsed();
            assert!(
                out.status.success(),
                "setup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(ms) = result["ownCpuMs"].as_f64() {
                own_cpu.push(ms / elapsed.as_secs_f64() / 1000.0);
            }
            calls_ours.push(fs::read_to_string(&log).unwrap().lines().count() as f64);
            ours.push(elapsed.as_secs_f64());
        };
        let mut run_old = || {
            let home = work.path().join(format!("old-{round}"));
            fs::create_dir_all(home.join(".claude")).unwrap();
            let log = home.join("calls.log");
            let link = mint();
            let started = Instant::now();
            let out = env
                .command(Path::new("bash"), &home, &log)
                .arg(&old_script)
                .env("SETUP_URL", &link)
                .output()
                .unwrap();
            let elapsed = started.elapsed();
            assert!(
                out.status.success(),
                "the old-style script failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            calls_old.push(fs::read_to_string(&log).unwrap().lines().count() as f64);
            old.push(elapsed.as_secs_f64());
        };
        // Alternate the order so that drift on a shared machine hurts both sides alike.
        if round % 2 == 0 {
            run_ours();
            run_old();
        } else {
            run_old();
            run_ours();
        }
    }

    eprintln!("Timing status and --version ({STARTUP_RUNS} runs each)…");
    let connected = work.path().join("ours-0");
    let time_runs = |args: &[&str]| -> Vec<f64> {
        (0..STARTUP_RUNS)
            .map(|_| {
                let started = Instant::now();
                let out = Command::new(&connect)
                    .args(args)
                    .env("HOME", &connected)
                    .env_remove("CLAUDE_CONFIG_DIR")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                let _ = out;
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect()
    };
    // The cost of starting any process here, measured in the same run, as the baseline.
    let spawn_ms: Vec<f64> = (0..STARTUP_RUNS)
        .map(|_| {
            let started = Instant::now();
            let _ = Command::new("/bin/true").status();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let mut status_ms = time_runs(&["status"]);
    let mut version_ms = time_runs(&["--version"]);
    let size_mb = fs::metadata(&connect).unwrap().len() as f64 / 1_000_000.0;

    eprintln!("Timing the apiKeyHelper against a real Secret Service ({STARTUP_RUNS} runs)…");
    let helper_home = work.path().join("keyring-home");
    fs::create_dir_all(helper_home.join(".claude")).unwrap();
    let session = keyring::KeyringSession::start(&helper_home, &work.path().join("keyring"));
    let link = store
        .create_setup(
            &CreateSetupRequest {
                user: "bench@example.com".into(),
                mode: AuthMode::VirtualKey,
                provider: Provider::Anthropic,
                mcp_url: None,
                mcp_name: None,
                skills_url: None,
                marketplace: None,
                plugins: Vec::new(),
                ttl_seconds: None,
            },
            &origin,
        )
        .unwrap()
        .url;
    let out = env
        .command(&connect, &helper_home, &helper_home.join("calls.log"))
        .envs(session.env())
        .args(["setup", &link, "--yes", "--secret-store", "keyring"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keyring setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(helper_home.join(".claude/settings.json")).unwrap(),
    )
    .unwrap();
    let helper = settings["apiKeyHelper"].as_str().unwrap().to_string();
    let mut helper_ms: Vec<f64> = (0..STARTUP_RUNS)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new("/bin/sh")
                .args(["-c", &helper])
                .envs(session.env())
                .stderr(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    drop(session);

    let ours_s = median(&mut ours.clone());
    let old_s = median(&mut old.clone());
    let ratio = ours_s / old_s;
    let own = if own_cpu.is_empty() {
        f64::NAN
    } else {
        median(&mut own_cpu) * 100.0
    };
    let status_p50 = median(&mut status_ms.clone());
    let version_p50 = median(&mut version_ms.clone());
    let row = |name: &str, value: String, goal: &str, met: bool| {
        println!(
            "{name:<44} {value:>18}   goal {goal:<12} {}",
            if met { "met" } else { "NOT MET" }
        );
    };
    println!();
    println!("archestra-connect benchmark ({ROUNDS} rounds, medians; same machine, same run)");
    println!("{}", "-".repeat(92));
    row("setup wall time (s)", format!("{ours_s:.2}"), "-", true);
    row(
        "old-style script wall time (s)",
        format!("{old_s:.2}"),
        "-",
        true,
    );
    row(
        "setup / old script",
        format!("{ratio:.2}x"),
        "<= 0.60x",
        ratio <= 0.6,
    );
    row(
        "claude calls: setup",
        format!("{}", median(&mut calls_ours)),
        "-",
        true,
    );
    row(
        "claude calls: old script",
        format!("{}", median(&mut calls_old)),
        "-",
        true,
    );
    row(
        "installer's own CPU, % of its wall time",
        format!("{own:.2}%"),
        "< 5%",
        own < 5.0,
    );
    row(
        "status, p50 / p90 (ms)",
        format!("{status_p50:.1} / {:.1}", percentile(&mut status_ms, 0.9)),
        "< 15 ms",
        status_p50 < 15.0,
    );
    row(
        "--version, p50 / p90 (ms)",
        format!("{version_p50:.1} / {:.1}", percentile(&mut version_ms, 0.9)),
        "< 3 ms",
        version_p50 < 3.0,
    );
    let spawn_p50 = median(&mut spawn_ms.clone());
    row(
        "baseline: starting /bin/true, p50 (ms)",
        format!("{spawn_p50:.1}"),
        "-",
        true,
    );
    row(
        "status / --version over the baseline",
        format!(
            "{:.1}x / {:.1}x",
            status_p50 / spawn_p50,
            version_p50 / spawn_p50
        ),
        "-",
        true,
    );
    row(
        "binary size (MB)",
        format!("{size_mb:.2}"),
        "< 8 MB",
        size_mb < 8.0,
    );
    let helper_p50 = median(&mut helper_ms.clone());
    row(
        "apiKeyHelper via /bin/sh, p50 / p90 (ms)",
        format!("{helper_p50:.1} / {:.1}", percentile(&mut helper_ms, 0.9)),
        "< 50 ms",
        helper_p50 < 50.0,
    );
    println!();
    println!("setup runs (s): {ours:.2?}");
    println!("old script runs (s): {old:.2?}");
    drop(server);
}

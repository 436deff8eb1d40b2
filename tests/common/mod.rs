//! Shared test set-up: a temporary HOME and `CLAUDE_CONFIG_DIR`, the companion server on
//! 127.0.0.1, the real Claude Code CLI, and the fake `claude` for fault injection.

#![allow(dead_code)]

pub mod git_http;
pub mod keyring;
pub mod mock_upstream;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use archestra_proxy::{BackgroundServer, ServerConfig, Store, TokenState};
use archestra_wire::{AuthMode, CreateSetupRequest, Provider};
use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Claude Code CLI installed by `scripts/install-claude.sh`.
pub fn real_claude() -> PathBuf {
    let path = root().join(".tools/claude/node_modules/.bin/claude");
    assert!(
        path.exists(),
        "the pinned Claude Code CLI is missing: run `scripts/install-claude.sh` (the test script does)"
    );
    path
}

/// Ask in `req` for the companion's own marketplace, the one [`World::with_marketplace`] serves.
pub fn with_own_marketplace(mut req: CreateSetupRequest) -> CreateSetupRequest {
    req.skills_url = Some(archestra_proxy::MARKETPLACE_PATH.into());
    req.marketplace = Some("acme-skills".into());
    req
}

/// This machine's attribution key, from the header lines setup wrote into settings.json.
pub fn key_in_headers(settings: &Value) -> String {
    let headers = settings["env"]["ANTHROPIC_CUSTOM_HEADERS"]
        .as_str()
        .unwrap();
    headers
        .lines()
        .find_map(|l| l.strip_prefix("X-Archestra-Virtual-Key: "))
        .expect("a virtual-key header line")
        .to_string()
}

/// A passthrough setup of the companion's own marketplace with both of its plugins.
pub fn own_marketplace_passthrough(origin: &str) -> CreateSetupRequest {
    let mut req = with_own_marketplace(passthrough(origin));
    req.plugins = vec!["extra".into()];
    req
}

/// Assert that both plugins of the `acme-skills` marketplace are installed.
pub fn assert_both_plugins_installed(world: &World) {
    let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
    for id in ["acme-skills@acme-skills", "extra@acme-skills"] {
        assert!(
            installed["plugins"].get(id).is_some(),
            "{id} not installed: {installed}"
        );
    }
}

/// Copy a folder and everything under it.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The fake `claude` fixture.
pub fn fake_claude() -> PathBuf {
    root().join("fixtures/fake-claude")
}

/// One test's world: its own HOME, config dir, database and server.
pub struct World {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    pub server: Option<BackgroundServer>,
    pub origin: String,
    /// Extra environment for every run of the installer.
    pub env: Vec<(String, String)>,
}

impl World {
    /// Make a world with a running companion server.
    pub fn new() -> World {
        World::with_server(|_| {})
    }

    /// Make a world whose companion server's configuration `adjust` changes first.
    pub fn with_server(adjust: impl FnOnce(&mut ServerConfig)) -> World {
        World::with_server_in(tempfile::tempdir().unwrap(), adjust)
    }

    /// Make a world whose companion also serves a copy of `fixtures/marketplace` (the
    /// `acme-skills` marketplace: the `acme-skills` skills plugin and `extra`), looking at
    /// the folder again on every request; [`World::marketplace_dir`] is the copy to edit.
    pub fn with_marketplace() -> World {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("marketplace");
        copy_tree(&root().join("fixtures/marketplace"), &folder);
        World::with_server_in(dir, |cfg| {
            cfg.skills_dir = Some(folder);
            cfg.skills_check_interval = std::time::Duration::ZERO;
        })
    }

    fn with_server_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut ServerConfig)) -> World {
        let home = dir.path().join("home");
        let config = home.join(".claude");
        fs::create_dir_all(&config).unwrap();
        let db = dir.path().join("proxy.db");
        let mut cfg = ServerConfig::new(db.clone());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.redeem_limit_per_minute = 1000;
        adjust(&mut cfg);
        let server = BackgroundServer::start(cfg).expect("the companion server starts");
        let origin = server.origin();
        World {
            dir,
            home,
            config,
            db,
            server: Some(server),
            origin,
            env: Vec::new(),
        }
    }

    /// The marketplace folder the companion of [`World::with_marketplace`] serves.
    pub fn marketplace_dir(&self) -> PathBuf {
        self.dir.path().join("marketplace")
    }

    pub fn settings(&self) -> PathBuf {
        self.config.join("settings.json")
    }

    pub fn claude_json(&self) -> PathBuf {
        self.config.join(".claude.json")
    }

    pub fn state_file(&self) -> PathBuf {
        self.config.join(".archestra-connect/state.json")
    }

    pub fn store(&self) -> Store {
        Store::open(&self.db).unwrap()
    }

    /// Mint a setup on the companion and return its link.
    pub fn mint(&self, req: &CreateSetupRequest) -> String {
        self.store().create_setup(req, &self.origin).unwrap().url
    }

    /// Tell what the server thinks of the token in a link.
    pub fn token_state(&self, link: &str) -> TokenState {
        let token = link.rsplit('/').next().unwrap();
        self.store().token_state(token).unwrap()
    }

    /// Run the installer with this world's environment and the real `claude`.
    pub fn connect(&self, args: &[&str]) -> Output {
        self.connect_with(args, &[])
    }

    /// Run the installer with extra environment variables.
    pub fn connect_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = self.connect_command(args);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("archestra-connect runs")
    }

    /// The installer's command line with this world's environment, not yet run.
    pub fn connect_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_archestra-connect"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("CLAUDE_CONFIG_DIR", &self.config)
            .env("NO_COLOR", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("ARCHESTRA_CLAUDE_BIN", real_claude())
            .env("TMPDIR", self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run the real `claude` in this world.
    pub fn claude(&self, args: &[&str]) -> Output {
        Command::new(real_claude())
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", &self.home)
            .env("CLAUDE_CONFIG_DIR", &self.config)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    pub fn read_json(&self, path: &Path) -> Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// A passthrough setup request with the MCP gateway.
pub fn passthrough(origin: &str) -> CreateSetupRequest {
    CreateSetupRequest {
        user: "dev@example.com".into(),
        mode: AuthMode::ProviderKey,
        provider: Provider::Anthropic,
        mcp_url: Some(format!("{origin}/v1/mcp/default")),
        mcp_name: Some("archestra".into()),
        skills_url: None,
        marketplace: None,
        plugins: Vec::new(),
        ttl_seconds: None,
    }
}

/// A virtual-key setup request with the MCP gateway.
pub fn virtual_key(origin: &str) -> CreateSetupRequest {
    CreateSetupRequest {
        mode: AuthMode::VirtualKey,
        ..passthrough(origin)
    }
}

/// Show an output for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// File mode bits.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

//! The skills marketplace over git's smart HTTP protocol, cloned and fetched by the real `git`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use archestra_proxy::{BackgroundServer, MARKETPLACE_PATH, Store};
use reqwest::StatusCode;

use crate::common::*;
use crate::process::ServeProcess;

/// The marketplace the installer's tests use too: one skills plugin and one extra plugin.
fn fixture_marketplace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/marketplace")
}

/// Copy the fixture marketplace into `to`, so that a test may change it.
fn copy_marketplace(to: &Path) {
    let status = Command::new("cp")
        .arg("-R")
        .arg(fixture_marketplace())
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Run `git` with no user or system configuration and no prompt for a password.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("SSH_ASKPASS")
        .output()
        .unwrap()
}

fn shown(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server on a copy of the fixture marketplace that looks at the folder on every fetch.
struct Served {
    scratch: Scratch,
    folder: PathBuf,
    server: BackgroundServer,
}

impl Served {
    fn start() -> Served {
        let scratch = Scratch::new();
        let folder = scratch.dir.path().join("marketplace");
        copy_marketplace(&folder);
        let mut config = config(&scratch.db());
        config.redeem_limit_per_minute = 0;
        config.skills_dir = Some(folder.clone());
        config.skills_check_interval = std::time::Duration::ZERO;
        let server = BackgroundServer::start(config).unwrap();
        Served {
            scratch,
            folder,
            server,
        }
    }

    /// Mint and redeem a setup of the server's own marketplace; return the payload.
    fn redeem_setup(&self, user: &str) -> serde_json::Value {
        let mut req = request(user);
        req.skills_url = Some(MARKETPLACE_PATH.into());
        req.marketplace = Some("acme-skills".into());
        let minted = mint(&self.scratch.db(), &req, &self.server.origin());
        let response = redeem(&client(), &minted.url, "laptop");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().unwrap()
    }

    fn repo_url(&self) -> String {
        format!("{}{MARKETPLACE_PATH}", self.server.origin())
    }

    fn work(&self, name: &str) -> PathBuf {
        self.scratch.dir.path().join(name)
    }
}

fn clone_url_of(payload: &serde_json::Value) -> String {
    payload["skills"]["cloneUrl"].as_str().unwrap().to_string()
}

/// The credential in the user part of a clone URL.
fn credential_of(clone_url: &str) -> String {
    url::Url::parse(clone_url).unwrap().username().to_string()
}

#[test]
fn a_redeemed_clone_url_clones_shallow_and_fetches_what_changed_since() {
    let served = Served::start();
    let payload = served.redeem_setup("ada@example.com");
    let clone_url = clone_url_of(&payload);
    let credential = credential_of(&clone_url);
    assert!(
        credential.starts_with("archestra_mkt_") && credential.len() == 46,
        "{clone_url}"
    );
    assert_eq!(payload["skills"]["marketplaceName"], "acme-skills");
    assert!(clone_url.ends_with(&served.repo_url()[7..]), "{clone_url}");

    // Claude Code clones git marketplaces shallow; the smart protocol must allow it.
    let parent = served.scratch.dir.path();
    let out = git(
        parent,
        &["clone", "-q", "--depth", "1", &clone_url, "clone"],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let clone = served.work("clone");
    assert_eq!(
        fs::read(clone.join(".claude-plugin/marketplace.json")).unwrap(),
        fs::read(served.folder.join(".claude-plugin/marketplace.json")).unwrap()
    );
    assert!(
        clone
            .join("plugins/acme-skills/skills/house-style/SKILL.md")
            .is_file()
    );

    // An edit of the folder is a new commit on the same branch, so a fetch fast-forwards.
    let skill = served
        .folder
        .join("plugins/acme-skills/skills/house-style/SKILL.md");
    let mut text = fs::read_to_string(&skill).unwrap();
    text.push_str("\nPrefer short sentences.\n");
    fs::write(&skill, &text).unwrap();
    let out = git(&clone, &["pull", "-q", "--ff-only"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(
        fs::read_to_string(clone.join("plugins/acme-skills/skills/house-style/SKILL.md")).unwrap(),
        text
    );
    let out = git(&clone, &["rev-list", "--count", "HEAD"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    // Nothing changed: a fetch brings no new commit.
    let before = git(&clone, &["rev-parse", "HEAD"]).stdout;
    let out = git(&clone, &["pull", "-q", "--ff-only"]);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]).stdout, before);
}

#[test]
fn unknown_revoked_and_missing_credentials_are_refused() {
    let served = Served::start();
    let parent = served.scratch.dir.path();
    let http = client();

    // No credential: a challenge, which git cannot answer without a prompt.
    let response = http
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            served.repo_url()
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    let out = git(parent, &["clone", "-q", &served.repo_url(), "anonymous"]);
    assert!(!out.status.success(), "{}", shown(&out));

    // A credential of the right shape that this server never issued.
    let made_up = format!("archestra_mkt_{}", "A".repeat(32));
    let refs = format!("{}/info/refs?service=git-upload-pack", served.repo_url());
    let response = http
        .get(&refs)
        .basic_auth(&made_up, None::<&str>)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .unwrap()
            .contains("not known to this server")
    );

    // Something that is not a credential at all, e.g. a virtual key put in its place.
    let payload = served.redeem_setup("ada@example.com");
    let key = key_of(&payload);
    let response = http
        .get(&refs)
        .basic_auth(&key, None::<&str>)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Revoking the machine's key revokes its marketplace credential: clone and fetch stop.
    let clone_url = clone_url_of(&payload);
    let out = git(
        parent,
        &["clone", "-q", "--depth", "1", &clone_url, "clone"],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let store = Store::open(&served.scratch.db()).unwrap();
    let id = store.key_state(&key).unwrap().unwrap().id;
    store.revoke_key(id).unwrap();
    let response = http
        .get(&refs)
        .basic_auth(credential_of(&clone_url), None::<&str>)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().unwrap().contains("was revoked"));
    let out = git(&served.work("clone"), &["fetch", "-q"]);
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        shown(&out)
    );

    // Another user's machine is not affected.
    let other = served.redeem_setup("grace@example.com");
    let out = git(
        parent,
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &clone_url_of(&other),
            "other",
        ],
    );
    assert!(out.status.success(), "{}", shown(&out));
}

#[test]
fn pushes_and_the_dumb_protocol_are_refused_and_the_folder_is_never_written() {
    let served = Served::start();
    let payload = served.redeem_setup("ada@example.com");
    let clone_url = clone_url_of(&payload);
    let credential = credential_of(&clone_url);
    let http = client();

    for (path, expected) in [
        ("info/refs?service=git-receive-pack", StatusCode::FORBIDDEN),
        ("HEAD", StatusCode::NOT_FOUND),
        ("objects/info/packs", StatusCode::NOT_FOUND),
        ("info/refs", StatusCode::NOT_FOUND),
    ] {
        let response = http
            .get(format!("{}/{path}", served.repo_url()))
            .basic_auth(&credential, None::<&str>)
            .send()
            .unwrap();
        assert_eq!(response.status(), expected, "{path}");
    }

    let parent = served.scratch.dir.path();
    let out = git(parent, &["clone", "-q", &clone_url, "clone"]);
    assert!(out.status.success(), "{}", shown(&out));
    let clone = served.work("clone");
    fs::write(clone.join("pushed.md"), "from a client\n").unwrap();
    let commit = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(["commit", "-qam", "push attempt", "--allow-empty"])
        .current_dir(&clone)
        .status()
        .unwrap();
    assert!(commit.success());
    let out = git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(!served.folder.join("pushed.md").exists());

    // Only the marketplace's own files are in the folder: the repository lives elsewhere.
    let mut names: Vec<String> = fs::read_dir(&served.folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".claude-plugin", "plugins"]);
}

#[test]
fn a_server_without_a_skills_folder_answers_404_and_refuses_setups_of_its_own_marketplace() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 0);
    let response = client()
        .get(format!(
            "{}{MARKETPLACE_PATH}/info/refs?service=git-upload-pack",
            server.origin()
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().unwrap().contains("--skills-dir"));
}

#[test]
fn the_served_binary_never_logs_a_credential() {
    let scratch = Scratch::new();
    let folder = scratch.dir.path().join("marketplace");
    copy_marketplace(&folder);
    let db = scratch.db();
    let serve = ServeProcess::start_with(
        &scratch,
        &db,
        "skills",
        &[
            "--skills-dir",
            folder.to_str().unwrap(),
            "--skills-check-interval",
            "0",
        ],
    );
    let mut req = request("ada@example.com");
    req.skills_url = Some(MARKETPLACE_PATH.into());
    req.marketplace = Some("acme-skills".into());
    let minted = mint(&db, &req, &serve.origin);
    let response = redeem(&client(), &minted.url, "laptop");
    assert_eq!(response.status(), StatusCode::OK);
    let payload: serde_json::Value = response.json().unwrap();
    let clone_url = clone_url_of(&payload);
    let credential = credential_of(&clone_url);
    let out = git(
        scratch.dir.path(),
        &["clone", "-q", "--depth", "1", &clone_url, "clone"],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let wrong = format!("archestra_mkt_{}", "B".repeat(32));
    let refused = client()
        .get(format!(
            "{}{MARKETPLACE_PATH}/info/refs?service=git-upload-pack",
            serve.origin
        ))
        .basic_auth(&wrong, None::<&str>)
        .send()
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let (exit, printed) = serve.terminate();
    assert!(exit.success(), "{printed}");
    assert!(
        printed.contains("serving the skills marketplace"),
        "{printed}"
    );
    for secret in [credential.as_str(), wrong.as_str(), &credential[14..]] {
        assert!(!printed.contains(secret), "{printed}");
    }
    // Only hashes are stored.
    let dump = fs::read(&db).unwrap();
    let needle = credential.as_bytes();
    assert!(!dump.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn relative_skills_and_database_paths_work_from_the_servers_folder() {
    let scratch = Scratch::new();
    copy_marketplace(&scratch.dir.path().join("marketplace"));
    // `ServeProcess` runs the binary in the scratch folder, so both paths are relative to it.
    let serve = ServeProcess::start_with(
        &scratch,
        Path::new("relative.db"),
        "relative",
        &["--skills-dir", "marketplace"],
    );
    let db = scratch.dir.path().join("relative.db");
    let mut req = request("ada@example.com");
    req.skills_url = Some(MARKETPLACE_PATH.into());
    req.marketplace = Some("acme-skills".into());
    let minted = mint(&db, &req, &serve.origin);
    let payload: serde_json::Value = redeem(&client(), &minted.url, "laptop").json().unwrap();
    let out = git(
        scratch.dir.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &clone_url_of(&payload),
            "clone",
        ],
    );
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        scratch
            .dir
            .path()
            .join("clone/.claude-plugin/marketplace.json")
            .is_file()
    );
    assert!(scratch.dir.path().join("relative.db-skills").is_dir());
    let (exit, printed) = serve.terminate();
    assert!(exit.success(), "{printed}");
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use archestra_proxy::{BackgroundServer, ServerConfig, Store};
use archestra_wire::{AuthMode, CreateSetupRequest, MintedSetup};
use reqwest::blocking::{Client, Response};

/// A temporary folder holding the database, removed when dropped.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("proxy.db")
    }
}

/// A configuration on `db` listening on a free port of 127.0.0.1.
pub fn config(db: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(db.to_path_buf());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// Start a server on `db` with a redemption limit of `limit` per minute.
pub fn start(db: &Path, limit: u32) -> BackgroundServer {
    let mut config = config(db);
    config.redeem_limit_per_minute = limit;
    BackgroundServer::start(config).unwrap()
}

/// Return a setup request for `user` with every other field at its wire default.
pub fn request(user: &str) -> CreateSetupRequest {
    serde_json::from_value(serde_json::json!({ "user": user })).unwrap()
}

/// Mint a setup for `user` straight into the database.
pub fn mint(db: &Path, req: &CreateSetupRequest, origin: &str) -> MintedSetup {
    Store::open(db).unwrap().create_setup(req, origin).unwrap()
}

/// Return the raw token of a minted setup, the last segment of its URL.
pub fn token_of(minted: &MintedSetup) -> String {
    minted.url.rsplit('/').next().unwrap().to_string()
}

pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Redeem `url` as the installer does.
pub fn redeem(client: &Client, url: &str, device: &str) -> Response {
    client
        .get(url)
        .header("Accept", "application/json")
        .header("X-Archestra-Device-Name", device)
        .send()
        .unwrap()
}

/// Return the `type` and `message` of a JSON error answer.
pub fn error_of(response: Response) -> (String, String) {
    let body: serde_json::Value = response.json().unwrap();
    (
        body["error"]["type"].as_str().unwrap().to_string(),
        body["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// Return the machine key of a payload answer.
pub fn key_of(payload: &serde_json::Value) -> String {
    let proxy = &payload["proxy"];
    proxy["passthroughVirtualKey"]
        .as_str()
        .or(proxy["virtualKey"].as_str())
        .unwrap()
        .to_string()
}

/// Mint and redeem a setup for `user`, returning the machine's key.
pub fn new_key(db: &Path, user: &str, mode: AuthMode) -> String {
    let mut req = request(user);
    req.mode = mode;
    let minted = mint(db, &req, "http://127.0.0.1:9");
    let redemption = Store::open(db)
        .unwrap()
        .redeem(&token_of(&minted), Some("laptop"), "Archestra")
        .unwrap();
    redemption
        .payload
        .proxy
        .unwrap()
        .machine_key()
        .unwrap()
        .expose()
        .to_string()
}

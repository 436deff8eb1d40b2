//! The shared-skills marketplace the companion serves itself (`serve --skills-dir`), with the
//! real Claude Code CLI: setup adds it and installs its plugins, an edit of the folder reaches
//! the user on the next `claude plugin marketplace update`, and a revoked credential is refused
//! while what was installed stays.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{
    World, assert_both_plugins_installed, key_in_headers, mode, own_marketplace_passthrough, show,
};

const SKILL: &str = "plugins/acme-skills/skills/house-style/SKILL.md";

#[test]
fn the_companions_marketplace_installs_updates_and_refuses_a_revoked_credential() {
    let world = World::with_marketplace();
    let link = world.mint(&own_marketplace_passthrough(&world.origin));

    let out = world.connect(&["setup", &link, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_both_plugins_installed(&world);
    // The source Claude Code declared is the companion's, with this machine's credential.
    let settings = world.read_json(&world.settings());
    let source = &settings["extraKnownMarketplaces"]["acme-skills"]["source"];
    let declared = url::Url::parse(source["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        declared.path(),
        archestra_proxy::MARKETPLACE_PATH,
        "{source}"
    );
    assert!(
        declared
            .username()
            .starts_with(archestra_proxy::MARKETPLACE_CREDENTIAL_PREFIX),
        "{source}"
    );

    // Claude Code's clone of the marketplace holds the folder's content.
    let clone = world.config.join("plugins/marketplaces/acme-skills");
    let original = fs::read_to_string(world.marketplace_dir().join(SKILL)).unwrap();
    assert_eq!(fs::read_to_string(clone.join(SKILL)).unwrap(), original);

    // An administrator edits the folder; the next update brings the edit.
    let edited = format!("{original}Write dates as 2026-12-04.\n");
    fs::write(world.marketplace_dir().join(SKILL), &edited).unwrap();
    let out = world.claude(&["plugin", "marketplace", "update", "acme-skills"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fs::read_to_string(clone.join(SKILL)).unwrap(), edited);

    // Revoking this machine's key revokes its marketplace credential with it: the next
    // update is refused and leaves the clone and the installed plugins as they were.
    let store = world.store();
    let record = store
        .key_state(&key_in_headers(&world.read_json(&world.settings())))
        .unwrap()
        .unwrap();
    store.revoke_key(record.id).unwrap();
    fs::write(
        world.marketplace_dir().join(SKILL),
        format!("{edited}A change this machine must not see.\n"),
    )
    .unwrap();
    let out = world.claude(&["plugin", "marketplace", "update", "acme-skills"]);
    let said = show(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("403"), "{said}");
    assert_eq!(fs::read_to_string(clone.join(SKILL)).unwrap(), edited);
    let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
    assert!(
        installed["plugins"]
            .get("acme-skills@acme-skills")
            .is_some()
    );

    // Setup closed the plugins folder, which holds the credential; the user then chose a
    // mode of their own, which revert keeps.
    let plugins = world.config.join("plugins");
    assert_eq!(mode(&plugins), 0o700);
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o750)).unwrap();

    // Revert still removes everything setup added: it needs nothing from the server. There
    // was no settings.json before setup, so there is none after.
    let out = world.connect(&["revert", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(mode(&plugins), 0o750);
    assert!(!world.settings().exists());
    assert!(!clone.exists());
    let installed = world.read_json(&world.config.join("plugins/installed_plugins.json"));
    assert_eq!(installed["plugins"], serde_json::json!({}), "{installed}");
}

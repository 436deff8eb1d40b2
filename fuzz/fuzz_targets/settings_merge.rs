//! The settings merge: any settings.json text that parses is merged and unmerged without a
//! panic, unmerging gives back the same content, and a rewrite in the file's own layout
//! parses back to the same content.
#![no_main]

use std::path::Path;

use archestra_connect::env_block::{self, EnvJournal, EnvPlan};
use archestra_connect::settings::{detect_layout, parse_object, render};
use archestra_wire::{AuthMode, Provider, ProxySection, Secret};
use libfuzzer_sys::fuzz_target;

fn proxy(mode: AuthMode, provider: Provider) -> ProxySection {
    let key = Secret::new(format!("arch_{}", "a".repeat(64)));
    ProxySection {
        auth_mode: mode,
        provider,
        url: "https://h.example/v1/anthropic".into(),
        virtual_key: (mode == AuthMode::VirtualKey).then(|| key.clone()),
        virtual_key_name: None,
        passthrough_virtual_key: (mode == AuthMode::ProviderKey).then_some(key),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(root) = parse_object(Path::new("settings.json"), text) else {
        return;
    };
    let rendered = render(&root, &detect_layout(text));
    assert_eq!(parse_object(Path::new("settings.json"), &rendered).unwrap(), root);

    for (mode, provider, helper) in [
        (AuthMode::ProviderKey, Provider::Anthropic, None),
        (AuthMode::VirtualKey, Provider::Anthropic, Some("/x credential".to_string())),
        (AuthMode::VirtualKey, Provider::Bedrock, None),
    ] {
        let plan = EnvPlan::for_proxy(&proxy(mode, provider), helper);
        let mut merged = root.clone();
        let mut journal = EnvJournal::default();
        if env_block::apply(&mut merged, &plan, &mut journal).is_err() {
            continue;
        }
        let once = merged.clone();
        env_block::apply(&mut merged, &plan, &mut journal).unwrap();
        assert_eq!(merged, once);
        env_block::undo(&mut merged, &journal);
        assert_eq!(merged, root);
    }
});

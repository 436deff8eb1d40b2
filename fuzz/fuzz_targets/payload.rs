//! The payload validator: any bytes a server might answer, parsed and checked, never panic,
//! and a payload that passes holds no name that looks like a flag.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<archestra_wire::SetupPayload>(data) else {
        return;
    };
    if payload.validate().is_ok() {
        if let Some(mcp) = &payload.mcp {
            assert!(!mcp.server_name.starts_with('-'));
            assert!(!mcp.url.chars().any(char::is_control));
        }
        if let Some(skills) = &payload.skills {
            assert!(skills.plugin_names.iter().all(|p| !p.starts_with('-')));
        }
    }
});

//! The setup-script reader: any text, never a panic; what it accepts passes validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = archestra_connect::script::parse_setup_script(text) {
        assert!(parsed.payload.validate().is_ok());
    }
});

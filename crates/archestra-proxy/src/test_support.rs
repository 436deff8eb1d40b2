//! Helpers shared by the unit tests.

use archestra_wire::CreateSetupRequest;

/// Return a setup request for `user` with every other field at its wire default.
pub fn request(user: &str) -> CreateSetupRequest {
    serde_json::from_value(serde_json::json!({ "user": user }))
        .expect("a request with only `user` uses the defaults for the rest")
}

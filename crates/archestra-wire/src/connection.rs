//! The browser approval ("Connect") protocol: a client asks for a connection, the user
//! approves it in the browser, and the client redeems `archestra_con_<deviceCode>`.
//!
//! Both routes are public; the device code is the client's proof and is never shown.

use serde::{Deserialize, Serialize};

use crate::SETUP_TOKEN_PREFIX;
use crate::secret::Secret;

/// Path of the route that starts a connection request.
pub const CLIENT_CONNECTIONS_PATH: &str = "/api/client-connections";

/// Path of the route a client polls until the request is decided.
pub const CLIENT_CONNECTIONS_POLL_PATH: &str = "/api/client-connections/poll";

/// Body of `POST /api/client-connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartConnectionRequest {
    /// Always [`crate::CLIENT_ID_CLAUDE_CODE`] for this installer.
    pub client_id: String,
    /// `linux`, `macos` or `windows`.
    pub platform: String,
    /// The machine's name, shown to the user who approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// Answer of `POST /api/client-connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedConnection {
    /// The request's id, as it appears in the approval page's address.
    pub id: String,
    /// The client's proof: polls with it, then redeems `archestra_con_<deviceCode>`.
    pub device_code: Secret,
    /// `XXXX-XXXX`, shown to the user to compare with the approval page.
    pub user_code: String,
    /// Path of the approval page on the deployment, with its query.
    pub verification_path: String,
    /// RFC 3339 time after which the request can no longer be approved.
    pub expires_at: String,
    /// Seconds to wait between two polls.
    pub interval: u64,
}

/// Body of `POST /api/client-connections/poll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollConnectionRequest {
    pub device_code: Secret,
}

/// Where a connection request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ConnectionStatus {
    /// Return the wire name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Pending => "pending",
            ConnectionStatus::Approved => "approved",
            ConnectionStatus::Denied => "denied",
            ConnectionStatus::Expired => "expired",
        }
    }
}

/// Answer of `POST /api/client-connections/poll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollConnectionResponse {
    pub status: ConnectionStatus,
}

/// Tell whether `text` has the shape of a user code: `XXXX-XXXX`, capitals and digits.
pub fn is_user_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 9
        && bytes[4] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Tell whether `text` has the shape of a device code: 43 to 64 base64url characters.
pub fn is_device_code(text: &str) -> bool {
    (43..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Return the one-time setup token an approved device code redeems as.
pub fn device_setup_token(device_code: &Secret) -> Secret {
    Secret::new(format!("{SETUP_TOKEN_PREFIX}{}", device_code.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_user_and_device_codes() {
        assert!(is_user_code("ABCD-2345"));
        assert!(!is_user_code("abcd-2345"));
        assert!(!is_user_code("ABCD2345"));
        assert!(!is_user_code("ABCD-234$"));
        assert!(is_device_code(&"a-_Z".repeat(11)[..43]));
        assert!(!is_device_code("short"));
        assert!(!is_device_code(&format!("{}$", "a".repeat(43))));
    }

    #[test]
    fn statuses_use_their_wire_names() {
        let body: PollConnectionResponse = serde_json::from_str(r#"{"status":"denied"}"#).unwrap();
        assert_eq!(body.status, ConnectionStatus::Denied);
        assert_eq!(
            serde_json::to_string(&ConnectionStatus::Approved).unwrap(),
            r#""approved""#
        );
    }

    #[test]
    fn a_device_code_redeems_as_a_setup_token() {
        let code = Secret::new("x".repeat(43));
        let token = device_setup_token(&code);
        assert!(crate::is_setup_token(token.expose()));
    }
}

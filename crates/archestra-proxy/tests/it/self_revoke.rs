use archestra_proxy::Store;

use crate::common::*;

#[test]
fn self_revoke_takes_effect_at_once_and_spares_other_machines() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let client = client();
    let mut keys = Vec::new();
    for device in ["laptop", "desktop"] {
        let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());
        let payload: serde_json::Value = redeem(&client, &minted.url, device).json().unwrap();
        keys.push(key_of(&payload));
    }
    let route = format!("{}/api/virtual-keys/self", server.origin());

    let response = client.delete(&route).bearer_auth(&keys[0]).send().unwrap();
    assert_eq!(response.status(), 204);
    let store = Store::open(&scratch.db()).unwrap();
    let revoked = store.key_state(&keys[0]).unwrap().unwrap();
    assert!(revoked.revoked && revoked.revoked_at.is_some());
    assert_eq!(revoked.device_name.as_deref(), Some("laptop"));

    // The same key again is refused right away.
    let again = client.delete(&route).bearer_auth(&keys[0]).send().unwrap();
    assert_eq!(again.status(), 401);
    let (kind, message) = error_of(again);
    assert_eq!(kind, "authentication_error");
    assert!(message.contains("already revoked"), "{message}");

    // The user's other machine keeps its key, and may revoke it in its own time.
    assert!(!store.key_state(&keys[1]).unwrap().unwrap().revoked);
    let other = client
        .delete(&route)
        .header("x-api-key", &keys[1])
        .send()
        .unwrap();
    assert_eq!(other.status(), 204);
}

#[test]
fn self_revoke_without_a_known_key_is_refused() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let route = format!("{}/api/virtual-keys/self", server.origin());
    let client = client();

    let response = client.delete(&route).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_of(response).0, "authentication_error");

    let stranger = format!("arch_{}", "0".repeat(64));
    let response = client
        .delete(&route)
        .header("X-Archestra-Virtual-Key", stranger)
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
}

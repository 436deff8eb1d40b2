//! One-time setup tokens and virtual keys: how they are made, hashed and compared.
//!
//! Only the SHA-256 of either reaches the database. The raw token leaves the server once, in
//! the minting answer; the raw key leaves it once, inside the setup payload.

use archestra_wire::{SETUP_TOKEN_PREFIX, VIRTUAL_KEY_PREFIX};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Random bytes behind a setup token, as Archestra makes them (32 base64url characters).
const TOKEN_BYTES: usize = 24;

/// Random bytes behind a virtual key (64 hex digits).
const KEY_BYTES: usize = 32;

/// Characters of a token that may be shown: the prefix and 8 random characters.
pub const TOKEN_START_LEN: usize = 22;

/// Make a fresh one-time setup token, `archestra_con_` and 24 random bytes in base64url.
pub fn new_setup_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill(&mut bytes);
    format!("{SETUP_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Make a fresh virtual key, `arch_` and 64 lowercase hex digits.
pub fn new_virtual_key() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill(&mut bytes);
    format!("{VIRTUAL_KEY_PREFIX}{}", hex::encode(bytes))
}

/// Return the SHA-256 of a token or key as lowercase hex, the only form the store keeps.
pub fn hash_secret(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// Return the first characters of a token, safe to display next to the command.
pub fn token_start(token: &str) -> String {
    token.chars().take(TOKEN_START_LEN).collect()
}

/// Return the last four characters of a key, kept so that listings can tell keys apart.
pub fn key_last_four(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Compare two secrets in time that does not depend on where they differ.
///
/// Both sides are hashed first, so the comparison also hides the expected length.
pub fn secrets_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_tokens_have_the_archestra_shape() {
        let token = new_setup_token();
        assert!(token.starts_with("archestra_con_"), "{token}");
        assert_eq!(token.len(), "archestra_con_".len() + 32);
        assert!(archestra_wire::is_setup_token(&token), "{token}");
        assert_ne!(token, new_setup_token());
    }

    #[test]
    fn virtual_keys_are_arch_and_64_lowercase_hex_digits() {
        let key = new_virtual_key();
        let body = key.strip_prefix("arch_").unwrap();
        assert_eq!(body.len(), 64);
        assert!(
            body.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{key}"
        );
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_start_and_last_four_show_only_the_ends() {
        let token = "archestra_con_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
        assert_eq!(token_start(token), "archestra_con_ABCDEFGH");
        assert_eq!(key_last_four("arch_0123456789abcdef"), "cdef");
        assert_eq!(key_last_four("ab"), "ab");
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secrets_match(
            "an-admin-token-value",
            "an-admin-token-value"
        ));
        assert!(!secrets_match(
            "an-admin-token-valuf",
            "an-admin-token-value"
        ));
        assert!(!secrets_match("", "an-admin-token-value"));
    }
}

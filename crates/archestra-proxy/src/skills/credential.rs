//! Marketplace credentials: how they are made, put into a clone URL, and read back out of the
//! `Authorization` header git sends.
//!
//! A credential is `archestra_mkt_` and 24 random bytes in base64url, as Archestra makes them.
//! It travels as the user part of the clone URL; git answers the server's Basic challenge
//! with `base64(<credential>:)`.

use archestra_wire::Secret;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use url::Url;

use super::MARKETPLACE_PATH;

/// Prefix of every marketplace credential.
pub const CREDENTIAL_PREFIX: &str = "archestra_mkt_";

/// Random bytes behind a credential (32 base64url characters).
const CREDENTIAL_BYTES: usize = 24;

/// Longest `Authorization` value read; a real one is about 80 characters.
const MAX_AUTHORIZATION_LEN: usize = 1024;

/// Make a fresh credential, `archestra_mkt_` and 24 random bytes in base64url.
pub fn new_credential() -> Secret {
    let mut bytes = [0u8; CREDENTIAL_BYTES];
    rand::rng().fill(&mut bytes);
    Secret::new(format!(
        "{CREDENTIAL_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What a request to the marketplace presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No `Authorization: Basic` header: the client has not been challenged yet.
    Nothing,
    /// A Basic header whose user (or password) is not shaped like a credential.
    Malformed,
    /// A credential-shaped value, still to be looked up.
    Credential(Secret),
}

/// Read the credential out of `Authorization: Basic base64(user:password)`.
///
/// The credential is expected in the user part, where the clone URL puts it; a client that
/// sends it as the password with any user name is accepted too.
pub fn presented_credential(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Nothing;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Presented::Malformed;
    }
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Presented::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Presented::Malformed;
    }
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return Presented::Malformed;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Presented::Malformed;
    };
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    [user, password]
        .into_iter()
        .find(|part| is_credential_shaped(part))
        .map_or(Presented::Malformed, |part| {
            Presented::Credential(Secret::new(part))
        })
}

/// Tell whether `value` has the exact shape of a credential this server makes.
fn is_credential_shaped(value: &str) -> bool {
    value.strip_prefix(CREDENTIAL_PREFIX).is_some_and(|body| {
        body.len() == 32
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Return the clone URL of this server's own marketplace for the origin `public_url`.
pub fn own_clone_url(public_url: &str) -> String {
    format!("{}{MARKETPLACE_PATH}", public_url.trim_end_matches('/'))
}

/// Tell whether `clone_url` names the marketplace this server serves at `public_url`,
/// whatever user part it carries.
pub fn is_own_clone_url(clone_url: &str, public_url: &str) -> bool {
    let (Ok(mut given), Ok(own)) = (
        Url::parse(clone_url),
        Url::parse(&own_clone_url(public_url)),
    ) else {
        return false;
    };
    let _ = given.set_username("");
    let _ = given.set_password(None);
    given == own
}

/// Resolve a requested clone URL: [`MARKETPLACE_PATH`] alone names this server's own
/// marketplace at `public_url`; a URL of the own marketplace loses any user part, since each
/// machine gets its own credential when it redeems. Anything else is returned as given.
pub fn resolve_clone_url(requested: &str, public_url: &str) -> String {
    if requested == MARKETPLACE_PATH {
        own_clone_url(public_url)
    } else if is_own_clone_url(requested, public_url) {
        without_credential(requested)
    } else {
        requested.to_string()
    }
}

/// Return `clone_url` with `credential` as its user part, and no password.
pub fn with_credential(clone_url: &str, credential: &Secret) -> Option<Secret> {
    let mut url = Url::parse(clone_url).ok()?;
    url.set_username(credential.expose()).ok()?;
    url.set_password(None).ok()?;
    Some(Secret::new(String::from(url)))
}

/// Return `clone_url` without its user part and password.
pub fn without_credential(clone_url: &str) -> String {
    match Url::parse(clone_url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.into()
        }
        Err(_) => clone_url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(user_and_password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(user_and_password));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&value).unwrap(),
        );
        headers
    }

    #[test]
    fn credentials_have_the_archestra_shape_and_fit_a_url_user_part() {
        let credential = new_credential();
        let raw = credential.expose();
        assert!(raw.starts_with("archestra_mkt_"), "{raw}");
        assert_eq!(raw.len(), "archestra_mkt_".len() + 32);
        assert!(is_credential_shaped(raw));
        assert_ne!(raw, new_credential().expose());

        let url = with_credential("https://h.example/skills/marketplace.git", &credential).unwrap();
        assert_eq!(
            url.expose(),
            format!("https://{raw}@h.example/skills/marketplace.git")
        );
        archestra_wire::validate_url("cloneUrl", url.expose()).unwrap();
        assert_eq!(
            without_credential(url.expose()),
            "https://h.example/skills/marketplace.git"
        );
    }

    #[test]
    fn the_credential_is_read_from_the_user_part_or_the_password() {
        let raw = new_credential().expose().to_string();
        let expected = Presented::Credential(Secret::new(raw.clone()));
        assert_eq!(presented_credential(&basic(&format!("{raw}:"))), expected);
        assert_eq!(
            presented_credential(&basic(&format!("git:{raw}"))),
            expected
        );
        assert_eq!(presented_credential(&HeaderMap::new()), Presented::Nothing);
        assert_eq!(
            presented_credential(&basic("ada:secret")),
            Presented::Malformed
        );
        assert_eq!(
            presented_credential(&basic("archestra_mkt_short:")),
            Presented::Malformed
        );

        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {raw}")).unwrap(),
        );
        assert_eq!(presented_credential(&bearer), Presented::Malformed);
    }

    #[test]
    fn own_clone_urls_are_recognised_whatever_their_user_part() {
        let origin = "http://127.0.0.1:8787";
        assert_eq!(
            own_clone_url("http://127.0.0.1:8787/"),
            "http://127.0.0.1:8787/skills/marketplace.git"
        );
        assert!(is_own_clone_url(
            "http://127.0.0.1:8787/skills/marketplace.git",
            origin
        ));
        assert!(is_own_clone_url(
            "http://archestra_mkt_x@127.0.0.1:8787/skills/marketplace.git",
            origin
        ));
        assert_eq!(
            resolve_clone_url("/skills/marketplace.git", origin),
            "http://127.0.0.1:8787/skills/marketplace.git"
        );
        assert_eq!(
            resolve_clone_url(
                "http://someone@127.0.0.1:8787/skills/marketplace.git",
                origin
            ),
            "http://127.0.0.1:8787/skills/marketplace.git"
        );
        assert_eq!(
            resolve_clone_url("https://u@git.example/m.git", origin),
            "https://u@git.example/m.git"
        );
        for other in [
            "http://127.0.0.1:8788/skills/marketplace.git",
            "https://127.0.0.1:8787/skills/marketplace.git",
            "http://127.0.0.1:8787/skills/other.git",
            "http://127.0.0.1:8787/skills/marketplace.git?x=1",
            "not a url",
        ] {
            assert!(!is_own_clone_url(other, origin), "{other}");
        }
    }
}

//! Turning what the user pasted into a setup URL, and redeeming it over HTTPS.
//!
//! Redeeming spends the one-time token, so it is the last thing setup does before it
//! changes files, and a request is retried only when it cannot have reached the server.
//! The answer is a JSON payload, or, from today's Archestra servers, a bash script whose
//! values [`crate::script`] reads out without running any of it.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use thiserror::Error;
use url::Url;

use archestra_wire::{
    ApiErrorBody, DEVICE_NAME_HEADER, MAX_PAYLOAD_BYTES, PayloadError, SELF_REVOKE_PATH,
    SETUP_SCRIPT_PATH, Secret, SetupPayload, is_setup_token, redact_url,
};

use crate::script::{self, Ending, MAX_SCRIPT_BYTES, ScriptError};

/// Where a setup comes from: the deployment and the redemption URL with its token.
#[derive(Debug, Clone)]
pub struct SetupSource {
    /// The deployment's base, e.g. `https://archestra.example.com` (no trailing slash).
    pub origin: String,
    /// The redemption URL; it carries the token, so show it only through [`redact_url`].
    pub url: Secret,
}

/// Why the input is not a setup link.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    #[error("`{0}` is not a setup link or token")]
    Unrecognised(String),
    #[error("a bare token needs the deployment's address")]
    NeedServer,
    #[error("`{0}` is not an http or https address")]
    BadServer(String),
    #[error("the setup link uses plain http to `{0}`, which would send the token unencrypted")]
    PlainHttp(String),
}

fn shown(input: &str) -> String {
    let mut s: String = input.chars().filter(|c| !c.is_control()).take(80).collect();
    if input.chars().count() > 80 {
        s.push('…');
    }
    redact_url(&s)
}

/// Take the URL out of a pasted `curl -fsSL '<url>' | bash` line (nothing of it is run).
fn extract_url(input: &str) -> Option<&str> {
    let start = input.find("https://").or_else(|| input.find("http://"))?;
    let rest = &input[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '|' | ';' | '&' | ')'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_scheme(url: &Url, allow_http: bool) -> Result<(), InputError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(url) => Ok(()),
        "http" => Err(InputError::PlainHttp(
            url.host_str().unwrap_or_default().to_string(),
        )),
        _ => Err(InputError::BadServer(shown(url.as_str()))),
    }
}

/// Check a deployment's address and return it without a trailing slash.
pub fn parse_server(server: &str, allow_http: bool) -> Result<String, InputError> {
    let base = Url::parse(server.trim().trim_end_matches('/'))
        .map_err(|_| InputError::BadServer(shown(server)))?;
    if base.host_str().is_none() || base.query().is_some() || base.fragment().is_some() {
        return Err(InputError::BadServer(shown(server)));
    }
    check_scheme(&base, allow_http)?;
    Ok(base.as_str().trim_end_matches('/').to_string())
}

/// Work out the setup source from a link, a pasted `curl … | bash` line, or a bare token.
pub fn parse_input(
    input: &str,
    server: Option<&str>,
    allow_http: bool,
) -> Result<SetupSource, InputError> {
    let input = input.trim();
    if is_setup_token(input) {
        let server = server.ok_or(InputError::NeedServer)?;
        let origin = parse_server(server, allow_http)?;
        return Ok(SetupSource {
            url: Secret::new(format!("{origin}{SETUP_SCRIPT_PATH}{input}")),
            origin,
        });
    }

    let candidate = extract_url(input).ok_or_else(|| InputError::Unrecognised(shown(input)))?;
    let url = Url::parse(candidate).map_err(|_| InputError::Unrecognised(shown(input)))?;
    check_scheme(&url, allow_http)?;
    let path = url.path();
    let at = path
        .find(SETUP_SCRIPT_PATH)
        .ok_or_else(|| InputError::Unrecognised(shown(input)))?;
    let token = &path[at + SETUP_SCRIPT_PATH.len()..];
    if !is_setup_token(token) || url.query().is_some() || url.fragment().is_some() {
        return Err(InputError::Unrecognised(shown(input)));
    }
    let mut base = url.clone();
    base.set_path(&path[..at]);
    let origin = base.as_str().trim_end_matches('/').to_string();
    Ok(SetupSource {
        url: Secret::new(url.as_str()),
        origin,
    })
}

/// Why a redemption failed; each says what happened, and [`RedeemError::hint`] what to do.
#[derive(Debug, Error)]
pub enum RedeemError {
    #[error("the server does not know this setup link")]
    Unknown,
    #[error("this setup link has expired or was already used")]
    Spent,
    #[error("the server is limiting setup requests from this address{}", retry_after.map(|s| format!(" (try again in {s} seconds)")).unwrap_or_default())]
    RateLimited { retry_after: Option<u64> },
    #[error(
        "the server failed to answer the setup request (HTTP {status}){}",
        message_suffix(message)
    )]
    Server {
        status: u16,
        message: Option<String>,
    },
    #[error(
        "the server answered HTTP {status} to the setup request{}",
        message_suffix(message)
    )]
    Unexpected {
        status: u16,
        message: Option<String>,
    },
    #[error("the server redirected the setup request elsewhere (HTTP {status})")]
    Redirect { status: u16 },
    #[error("could not find the server `{host}` (DNS lookup failed)")]
    Dns { host: String },
    #[error("could not verify the server's TLS certificate: {detail}")]
    Tls { detail: String },
    #[error("could not connect to `{origin}`: {detail}")]
    Connect { origin: String, detail: String },
    #[error("the server did not answer within {secs} seconds")]
    Timeout { secs: u64 },
    #[error("the connection failed while reading the answer: {0}")]
    Read(String),
    #[error("the server's answer is larger than {max} bytes; it is not a setup payload")]
    TooLarge { max: usize },
    #[error("the server answered with `{0}`, not a JSON setup payload")]
    ContentType(String),
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("the server's setup payload is not valid JSON: {0}")]
    BadJson(String),
    #[error("the server's setup payload was refused: {0}")]
    Invalid(#[from] PayloadError),
}

fn message_suffix(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

impl RedeemError {
    /// Say what the user can do next.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RedeemError::Unknown => "check that the link was copied whole, or generate a new command on the Archestra Connect page".into(),
            RedeemError::Spent => "setup links work once and for 15 minutes; generate a new command on the Archestra Connect page".into(),
            RedeemError::RateLimited { .. } => "wait a minute, then run the same command again; the link was not used".into(),
            RedeemError::Server { .. } => "the link was not used up; run the same command again in a moment, and tell your Archestra administrator if it keeps failing".into(),
            RedeemError::Dns { .. } | RedeemError::Connect { .. } => "check the address and your network (and `HTTPS_PROXY` if you need a proxy); the link was not used".into(),
            RedeemError::Tls { .. } => "if your company uses its own certificate authority, install it in the system trust store or point `SSL_CERT_FILE` at it".into(),
            RedeemError::Timeout { .. } | RedeemError::Read(_) => "run the same command again; if the server used the link up, generate a new command on the Connect page".into(),
            RedeemError::Script(_) => "nothing was changed, and the link is used up; tell your Archestra administrator what the error says (archestra-connect reads the setup script, it never runs it)".into(),
            RedeemError::Invalid(_) | RedeemError::BadJson(_) | RedeemError::ContentType(_) | RedeemError::TooLarge { .. } => {
                "nothing was changed; report this to your Archestra administrator".into()
            }
            RedeemError::Redirect { .. } => "use the link exactly as the Connect page shows it".into(),
            RedeemError::Unexpected { .. } => return None,
        })
    }

    /// Tell whether the link is certainly spent, so offering the Connect page makes sense.
    pub fn link_is_spent(&self) -> bool {
        matches!(self, RedeemError::Spent | RedeemError::Unknown)
    }
}

/// Build the HTTP client: rustls with the system's roots, proxies from the environment,
/// connect and total timeouts, and no redirects (a redirect could carry the token away).
pub fn http_client(timeout: Duration) -> anyhow::Result<Client> {
    // The process-wide TLS provider; a second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder()
        .user_agent(concat!("archestra-connect/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(client)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn classify(err: reqwest::Error, source: &SetupSource, timeout: Duration) -> RedeemError {
    let chain = redact_url(&error_chain(&err));
    let chain = scrub_url(&chain, source);
    let lower = chain.to_ascii_lowercase();
    if err.is_timeout() {
        return RedeemError::Timeout {
            secs: timeout.as_secs(),
        };
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        let host = Url::parse(&source.origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        return RedeemError::Dns { host };
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        let detail = chain
            .rsplit(": ")
            .next()
            .unwrap_or(chain.as_str())
            .to_string();
        return RedeemError::Tls { detail };
    }
    if err.is_connect() {
        let detail = chain.rsplit(": ").next().unwrap_or("").to_string();
        return RedeemError::Connect {
            origin: source.origin.clone(),
            detail,
        };
    }
    RedeemError::Read(chain)
}

fn scrub_url(text: &str, source: &SetupSource) -> String {
    text.replace(source.url.expose(), &redact_url(source.url.expose()))
}

/// Read at most `max` bytes of the body; a longer one is refused, not cut.
fn read_limited(resp: Response, max: usize) -> Result<Vec<u8>, RedeemError> {
    let mut body = Vec::new();
    resp.take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| RedeemError::Read(e.to_string()))?;
    if body.len() > max {
        return Err(RedeemError::TooLarge { max });
    }
    Ok(body)
}

fn error_message(body: &[u8]) -> Option<String> {
    let parsed: ApiErrorBody = serde_json::from_slice(body).ok()?;
    let mut message: String = parsed
        .error
        .message
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    message = redact_url(&message);
    (!message.is_empty()).then_some(message)
}

/// A redeemed setup: the validated payload, and where it came from.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub payload: SetupPayload,
    /// The server answered with a setup script, which was read and never run.
    pub from_script: bool,
    /// The script's ending (sign-in and launch commands), when it had one.
    pub ending: Option<Ending>,
}

/// Redeem the token: one GET that spends it and answers the payload, validated.
///
/// Only a failure to connect is retried (twice, after a short pause): then no request
/// reached the server and the token cannot have been spent.
pub fn redeem(
    client: &Client,
    source: &SetupSource,
    device_name: &str,
    timeout: Duration,
) -> Result<Redeemed, RedeemError> {
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        let result = client
            .get(source.url.expose())
            .header(ACCEPT, "application/json, text/plain;q=0.5")
            .header(DEVICE_NAME_HEADER, device_name)
            .send();
        match result {
            Ok(resp) => break resp,
            Err(e) if e.is_connect() && !e.is_timeout() && attempt < 3 => {
                tracing::debug!(
                    attempt,
                    "connect failed before any request was sent; retrying"
                );
                std::thread::sleep(Duration::from_millis(400 * attempt));
            }
            Err(e) => return Err(classify(e, source, timeout)),
        }
    };

    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if (300..400).contains(&status) {
        return Err(RedeemError::Redirect { status });
    }
    // A script is larger than a payload; each is held to its own limit below.
    let body = read_limited(resp, MAX_SCRIPT_BYTES.max(MAX_PAYLOAD_BYTES))?;
    match status {
        200 => {}
        404 => return Err(RedeemError::Unknown),
        410 => return Err(RedeemError::Spent),
        429 => return Err(RedeemError::RateLimited { retry_after }),
        500..=599 => {
            return Err(RedeemError::Server {
                status,
                message: error_message(&body),
            });
        }
        _ => {
            return Err(RedeemError::Unexpected {
                status,
                message: error_message(&body),
            });
        }
    }

    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if mime == "text/plain" || mime == "text/x-shellscript" {
        let text = std::str::from_utf8(&body).map_err(|_| ScriptError::NotText)?;
        let parsed = script::parse_setup_script(text)?;
        return Ok(Redeemed {
            payload: parsed.payload,
            from_script: true,
            ending: parsed.ending,
        });
    }
    if mime != "application/json" {
        let mut shown: String = mime.chars().filter(|c| !c.is_control()).take(60).collect();
        if shown.is_empty() {
            shown = "no content type".into();
        }
        return Err(RedeemError::ContentType(shown));
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(RedeemError::TooLarge {
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let payload: SetupPayload =
        serde_json::from_slice(&body).map_err(|e| RedeemError::BadJson(e.to_string()))?;
    payload.validate()?;
    Ok(Redeemed {
        payload,
        from_script: false,
        ending: None,
    })
}

/// Revoke this machine's key on the server (`DELETE /api/virtual-keys/self`).
///
/// A key the server no longer knows counts as revoked.
pub fn revoke_key(client: &Client, origin: &str, key: &Secret) -> Result<(), String> {
    let resp = client
        .delete(format!("{origin}{SELF_REVOKE_PATH}"))
        .header(AUTHORIZATION, format!("Bearer {}", key.expose()))
        .send()
        .map_err(|e| redact_url(&error_chain(&e)))?;
    let status = resp.status().as_u16();
    match status {
        200..=299 | 401 | 404 | 410 => Ok(()),
        _ => {
            let body = read_limited(resp, MAX_PAYLOAD_BYTES).unwrap_or_default();
            Err(format!(
                "the server answered HTTP {status}{}",
                message_suffix(&error_message(&body))
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "archestra_con_AbCdEfGhIjKlMnOpQrStUvWxYz012345";

    #[test]
    fn accepts_the_link_a_pasted_curl_line_and_a_bare_token() {
        let link = format!("https://a.example/api/connection-setups/script/{TOKEN}");
        let s = parse_input(&link, None, false).unwrap();
        assert_eq!(s.origin, "https://a.example");
        assert_eq!(s.url.expose(), link);

        let pasted = format!("curl -fsSL '{link}' | bash");
        assert_eq!(
            parse_input(&pasted, None, false).unwrap().url.expose(),
            link
        );

        let s = parse_input(TOKEN, Some("https://a.example/"), false).unwrap();
        assert_eq!(s.url.expose(), link);
        assert_eq!(
            parse_input(TOKEN, None, false).unwrap_err(),
            InputError::NeedServer
        );
    }

    #[test]
    fn keeps_a_deployment_path_prefix() {
        let link = format!("https://a.example/archestra/api/connection-setups/script/{TOKEN}");
        assert_eq!(
            parse_input(&link, None, false).unwrap().origin,
            "https://a.example/archestra"
        );
    }

    #[test]
    fn refuses_plain_http_except_to_loopback() {
        let remote = format!("http://a.example/api/connection-setups/script/{TOKEN}");
        assert!(matches!(
            parse_input(&remote, None, false),
            Err(InputError::PlainHttp(_))
        ));
        assert!(parse_input(&remote, None, true).is_ok());
        for host in ["127.0.0.1:8787", "localhost", "[::1]:9"] {
            let local = format!("http://{host}/api/connection-setups/script/{TOKEN}");
            assert!(parse_input(&local, None, false).is_ok(), "{host}");
        }
    }

    #[test]
    fn refuses_other_shapes_without_echoing_the_token() {
        for bad in [
            "hello",
            "https://a.example/other/path",
            "ftp://a.example/api/connection-setups/script/x",
            &format!("https://a.example/api/connection-setups/script/{TOKEN}?x=1"),
            &format!("https://a.example/api/connection-setups/script/{TOKEN}$(id)"),
        ] {
            let err = parse_input(bad, None, false).unwrap_err();
            assert!(!err.to_string().contains("AbCdEfGhIjKl"), "{err}");
        }
    }
}

//! Browser approval: connect a machine without a setup link. The server hands out a user
//! code and an approval page; once the user approves there, `archestra_con_<deviceCode>`
//! redeems like the token of a setup link.
//!
//! The steps, in order:
//! 1. `POST /api/client-connections` with the client id, the platform and the machine's name.
//! 2. Show the user code and the approval page's address, and open the page in the browser
//!    unless told not to (the address is printed either way: a browser may not open).
//! 3. Poll `POST /api/client-connections/poll` every `interval` seconds (clamped to 1..=30)
//!    until the request is approved, denied or expired, or its `expiresAt` has passed.
//!    Ctrl-C ends the wait through [`crate::interrupt`]; nothing has changed by then.
//! 4. Return the setup source for `archestra_con_<deviceCode>`.
//!
//! The device code is the machine's proof; it is never printed or logged.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::RETRY_AFTER;
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use archestra_wire::{
    ApiErrorBody, CLIENT_CONNECTIONS_PATH, CLIENT_CONNECTIONS_POLL_PATH, CLIENT_ID_CLAUDE_CODE,
    ConnectionStatus, PollConnectionRequest, PollConnectionResponse, SETUP_SCRIPT_PATH, Secret,
    StartConnectionRequest, StartedConnection, device_setup_token, is_device_code, is_user_code,
    redact_url,
};

use crate::exit::{FAILED, Failure};
use crate::printer::Printer;
use crate::redeem::SetupSource;

/// Shortest and longest wait between two polls, whatever the server asks for.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(30);

/// Longest approval window believed; a later `expiresAt` is treated as this.
const MAX_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Polls that may fail in a row (network, 5xx) before the wait gives up.
const MAX_POLL_FAILURES: u32 = 3;

/// How to run the approval.
#[derive(Debug, Clone)]
pub struct Options {
    /// Open the approval page in the browser; otherwise only print its address.
    pub open_browser: bool,
    /// The machine's name, shown on the approval page.
    pub device_name: String,
}

/// Why browser approval did not end in a setup token.
#[derive(Debug, Error)]
pub enum ApprovalError {
    #[error("the request was denied in the browser; nothing was changed")]
    Denied,
    #[error(
        "the approval request expired after {}; nothing was changed",
        shown_duration(window)
    )]
    Expired { window: Duration },
    #[error("`{origin}` does not offer browser approval (it answered HTTP 404)")]
    Unsupported { origin: String },
    #[error("the server is limiting connection requests from this address{}", retry_after.map(|s| format!(" (try again in {s} seconds)")).unwrap_or_default())]
    RateLimited { retry_after: Option<u64> },
    #[error("the server answered HTTP {status} to the connection request{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        status: u16,
        message: Option<String>,
    },
    #[error(
        "the server's answer to the connection request is not what this installer expects: {0}"
    )]
    BadAnswer(String),
    #[error("could not reach `{origin}`: {detail}")]
    Unreachable { origin: String, detail: String },
}

impl ApprovalError {
    /// Say what the user can do next.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            ApprovalError::Denied => "if that was a mistake, run the same command again",
            ApprovalError::Expired { .. } => {
                "run the same command again, and approve the request in the browser before it expires"
            }
            ApprovalError::Unsupported { .. } => {
                "generate a setup link on the Archestra Connect page and run `archestra-connect setup '<link>'`"
            }
            ApprovalError::RateLimited { .. } => "wait a minute, then run the same command again",
            ApprovalError::Status { status, .. } if *status >= 500 => {
                "run the same command again in a moment, and tell your Archestra administrator if it keeps failing"
            }
            ApprovalError::Unreachable { .. } => {
                "check the address and your network (and `HTTPS_PROXY` if you need a proxy)"
            }
            ApprovalError::BadAnswer(_) => {
                "nothing was changed; report this to your Archestra administrator"
            }
            ApprovalError::Status { .. } => return None,
        })
    }

    /// Turn the error into a command failure with its hint.
    pub fn into_failure(self) -> Failure {
        let hint = self.hint();
        let failure = Failure::new(FAILED, self);
        match hint {
            Some(hint) => failure.hint(hint),
            None => failure,
        }
    }
}

fn shown_duration(d: &Duration) -> String {
    let secs = d.as_secs();
    match secs {
        120.. => format!("{} minutes", secs.div_ceil(60)),
        1 => "1 second".into(),
        _ => format!("{secs} seconds"),
    }
}

/// Return this machine's name, as the server shows it next to the request and the key.
pub fn device_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Return the platform name the server expects.
pub fn platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "macos",
        "windows" => "windows",
        _ => "linux",
    }
}

/// A started request, checked.
struct Request {
    device_code: Secret,
    user_code: String,
    page: String,
    interval: Duration,
    /// How long the server keeps the request open, to the second.
    window: Duration,
    /// How long to wait at most: the window, kept within sane bounds.
    wait_at_most: Duration,
}

/// Ask the server for a connection, have the user approve it in the browser, and return
/// the setup source that redeems it.
pub fn approve_in_browser(
    client: &Client,
    origin: &str,
    options: &Options,
    printer: &Printer,
) -> Result<SetupSource, ApprovalError> {
    let request = start(client, origin, &options.device_name)?;

    printer.note(&format!(
        "\nApprove this machine (`{}`) in your browser. Check that the page shows this code:\n\n    {}\n",
        options.device_name, request.user_code
    ));
    printer.note(&format!("  Approval page: {}", request.page));
    if options.open_browser {
        match open::that_detached(&request.page) {
            Ok(()) => printer.note("  (opening it in your browser)"),
            Err(e) => {
                tracing::debug!(error = %e, "no browser opener worked");
                printer.warn("the browser did not open; open the approval page above yourself");
            }
        }
    }
    printer.note("");

    wait(client, origin, &request, printer)?;
    printer.done("Approved in the browser");
    Ok(SetupSource {
        origin: origin.to_string(),
        url: Secret::new(format!(
            "{origin}{SETUP_SCRIPT_PATH}{}",
            device_setup_token(&request.device_code).expose()
        )),
    })
}

fn start(client: &Client, origin: &str, device_name: &str) -> Result<Request, ApprovalError> {
    let body = StartConnectionRequest {
        client_id: CLIENT_ID_CLAUDE_CODE.to_string(),
        platform: platform().to_string(),
        device_name: Some(device_name.to_string()),
    };
    let resp = client
        .post(format!("{origin}{CLIENT_CONNECTIONS_PATH}"))
        .json(&body)
        .send()
        .map_err(|e| unreachable_error(origin, &e))?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
        return Err(ApprovalError::Unsupported {
            origin: origin.to_string(),
        });
    }
    let started: StartedConnection = json_answer(origin, resp)?;
    let started_at = OffsetDateTime::now_utc();

    if !is_device_code(started.device_code.expose()) {
        return Err(ApprovalError::BadAnswer(
            "`deviceCode` does not have the shape of a device code".into(),
        ));
    }
    if !is_user_code(&started.user_code) {
        return Err(ApprovalError::BadAnswer(
            "`userCode` is not of the form XXXX-XXXX".into(),
        ));
    }
    let page = approval_page(origin, &started.verification_path)?;
    let expires = OffsetDateTime::parse(&started.expires_at, &Rfc3339)
        .map_err(|_| ApprovalError::BadAnswer("`expiresAt` is not an RFC 3339 time".into()))?;
    let window = Duration::try_from(expires - started_at).unwrap_or_default();
    let window = Duration::from_secs(window.as_secs_f64().round() as u64);
    // A clock that disagrees with the server's must not end the wait early; the server
    // says `expired` itself, so a short or past window is stretched to a few polls.
    let wait_at_most = window.clamp(Duration::from_secs(5), MAX_WINDOW);
    let interval = Duration::from_secs(started.interval).clamp(MIN_INTERVAL, MAX_INTERVAL);
    tracing::debug!(
        interval = interval.as_secs(),
        window = window.as_secs(),
        "connection request started"
    );
    Ok(Request {
        device_code: started.device_code,
        user_code: started.user_code,
        page,
        interval,
        window,
        wait_at_most,
    })
}

/// Join the verification path to the origin, refusing anything that leaves the deployment.
fn approval_page(origin: &str, path: &str) -> Result<String, ApprovalError> {
    let bad = |why: &str| ApprovalError::BadAnswer(format!("`verificationPath` {why}"));
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(bad("is not a path on the deployment"));
    }
    if path.len() > 2048
        || path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "\"'`\\<>{}|^$".contains(c))
    {
        return Err(bad("holds characters no approval address has"));
    }
    let page = format!("{origin}{path}");
    let (Ok(base), Ok(joined)) = (Url::parse(origin), Url::parse(&page)) else {
        return Err(bad("does not make an address with the deployment's origin"));
    };
    if base.scheme() != joined.scheme()
        || base.host_str() != joined.host_str()
        || base.port_or_known_default() != joined.port_or_known_default()
    {
        return Err(bad("points away from the deployment"));
    }
    Ok(page)
}

/// Poll until the request is decided.
fn wait(
    client: &Client,
    origin: &str,
    request: &Request,
    printer: &Printer,
) -> Result<(), ApprovalError> {
    let spinner = printer.spinner(&format!(
        "Waiting for approval in the browser (code {})",
        request.user_code
    ));
    let result = poll_until_decided(client, origin, request);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result
}

fn poll_until_decided(
    client: &Client,
    origin: &str,
    request: &Request,
) -> Result<(), ApprovalError> {
    let started = Instant::now();
    // One more interval than the window: the server's `expired` is the answer we want.
    let deadline = started + request.wait_at_most + request.interval;
    let mut interval = request.interval;
    let mut failures = 0;
    loop {
        std::thread::sleep(interval);
        match poll(client, origin, &request.device_code) {
            Ok(ConnectionStatus::Pending) => failures = 0,
            Ok(ConnectionStatus::Approved) => return Ok(()),
            Ok(ConnectionStatus::Denied) => return Err(ApprovalError::Denied),
            Ok(ConnectionStatus::Expired) => {
                return Err(ApprovalError::Expired {
                    window: request.window,
                });
            }
            Err(ApprovalError::RateLimited { retry_after }) => {
                let wait = retry_after.map_or(interval * 2, Duration::from_secs);
                interval = wait.clamp(MIN_INTERVAL, MAX_INTERVAL);
                tracing::debug!(
                    secs = interval.as_secs(),
                    "polling too fast for the server; slowing down"
                );
            }
            Err(
                e @ (ApprovalError::Unreachable { .. }
                | ApprovalError::Status { status: 500.., .. }),
            ) => {
                failures += 1;
                tracing::debug!(failures, error = %e, "a poll failed");
                if failures >= MAX_POLL_FAILURES {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(ApprovalError::Expired {
                window: request.window,
            });
        }
    }
}

fn poll(
    client: &Client,
    origin: &str,
    device_code: &Secret,
) -> Result<ConnectionStatus, ApprovalError> {
    let resp = client
        .post(format!("{origin}{CLIENT_CONNECTIONS_POLL_PATH}"))
        .json(&PollConnectionRequest {
            device_code: device_code.clone(),
        })
        .send()
        .map_err(|e| unreachable_error(origin, &e))?;
    let answer: PollConnectionResponse = json_answer(origin, resp)?;
    Ok(answer.status)
}

/// Read a 200 answer as JSON, or the error a failed answer stands for.
fn json_answer<T: serde::de::DeserializeOwned>(
    origin: &str,
    resp: reqwest::blocking::Response,
) -> Result<T, ApprovalError> {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = resp.bytes().map_err(|e| unreachable_error(origin, &e))?;
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(ApprovalError::RateLimited { retry_after });
    }
    if !status.is_success() {
        let message = serde_json::from_slice::<ApiErrorBody>(&body)
            .ok()
            .map(|b| {
                b.error
                    .message
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(300)
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty());
        return Err(ApprovalError::Status {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&body)
        .map_err(|_| ApprovalError::BadAnswer("the body is not the JSON this route answers".into()))
}

fn unreachable_error(origin: &str, err: &reqwest::Error) -> ApprovalError {
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if err.is_timeout() {
        detail = "the server did not answer in time".into();
    }
    ApprovalError::Unreachable {
        origin: origin.to_string(),
        detail: redact_url(&detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approval_page_stays_on_the_deployment() {
        let origin = "https://a.example";
        let ok = "/connection?clientId=claude-code&platform=linux&connectRequest=abc";
        assert_eq!(approval_page(origin, ok).unwrap(), format!("{origin}{ok}"));
        for bad in [
            "//evil.example/x",
            "https://evil.example/",
            "/x\ny",
            "/x y",
            "/$(id)",
            "@evil.example/",
        ] {
            assert!(approval_page(origin, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(shown_duration(&Duration::from_secs(600)), "10 minutes");
        assert_eq!(shown_duration(&Duration::from_secs(3)), "3 seconds");
    }

    #[test]
    fn the_platform_is_one_the_server_knows() {
        assert!(["linux", "macos", "windows"].contains(&platform()));
    }
}

//! `git http-backend` as CGI: one process per request, the request body streamed to its
//! stdin and its stdout streamed back as the answer.
//!
//! Each process is bounded: a slot from a fixed pool, a cap on the request body, a time limit
//! for the CGI headers and one for the whole request. A client that goes away, a body over
//! the cap and a time limit all kill the process.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Largest request body passed to git; an upload-pack request lists wanted and known
/// commits, a few kilobytes for a marketplace.
pub const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;

/// How long git may take to start answering.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one request may take in all; Claude Code gives a whole clone 120 seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a request waits for a free slot before the answer is 503.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Largest block of CGI headers read.
const MAX_HEAD: usize = 16 * 1024;

/// Most stderr kept from one process, for the log.
const MAX_STDERR: usize = 4096;

/// Size of the blocks the answer is streamed in.
const CHUNK: usize = 32 * 1024;

/// Why `git http-backend` gave no answer.
#[derive(Debug, Error)]
pub enum CgiError {
    #[error("every git process slot stayed busy for {} seconds", SLOT_WAIT.as_secs())]
    Busy,
    #[error("the request body is larger than {MAX_REQUEST_BODY} bytes")]
    TooLarge,
    #[error("could not start `git http-backend`")]
    Spawn(#[source] io::Error),
    #[error("`git http-backend` sent no headers within {} seconds", HEAD_TIMEOUT.as_secs())]
    TimedOut,
    #[error("`git http-backend` sent malformed headers: {0}")]
    BadHead(String),
}

impl CgiError {
    /// Return the status that answers this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            CgiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            CgiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CgiError::Spawn(_) | CgiError::BadHead(_) => StatusCode::BAD_GATEWAY,
            CgiError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// What the CGI needs to know of one request.
#[derive(Debug)]
pub struct CgiRequest<'a> {
    /// `GIT_PROJECT_ROOT`: the folder holding the served repository.
    pub project_root: &'a Path,
    pub method: &'a str,
    /// Path below the project root, e.g. `/marketplace.git/info/refs`.
    pub path_info: String,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
}

/// Run `git http-backend` for `request` and answer with what it prints.
pub async fn run(
    slots: &Arc<Semaphore>,
    request: CgiRequest<'_>,
    body: Body,
) -> Result<Response, CgiError> {
    let permit = tokio::time::timeout(SLOT_WAIT, Arc::clone(slots).acquire_owned())
        .await
        .map_err(|_| CgiError::Busy)?
        .map_err(|_| CgiError::Busy)?;
    let content_length = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if content_length.is_some_and(|len| len > MAX_REQUEST_BODY as u64) {
        return Err(CgiError::TooLarge);
    }

    let mut child = command(&request, content_length)
        .spawn()
        .map_err(CgiError::Spawn)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take();

    let abort = Arc::new(Notify::new());
    let overflowed = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    tokio::spawn(pipe_body(
        body,
        stdin,
        Arc::clone(&abort),
        Arc::clone(&overflowed),
    ));
    tokio::spawn(supervise(
        child,
        stderr,
        Arc::clone(&abort),
        Arc::clone(&killed),
        permit,
    ));

    let mut reader = BufReader::new(stdout);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut reader)).await {
        Ok(Ok(head)) => parse_head(&head),
        Ok(Err(err)) => Err(CgiError::BadHead(err.to_string())),
        Err(_) => Err(CgiError::TimedOut),
    };
    let (status, headers) = match head {
        Ok(head) => head,
        Err(err) => {
            abort.notify_one();
            return Err(if overflowed.load(Ordering::SeqCst) {
                CgiError::TooLarge
            } else {
                err
            });
        }
    };

    let body = CgiBody {
        reader,
        buf: vec![0; CHUNK].into_boxed_slice(),
        abort,
        killed,
        finished: false,
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Build the `git http-backend` command: CGI variables only, no configuration of the host.
fn command(request: &CgiRequest<'_>, content_length: Option<u64>) -> Command {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256 && !v.chars().any(char::is_control))
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", request.project_root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env(
            "GIT_CONFIG_GLOBAL",
            if cfg!(windows) { "NUL" } else { "/dev/null" },
        )
        .env("GIT_PROJECT_ROOT", request.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", request.method)
        .env("PATH_INFO", &request.path_info)
        .env("QUERY_STRING", request.query)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Without a length, git reads the body up to its end, as a chunked request needs.
    if let Some(len) = content_length {
        command.env("CONTENT_LENGTH", len.to_string());
    }
    if let Some(value) = header("content-type") {
        command.env("CONTENT_TYPE", value);
    }
    // git compresses large requests and says so; the backend inflates them itself.
    if let Some(value) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", value);
    }
    // Protocol v2 is asked for in this header and reaches git through the environment.
    if let Some(value) = header("git-protocol") {
        command.env("GIT_PROTOCOL", value);
    }
    command
}

/// Copy the request body to git's stdin, up to [`MAX_REQUEST_BODY`] bytes.
async fn pipe_body(
    body: Body,
    stdin: Option<ChildStdin>,
    abort: Arc<Notify>,
    overflowed: Arc<AtomicBool>,
) {
    let Some(mut stdin) = stdin else { return };
    let mut body = body;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client went away in the middle of its request.
            abort.notify_one();
            return;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > MAX_REQUEST_BODY {
            overflowed.store(true, Ordering::SeqCst);
            abort.notify_one();
            return;
        }
        if stdin.write_all(&data).await.is_err() {
            // git stopped reading; its answer says why.
            return;
        }
    }
    let _ = stdin.shutdown().await;
}

/// Wait for the process, kill it on abort or when the request's time is up, and log how it
/// ended; the slot is released when this returns.
async fn supervise(
    mut child: Child,
    stderr: Option<ChildStderr>,
    abort: Arc<Notify>,
    killed: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
) {
    let stderr = tokio::spawn(read_capped(stderr));
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let status = tokio::select! {
        status = child.wait() => Some(status),
        () = abort.notified() => None,
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(limit = ?REQUEST_TIMEOUT, "a git request ran out of time; stopping it");
            None
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            killed.store(true, Ordering::SeqCst);
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let stderr = stderr.await.unwrap_or_default();
    match status {
        Ok(status) if status.success() => {
            tracing::debug!("git http-backend finished");
        }
        Ok(status) if killed.load(Ordering::SeqCst) => {
            tracing::debug!(%status, "git http-backend stopped early");
        }
        Ok(status) => {
            tracing::warn!(%status, stderr = %stderr.trim(), "git http-backend failed");
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not wait for git http-backend");
        }
    }
}

async fn read_capped(stderr: Option<ChildStderr>) -> String {
    let Some(stderr) = stderr else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = stderr.take(MAX_STDERR as u64).read_to_end(&mut kept).await;
    String::from_utf8_lossy(&kept).into_owned()
}

/// Read the CGI header block, up to and without the blank line that ends it.
async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the output ended before the blank line after the headers",
            ));
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok(head);
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the headers are longer than {MAX_HEAD} bytes"),
            ));
        }
    }
}

/// Turn a CGI header block into a status and response headers; `Status:` sets the status,
/// which is 200 without one.
pub fn parse_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), CgiError> {
    let bad = |what: &str| CgiError::BadHead(what.to_string());
    let text = std::str::from_utf8(head).map_err(|_| bad("the headers are not UTF-8"))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("a header line has no `:`"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or_else(|| bad("the `Status` line holds no status code"))?;
            continue;
        }
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("a header name is invalid"))?;
        // The server frames the answer itself.
        if matches!(name.as_str(), "connection" | "transfer-encoding") {
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|_| bad("a header value is invalid"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

/// The answer's body: git's stdout after the headers, block by block.
struct CgiBody {
    reader: BufReader<ChildStdout>,
    buf: Box<[u8]>,
    abort: Arc<Notify>,
    /// Set when the process was killed, so that the end of its output is an error.
    killed: Arc<AtomicBool>,
    finished: bool,
}

impl http_body::Body for CgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.reader).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                this.finished = true;
                this.abort.notify_one();
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                this.finished = true;
                if this.killed.load(Ordering::SeqCst) {
                    // A cut-off pack must not look complete to the client.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "git http-backend was stopped before it finished",
                    ))));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

impl Drop for CgiBody {
    fn drop(&mut self) {
        if !self.finished {
            // The client stopped reading; nothing is waiting for the rest of the output.
            self.abort.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_headers_give_the_status_and_the_answer_headers() {
        let head = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT\r\n";
        let (status, headers) = parse_head(head).unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["content-type"], "text/plain");
        assert!(headers.contains_key("expires"));

        let (status, headers) =
            parse_head(b"Content-Type: application/x-git-upload-pack-advertisement\n").unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.len(), 1);

        let (_, headers) = parse_head(b"Connection: close\nTransfer-Encoding: chunked\n").unwrap();
        assert!(headers.is_empty());
    }

    #[test]
    fn malformed_cgi_headers_are_refused() {
        for head in [
            &b"no colon here\n"[..],
            b"Status: teapot\n",
            b"Bad Name: x\n",
            b"\xff\xfe: x\n",
        ] {
            assert!(parse_head(head).is_err(), "{head:?}");
        }
    }

    #[tokio::test]
    async fn the_head_ends_at_the_first_blank_line_and_the_rest_stays_unread() {
        let data = b"Content-Type: x\r\n\r\nPACKDATA".to_vec();
        let mut reader = BufReader::new(&data[..]);
        let head = read_head(&mut reader).await.unwrap();
        assert_eq!(head, b"Content-Type: x\r\n");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"PACKDATA");

        let mut truncated = BufReader::new(&b"Content-Type: x\r\n"[..]);
        assert!(read_head(&mut truncated).await.is_err());
    }
}

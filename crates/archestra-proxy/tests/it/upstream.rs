//! A mock Anthropic upstream on 127.0.0.1 that records what it received.
//!
//! The `mode` query parameter picks the answer: `json` (default), `sse`, `sse-gated` (stops
//! after the first delta until the test opens the gate), `endless` (a delta every 20 ms until
//! the connection closes), `hang` (no answer for a minute) and `overloaded` (529).

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The fixed JSON reply and the usage it reports.
pub const JSON_REPLY: &str = r#"{"id":"msg_json","type":"message","role":"assistant","model":"claude-mock-json","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":7}}"#;

/// The body of the 529 answer, which must reach the client unchanged.
pub const OVERLOADED_REPLY: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, exactly as they arrived.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// What the mock shares with the test.
#[derive(Debug)]
pub struct Shared {
    pub seen: Mutex<Vec<Seen>>,
    /// Request body bytes received so far, counted as they arrive.
    pub body_bytes: AtomicUsize,
    /// Permits that let a gated stream go on past its first delta.
    pub gate: Semaphore,
    /// Set once an endless stream found its connection closed.
    pub stream_cancelled: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            seen: Mutex::default(),
            body_bytes: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            stream_cancelled: AtomicBool::new(false),
        }
    }
}

/// The mock server, on its own thread and runtime; stopped when dropped.
pub struct MockUpstream {
    pub origin: String,
    pub shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let shared = Arc::new(Shared::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stop.await;
                });
                // Streams that never end must not hold the shutdown up.
                let _ = tokio::time::timeout(Duration::from_secs(60), serving.into_future()).await;
            });
            runtime.shutdown_background();
        });
        MockUpstream {
            origin: format!("http://{addr}"),
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Return every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, mut body) = request.into_parts();
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            shared.body_bytes.fetch_add(data.len(), Ordering::SeqCst);
            received.extend_from_slice(data);
        }
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: received,
    });

    let mode = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "json".into());
    match mode.as_str() {
        "sse" => sse(shared, false),
        "sse-gated" => sse(shared, true),
        "endless" => endless(shared),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            json(StatusCode::OK, JSON_REPLY)
        }
        "overloaded" => json(StatusCode::from_u16(529).unwrap(), OVERLOADED_REPLY),
        _ => json(StatusCode::OK, JSON_REPLY),
    }
}

fn json(status: StatusCode, body: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("request-id", "req_mock_1")
        .body(Body::from(body))
        .unwrap()
}

/// Format one SSE event.
pub fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Format a text delta event.
pub fn delta(text: &str) -> Bytes {
    event(
        "content_block_delta",
        &format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#
        ),
    )
}

fn sse(shared: Arc<Shared>, gated: bool) -> Response {
    let (events, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let head = [
            event(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_sse","type":"message","role":"assistant","model":"claude-mock-sse","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":4,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
            ),
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            delta("first"),
        ];
        for chunk in head {
            if events.send(chunk).await.is_err() {
                return;
            }
        }
        if gated {
            // Closed only when the test ends; an error means the same: go on.
            if let Ok(permit) = shared.gate.acquire().await {
                permit.forget();
            }
        }
        let tail = [
            delta("second"),
            event(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            event(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            event("message_stop", r#"{"type":"message_stop"}"#),
        ];
        for chunk in tail {
            if events.send(chunk).await.is_err() {
                return;
            }
        }
    });
    stream_response(rx)
}

fn endless(shared: Arc<Shared>) -> Response {
    let (events, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let started = Instant::now();
        // Bounded so that a proxy that never cancels cannot keep this task for ever.
        while started.elapsed() < Duration::from_secs(120) {
            if events.send(delta("tick")).await.is_err() {
                shared.stream_cancelled.store(true, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::new(ChannelBody { rx }))
        .unwrap()
}

/// A response body fed from a channel, one chunk per message.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// Wait until `condition` holds; the bound only keeps a broken proxy from hanging the test.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

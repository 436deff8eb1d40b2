//! A mock Anthropic Messages API on 127.0.0.1 for end-to-end runs of the real Claude Code
//! CLI: it records every request and answers `POST …/messages` with a short reply, as an SSE
//! stream when the request asks for one and as JSON otherwise.
//!
//! Plain threads and HTTP/1.1 with keep-alive are enough here: the only client is the
//! companion proxy, which sends `Content-Length` or chunked bodies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The text of the mock's reply, which `claude -p` should print.
pub const REPLY_TEXT: &str = "Hello from the mock upstream";

/// The model the mock reports.
pub const MODEL: &str = "claude-mock-e2e";

/// Token counts the mock reports: input, output, cache creation, cache read.
pub const TOKENS: (u64, u64, u64, u64) = (21, 9, 5, 40);

/// One request as the mock received it; header names are lowercase.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// Return the first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|values| values.first())
            .map(String::as_str)
    }
}

/// The running mock; stops accepting when dropped.
pub struct MockUpstream {
    pub origin: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || serve_connection(stream, &seen));
                }
            })
        };
        MockUpstream {
            origin,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Return every request received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.origin.trim_start_matches("http://"));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_connection(stream: TcpStream, seen: &Mutex<Vec<SeenRequest>>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let answer = answer(&request);
        seen.lock().unwrap().push(request);
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// Read one request; `None` when the connection closed or sent something unreadable.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<SeenRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers
            .entry(name.trim().to_ascii_lowercase())
            .or_default()
            .push(value.trim().to_string());
    }

    let first = |name: &str| headers.get(name).and_then(|v| v.first()).cloned();
    let mut body = Vec::new();
    if first("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = first("content-length") {
        let mut buf = vec![0; length.parse().ok()?];
        reader.read_exact(&mut buf).ok()?;
        body = buf;
    }
    Some(SeenRequest {
        method,
        target,
        headers,
        body,
    })
}

fn answer(request: &SeenRequest) -> Vec<u8> {
    if request.method == "HEAD" {
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    }
    let path = request.target.split('?').next().unwrap_or("");
    if request.method != "POST" || !path.ends_with("/messages") {
        let body =
            r#"{"type":"error","error":{"type":"not_found_error","message":"not in the mock"}}"#;
        return response("404 Not Found", "application/json", body);
    }
    let (input, output, cache_write, cache_read) = TOKENS;
    let usage = format!(
        r#"{{"input_tokens":{input},"cache_creation_input_tokens":{cache_write},"cache_read_input_tokens":{cache_read},"output_tokens":{output}}}"#
    );
    let streaming = String::from_utf8_lossy(&request.body).contains(r#""stream":true"#);
    if !streaming {
        let body = format!(
            r#"{{"id":"msg_mock","type":"message","role":"assistant","model":"{MODEL}","content":[{{"type":"text","text":"{REPLY_TEXT}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{usage}}}"#
        );
        return response("200 OK", "application/json", &body);
    }
    let start_usage = format!(
        r#"{{"input_tokens":{input},"cache_creation_input_tokens":{cache_write},"cache_read_input_tokens":{cache_read},"output_tokens":1}}"#
    );
    let events = [
        (
            "message_start",
            format!(
                r#"{{"type":"message_start","message":{{"id":"msg_mock","type":"message","role":"assistant","model":"{MODEL}","content":[],"stop_reason":null,"stop_sequence":null,"usage":{start_usage}}}}}"#
            ),
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
                .to_string(),
        ),
        (
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{REPLY_TEXT}"}}}}"#
            ),
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#.to_string(),
        ),
        (
            "message_delta",
            format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{output}}}}}"#
            ),
        ),
        ("message_stop", r#"{"type":"message_stop"}"#.to_string()),
    ];
    let body: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    response("200 OK", "text/event-stream", &body)
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nrequest-id: req_mock\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

//! Clients that misbehave: slow or endless headers, oversized heads and bodies, more clients
//! than connection slots, and thousands of short connections. Each test checks that the
//! server refuses or drops the offender and goes on answering everyone else.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use archestra_proxy::BackgroundServer;
use archestra_wire::{
    AuthMode, CLIENT_CONNECTIONS_PATH, CLIENT_CONNECTIONS_POLL_PATH, HEALTH_PATH, SETUPS_PATH,
    Secret,
};

use crate::common::*;
use crate::process::ServeProcess;
use crate::upstream::{MockUpstream, wait_until};

const ADMIN_TOKEN: &str = "abuse-test-admin-token-0123456789";

/// A body far larger than any route's limit.
const HUGE: usize = 50 * 1024 * 1024;

/// A complete health request on a connection the server closes after answering.
fn health_request() -> String {
    format!("GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(addr).unwrap();
    // Only a bound on a broken server; no test waits this long when the server is right.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket
}

/// Read until the server closes the connection (a reset counts as closed) and return what
/// it sent; fail if it keeps the connection open.
fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept the connection open")
            }
            Err(_) => return answer,
        }
    }
}

/// Read one response with a `Content-Length`, leaving the connection open; return its
/// status and body.
fn read_response(socket: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map(|value| value.trim().parse().unwrap())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = status_of(&got).unwrap();
                return (status, got[end + 4..end + 4 + length].to_vec());
            }
        }
        let n = socket.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the connection closed before a whole response arrived"
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// Return the status of a raw HTTP/1.1 answer, if it has one.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// Send one request on a new connection and return the status of the answer.
fn status_of_request(addr: SocketAddr, request: &str) -> Option<u16> {
    let mut socket = connect(addr);
    socket.write_all(request.as_bytes()).unwrap();
    status_of(&read_until_closed(&mut socket))
}

#[test]
fn slow_clients_are_dropped_after_the_header_timeout_while_others_are_served() {
    const STALLED: usize = 32;
    const TRICKLING: usize = 8;
    const SERVED: usize = 50;
    let scratch = Scratch::new();
    let mut config = config(&scratch.db());
    config.header_timeout = Duration::from_millis(300);
    let server = BackgroundServer::start(config).unwrap();
    let addr = server.addr();

    // Clients that send half a header line and then nothing.
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut socket = connect(addr);
            socket
                .write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag")
                .unwrap();
            socket
        })
        .collect();
    // Clients that send one more header byte every 20 ms, which a per-read timeout would
    // never catch; each returns whether the server cut it off.
    let trickling: Vec<_> = (0..TRICKLING)
        .map(|_| {
            thread::spawn(move || {
                let mut socket = connect(addr);
                let head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
                let bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
                let started = Instant::now();
                for byte in bytes {
                    if socket.write_all(&[byte]).is_err() {
                        return true;
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                unreachable!("the byte source never ends")
            })
        })
        .collect();

    // Meanwhile, ordinary clients get their answers.
    for _ in 0..SERVED {
        assert_eq!(status_of_request(addr, &health_request()), Some(200));
    }

    for socket in &mut stalled {
        let answer = read_until_closed(socket);
        assert!(
            matches!(status_of(&answer), None | Some(408)),
            "a stalled client got {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    for client in trickling {
        assert!(
            client.join().unwrap(),
            "a trickling client was still connected after 20 s"
        );
    }
    // The server is still healthy afterwards.
    assert_eq!(status_of_request(addr, &health_request()), Some(200));
}

#[test]
fn clients_beyond_the_connection_limit_wait_until_a_slot_frees() {
    let scratch = Scratch::new();
    let mut config = config(&scratch.db());
    config.max_connections = 2;
    let server = BackgroundServer::start(config).unwrap();
    let addr = server.addr();

    // Two idle connections take both slots (the kernel hands connections out in order).
    let mut held = vec![connect(addr), connect(addr)];
    let mut waiting = connect(addr);
    waiting.write_all(health_request().as_bytes()).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        early
            .as_ref()
            .is_err_and(|err| matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a client beyond the limit was served: {early:?}"
    );

    // Closing one idle connection lets the waiting client in.
    drop(held.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(status_of(&read_until_closed(&mut waiting)), Some(200));
}

#[test]
fn oversized_heads_are_refused_and_the_server_stays_healthy() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let addr = server.addr();

    // A 1 MiB header value, and 500 small headers.
    let big_value = format!(
        "GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let many: String = (0..500).map(|i| format!("X-Many-{i}: v\r\n")).collect();
    let many_headers =
        format!("GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n");
    for request in [big_value, many_headers] {
        let mut socket = connect(addr);
        let mut writer = socket.try_clone().unwrap();
        // The server may stop reading before the head is all sent; the write then fails,
        // which is fine.
        let sending = thread::spawn(move || {
            let _ = writer.write_all(request.as_bytes());
        });
        let answer = read_until_closed(&mut socket);
        sending.join().unwrap();
        assert!(
            matches!(status_of(&answer), None | Some(431)),
            "an oversized head got {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }

    assert_eq!(status_of_request(addr, &health_request()), Some(200));
}

/// Assert that `body` is the JSON error of a 413 refusal.
fn assert_too_large(status: u16, body: &[u8]) {
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(body));
    let error: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{error}"
    );
}

#[test]
fn oversized_bodies_on_control_routes_get_413_without_being_read() {
    let scratch = Scratch::new();
    let mut config = config(&scratch.db());
    config.admin_token = Some(ADMIN_TOKEN.into());
    let server = BackgroundServer::start(config).unwrap();
    let addr = server.addr();

    // A declared length over the limit is refused before any of the body is sent.
    for path in [
        SETUPS_PATH,
        CLIENT_CONNECTIONS_PATH,
        CLIENT_CONNECTIONS_POLL_PATH,
    ] {
        let mut socket = connect(addr);
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"
        )
        .unwrap();
        let (status, body) = read_response(&mut socket);
        assert_too_large(status, &body);
    }

    // A chunked body has no declared length; it is refused once it passes the limit, long
    // before the client has sent it all.
    let mut socket = connect(addr);
    let mut writer = socket.try_clone().unwrap();
    let sending = thread::spawn(move || {
        write!(
            writer,
            "POST {SETUPS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < HUGE {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if writer.write_all(&framed).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let (status, body) = read_response(&mut socket);
    assert_too_large(status, &body);
    drop(socket);
    let sent = sending.join().unwrap();
    assert!(sent < HUGE, "the client sent all {sent} bytes");

    assert_eq!(status_of_request(addr, &health_request()), Some(200));
}

#[test]
fn a_huge_body_on_the_llm_route_streams_through_to_the_upstream() {
    // The data plane sets no size limit of its own: the body streams upstream, and the
    // provider's limit (and its 413) applies.
    let scratch = Scratch::new();
    let upstream = MockUpstream::start();
    let mut config = config(&scratch.db());
    config.upstream = upstream.origin.parse().unwrap();
    config.provider_key = Some(Secret::new("sk-ant-api03-provider-key-for-tests"));
    let server = BackgroundServer::start(config).unwrap();
    let key = new_key(&scratch.db(), "ada@example.com", AuthMode::ProviderKey);

    let response = client()
        .post(format!("{}/v1/anthropic/v1/messages", server.origin()))
        .header("x-api-key", "sk-ant-api03-the-users-own-key")
        .header("X-Archestra-Virtual-Key", &key)
        .body(vec![b'a'; HUGE])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), HUGE);
}

/// Count the open file descriptors of process `pid`.
#[cfg(target_os = "linux")]
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn thousands_of_short_connections_are_all_answered_and_leave_no_descriptor_open() {
    const CLIENTS: usize = 8;
    const EACH: usize = 250;
    let scratch = Scratch::new();
    let server = ServeProcess::start(&scratch, &scratch.db(), "serve");
    let addr: SocketAddr = server
        .origin
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let pid = server.pid();

    // One request first, so that whatever the server opens lazily is open for the count.
    assert_eq!(status_of_request(addr, &health_request()), Some(200));
    let before = open_descriptors(pid);

    // Half the connections ask the server to close; the other half are kept alive by the
    // server and dropped by the client after the answer.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                for i in 0..EACH {
                    if i % 2 == 0 {
                        assert_eq!(status_of_request(addr, &health_request()), Some(200));
                    } else {
                        let mut socket = connect(addr);
                        write!(
                            socket,
                            "GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                        )
                        .unwrap();
                        assert_eq!(read_response(&mut socket).0, 200);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    // The server closes its ends as it notices the clients' closes.
    wait_until(
        "the server's descriptors return to their count before",
        || open_descriptors(pid) <= before,
    );
    let (exit, output) = server.terminate();
    assert!(exit.success(), "{output}");
}

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use archestra_proxy::BackgroundServer;

use crate::common::*;

#[test]
fn stop_gives_a_stalled_request_only_the_grace_period() {
    let scratch = Scratch::new();
    let mut config = config(&scratch.db());
    config.shutdown_grace = Duration::from_millis(300);
    let server = BackgroundServer::start(config).unwrap();

    // A client that starts a request and never finishes its headers.
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    stalled
        .write_all(b"GET /v1/health?llm=x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "stop returned before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop waited {took:?}");
}

#[test]
fn stop_lets_a_request_in_flight_finish() {
    let scratch = Scratch::new();
    let server = start(&scratch.db(), 10);
    let minted = mint(&scratch.db(), &request("ada@example.com"), &server.origin());

    // Hold the database's write lock, so that the redemption waits inside the server.
    let blocker = rusqlite::Connection::open(scratch.db()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let url = minted.url.clone();
    let redemption = thread::spawn(move || redeem(&client(), &url, "box").status().as_u16());
    thread::sleep(Duration::from_millis(300));

    let stopper = thread::spawn(move || server.stop());
    thread::sleep(Duration::from_millis(300));
    assert!(
        !stopper.is_finished(),
        "stop did not wait for the request in flight"
    );
    blocker.execute_batch("COMMIT").unwrap();

    assert_eq!(redemption.join().unwrap(), 200);
    stopper.join().unwrap();
}

//! The load generators: closed-loop JSON requests at a fixed concurrency, and SSE streams
//! read event by event with their receive times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::servers::wall_nanos;

/// A Messages request body of the size Claude Code's smallest requests have.
const REQUEST_BODY: &str = r#"{"model":"claude-sonnet-4-5-20250929","max_tokens":1024,"messages":[{"role":"user","content":"Say hello in one short sentence, please."}],"system":"You are a benchmark.","stream":false}"#;

/// Where and how to send requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Prepended to `/v1/messages`: empty for the mock and the control, `/v1/anthropic`
    /// for the proxy.
    pub prefix: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Target {
    fn request(&self, query: &str) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v1/messages?{query}", self.prefix))
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header("anthropic-version", "2023-06-01")
            .header(
                "anthropic-beta",
                "claude-code-20250219,interleaved-thinking-2025-05-14",
            );
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        builder
            .body(Full::new(Bytes::from_static(REQUEST_BODY.as_bytes())))
            .expect("the benchmark's request is valid")
    }
}

/// Open a keep-alive HTTP/1.1 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub struct LoadRun {
    pub ok: u64,
    pub errors: u64,
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

impl LoadRun {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Send JSON requests to `target` from `concurrency` connections for `duration`, each
/// sending the next request as soon as the last one's answer has been read.
pub async fn closed_loop(target: &Target, concurrency: usize, duration: Duration) -> LoadRun {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut run = LoadRun::default();
            let Ok(mut sender) = connect(target.addr).await else {
                run.errors += 1;
                return run;
            };
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = async {
                    sender.ready().await?;
                    let response = sender.send_request(target.request("beta=true")).await?;
                    let ok = response.status().is_success();
                    response.into_body().collect().await?;
                    Ok::<bool, hyper::Error>(ok)
                }
                .await;
                match outcome {
                    Ok(true) => {
                        run.ok += 1;
                        run.latencies_us.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok(false) => run.errors += 1,
                    Err(_) => {
                        run.errors += 1;
                        match connect(target.addr).await {
                            Ok(fresh) => sender = fresh,
                            Err(_) => return run,
                        }
                    }
                }
            }
            run
        }));
    }
    let mut total = LoadRun::default();
    for worker in workers {
        if let Ok(run) = worker.await {
            total.ok += run.ok;
            total.errors += run.errors;
            total.latencies_us.extend(run.latencies_us);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// What one SSE stream measured.
#[derive(Debug, Default)]
pub struct StreamRun {
    /// From writing the request to reading the first text delta.
    pub first_event_us: Option<u64>,
    /// For each delta: receive time minus the mock's send stamp, in nanoseconds.
    pub lags_ns: Vec<i64>,
    /// Deltas received.
    pub received: u64,
    pub failed: bool,
}

/// Read one SSE stream of `events` deltas `gap` apart over `sender`.
pub async fn one_stream(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    events: u64,
    gap: Duration,
) -> StreamRun {
    let mut run = StreamRun::default();
    let query = format!("beta=true&sse={events}&gap_us={}", gap.as_micros());
    let sent = Instant::now();
    let response = async {
        sender.ready().await?;
        sender.send_request(target.request(&query)).await
    }
    .await;
    let Ok(response) = response else {
        run.failed = true;
        return run;
    };
    if !response.status().is_success() {
        run.failed = true;
        return run;
    }

    // Keep the bytes, and for each chunk the wall time and offset at which it ended; the
    // stamps are parsed afterwards, so an event split across chunks is still timed right.
    let mut body = response.into_body();
    let mut bytes: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut arrivals: Vec<(usize, i64)> = Vec::with_capacity(events as usize + 4);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            run.failed = true;
            break;
        };
        if let Some(data) = frame.data_ref() {
            let now = wall_nanos();
            if run.first_event_us.is_none() && memchr::memmem::find(data, b"\"t=").is_some() {
                run.first_event_us = Some(sent.elapsed().as_micros() as u64);
            }
            bytes.extend_from_slice(data);
            arrivals.push((bytes.len(), now));
        }
    }

    let finder = memchr::memmem::Finder::new(b"\"t=");
    let mut arrival = 0;
    for at in finder.find_iter(&bytes) {
        let digits_start = at + 3;
        let digits_end = bytes[digits_start..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |n| digits_start + n);
        let Some(stamp) = std::str::from_utf8(&bytes[digits_start..digits_end])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        while arrival < arrivals.len() && arrivals[arrival].0 < digits_end {
            arrival += 1;
        }
        if let Some((_, received_at)) = arrivals.get(arrival) {
            run.lags_ns.push(received_at - stamp);
            run.received += 1;
        }
    }
    run
}

/// Return the `q` quantile (0 to 1) of sorted `values`.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

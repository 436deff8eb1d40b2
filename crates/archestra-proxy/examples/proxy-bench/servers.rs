//! The three servers the benchmark runs as child processes: the mock upstream, the bare
//! hyper forwarder (the control), and the companion proxy.
//!
//! Each prints `listening on <addr>` on its first stdout line and exits when its stdin
//! closes, so none outlives the benchmark.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archestra_proxy::{Server, ServerConfig};
use archestra_wire::Secret;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

/// Environment variable that carries the provider key to the proxy child, never argv.
pub const PROVIDER_KEY_ENV: &str = "ARCHESTRA_PROXY_PROVIDER_KEY";

/// The fixed non-streaming reply, about 600 bytes, shaped like Anthropic's.
const JSON_REPLY: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! I am a fixed reply from the benchmark's mock upstream, long enough to look like a short real answer from the Messages API, with a usage block below."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":1840,"output_tokens":503,"service_tier":"standard"}}"#;

const SSE_HEAD: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1840,"output_tokens":1}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
);

const SSE_TAIL: &str = concat!(
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":64}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

/// Return the wall-clock time in nanoseconds; processes on one host share this clock.
pub fn wall_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// Run the named server child until stdin closes.
pub fn run_child(role: &str, args: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The parent closes our stdin when it is done, or dies.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    runtime.block_on(async {
        match role {
            "mock" => serve_mock().await,
            "control" => serve_control(args[0].clone()).await,
            "proxy" => serve_proxy(args).await,
            other => anyhow::bail!("unknown role {other}"),
        }
    })
}

async fn bind() -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// Serve every connection of `listener` with `service`, HTTP/1.1, `TCP_NODELAY`.
async fn serve_with<S, B>(listener: TcpListener, service: S) -> anyhow::Result<()>
where
    S: Fn(
            Request<Incoming>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>
        + Clone
        + Send
        + Sync
        + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(service))
                .await;
        });
    }
}

async fn serve_mock() -> anyhow::Result<()> {
    let listener = bind().await?;
    serve_with(listener, |request| Box::pin(mock_answer(request))).await
}

/// Answer JSON, or an SSE stream when the query has `sse=<events>&gap_us=<gap>`.
async fn mock_answer(
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let query = request.uri().query().unwrap_or("").to_string();
    // Read the body as a real upstream would before answering.
    let _ = request.into_body().collect().await;
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            pair.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|value| value.parse::<u64>().ok())
        })
    };
    let response = match (param("sse"), param("gap_us")) {
        (Some(events), Some(gap_us)) => Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(SseBody::new(events, Duration::from_micros(gap_us)).boxed()),
        _ => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(JSON_REPLY.as_bytes())).boxed()),
    };
    Ok(response.expect("a static response is valid"))
}

/// An SSE answer: the head, `events` text deltas `gap` apart, each carrying its send time as
/// `t=<wall nanos>;`, then the tail.
struct SseBody {
    events: u64,
    sent: u64,
    gap: Duration,
    started: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    stage: Stage,
}

enum Stage {
    Head,
    Deltas,
    Tail,
    Done,
}

impl SseBody {
    fn new(events: u64, gap: Duration) -> SseBody {
        SseBody {
            events,
            sent: 0,
            gap,
            started: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            stage: Stage::Head,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let data = match this.stage {
            Stage::Head => {
                this.stage = Stage::Deltas;
                this.started = Some(Instant::now());
                Bytes::from_static(SSE_HEAD.as_bytes())
            }
            Stage::Deltas if this.sent == this.events => {
                this.stage = Stage::Tail;
                Bytes::from_static(SSE_TAIL.as_bytes())
            }
            Stage::Deltas => {
                // The first delta follows the head at once; a timer would add up to a
                // millisecond of tokio's timer resolution to every time to first event.
                if this.sent > 0 {
                    ready!(this.sleep.as_mut().poll(cx));
                }
                let delta = format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t={};i={} lorem ipsum dolor sit\"}}}}\n\n",
                    wall_nanos(),
                    this.sent
                );
                this.sent += 1;
                // Paced from the start, so a late wake-up does not push every later event.
                let started = this.started.unwrap_or_else(Instant::now);
                let gaps = u32::try_from(this.sent).unwrap_or(u32::MAX);
                this.sleep.as_mut().reset(started + this.gap * gaps);
                Bytes::from(delta)
            }
            Stage::Tail | Stage::Done => {
                this.stage = Stage::Done;
                return Poll::Ready(None);
            }
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

/// The control: a bare hyper forwarder with a keep-alive pool and `TCP_NODELAY`, no
/// authentication, no header rewriting, no usage log.
async fn serve_control(upstream: String) -> anyhow::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(http);
    let upstream: Arc<str> = upstream.into();
    let listener = bind().await?;
    serve_with(listener, move |request| {
        let client = client.clone();
        let upstream = Arc::clone(&upstream);
        Box::pin(async move { Ok(control_forward(&client, &upstream, request).await) })
    })
    .await
}

async fn control_forward(
    client: &Client<HttpConnector, Incoming>,
    upstream: &str,
    request: Request<Incoming>,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let (mut parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{upstream}{target}")
        .parse()
        .expect("the upstream and path form a URI");
    parts.headers.remove(header::HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("a static response is valid"),
    }
}

/// The companion proxy, as `archestra-proxy serve` runs it: args are the database, the
/// upstream and `on` or `off` for the usage log.
async fn serve_proxy(args: &[String]) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(PathBuf::from(&args[0]));
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.upstream = args[1].parse()?;
    config.record_usage = args[2] == "on";
    // The 1,000-stream run needs every stream open at once, past the default cap of
    // --max-connections; a deployment expecting that many raises the flag the same way.
    config.max_connections = 2048;
    config.provider_key = std::env::var(PROVIDER_KEY_ENV).ok().map(Secret::new);
    // The same log setup as `serve`; the data plane writes no line per request.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "archestra_proxy=info,warn",
        ))
        .with_writer(std::io::stderr)
        .init();
    let server = Server::bind(config).await?;
    println!("listening on {}", server.addr());
    server.run(std::future::pending()).await;
    Ok(())
}

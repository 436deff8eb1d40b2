//! The data plane benchmark: `cargo run --release -p archestra-proxy --example proxy-bench`.
//!
//! It starts three child processes on 127.0.0.1 (a mock upstream, a bare hyper forwarder as
//! the control, and the companion proxy, twice: usage log on and off), drives them from this
//! process with its own HTTP/1.1 client, interleaving the targets round by round so that
//! drift on a shared box hits them all alike, and prints what it measured against the goals
//! of issue 5. It always exits 0 once it has measured: it is a report, not a test.

mod load;
mod servers;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use archestra_proxy::Store;
use archestra_wire::CreateSetupRequest;

use load::{LoadRun, StreamRun, Target, closed_loop, connect, one_stream, quantile};
use servers::PROVIDER_KEY_ENV;

const USER_KEY: &str = "sk-ant-api03-benchmark-users-own-key";
const PROVIDER_KEY: &str = "sk-ant-api03-benchmark-provider-key";

/// Rounds and run lengths, chosen to keep the whole benchmark under three minutes.
const LATENCY_ROUNDS: usize = 5;
const LATENCY_RUN: Duration = Duration::from_millis(1200);
const THROUGHPUT_ROUNDS: usize = 3;
const THROUGHPUT_RUN: Duration = Duration::from_secs(2);
const THROUGHPUT_CONCURRENCY: usize = 64;
const SSE_ROUNDS: usize = 3;
const SSE_STREAMS_PER_RUN: usize = 40;
const SSE_EVENTS: u64 = 16;
const SSE_GAP: Duration = Duration::from_millis(2);
const MANY_STREAMS: usize = 1000;
const MANY_EVENTS: u64 = 50;
const MANY_GAP: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return match servers::run_child(&args[2], &args[3..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench child {}: {err:#}", args[2]);
                ExitCode::FAILURE
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the benchmark's runtime starts");
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: the benchmark could not run: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A server child process; killed when dropped.
struct ChildServer {
    process: std::process::Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn spawn(role: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("could not find the benchmark's executable")?;
        let mut command = Command::new(exe);
        command
            .arg("child")
            .arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("could not start the {role}"))?;
        let stdout = process.stdout.take().expect("stdout is piped");
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("the {role} printed {first:?} instead of its address"))?
            .parse()?;
        Ok(ChildServer { process, addr })
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// CPU time (user + system) a process has used, in clock ticks of 10 ms.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces, start at field 3 (state).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Return a `VmRSS`-style field of a process in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reset a process's peak RSS (`VmHWM`) to its current RSS.
fn reset_peak(pid: u32) {
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Mint and redeem a setup in `db`; return the machine key.
fn key_for(db: &Path, user: &str, mode: &str) -> anyhow::Result<String> {
    let store = Store::open(db)?;
    let req: CreateSetupRequest =
        serde_json::from_value(serde_json::json!({ "user": user, "mode": mode }))?;
    let minted = store.create_setup(&req, "http://127.0.0.1:9")?;
    let token = minted
        .url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let redemption = store.redeem(&token, Some("bench"), "Archestra")?;
    let key = redemption
        .payload
        .proxy
        .and_then(|proxy| proxy.machine_key().map(|k| k.expose().to_string()))
        .context("the payload has no key")?;
    Ok(key)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

/// Rotate `items` left by `by`, so that each round starts with a different target.
fn rotated<T: Clone>(items: &[T], by: usize) -> Vec<T> {
    let mut out = items.to_vec();
    if !out.is_empty() {
        let by = by % out.len();
        out.rotate_left(by);
    }
    out
}

/// One line of the report.
struct Row {
    metric: String,
    measured: String,
    goal: String,
    verdict: &'static str,
}

fn row(metric: &str, measured: String, goal: &str, met: Option<bool>) -> Row {
    Row {
        metric: metric.to_string(),
        measured,
        goal: goal.to_string(),
        verdict: match met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        },
    }
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    let scratch = tempfile::tempdir()?;
    let db = scratch.path().join("bench.db");
    let passthrough_key = key_for(&db, "ada@example.com", "provider-key")?;
    let virtual_key = key_for(&db, "bob@example.com", "virtual-key")?;
    let db_arg = db.to_str().context("the temporary path is not UTF-8")?;

    eprintln!("starting the mock upstream, the control and two proxies on 127.0.0.1 …");
    let mock = ChildServer::spawn("mock", &[], &[])?;
    let upstream = format!("http://{}", mock.addr);
    let control = ChildServer::spawn("control", &[&upstream], &[])?;
    let provider_env = [(PROVIDER_KEY_ENV, PROVIDER_KEY)];
    let proxy = ChildServer::spawn("proxy", &[db_arg, &upstream, "on"], &provider_env)?;
    let proxy_off = ChildServer::spawn("proxy", &[db_arg, &upstream, "off"], &provider_env)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = status_kib(proxy.pid(), "VmRSS:");
    let idle_rss_control = status_kib(control.pid(), "VmRSS:");

    let plain_headers = vec![
        ("x-api-key", USER_KEY.to_string()),
        ("x-archestra-agent-id", "anthropic_claude_code".to_string()),
        ("x-archestra-virtual-key", passthrough_key.clone()),
    ];
    let direct = Target {
        name: "direct",
        addr: mock.addr,
        prefix: "",
        headers: plain_headers.clone(),
    };
    let bare = Target {
        name: "control",
        addr: control.addr,
        prefix: "",
        headers: plain_headers.clone(),
    };
    let passthrough = Target {
        name: "proxy",
        addr: proxy.addr,
        prefix: "/v1/anthropic",
        headers: plain_headers.clone(),
    };
    let swapped = Target {
        name: "proxy (virtual key)",
        addr: proxy.addr,
        prefix: "/v1/anthropic",
        headers: vec![
            ("authorization", format!("Bearer {virtual_key}")),
            ("x-archestra-agent-id", "anthropic_claude_code".to_string()),
        ],
    };
    let unlogged = Target {
        name: "proxy (usage log off)",
        addr: proxy_off.addr,
        prefix: "/v1/anthropic",
        headers: plain_headers,
    };

    // Check each path works before timing it.
    for target in [&direct, &bare, &passthrough, &swapped, &unlogged] {
        let run = closed_loop(target, 1, Duration::from_millis(50)).await;
        if run.ok == 0 || run.errors > 0 {
            bail!(
                "{} answered {} errors and {} successes",
                target.name,
                run.errors,
                run.ok
            );
        }
    }
    eprintln!("warming up …");
    for target in [&direct, &bare, &passthrough, &swapped, &unlogged] {
        closed_loop(target, 16, Duration::from_millis(800)).await;
    }

    // Latency at concurrency 1.
    eprintln!("latency at concurrency 1: {LATENCY_ROUNDS} interleaved rounds …");
    let latency_targets = [&direct, &bare, &passthrough, &swapped];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); latency_targets.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); latency_targets.len()];
    for round in 0..LATENCY_ROUNDS {
        for index in rotated(&[0, 1, 2, 3], round) {
            let mut run = closed_loop(latency_targets[index], 1, LATENCY_RUN).await;
            run.latencies_us.sort_unstable();
            p50s[index].push(quantile(&run.latencies_us, 0.50).unwrap_or(0) as f64);
            p99s[index].push(quantile(&run.latencies_us, 0.99).unwrap_or(0) as f64);
        }
    }
    let p50: Vec<f64> = p50s.iter_mut().map(|v| median(v)).collect();
    let p99: Vec<f64> = p99s.iter_mut().map(|v| median(v)).collect();

    // Throughput at concurrency 64, with the servers' CPU time.
    eprintln!(
        "throughput at concurrency {THROUGHPUT_CONCURRENCY}: {THROUGHPUT_ROUNDS} interleaved rounds …"
    );
    let throughput_targets: [(&Target, Option<u32>); 5] = [
        (&direct, None),
        (&bare, Some(control.pid())),
        (&passthrough, Some(proxy.pid())),
        (&unlogged, Some(proxy_off.pid())),
        (&swapped, Some(proxy.pid())),
    ];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); throughput_targets.len()];
    let mut cpu = vec![(0u64, 0u64); throughput_targets.len()];
    let mut errors = vec![0u64; throughput_targets.len()];
    for round in 0..THROUGHPUT_ROUNDS {
        for index in rotated(&[0, 1, 2, 3, 4], round) {
            let (target, pid) = throughput_targets[index];
            let before = pid.map(cpu_ticks);
            let run: LoadRun = closed_loop(target, THROUGHPUT_CONCURRENCY, THROUGHPUT_RUN).await;
            if let (Some(pid), Some(before)) = (pid, before) {
                cpu[index].0 += cpu_ticks(pid) - before;
                cpu[index].1 += run.ok;
            }
            errors[index] += run.errors;
            rps[index].push(run.rps());
        }
    }
    let rps: Vec<f64> = rps.iter_mut().map(|v| median(v)).collect();
    // A tick is 10 ms of CPU time.
    let cpu_us: Vec<f64> = cpu
        .iter()
        .map(|(ticks, requests)| *ticks as f64 * 10_000.0 / (*requests).max(1) as f64)
        .collect();

    // SSE at concurrency 1: time to the first event and the lag of every event.
    eprintln!(
        "SSE at concurrency 1: {SSE_ROUNDS} rounds of {SSE_STREAMS_PER_RUN} streams of {SSE_EVENTS} events {}ms apart …",
        SSE_GAP.as_millis()
    );
    let sse_targets = [&direct, &bare, &passthrough];
    let mut first_event: Vec<Vec<u64>> = vec![Vec::new(); sse_targets.len()];
    let mut lags: Vec<Vec<i64>> = vec![Vec::new(); sse_targets.len()];
    let mut sse_lost = vec![0u64; sse_targets.len()];
    for round in 0..SSE_ROUNDS {
        for index in rotated(&[0, 1, 2], round) {
            let target = sse_targets[index];
            let mut sender = connect(target.addr).await?;
            for _ in 0..SSE_STREAMS_PER_RUN {
                let run = one_stream(&mut sender, target, SSE_EVENTS, SSE_GAP).await;
                if run.failed {
                    sender = connect(target.addr).await?;
                }
                sse_lost[index] += SSE_EVENTS - run.received.min(SSE_EVENTS);
                if let Some(us) = run.first_event_us {
                    first_event[index].push(us);
                }
                lags[index].extend(run.lags_ns);
            }
        }
    }
    for values in &mut first_event {
        values.sort_unstable();
    }
    for values in &mut lags {
        values.sort_unstable();
    }
    let ttft = |i: usize, q: f64| quantile(&first_event[i], q).unwrap_or(0) as f64;
    let lag_us = |i: usize, q: f64| quantile(&lags[i], q).unwrap_or(0) as f64 / 1000.0;

    // 1,000 concurrent streams.
    eprintln!(
        "{MANY_STREAMS} concurrent streams of {MANY_EVENTS} events {}ms apart, per target …",
        MANY_GAP.as_millis()
    );
    let many_targets: [(&Target, Option<u32>); 3] = [
        (&direct, None),
        (&bare, Some(control.pid())),
        (&passthrough, Some(proxy.pid())),
    ];
    let mut many = Vec::new();
    for (target, pid) in many_targets {
        if let Some(pid) = pid {
            reset_peak(pid);
        }
        let result = many_streams(target).await;
        let peak = pid.map_or(0, |pid| status_kib(pid, "VmHWM:"));
        many.push((result, peak));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled_rss = status_kib(proxy.pid(), "VmRSS:");

    // The report.
    let (d, c, p, v) = (0, 1, 2, 3);
    let added_p50 = p50[p] - p50[d];
    let added_p99 = p99[p] - p99[d];
    let (t_direct, t_control, t_proxy, t_off, t_vk) = (0, 1, 2, 3, 4);
    let ratio_control = rps[t_proxy] / rps[t_control];
    let store_ratio = rps[t_proxy] / rps[t_off];
    let added_ttft_p50 = ttft(2, 0.50) - ttft(0, 0.50);
    let added_ttft_p99 = ttft(2, 0.99) - ttft(0, 0.99);
    let (proxy_many, proxy_peak) = &many[2];

    let rows = vec![
        row(
            "added latency p50, c=1 (proxy - direct)",
            format!("{added_p50:.0} µs (control: {:.0} µs)", p50[c] - p50[d]),
            "-",
            None,
        ),
        row(
            "added latency p99, c=1 (proxy - direct)",
            format!("{added_p99:.0} µs (control: {:.0} µs)", p99[c] - p99[d]),
            "<= 200 µs",
            Some(added_p99 <= 200.0),
        ),
        row(
            "requests/s, c=64: proxy / direct",
            format!(
                "{:.2} ({:.0} / {:.0})",
                rps[t_proxy] / rps[t_direct],
                rps[t_proxy],
                rps[t_direct]
            ),
            "-",
            None,
        ),
        row(
            "requests/s, c=64: proxy / control",
            format!(
                "{ratio_control:.2} ({:.0} / {:.0})",
                rps[t_proxy], rps[t_control]
            ),
            ">= 0.90",
            Some(ratio_control >= 0.9),
        ),
        row(
            "CPU per request, proxy (c=64)",
            format!(
                "{:.1} µs (control: {:.1} µs)",
                cpu_us[t_proxy], cpu_us[t_control]
            ),
            "<= 25 µs",
            Some(cpu_us[t_proxy] <= 25.0),
        ),
        row(
            "added time to first SSE event p50 / p99",
            format!(
                "{added_ttft_p50:.0} / {added_ttft_p99:.0} µs (control: {:.0} / {:.0} µs)",
                ttft(1, 0.50) - ttft(0, 0.50),
                ttft(1, 0.99) - ttft(0, 0.99)
            ),
            "p99 <= 250 µs",
            Some(added_ttft_p99 <= 250.0),
        ),
        row(
            "added gap (lag) per event p50 / p99",
            format!(
                "{:.0} / {:.0} µs (control: {:.0} / {:.0} µs)",
                lag_us(2, 0.50) - lag_us(0, 0.50),
                lag_us(2, 0.99) - lag_us(0, 0.99),
                lag_us(1, 0.50) - lag_us(0, 0.50),
                lag_us(1, 0.99) - lag_us(0, 0.99)
            ),
            "-",
            None,
        ),
        row(
            "1,000 streams through the proxy: lost / late events",
            format!(
                "{} / {} of {} (failed streams {}, lag p99 {:.1} ms; direct lag p99 {:.1} ms)",
                proxy_many.lost,
                proxy_many.late,
                MANY_STREAMS as u64 * MANY_EVENTS,
                proxy_many.failed_streams,
                proxy_many.lag_p99_ms,
                many[0].0.lag_p99_ms
            ),
            "0 lost",
            Some(proxy_many.lost == 0 && proxy_many.failed_streams == 0),
        ),
        row(
            "peak RSS, proxy, 1,000 streams",
            format!(
                "{:.1} MiB (control: {:.1} MiB)",
                mib(*proxy_peak),
                mib(many[1].1)
            ),
            "<= 48 MiB",
            Some(mib(*proxy_peak) <= 48.0),
        ),
        row(
            "idle RSS, proxy, after start",
            format!(
                "{:.1} MiB (control: {:.1} MiB; proxy after the load: {:.1} MiB)",
                mib(idle_rss),
                mib(idle_rss_control),
                mib(settled_rss)
            ),
            "<= 8 MiB",
            Some(mib(idle_rss) <= 8.0),
        ),
        row(
            "usage log on / off, requests/s at c=64",
            format!(
                "{store_ratio:.3} ({:.0} / {:.0}; CPU {:.1} / {:.1} µs per request)",
                rps[t_proxy], rps[t_off], cpu_us[t_proxy], cpu_us[t_off]
            ),
            ">= 0.95",
            Some(store_ratio >= 0.95),
        ),
        row(
            "virtual key / passthrough",
            format!(
                "requests/s {:.3} ({:.0} / {:.0}); p50 c=1 {:+.0} µs; CPU {:.1} / {:.1} µs",
                rps[t_vk] / rps[t_proxy],
                rps[t_vk],
                rps[t_proxy],
                p50[v] - p50[p],
                cpu_us[t_vk],
                cpu_us[t_proxy]
            ),
            "-",
            None,
        ),
    ];

    println!();
    println!(
        "archestra-proxy data plane benchmark ({} s, {} CPUs)",
        started.elapsed().as_secs(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    print_table(&rows);
    println!();
    println!("Per target (medians of the rounds):");
    let names = ["direct", "control", "proxy", "proxy (virtual key)"];
    for (i, name) in names.iter().enumerate() {
        println!(
            "  c=1   {name:<22} p50 {:>6.0} µs  p99 {:>6.0} µs",
            p50[i], p99[i]
        );
    }
    let names = [
        "direct",
        "control",
        "proxy",
        "proxy (usage log off)",
        "proxy (virtual key)",
    ];
    for (i, name) in names.iter().enumerate() {
        println!(
            "  c=64  {name:<22} {:>8.0} req/s  errors {}{}",
            rps[i],
            errors[i],
            if i == 0 {
                String::new()
            } else {
                format!("  CPU {:.1} µs/req", cpu_us[i])
            }
        );
    }
    for (i, name) in ["direct", "control", "proxy"].iter().enumerate() {
        println!(
            "  SSE   {name:<22} first event p50 {:>5.0} µs  p99 {:>5.0} µs  lag p50 {:>5.0} µs  p99 {:>5.0} µs  lost {}",
            ttft(i, 0.50),
            ttft(i, 0.99),
            lag_us(i, 0.50),
            lag_us(i, 0.99),
            sse_lost[i]
        );
    }
    for (i, name) in ["direct", "control", "proxy"].iter().enumerate() {
        let (result, peak) = &many[i];
        println!(
            "  1000  {name:<22} lost {}  late {}  failed streams {}  lag p50 {:.1} ms  p99 {:.1} ms  peak RSS {}",
            result.lost,
            result.late,
            result.failed_streams,
            result.lag_p50_ms,
            result.lag_p99_ms,
            if *peak == 0 {
                "-".to_string()
            } else {
                format!("{:.1} MiB", mib(*peak))
            }
        );
    }
    println!();
    println!(
        "Method: one sitting on this machine, everything on 127.0.0.1; the mock, the control and each proxy are child processes, the load comes from this process (HTTP/1.1 keep-alive, TCP_NODELAY). Latency: {LATENCY_ROUNDS} rounds of {LATENCY_RUN:?} per target at c=1, targets rotated each round, median of the rounds' p50 and p99. Throughput: {THROUGHPUT_ROUNDS} rounds of {THROUGHPUT_RUN:?} at c={THROUGHPUT_CONCURRENCY}, closed loop. CPU per request: utime+stime of the server process from /proc/<pid>/stat (10 ms ticks) over its c=64 runs, divided by the requests it answered; it includes the usage writer thread. SSE: {SSE_ROUNDS} rounds of {SSE_STREAMS_PER_RUN} sequential streams of {SSE_EVENTS} deltas {SSE_GAP:?} apart; each delta carries the mock's wall-clock send time, lag = receive time - send time. 1,000 streams: {MANY_EVENTS} deltas {MANY_GAP:?} apart each, started over 0.5 s; late = lag over 10x the gap. Peak RSS: VmHWM after resetting it through /proc/<pid>/clear_refs. The proxy runs with the usage log on and passthrough keys unless the row says otherwise; the usage log writes to a temporary SQLite file."
    );
    Ok(())
}

/// What 1,000 concurrent streams measured.
struct ManyRun {
    lost: u64,
    late: u64,
    failed_streams: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
}

async fn many_streams(target: &Target) -> ManyRun {
    let mut tasks = Vec::with_capacity(MANY_STREAMS);
    for i in 0..MANY_STREAMS {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the connections over half a second rather than one burst.
            tokio::time::sleep(Duration::from_micros(500 * i as u64)).await;
            match connect(target.addr).await {
                Ok(mut sender) => one_stream(&mut sender, &target, MANY_EVENTS, MANY_GAP).await,
                Err(_) => StreamRun {
                    failed: true,
                    ..StreamRun::default()
                },
            }
        }));
    }
    let late_after = i64::try_from(MANY_GAP.as_nanos() * 10).unwrap_or(i64::MAX);
    let mut lags = Vec::new();
    let (mut lost, mut late, mut failed) = (0, 0, 0);
    for task in tasks {
        let run = task.await.unwrap_or(StreamRun {
            failed: true,
            ..StreamRun::default()
        });
        if run.failed {
            failed += 1;
        }
        lost += MANY_EVENTS - run.received.min(MANY_EVENTS);
        late += run.lags_ns.iter().filter(|lag| **lag > late_after).count() as u64;
        lags.extend(run.lags_ns);
    }
    lags.sort_unstable();
    let ms = |q| quantile(&lags, q).unwrap_or(0) as f64 / 1e6;
    ManyRun {
        lost,
        late,
        failed_streams: failed,
        lag_p50_ms: ms(0.50),
        lag_p99_ms: ms(0.99),
    }
}

fn print_table(rows: &[Row]) {
    let header = ("METRIC", "MEASURED", "GOAL", "VERDICT");
    let width = |f: fn(&Row) -> usize, h: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(h.chars().count())
    };
    let w0 = width(|r| r.metric.chars().count(), header.0);
    let w1 = width(|r| r.measured.chars().count(), header.1);
    let w2 = width(|r| r.goal.chars().count(), header.2);
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  {}",
        header.0, header.1, header.2, header.3
    );
    for r in rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r.metric, r.measured, r.goal, r.verdict
        );
    }
}

//! `sightline bench ingest`: drives OTLP/gRPC against a server — one it starts itself unless
//! `--endpoint` names one — and prints sustained throughput, acknowledgement latency, bytes per
//! span on disk after compaction, peak RSS and CPU per million spans.

mod metrics;
mod promql;
mod query;
mod workload;
mod zipkin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use crate::config::parse_duration;
use crate::otlp_out::TraceExporter;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// OTLP/gRPC trace ingest with the default workload of shared/design/workloads.md.
    Ingest(IngestArgs),
    /// Dashboard, trace and SQL query latency over an hour of stored spans.
    Query(query::QueryArgs),
    /// Remote write of node_exporter-like targets to Sightline, VictoriaMetrics and Prometheus,
    /// the same bodies to each, and OTLP metrics to Sightline.
    Metrics(metrics::MetricsArgs),
    /// PromQL query latency on the same data in Sightline and Prometheus.
    Promql(promql::PromqlArgs),
    /// Zipkin v2 JSON span ingest into Sightline and Zipkin's own server, the same bodies.
    Zipkin(zipkin::ZipkinArgs),
}

#[derive(Args)]
pub struct IngestArgs {
    /// OTLP/gRPC endpoint of a running server; without it, a server is started on a temporary
    /// directory and its disk use, RSS and CPU are reported too.
    #[arg(long)]
    endpoint: Option<String>,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "30s")]
    duration: String,
    #[arg(long, default_value = "5s")]
    warmup: String,
    /// gRPC connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Distinct request templates (ids and times are fresh on every send).
    #[arg(long, default_value_t = 200)]
    templates: usize,
    /// Extra flags for the server this command starts, e.g. "--memory-budget 512MiB".
    #[arg(long, default_value = "")]
    server_args: String,
    /// OTLP over `grpc`, or `http` (OTLP/HTTP protobuf, one request in flight per connection:
    /// `--in-flight` is ignored).
    #[arg(long, default_value = "grpc")]
    protocol: String,
    /// The `sightline` binary to start as the server (another build, to compare); this one by
    /// default.
    #[arg(long)]
    server_binary: Option<std::path::PathBuf>,
}

impl BenchCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            BenchCommand::Ingest(args) => ingest(args).await,
            BenchCommand::Query(args) => query::run(args).await,
            BenchCommand::Metrics(args) => metrics::run(args).await,
            BenchCommand::Promql(args) => promql::run(args).await,
            BenchCommand::Zipkin(args) => zipkin::run(args).await,
        }
    }
}

/// A server this command started, stopped when dropped.
pub(crate) struct LocalServer {
    child: Child,
    pub(crate) http: String,
    grpc: String,
    pub(crate) otlp_http: String,
    /// Zipkin's port, when the build has one.
    pub(crate) zipkin: Option<String>,
    _dir: Option<tempfile_dir::TempDir>,
}

mod tempfile_dir {
    /// A temporary directory removed on drop (the binary carries no tempfile dependency).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl LocalServer {
    /// A server (this binary, or `binary`) on `dir`, which is removed afterwards if
    /// `temporary`.
    fn start_in(
        dir: std::path::PathBuf,
        temporary: bool,
        extra: &str,
        binary: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let exe = match binary {
            Some(b) => b.to_path_buf(),
            None => std::env::current_exe()?,
        };
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--data-dir"])
            .arg(&dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
            ])
            .args(["--http-addr", "127.0.0.1:0"])
            // Another build may predate the gateways (and their flags).
            .args(if binary.is_none() {
                &[
                    "--lookout-addr",
                    "127.0.0.1:0",
                    "--zipkin-addr",
                    "127.0.0.1:0",
                ][..]
            } else {
                &[][..]
            })
            .args(extra.split_whitespace())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting sightline serve")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let (mut grpc, mut otlp_http, mut http, mut zipkin) = (None, None, None, None);
        for line in lines.by_ref() {
            let line = line?;
            if line.contains("sightline started") {
                grpc = field(&line, "otlp_grpc=");
                otlp_http = field(&line, "otlp_http=");
                http = field(&line, " http=");
                zipkin = field(&line, "zipkin=");
                break;
            }
        }
        // Keep draining the server's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        match (grpc, otlp_http, http) {
            (Some(grpc), Some(otlp_http), Some(http)) => Ok(Self {
                child,
                http,
                grpc,
                otlp_http,
                zipkin,
                _dir: temporary.then(|| tempfile_dir::TempDir(dir)),
            }),
            _ => bail!("the server did not report its addresses"),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc_status(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User + system CPU seconds of the server so far.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(key)? + key.len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// A minimal HTTP/1.1 exchange with the server's own port (status, maintenance and query
/// endpoints).
fn http_call(addr: &str, method: &str, path: &str) -> anyhow::Result<String> {
    http_request(addr, method, path, "")
}

fn http_request(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.1 200") {
        bail!("{method} {path}: {}", out.lines().next().unwrap_or(""));
    }
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// A chunked HTTP/1.1 body (Prometheus answers large queries so) as one.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let duration = parse_duration("duration", &args.duration)?;
    let warmup = parse_duration("warmup", &args.warmup)?;
    let http = match args.protocol.as_str() {
        "grpc" => false,
        "http" => true,
        other => bail!("--protocol {other}: use grpc or http"),
    };
    let server = match &args.endpoint {
        Some(_) => None,
        None => {
            let dir = std::env::temp_dir().join(format!("sightline-bench-{}", std::process::id()));
            Some(LocalServer::start_in(
                dir,
                true,
                &args.server_args,
                args.server_binary.as_deref(),
            )?)
        }
    };
    let endpoint = match (&args.endpoint, &server) {
        (Some(e), _) => e.clone(),
        (None, Some(s)) if http => s.otlp_http.clone(),
        (None, Some(s)) => format!("http://{}", s.grpc),
        _ => unreachable!(),
    };
    eprintln!(
        "encoding {} request templates of ~{} spans",
        args.templates, args.spans_per_request
    );
    let templates = Arc::new(workload::templates(
        args.templates,
        args.spans_per_request,
        42,
    ));
    let spans_in_templates: usize = templates.iter().map(|t| t.request.spans).sum();
    let bytes_in_templates: usize = templates.iter().map(|t| t.request.bytes.len()).sum();
    eprintln!(
        "workload: {:.0} bytes per span in OTLP protobuf; driving {endpoint} with {} connections x {} in flight",
        bytes_in_templates as f64 / spans_in_templates as f64,
        args.connections,
        args.in_flight
    );

    let totals = Arc::new(Totals::default());
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        if http {
            let worker = HttpWorker {
                addr: endpoint.trim_start_matches("http://").to_string(),
                templates: Arc::clone(&templates),
                totals: Arc::clone(&totals),
                latencies: Arc::clone(&latencies),
                measuring: Arc::clone(&measuring),
                stop: Arc::clone(&stop),
                seed: (c * 1000) as u64,
            };
            tasks.push(tokio::spawn(worker.run()));
            continue;
        }
        let channel = Channel::from_shared(endpoint.clone())?
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect()
            .await
            .with_context(|| format!("connecting to {endpoint}"))?;
        for f in 0..args.in_flight {
            let worker = Worker {
                channel: channel.clone(),
                templates: Arc::clone(&templates),
                totals: Arc::clone(&totals),
                latencies: Arc::clone(&latencies),
                measuring: Arc::clone(&measuring),
                stop: Arc::clone(&stop),
                seed: (c * 1000 + f) as u64,
            };
            tasks.push(tokio::spawn(worker.run()));
        }
    }
    tokio::time::sleep(warmup).await;
    let cpu_before = server.as_ref().and_then(LocalServer::cpu_seconds);
    let spans_before = totals.spans.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let (spans0, bytes0) = (
        totals.spans.load(Ordering::Relaxed),
        totals.bytes.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let elapsed = started.elapsed().as_secs_f64();
    let spans = totals.spans.load(Ordering::Relaxed) - spans0;
    let bytes = totals.bytes.load(Ordering::Relaxed) - bytes0;
    let cpu_after = server.as_ref().and_then(LocalServer::cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = spans_before;
    let h = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    let refused = totals.refused.load(Ordering::Relaxed);
    let failed = totals.failed.load(Ordering::Relaxed);

    println!("command: sightline bench ingest --protocol {} --duration {} --warmup {} --connections {} --in-flight {} --spans-per-request {}{}{}",
        args.protocol, args.duration, args.warmup, args.connections, args.in_flight, args.spans_per_request,
        if args.server_args.is_empty() { String::new() } else { format!(" --server-args '{}'", args.server_args) },
        args.server_binary.as_ref().map(|b| format!(" --server-binary {}", b.display())).unwrap_or_default());
    println!(
        "sustained:        {:.0} spans/s over {elapsed:.1} s",
        spans as f64 / elapsed
    );
    println!(
        "throughput:       {:.1} MB/s of OTLP protobuf",
        bytes as f64 / elapsed / 1e6
    );
    println!(
        "ack latency:      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    let requests = totals.requests.load(Ordering::Relaxed);
    println!(
        "refused (503):    {refused} requests ({:.1}% of attempts); failed: {failed}",
        100.0 * refused as f64 / (refused + requests).max(1) as f64
    );
    if let Some(server) = &server {
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            println!(
                "server CPU:       {:.2} s per million spans ({:.2} cores busy)",
                (b - a) / (spans as f64 / 1e6),
                (b - a) / elapsed
            );
        }
        let status = http_call(&server.http, "GET", "/api/v1/status/storage")?;
        let v: serde_json::Value = serde_json::from_str(&status)?;
        let syncs = v["wal_syncs"].as_u64().unwrap_or(0).max(1);
        println!(
            "group commit:     {:.1} requests per fsync ({} fsyncs)",
            totals.requests.load(Ordering::Relaxed) as f64 / syncs as f64,
            syncs
        );
        let rss_kib = server.proc_status("VmHWM:").unwrap_or(0);
        println!("server peak RSS:  {:.0} MiB", rss_kib as f64 / 1024.0);
        let started = Instant::now();
        http_call(&server.http, "POST", "/api/v1/admin/compact")?;
        let status = http_call(&server.http, "GET", "/api/v1/status/storage")?;
        let v: serde_json::Value = serde_json::from_str(&status)?;
        let rows = v["spans_in_files"].as_u64().unwrap_or(0);
        let file_bytes = v["bytes_in_files"].as_u64().unwrap_or(0);
        println!(
            "on disk:          {:.1} bytes per span after compaction ({rows} spans, {} files, {:.1} MiB; flush + compaction took {:.1} s)",
            file_bytes as f64 / rows.max(1) as f64,
            v["files"],
            file_bytes as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

struct Worker {
    channel: Channel,
    templates: Arc<Vec<workload::Template>>,
    totals: Arc<Totals>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seed: u64,
}

impl Worker {
    async fn run(self) {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut exporter = TraceExporter::new(self.channel.clone());
        let mut i = self.seed as usize;
        while !self.stop.load(Ordering::Relaxed) {
            let t = &self.templates[i % self.templates.len()];
            i += 1;
            let body = Bytes::from(t.instantiate(&mut rng, now_nanos()));
            let len = body.len() as u64;
            let sent = Instant::now();
            let result = exporter.export(body).await;
            let took = sent.elapsed();
            match result {
                Ok(_) => {
                    self.totals.requests.fetch_add(1, Ordering::Relaxed);
                    self.totals
                        .spans
                        .fetch_add(t.request.spans as u64, Ordering::Relaxed);
                    self.totals.bytes.fetch_add(len, Ordering::Relaxed);
                    if self.measuring.load(Ordering::Relaxed) {
                        if let Ok(mut h) = self.latencies.lock() {
                            let _ = h.record(took.as_micros() as u64);
                        }
                    }
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    self.totals.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => {
                    self.totals.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("export failed: {s}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One OTLP/HTTP connection with one request in flight: HTTP/1.1 keep-alive, written by hand so
/// the binary needs no HTTP client.
struct HttpWorker {
    addr: String,
    templates: Arc<Vec<workload::Template>>,
    totals: Arc<Totals>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seed: u64,
}

impl HttpWorker {
    async fn run(self) {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut i = self.seed as usize;
        let mut conn: Option<tokio::io::BufStream<tokio::net::TcpStream>> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let t = &self.templates[i % self.templates.len()];
            i += 1;
            let body = t.instantiate(&mut rng, now_nanos());
            let len = body.len() as u64;
            let sent = Instant::now();
            let stream = match conn.take() {
                Some(s) => s,
                None => match tokio::net::TcpStream::connect(&self.addr).await {
                    // Without it, a body's last segment waits for the delayed ACK.
                    Ok(s) if s.set_nodelay(true).is_ok() => tokio::io::BufStream::new(s),
                    Ok(s) => tokio::io::BufStream::new(s),
                    Err(e) => {
                        eprintln!("connect {}: {e}", self.addr);
                        self.totals.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            match post_protobuf(stream, &self.addr, &body).await {
                Ok((status, stream)) => {
                    conn = Some(stream);
                    let took = sent.elapsed();
                    if status == 200 {
                        self.totals.requests.fetch_add(1, Ordering::Relaxed);
                        self.totals
                            .spans
                            .fetch_add(t.request.spans as u64, Ordering::Relaxed);
                        self.totals.bytes.fetch_add(len, Ordering::Relaxed);
                        if self.measuring.load(Ordering::Relaxed) {
                            if let Ok(mut h) = self.latencies.lock() {
                                let _ = h.record(took.as_micros() as u64);
                            }
                        }
                    } else if status == 503 || status == 429 {
                        self.totals.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        self.totals.failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("export answered {status}");
                    }
                }
                Err(e) => {
                    self.totals.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("export failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// `POST /v1/traces` on a kept-alive connection; the status, and the connection for the next.
async fn post_protobuf(
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
    host: &str,
    body: &[u8],
) -> anyhow::Result<(u16, tokio::io::BufStream<tokio::net::TcpStream>)> {
    let (status, _, stream) = crate::http_post::post_body(
        stream,
        host,
        "/v1/traces",
        "Content-Type: application/x-protobuf\r\n",
        body,
    )
    .await?;
    Ok((status, stream))
}

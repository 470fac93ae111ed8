//! `sightline bench zipkin`: Zipkin v2 JSON span ingest — the default span workload
//! (shared/design/workloads.md) encoded once as Zipkin JSON lists, the same bodies sent by the
//! same client — into Sightline's Zipkin intake and into Zipkin's own server
//! (`io.zipkin:zipkin-server`'s exec jar, in-memory storage). For each it prints spans/s
//! acknowledged, acknowledgement latency, peak RSS and CPU seconds per million spans. Sightline
//! acknowledges after the WAL's fsync; Zipkin's in-memory storage keeps nothing on disk.
//!
//! By default each body is sent once; with `--duration` the bodies are sent round after round
//! until the time is up, every round's trace ids new, so that a run lasts long enough to include
//! Sightline's flushes and Zipkin's eviction of its oldest traces (at its default 500,000 spans).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::metrics::{cpu_seconds, free_port, peak_rss_mib, send_all, wait_ready, Peer, Requests};
use super::workload;
use super::LocalServer;
use crate::otlp_out::{Kind, SpanSpec, Value};

#[derive(Args)]
pub struct ZipkinArgs {
    /// Spans to send to each receiver.
    #[arg(long, default_value_t = 1_000_000)]
    spans: usize,
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Zipkin's exec jar [default: Maven's copy of zipkin-server 3.6.1 under ~/.m2, as
    /// `mvn dependency:get -Dartifact=io.zipkin:zipkin-server:3.6.1:jar:exec` puts it]
    #[arg(long)]
    zipkin_jar: Option<PathBuf>,
    /// Receivers to measure, in order.
    #[arg(long, default_value = "sightline,zipkin")]
    peers: String,
    /// Extra flags for the Sightline server this command starts.
    #[arg(long, default_value = "")]
    server_args: String,
    /// Send round after round of the bodies for this long (`60s`), instead of each once.
    #[arg(long)]
    duration: Option<String>,
}

/// The Zipkin JSON bodies of the workload, with the spans each holds and where each span's
/// trace id is in it.
struct Bodies {
    bodies: Vec<Vec<u8>>,
    spans: Vec<usize>,
    trace_ids: Vec<Vec<usize>>,
}

/// The bodies once, or round after round until a deadline; round `r > 0` writes `r` over the
/// first 8 hex digits of every trace id, so no span is sent twice.
struct Rounds {
    bodies: Arc<Bodies>,
    deadline: Option<std::time::Instant>,
}

impl Requests for Rounds {
    fn body(&self, n: usize) -> Option<Cow<'_, [u8]>> {
        let len = self.bodies.bodies.len();
        let (round, i) = (n / len.max(1), n % len.max(1));
        match self.deadline {
            None if round > 0 => return None,
            Some(d) if std::time::Instant::now() >= d => return None,
            _ => {}
        }
        let body = self.bodies.bodies.get(i)?;
        if round == 0 {
            return Some(Cow::Borrowed(body));
        }
        let mut body = body.clone();
        let tag = format!("{:08x}", round as u32);
        for &at in &self.bodies.trace_ids[i] {
            body[at..at + 8].copy_from_slice(tag.as_bytes());
        }
        Some(Cow::Owned(body))
    }

    fn items(&self, n: usize) -> usize {
        let len = self.bodies.spans.len().max(1);
        self.bodies.spans.get(n % len).copied().unwrap_or(0)
    }
}

const JSON_HEADERS: &str = "Content-Type: application/json\r\n";

fn hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn kind(k: Kind) -> Option<&'static str> {
    match k {
        Kind::Server => Some("SERVER"),
        Kind::Client => Some("CLIENT"),
        Kind::Producer => Some("PRODUCER"),
        Kind::Consumer => Some("CONSUMER"),
        Kind::Internal => None,
    }
}

/// One span as a Zipkin reporter sends it.
fn span_json(s: &SpanSpec) -> serde_json::Value {
    let (mut trace, mut id) = (String::new(), String::new());
    hex(&mut trace, &s.trace_id);
    hex(&mut id, &s.span_id);
    let mut tags = serde_json::Map::new();
    for (k, v) in &s.attributes {
        let text = match v {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
        };
        tags.insert(k.clone(), serde_json::Value::String(text));
    }
    if let Some(e) = &s.error {
        tags.insert("error".into(), serde_json::Value::String(e.clone()));
    }
    let mut span = serde_json::json!({
        "traceId": trace, "id": id, "name": s.name,
        "timestamp": s.start / 1000, "duration": (s.end.saturating_sub(s.start) / 1000).max(1),
        "localEndpoint": {"serviceName": s.service, "ipv4": "10.0.0.7"},
        "tags": tags,
    });
    if let Some(p) = s.parent {
        let mut parent = String::new();
        hex(&mut parent, &p);
        span["parentId"] = serde_json::Value::String(parent);
    }
    if let Some(k) = kind(s.kind) {
        span["kind"] = serde_json::Value::String(k.into());
    }
    span
}

/// The workload's spans (whole traces, so a few more than `spans`) as Zipkin JSON bodies of
/// `per_request` spans, in the hour before now.
fn bodies(spans: usize, per_request: usize) -> Bodies {
    let mut rng = SmallRng::seed_from_u64(42);
    let now = super::metrics::now_ms() as u64 * 1_000_000;
    let mut out = Bodies {
        bodies: Vec::new(),
        spans: Vec::new(),
        trace_ids: Vec::new(),
    };
    let mut batch = Vec::with_capacity(per_request);
    let finish = |batch: &mut Vec<serde_json::Value>, out: &mut Bodies| {
        let body = serde_json::to_vec(&*batch).unwrap_or_default();
        const KEY: &[u8] = b"\"traceId\":\"";
        let at: Vec<usize> = body
            .windows(KEY.len())
            .enumerate()
            .filter(|(_, w)| *w == KEY)
            .map(|(i, _)| i + KEY.len())
            .collect();
        out.spans.push(batch.len());
        out.trace_ids.push(at);
        out.bodies.push(body);
        batch.clear();
    };
    let mut made = 0;
    while made < spans {
        let start = now - 3_600_000_000_000 + (made as u64 * 1_000_000);
        for s in workload::trace(&mut rng, start) {
            batch.push(span_json(&s));
            made += 1;
            if batch.len() == per_request {
                finish(&mut batch, &mut out);
            }
        }
    }
    if !batch.is_empty() {
        finish(&mut batch, &mut out);
    }
    out
}

fn default_jar() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".m2/repository/io/zipkin/zipkin-server/3.6.1/zipkin-server-3.6.1-exec.jar")
}

/// Zipkin's server on an ephemeral port, once its health check answers.
fn start_zipkin(jar: &PathBuf, max_spans: usize) -> anyhow::Result<(Peer, String)> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("sightline-bench-zipkin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("java")
        .args(["-Xms1g", "-Xmx4g", "-jar"])
        .arg(jar)
        .env("QUERY_PORT", port.to_string())
        .env("STORAGE_TYPE", "mem")
        // Zipkin's in-memory store drops the oldest traces past this many spans.
        .env("MEM_MAX_SPANS", max_spans.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("java -jar {}", jar.display()))?;
    let addr = format!("127.0.0.1:{port}");
    let peer = Peer { child, dir };
    wait_ready(&addr, "/health", "Zipkin")?;
    Ok((peer, addr))
}

pub async fn run(args: ZipkinArgs) -> anyhow::Result<()> {
    println!(
        "command: sightline bench zipkin --spans {} --spans-per-request {} --connections {} --peers {}{}{}",
        args.spans,
        args.spans_per_request,
        args.connections,
        args.peers,
        args.duration.as_ref().map(|d| format!(" --duration {d}")).unwrap_or_default(),
        if args.server_args.is_empty() { String::new() } else { format!(" --server-args '{}'", args.server_args) }
    );
    let duration = match &args.duration {
        Some(d) => Some(crate::config::parse_duration("duration", d)?),
        None => None,
    };
    let bodies = bodies(args.spans, args.spans_per_request);
    let spans: usize = bodies.spans.iter().sum();
    let bytes: usize = bodies.bodies.iter().map(Vec::len).sum();
    let span_bytes = bytes as f64 / spans.max(1) as f64;
    println!(
        "workload:  {} spans of the default workload in {} Zipkin JSON requests, {:.1} MB ({:.0} bytes a span){}",
        spans,
        bodies.bodies.len(),
        bytes as f64 / 1e6,
        span_bytes,
        match duration {
            Some(d) => format!(", sent round after round for {d:?}, each round's trace ids new"),
            None => ", each sent once".to_string(),
        }
    );
    let bodies = Arc::new(bodies);
    let jar = args.zipkin_jar.clone().unwrap_or_else(default_jar);
    for name in args
        .peers
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (label, host, pid, _sightline, _zipkin) = match name {
            "sightline" => {
                let dir = std::env::temp_dir()
                    .join(format!("sightline-bench-sightline-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let s = LocalServer::start_in(dir, true, &args.server_args, None)?;
                let host = s
                    .zipkin
                    .clone()
                    .context("the server reported no Zipkin port")?;
                ("Sightline", host, s.pid(), Some(s), None)
            }
            "zipkin" => {
                // Sent once, Zipkin keeps every span (the comparison is of the same spans
                // stored); sent for a while, it keeps its default 500,000 and evicts the oldest,
                // as it runs in production.
                let max_spans = if duration.is_some() {
                    500_000
                } else {
                    100_000_000
                };
                let (peer, addr) = start_zipkin(&jar, max_spans)?;
                let pid = peer.child.id();
                ("Zipkin 3.6.1", addr, pid, None, Some(peer))
            }
            other => anyhow::bail!("unknown peer {other}: use sightline or zipkin"),
        };
        let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
        let rounds = Rounds {
            bodies: Arc::clone(&bodies),
            deadline: duration.map(|d| std::time::Instant::now() + d),
        };
        let sent = send_all(
            &host,
            "/api/v2/spans",
            JSON_HEADERS,
            Arc::new(rounds),
            args.connections,
        )
        .await;
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
        let (seconds, acked) = (sent.elapsed.as_secs_f64(), sent.items as f64);
        println!(
            "{label:<13} {:>9.0} spans/s acknowledged ({:.1} MB/s of JSON) over {seconds:.1} s, {acked} spans; ack p50 {:.1} ms p99 {:.1} ms, {} failed requests; peak RSS {:.0} MiB; {:.2} CPU s per million spans",
            acked / seconds,
            acked * span_bytes / 1e6 / seconds,
            sent.latencies.value_at_quantile(0.5) as f64 / 1000.0,
            sent.latencies.value_at_quantile(0.99) as f64 / 1000.0,
            sent.failed,
            peak_rss_mib(pid).unwrap_or(0.0),
            cpu / (acked / 1e6).max(1e-9)
        );
    }
    Ok(())
}

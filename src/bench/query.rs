//! `sightline bench query`: stores an hour of the ingest workload (10 million spans by default)
//! in a server it starts, compacts it, then times each dashboard query, PromQL over the span
//! metrics, trace lookups, attribute searches (native and TraceQL) and an SQL `GROUP BY` over
//! everything, and prints their latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tonic::transport::Channel;

use super::{http_call, http_request, now_nanos, workload, LocalServer};
use crate::otlp_out::TraceExporter;

#[derive(Args)]
pub struct QueryArgs {
    /// Spans to store, spread evenly over the hour before now.
    #[arg(long, default_value_t = 10_000_000)]
    spans: u64,
    /// Timed runs of each query (after one untimed run).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Extra flags for the server this command starts.
    #[arg(long, default_value = "")]
    server_args: String,
    /// Keep the data in this directory (instead of a temporary one), and reuse what an earlier
    /// run stored there rather than storing it again.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The `sightline` binary to start as the server (another build, to compare); this one by
    /// default.
    #[arg(long)]
    server_binary: Option<std::path::PathBuf>,
}

const HOUR: u64 = 3_600_000_000_000;
const SENDERS: usize = 16;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let binary = args.server_binary.as_deref();
    let server = match &args.data_dir {
        Some(dir) => LocalServer::start_in(dir.clone(), false, &args.server_args, binary)?,
        None => LocalServer::start_in(
            std::env::temp_dir().join(format!("sightline-bench-{}", std::process::id())),
            true,
            &args.server_args,
            binary,
        )?,
    };
    let started = Instant::now();
    let hour_start = match stored_since(&server.http)? {
        Some(first) => {
            eprintln!("reusing the spans stored in the data directory");
            first
        }
        None => {
            let hour_start = now_nanos() - HOUR;
            load(&server, &args, hour_start).await?;
            hour_start
        }
    };
    let loaded = started.elapsed();
    let started = Instant::now();
    http_call(&server.http, "POST", "/api/v1/admin/compact")?;
    let compacted = started.elapsed();
    let status: serde_json::Value =
        serde_json::from_str(&http_call(&server.http, "GET", "/api/v1/status/storage")?)?;
    println!(
        "command: sightline bench query --spans {} --runs {}{}",
        args.spans,
        args.runs,
        args.server_binary
            .as_ref()
            .map(|b| format!(" --server-binary {}", b.display()))
            .unwrap_or_default()
    );
    println!(
        "stored:           {} spans in {} files ({:.0} MiB) over one hour; loaded in {:.0} s, compacted in {:.0} s",
        status["spans_in_files"],
        status["files"],
        status["bytes_in_files"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
        loaded.as_secs_f64(),
        compacted.as_secs_f64()
    );

    let window = format!(
        "start={}&end={}",
        hour_start / 1_000_000_000,
        (hour_start + HOUR) / 1_000_000_000 + 60
    );
    let http = server.http.clone();
    let get = |path: String| {
        let http = http.clone();
        move || http_call(&http, "GET", &path).map(|_| ())
    };
    time(
        "topology",
        args.runs,
        get(format!("/api/v1/topology?{window}")),
    )?;
    time(
        "top-N by p99",
        args.runs,
        get(format!("/api/v1/top?by=p99&{window}")),
    )?;
    time(
        "RED series",
        args.runs,
        get(format!("/api/v1/red?service=frontend&{window}&step=60s")),
    )?;

    // Span metrics: instant PromQL queries at the hour's end over the rollups of every span,
    // as Grafana's RED panels and Tempo service map send them; each must find series.
    let end_s = (hour_start + HOUR) / 1_000_000_000;
    for (what, q) in [
        (
            "PromQL: span calls/s by service",
            "sum by (service) (rate(traces_spanmetrics_calls_total[5m]))",
        ),
        (
            "PromQL: span p99 by service",
            "histogram_quantile(0.99, sum by (service, le) (rate(traces_spanmetrics_latency_bucket[5m])))",
        ),
        (
            "PromQL: service graph requests/s",
            "sum by (client, server) (rate(traces_service_graph_request_total[5m]))",
        ),
    ] {
        let path = format!(
            "/prometheus/api/v1/query?query={}&time={end_s}",
            crate::http_post::url_encode(q)
        );
        time(what, args.runs, || {
            let body = http_call(&http, "GET", &path)?;
            if !body.contains(r#""result":[{"#) {
                bail!("{q}: no series in {body}");
            }
            Ok(())
        })?;
    }

    let ids = trace_ids(&server.http, hour_start, args.runs + 1)?;
    let mut next = ids.into_iter();
    time("trace by id", args.runs, || {
        let id = next.next().context("out of trace ids")?;
        let body = http_call(&http, "GET", &format!("/api/v1/traces/{id}"))?;
        if !body.contains("\"spans\"") {
            bail!("trace {id} not found");
        }
        Ok(())
    })?;
    time(
        "trace search, attribute (dedicated)",
        args.runs,
        get(format!(
            "/api/v1/traces?service=cart&attr=http.response.status_code%3D500&{window}&limit=20"
        )),
    )?;
    time(
        "trace search, attribute (any key)",
        args.runs,
        get(format!(
            "/api/v1/traces?service=cart&attr=app.attr_10%3D7&{window}&limit=20"
        )),
    )?;
    // The same two questions in TraceQL through the Tempo API, which plans them onto the native
    // search; then a structural query, which must also look at each candidate trace's spans.
    for (what, q, runs) in [
        (
            "TraceQL search, attribute (dedicated)",
            r#"{ resource.service.name = "cart" && span.http.response.status_code = 500 }"#,
            args.runs,
        ),
        (
            "TraceQL search, attribute (any key)",
            r#"{ resource.service.name = "cart" && span.app.attr_10 = 7 }"#,
            args.runs,
        ),
        (
            "TraceQL search, structural (>>)",
            r#"{ resource.service.name = "frontend" } >> { span.http.response.status_code = 500 }"#,
            args.runs.min(5),
        ),
    ] {
        let path = format!(
            "/tempo/api/search?q={}&{window}&limit=20",
            crate::http_post::url_encode(q)
        );
        time(what, runs, || {
            let body = http_call(&http, "GET", &path)?;
            if !body.contains(r#""traceID""#) {
                bail!("{q}: no traces in {body}");
            }
            Ok(())
        })?;
    }
    let sql = r#"{"query":"SELECT service_name, count(*) FROM spans GROUP BY service_name"}"#;
    let p50 = time(
        "SQL GROUP BY service over all spans",
        args.runs.min(5),
        || http_request(&http, "POST", "/api/v1/sql", sql).map(|_| ()),
    )?;
    let rows = status["spans_in_files"].as_f64().unwrap_or(0.0);
    println!(
        "                  = {:.1} million rows/s",
        rows / p50.as_secs_f64() / 1e6
    );
    Ok(())
}

/// Sends `args.spans` spans of the ingest workload with start times spread over the hour.
async fn load(server: &LocalServer, args: &QueryArgs, hour_start: u64) -> anyhow::Result<()> {
    eprintln!("storing {} spans over one hour", args.spans);
    let templates = Arc::new(workload::templates(200, 500, 7));
    let sent = Arc::new(AtomicU64::new(0));
    let endpoint = format!("http://{}", server.grpc);
    let mut tasks = Vec::new();
    for i in 0..SENDERS {
        let channel = Channel::from_shared(endpoint.clone())?.connect().await?;
        let templates = Arc::clone(&templates);
        let sent = Arc::clone(&sent);
        let total = args.spans;
        tasks.push(tokio::spawn(async move {
            let mut exporter = TraceExporter::new(channel);
            let mut rng = SmallRng::seed_from_u64(i as u64);
            let mut k = i;
            loop {
                let done = sent.load(Ordering::Relaxed);
                if done >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let t = &templates[k % templates.len()];
                k += SENDERS;
                let at = hour_start + (HOUR as f64 * done as f64 / total as f64) as u64;
                let body = Bytes::from(t.instantiate(&mut rng, at));
                match exporter.export(body).await {
                    Ok(()) => {
                        sent.fetch_add(t.request.spans as u64, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => bail!("export failed: {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The earliest start time stored, if anything is.
fn stored_since(http: &str) -> anyhow::Result<Option<u64>> {
    let query = r#"{"query":"SELECT CAST(min(start_time) AS BIGINT) FROM spans"}"#;
    let v: serde_json::Value =
        serde_json::from_str(&http_request(http, "POST", "/api/v1/sql", query)?)?;
    Ok(v["rows"][0][0].as_u64())
}

/// Trace ids spread over the hour, one per slice of it.
fn trace_ids(http: &str, hour_start: u64, count: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..count as u64 {
        let at = hour_start + HOUR * i / count as u64;
        let query = format!(
            r#"{{"query":"SELECT trace_id FROM spans WHERE start_time >= to_timestamp_nanos({at}) AND start_time < to_timestamp_nanos({}) LIMIT 1"}}"#,
            at + 10_000_000_000
        );
        let v: serde_json::Value =
            serde_json::from_str(&http_request(http, "POST", "/api/v1/sql", &query)?)?;
        let id = v["rows"][0][0]
            .as_str()
            .with_context(|| format!("no span near {at}: {v}"))?;
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Runs `query` once untimed, then `runs` times; prints and returns the median.
fn time(
    what: &str,
    runs: usize,
    mut query: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    query().with_context(|| what.to_string())?;
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        query().with_context(|| what.to_string())?;
        took.push(started.elapsed());
    }
    took.sort();
    let p50 = took[took.len() / 2];
    let p90 = took[(took.len() * 9 / 10).min(took.len() - 1)];
    println!(
        "{what:<40} p50 {:>8.1} ms   p90 {:>8.1} ms   ({} runs)",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        took.len()
    );
    Ok(p50)
}

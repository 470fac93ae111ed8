//! `sightline bench promql`: the same data in Sightline and in Prometheus (Debian's), sent by
//! remote write in time order — 10,000 counter series and 1,000 histogram bucket series every
//! 15 s for 6 hours, and one sample each of a million series for a selective matcher — then the
//! same PromQL queries to both, side by side: each as an instant query at the end and as a range
//! query over the last hour (60 s steps), timed over the HTTP API (answer included), the median
//! and the best of the repeats. The answers' series counts are compared, so both did the same work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sightline_collector::remote_write::decode::encode::{write_request_v1, Series};

use super::http_call;
use super::metrics::{send_all, Receiver, Requests, RW_HEADERS};

#[derive(Args)]
pub struct PromqlArgs {
    /// Hours of data, every 15 s.
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Counter series (`bench_requests_total`, 10 jobs).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Series of `bench_selective` (one sample each) that the selective matcher picks one of.
    #[arg(long, default_value_t = 1_000_000)]
    selective_series: usize,
    /// Timed runs of each query (after one untimed).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The Prometheus to compare with: by default Prometheus 3.16 as the tests build it
    /// (`go install github.com/prometheus/prometheus/cmd/prometheus@v0.316.0`, cached under
    /// `~/.cache/sightline-tests/go-bin/`), else Debian's 2.42 — whose range selectors include
    /// the sample at the window's start, unlike Prometheus 3's and Sightline's.
    #[arg(long)]
    prometheus: Option<std::path::PathBuf>,
    /// Extra flags for the Sightline server: history arrives at once, older than the default
    /// out-of-order window.
    #[arg(long, default_value = "--out-of-order-window 8h")]
    server_args: String,
    /// Keep Sightline's data in this directory (for profiling its queries after the run)
    /// instead of a temporary one.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const INTERVAL_MS: i64 = 15_000;
const SAMPLES_PER_REQUEST: usize = 2_000;
const BOUNDS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];

/// A series' labels and samples, owned until encoded.
type OwnedSeries = (Vec<(String, String)>, Vec<(f64, i64)>);

/// Snappy-compressed write requests in time order, and the samples they hold.
fn workload(args: &PromqlArgs, end_ms: i64) -> (Vec<Vec<u8>>, u64) {
    let mut rng = SmallRng::seed_from_u64(11);
    let steps = (args.hours * 3600.0 * 1000.0 / INTERVAL_MS as f64) as i64;
    let jobs = 10;
    let mut counters: Vec<(Vec<(String, String)>, f64)> = (0..args.series)
        .map(|i| {
            let labels = vec![
                ("__name__".to_string(), "bench_requests_total".to_string()),
                ("instance".to_string(), format!("host-{}", i / jobs)),
                ("job".to_string(), format!("job-{}", i % jobs)),
            ];
            (labels, 0.0)
        })
        .collect();
    // 100 label sets of a histogram, ten bounds each: a bucket counts what the ones under it do.
    let mut buckets: Vec<(Vec<(String, String)>, f64)> = Vec::new();
    for h in 0..100 {
        for le in BOUNDS {
            buckets.push((
                vec![
                    ("__name__".into(), "bench_latency_seconds_bucket".into()),
                    ("instance".into(), format!("host-{}", h / jobs)),
                    ("job".into(), format!("job-{}", h % jobs)),
                    ("le".into(), le.into()),
                ],
                0.0,
            ));
        }
    }
    let mut bodies = Vec::new();
    let mut samples = 0u64;
    let mut pending: Vec<OwnedSeries> = Vec::new();
    let mut flush = |pending: &mut Vec<OwnedSeries>| {
        let series: Vec<Series<'_>> = pending
            .iter()
            .map(|(l, s)| {
                (
                    l.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
                    s.clone(),
                )
            })
            .collect();
        if let Ok(body) = snap::raw::Encoder::new().compress_vec(&write_request_v1(&series)) {
            bodies.push(body);
        }
        pending.clear();
    };
    for step in 0..steps {
        let t = end_ms - (steps - 1 - step) * INTERVAL_MS;
        for (labels, value) in counters.iter_mut() {
            // Fractional, so that no two rates tie and topk picks the same series in both.
            *value += rng.random_range(0.0..20.0);
            pending.push((labels.clone(), vec![(*value, t)]));
        }
        for set in buckets.chunks_mut(BOUNDS.len()) {
            let mut below = 0.0;
            for (labels, value) in set.iter_mut() {
                below += f64::from(rng.random_range(0..5u32));
                *value += below;
                pending.push((labels.clone(), vec![(*value, t)]));
            }
        }
        samples += (counters.len() + buckets.len()) as u64;
        while pending.len() >= SAMPLES_PER_REQUEST {
            let rest = pending.split_off(SAMPLES_PER_REQUEST);
            flush(&mut pending);
            pending = rest;
        }
    }
    for i in 0..args.selective_series {
        let labels = vec![
            ("__name__".to_string(), "bench_selective".to_string()),
            ("id".to_string(), i.to_string()),
            ("pod".to_string(), format!("pod-{}", i % 1000)),
        ];
        pending.push((labels, vec![(i as f64, end_ms)]));
        samples += 1;
        if pending.len() >= SAMPLES_PER_REQUEST {
            flush(&mut pending);
        }
    }
    if !pending.is_empty() {
        flush(&mut pending);
    }
    (bodies, samples)
}

fn queries() -> Vec<&'static str> {
    vec![
        "rate(bench_requests_total[5m])",
        "sum by (job) (rate(bench_requests_total[5m]))",
        "histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m])))",
        "topk(10, rate(bench_requests_total[5m]))",
        r#"bench_selective{id="424242"}"#,
    ]
}

/// The median and best time of a query's repeats, and the series in its answer.
fn time_query(
    host: &str,
    path: &str,
    repeats: usize,
) -> anyhow::Result<(Duration, Duration, Vec<String>)> {
    let mut times = Vec::new();
    let mut series = Vec::new();
    for i in 0..=repeats {
        let started = Instant::now();
        let body = http_call(host, "GET", path)?;
        let took = started.elapsed();
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{path}: {body:.300}"))?;
        anyhow::ensure!(v["status"] == "success", "{path}: {body:.300}");
        series = v["data"]["result"]
            .as_array()
            .map(|r| r.iter().map(|s| s["metric"].to_string()).collect())
            .unwrap_or_default();
        series.sort();
        if i > 0 {
            times.push(took);
        }
    }
    times.sort();
    Ok((times[times.len() / 2], times[0], series))
}

pub async fn run(args: PromqlArgs) -> anyhow::Result<()> {
    println!(
        "command: sightline bench promql --hours {} --series {} --selective-series {} --repeats {} --server-args '{}'",
        args.hours, args.series, args.selective_series, args.repeats, args.server_args
    );
    let end_ms = super::metrics::now_ms() / 60_000 * 60_000 - 60_000;
    let built = Instant::now();
    let (bodies, samples) = workload(&args, end_ms);
    println!(
        "workload: {} counter + 1000 bucket series x {} h at 15 s, {} selective series; {samples} samples in {} requests, built in {:.1} s",
        args.series,
        args.hours,
        args.selective_series,
        bodies.len(),
        built.elapsed().as_secs_f64()
    );
    let bodies: Arc<dyn Requests> = Arc::new(bodies);
    let sightline = match &args.data_dir {
        Some(dir) => Receiver::Sightline(super::LocalServer::start_in(
            dir.clone(),
            false,
            &args.server_args,
            None,
        )?),
        None => Receiver::start("sightline", &args.server_args)?,
    };
    let prometheus_binary = args.prometheus.clone().unwrap_or_else(|| {
        let built = std::env::var_os("HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_default()
            .join(".cache/sightline-tests/go-bin/prometheus-v0.316.0/prometheus");
        if built.exists() {
            built
        } else {
            "prometheus".into()
        }
    });
    println!("prometheus: {}", prometheus_binary.display());
    let prometheus = Receiver::start_with("prometheus", "", &prometheus_binary)?;
    let mut bases = Vec::new();
    for r in [&sightline, &prometheus] {
        let (host, path) = r.write_endpoint();
        // One connection: in order, as Prometheus (without an out-of-order window) needs it.
        let sent = send_all(&host, path, RW_HEADERS, Arc::clone(&bodies), 1).await;
        let (elapsed, failed) = (sent.elapsed, sent.failed);
        anyhow::ensure!(failed == 0, "{}: {failed} write requests failed", r.label());
        println!("{:<10} loaded in {:.1} s", r.label(), elapsed.as_secs_f64());
        let prefix = if path.starts_with("/prometheus") {
            "/prometheus"
        } else {
            ""
        };
        bases.push((r.label(), host, prefix));
    }
    // Sightline's data as it settles: flushed to Parquet and compacted.
    if let Receiver::Sightline(s) = &sightline {
        http_call(&s.http, "POST", "/api/v1/admin/compact")?;
    }
    let end_s = end_ms / 1000;
    println!(
        "{:<88} {:>10} {:>22} {:>22}",
        "query", "kind", "Sightline p50 (best)", "Prometheus p50 (best)"
    );
    let mut slower = 0;
    for q in queries() {
        for (kind, params) in [
            ("instant", format!("time={end_s}")),
            (
                "range 1h",
                format!("start={}&end={end_s}&step=60", end_s - 3600),
            ),
        ] {
            let mut figures = Vec::new();
            for (_, host, prefix) in &bases {
                let path = format!(
                    "{prefix}/api/v1/{}?query={}&{params}",
                    if kind == "instant" {
                        "query"
                    } else {
                        "query_range"
                    },
                    crate::http_post::url_encode(q)
                );
                figures.push(time_query(host, &path, args.repeats)?);
            }
            let (s, p) = (&figures[0], &figures[1]);
            anyhow::ensure!(
                s.2 == p.2,
                "{q} ({kind}): Sightline answered {} series, Prometheus {}; only in Sightline {:?}, only in Prometheus {:?}",
                s.2.len(),
                p.2.len(),
                s.2.iter().filter(|x| !p.2.contains(x)).collect::<Vec<_>>(),
                p.2.iter().filter(|x| !s.2.contains(x)).collect::<Vec<_>>()
            );
            if s.0 > p.0 {
                slower += 1;
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{q:<88} {kind:>10} {:>11.1} ms ({:>6.1}) {:>11.1} ms ({:>6.1})   {} series",
                ms(s.0),
                ms(s.1),
                ms(p.0),
                ms(p.1),
                s.2.len()
            );
        }
    }
    println!(
        "{slower} of {} queries slower on Sightline than on Prometheus (by the median)",
        queries().len() * 2
    );
    Ok(())
}

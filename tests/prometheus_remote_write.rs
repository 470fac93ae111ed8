//! Prometheus remote write from the real senders: Debian's Prometheus scrapes itself and
//! remote-writes to Sightline; vmagent (Debian's victoria-metrics) scrapes that Prometheus and
//! writes to both Sightline and Prometheus. What Sightline stores equals what Prometheus stored,
//! sample for sample. The test command installs both packages.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, get, now_ms, series_text, start_prometheus, stored_metrics, Running, Server,
};

/// A value's bits, every NaN but the stale marker read as one (the query API prints them all
/// as "NaN").
fn bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// Every sample Prometheus holds in (from, to], by series, from a range-vector query.
fn prometheus_samples(port: u16, from: i64, to: i64) -> BTreeMap<String, Vec<(i64, u64)>> {
    let seconds = (to - from) / 1000;
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=%7B__name__%3D~%22.%2B%22%7D%5B{seconds}s%5D&time={}",
        to as f64 / 1000.0
    );
    let (status, body) = get(&url);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = BTreeMap::new();
    for series in v["data"]["result"].as_array().unwrap() {
        let labels: BTreeMap<String, String> = series["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let values: Vec<(i64, u64)> = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let ts = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let value: f64 = match p[1].as_str().unwrap() {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    s => s.parse().unwrap(),
                };
                (ts, bits(value))
            })
            .collect();
        out.insert(series_text(&labels), values);
    }
    out
}

#[test]
fn prometheus_and_vmagent_write_what_prometheus_stores() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sightline"), &[]);
    let write_url = server.remote_write_url();
    let prom_port = free_port();
    let vm_port = free_port();

    let _prometheus = start_prometheus(
        Path::new("prometheus"),
        dir.path(),
        prom_port,
        &format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n\
             remote_write:\n  - url: {write_url}\n    queue_config:\n      batch_send_deadline: 1s\n      max_samples_per_send: 500\n    metadata_config:\n      send_interval: 2s\n"
        ),
        &["--web.enable-remote-write-receiver"],
    );

    let vm_config = dir.path().join("vmagent.yml");
    std::fs::write(
        &vm_config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: vmagent\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n"
        ),
    )
    .unwrap();
    let _vmagent = Running(
        Command::new("vmagent")
            .arg(format!("-promscrape.config={}", vm_config.display()))
            .arg(format!("-remoteWrite.url={write_url}"))
            .arg(format!(
                "-remoteWrite.url=http://127.0.0.1:{prom_port}/api/v1/write"
            ))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("vm-queue").display()
            ))
            .arg("-remoteWrite.flushInterval=1s")
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vmagent (scripts/test.sh installs Debian's victoria-metrics)"),
    );

    let started = now_ms();
    std::thread::sleep(Duration::from_secs(15));
    // Everything up to `to` has been sent by the time the senders have had a few more seconds.
    let to = now_ms() - 4000;
    // Whole seconds of range, so the query's window is exactly (from, to].
    let from = to - (to - started + 1000) / 1000 * 1000;
    let expected = prometheus_samples(prom_port, from, to);
    std::thread::sleep(Duration::from_secs(6));
    server.stop();

    let stored = stored_metrics(&dir.path().join("sightline"));
    let mut got: BTreeMap<String, BTreeSet<(i64, u64)>> = BTreeMap::new();
    for s in &stored.samples {
        // Prometheus answers queries without its stale markers.
        if s.ts <= from || s.ts > to || s.value.to_bits() == 0x7ff0_0000_0000_0002 {
            continue;
        }
        got.entry(s.series())
            .or_default()
            .insert((s.ts, bits(s.value)));
    }
    let jobs: BTreeSet<&str> = expected
        .keys()
        .filter_map(|k| k.split("job=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        jobs.contains("prometheus") && jobs.contains("vmagent"),
        "{jobs:?}"
    );
    let samples: usize = expected.values().map(Vec::len).sum();
    assert!(
        expected.len() > 300 && samples > 3000,
        "{} series, {samples} samples",
        expected.len()
    );
    let mut missing = Vec::new();
    for (series, values) in &expected {
        let want: BTreeSet<(i64, u64)> = values.iter().copied().collect();
        match got.get(series) {
            Some(have) if *have == want => {}
            Some(have) => missing.push(format!(
                "{series}: {} of {} samples differ",
                want.symmetric_difference(have).count(),
                want.len()
            )),
            None => missing.push(format!("{series}: not stored")),
        }
    }
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} series differ, e.g. {:?}; {} stored series Prometheus lacks, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    assert!(
        stored
            .metadata
            .iter()
            .any(|m| m.0 == "prometheus_http_requests_total" && m.1 == "counter"),
        "remote write metadata stored"
    );
}

/// Polls a Prometheus instant query until `done` accepts its result (at most a minute).
fn prometheus_query_until(
    port: u16,
    query: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        query
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(' ', "%20")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(&url);
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = v["data"]["result"].clone();
        if done(&result) {
            return result;
        }
        assert!(Instant::now() < deadline, "{query}: {result}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Debian's Prometheus scrapes Sightline's `/metrics` (OpenMetrics, as it asks for first): its
/// own figures and the span metrics, with exemplars that lead to the spans sent; the text
/// format passes `promtool check metrics`.
#[test]
fn prometheus_scrapes_sightlines_own_and_span_metrics() {
    use common::otlp::{encode, request, span};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sightline"), &[]);
    let spans: Vec<_> = (0..5u8).map(|n| span(n, "GET /cart")).collect();
    let trace_ids: BTreeSet<String> = spans.iter().map(|s| common::hex(&s.trace_id)).collect();
    let (status, _, body) = common::post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        encode(&request("checkout", spans)),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let prom_port = free_port();
    let _prometheus = start_prometheus(
        Path::new("prometheus"),
        dir.path(),
        prom_port,
        &format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: sightline\n    static_configs:\n      - targets: ['{}']\n",
            server.http_addr
        ),
        &["--enable-feature=exemplar-storage"],
    );
    let value = |r: &serde_json::Value| -> f64 {
        r[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let calls = prometheus_query_until(
        prom_port,
        r#"traces_spanmetrics_calls_total{service="checkout"}"#,
        |r| value(r) == 5.0,
    );
    assert_eq!(calls[0]["metric"]["span_kind"], "SPAN_KIND_SERVER");
    assert_eq!(calls[0]["metric"]["job"], "sightline");
    prometheus_query_until(prom_port, r#"up{job="sightline"}"#, |r| value(r) == 1.0);
    prometheus_query_until(
        prom_port,
        r#"sightline_rows_acknowledged_total{table="spans"}"#,
        |r| value(r) >= 5.0,
    );
    prometheus_query_until(prom_port, "sightline_wal_commit_seconds_count", |r| {
        value(r) >= 1.0
    });
    prometheus_query_until(
        prom_port,
        r#"histogram_quantile(0.5, sum by (le) (traces_spanmetrics_latency_bucket{service="checkout"}))"#,
        |r| (0.0..=0.002).contains(&value(r)),
    );

    // The exemplars Prometheus kept point at the spans sent.
    let (status, body) = get(&format!(
        "http://127.0.0.1:{prom_port}/api/v1/query_exemplars?query=traces_spanmetrics_calls_total&start=0&end={}",
        now_ms() / 1000 + 60
    ));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kept: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().unwrap().clone())
        .map(|e| e["labels"]["trace_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!kept.is_empty(), "{body}");
    assert!(kept.iter().all(|t| trace_ids.contains(t)), "{kept:?}");

    // The text format, as older scrapers get it, parses in promtool, whose only complaint is
    // the unit in a name that Jaeger's Monitor tab fixes.
    let (status, text) = get(&format!("http://{}/metrics", server.http_addr));
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE traces_spanmetrics_calls_total counter"));
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.lines().all(|l| l.trim().is_empty()
            || l.starts_with(
                "traces_span_metrics_duration_milliseconds use base unit \"seconds\""
            )),
        "{said}"
    );
}

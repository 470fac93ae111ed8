//! Prometheus 3 as the oracle: Prometheus v0.316.0 (3.16), built from the Go module proxy,
//! scrapes itself and Sightline's `/metrics` and remote-writes every sample to Sightline; then
//! the same instant and range queries — every family of functions, operators and aggregations —
//! go to both, and must return the same series with the same values (relative 1e-6, as
//! promqltest compares).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{free_port, get, go_binary, now_ms, start_prometheus, url_encode as enc, Server};
use serde_json::Value;

const PROMETHEUS: &str = "github.com/prometheus/prometheus/cmd/prometheus";
const VERSION: &str = "v0.316.0";

/// How long Prometheus scrapes (once a second) before the queries.
const SCRAPING: Duration = Duration::from_secs(60);

/// An answer reduced to what must agree: its type and, per series (labels as text), the points.
#[derive(Debug)]
struct Answer {
    kind: String,
    series: BTreeMap<String, Vec<(f64, String)>>,
    /// Series in the order given, for the queries whose order is defined (`sort`...).
    order: Vec<String>,
}

fn answer(base: &str, path_and_query: &str) -> Result<Answer, String> {
    let (status, body) = get(&format!("{base}/api/v1/{path_and_query}"));
    let v: Value = serde_json::from_str(&body).map_err(|_| body.clone())?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("{} {}", v["errorType"], v["error"]));
    }
    let data = &v["data"];
    let kind = data["resultType"].as_str().unwrap_or_default().to_string();
    let mut series = BTreeMap::new();
    let mut order = Vec::new();
    let point = |p: &Value| {
        (
            p[0].as_f64().unwrap_or(f64::NAN),
            p[1].as_str().unwrap_or("").to_string(),
        )
    };
    match kind.as_str() {
        "scalar" | "string" => {
            series.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for s in data["result"].as_array().into_iter().flatten() {
                let labels = s["metric"].to_string();
                let points: Vec<(f64, String)> = if let Some(v) = s.get("value") {
                    vec![point(v)]
                } else {
                    s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(point)
                        .collect()
                };
                order.push(labels.clone());
                series.insert(labels, points);
            }
        }
    }
    Ok(Answer {
        kind,
        series,
        order,
    })
}

fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_nan() && y.is_nan() => true,
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// Where two answers differ, if they do.
fn difference(query: &str, want: &Answer, got: &Answer) -> Option<String> {
    if want.kind != got.kind {
        return Some(format!("type {} vs {}", want.kind, got.kind));
    }
    if want.series.keys().ne(got.series.keys()) {
        let only_p: Vec<_> = want
            .series
            .keys()
            .filter(|k| !got.series.contains_key(*k))
            .collect();
        let only_s: Vec<_> = got
            .series
            .keys()
            .filter(|k| !want.series.contains_key(*k))
            .collect();
        return Some(format!(
            "series only in Prometheus {only_p:?}, only in Sightline {only_s:?}"
        ));
    }
    for (labels, w) in &want.series {
        let g = &got.series[labels];
        let same = w.len() == g.len()
            && w.iter()
                .zip(g)
                .all(|(a, b)| a.0 == b.0 && same_value(&a.1, &b.1));
        if !same {
            return Some(format!("{labels}: Prometheus {w:?}, Sightline {g:?}"));
        }
    }
    if query.starts_with("sort") && want.order != got.order {
        return Some(format!("order {:?} vs {:?}", want.order, got.order));
    }
    None
}

/// Instant queries: every family of PromQL, over Prometheus's own counters, gauges, classic
/// histograms and summaries, and Sightline's.
fn instant_queries() -> Vec<String> {
    let counters = [
        "prometheus_tsdb_head_samples_appended_total",
        "process_cpu_seconds_total",
        "prometheus_http_requests_total",
        "sightline_wal_bytes_written_total",
    ];
    let gauges = [
        "go_goroutines",
        "process_resident_memory_bytes",
        "prometheus_tsdb_head_series",
        "sightline_memory_used_bytes",
    ];
    let mut q: Vec<String> = Vec::new();
    for c in counters {
        for f in ["rate", "irate", "increase", "resets", "changes"] {
            q.push(format!("{f}({c}[30s])"));
        }
    }
    for g in gauges {
        for f in [
            "avg_over_time",
            "min_over_time",
            "max_over_time",
            "sum_over_time",
            "count_over_time",
            "last_over_time",
            "present_over_time",
            "stddev_over_time",
            "stdvar_over_time",
            "delta",
            "idelta",
            "deriv",
        ] {
            q.push(format!("{f}({g}[30s])"));
        }
        q.push(format!("quantile_over_time(0.9, {g}[30s])"));
        q.push(format!("predict_linear({g}[30s], 60)"));
        q.push(format!("double_exponential_smoothing({g}[30s], 0.5, 0.5)"));
    }
    let c = "prometheus_http_requests_total";
    let g = "go_goroutines";
    let h = "prometheus_http_request_duration_seconds";
    for agg in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        q.push(format!("{agg}(rate({c}[30s]))"));
        q.push(format!("{agg} by (handler) (rate({c}[30s]))"));
        q.push(format!("{agg} without (instance, code) ({c})"));
    }
    q.extend([
        format!("topk(3, {c})"),
        format!("bottomk(3, rate({c}[30s]))"),
        format!("topk by (job) (2, {g})"),
        format!("quantile(0.5, {c})"),
        format!("quantile by (job) (0.9, rate({c}[30s]))"),
        format!("count_values(\"value\", {g})"),
        format!("limitk(2, {c})"),
        format!("limit_ratio(0.5, {c})"),
        // Binary operators, vector matching, set operators.
        format!("{g} + 1"),
        format!("{g} - {g}"),
        format!("{g} * 2 / 3"),
        format!("{g} % 7"),
        format!("{g} ^ 0.5"),
        format!("{g} atan2 10"),
        format!("{g} > 1"),
        format!("{g} > bool 1"),
        format!("{g} == bool {g}"),
        format!("{c} != 0"),
        format!("{c} < bool 100"),
        format!("rate({c}[30s]) / ignoring(code) group_left sum without (code) (rate({c}[30s]))"),
        format!("sum by (job, instance) ({c}) / on (job, instance) group_left {g}"),
        format!("{c} and {c}{{code=\"200\"}}"),
        format!("{c} or {g}"),
        format!("{c} unless {c}{{handler=\"/metrics\"}}"),
        format!("-{g}"),
        // Histograms and summaries.
        format!("histogram_quantile(0.9, sum by (le) (rate({h}_bucket[30s])))"),
        format!("histogram_quantile(0.5, sum by (handler, le) (rate({h}_bucket[30s])))"),
        format!("histogram_quantile(0.99, {h}_bucket)"),
        format!("rate({h}_sum[30s]) / rate({h}_count[30s])"),
        "histogram_quantile(0.9, sum by (le) (sightline_wal_commit_seconds_bucket))".into(),
        "go_gc_duration_seconds{quantile=\"0.5\"}".into(),
        "avg by (quantile) (go_gc_duration_seconds)".into(),
        // Math, clamping, time.
        format!("abs(-{g})"),
        format!("ceil({g} / 3)"),
        format!("floor({g} / 3)"),
        format!("round({g} / 3)"),
        format!("round({g}, 5)"),
        format!("sqrt({g})"),
        format!("exp({g} / 100)"),
        format!("ln({g})"),
        format!("log2({g})"),
        format!("log10({g})"),
        format!("sgn({g} - 10)"),
        format!("clamp({g}, 5, 20)"),
        format!("clamp_min({g}, 50)"),
        format!("clamp_max({g}, 5)"),
        format!("sin({g})"),
        format!("cos({g})"),
        format!("tan({g})"),
        format!("asin({g} / 1000)"),
        format!("acos({g} / 1000)"),
        format!("atan({g})"),
        format!("sinh({g} / 100)"),
        format!("cosh({g} / 100)"),
        format!("tanh({g})"),
        format!("asinh({g})"),
        format!("acosh({g} + 1)"),
        format!("atanh({g} / 1000)"),
        format!("deg({g})"),
        format!("rad({g})"),
        "pi()".into(),
        "time()".into(),
        format!("timestamp({g})"),
        format!("minute(timestamp({g}))"),
        "hour()".into(),
        "day_of_week()".into(),
        "day_of_month()".into(),
        "day_of_year()".into(),
        "days_in_month()".into(),
        "month()".into(),
        "year()".into(),
        // Labels, absence, conversion, order.
        format!("label_replace({g}, \"host\", \"$1\", \"instance\", \"(.*):.*\")"),
        format!("label_join({c}, \"both\", \"-\", \"code\", \"handler\")"),
        "absent(nonexistent_metric)".into(),
        format!("absent({g})"),
        "absent_over_time(nonexistent_metric{job=\"x\"}[1m])".into(),
        format!("vector(scalar(sum({g})))"),
        format!("scalar({c})"),
        format!("sort(rate({c}[30s]))"),
        format!("sort_desc({c})"),
        format!("sort_by_label({c}, \"handler\")"),
        // Subqueries, offset, @.
        format!("max_over_time(rate({c}[10s])[30s:5s])"),
        format!("avg_over_time({g}[20s:2s])"),
        format!("{g} offset 10s"),
        format!("rate({c}[20s] offset 5s)"),
        // Selectors.
        format!("{c}{{code=~\"2..\"}}"),
        format!("{c}{{handler!~\"/api.*\"}}"),
        "{__name__=~\"go_gc_duration_seconds.*\"}".into(),
        "up".into(),
        "count_over_time(up[40s])".into(),
    ]);
    q
}

/// Range queries over the last 30 seconds of the data, 5 seconds apart.
fn range_queries() -> Vec<String> {
    let c = "prometheus_http_requests_total";
    let g = "go_goroutines";
    vec![
        format!("rate({c}[10s])"),
        format!("sum by (handler) (irate({c}[10s]))"),
        format!("{g}"),
        format!("avg_over_time({g}[10s])"),
        format!("deriv({g}[10s])"),
        format!("histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))"),
        format!("topk(2, {c})"),
        format!("{g} > bool 10"),
        format!("max_over_time(rate({c}[10s])[10s:2s])"),
        format!("{g} @ end()"),
        "time()".into(),
        "scrape_duration_seconds".into(),
    ]
}

#[test]
fn prometheus_3_and_sightline_answer_the_same() {
    let prometheus = go_binary(PROMETHEUS, VERSION);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sightline"), &[]);
    let prom_port = free_port();
    let config = format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n\
             \x20 - job_name: sightline\n    static_configs:\n      - targets: ['{}']\n\
             remote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: 1s\n",
            server.http_addr,
            server.remote_write_url()
    );
    let _prometheus = start_prometheus(
        &prometheus,
        dir.path(),
        prom_port,
        &config,
        &["--enable-feature=promql-experimental-functions"],
    );
    let base = format!("http://127.0.0.1:{prom_port}");
    std::thread::sleep(SCRAPING);
    // A time whose samples both have: remote write sends within a second or two.
    let t = now_ms() / 1000 - 10;
    let sightline = format!("http://{}/prometheus", server.http_addr);

    let mut asked = 0;
    let mut failures = Vec::new();
    let mut compare = |query: &str, path: String| {
        asked += 1;
        let want = answer(&base, &path);
        let got = answer(&sightline, &path);
        match (want, got) {
            (Ok(w), Ok(g)) => {
                if w.series.is_empty() && !query.contains("absent") && !query.contains("limit") {
                    failures.push(format!(
                        "{query}: Prometheus has no result (the test's data is thin)"
                    ));
                } else if let Some(d) = difference(query, &w, &g) {
                    failures.push(format!("{query}: {d}"));
                }
            }
            (Err(w), Err(_)) => failures.push(format!("{query}: both failed ({w})")),
            (w, g) => failures.push(format!(
                "{query}: Prometheus {:?}, Sightline {:?}",
                w.err(),
                g.err()
            )),
        }
    };
    for query in instant_queries() {
        let path = format!("query?query={}&time={t}", enc(&query));
        compare(&query, path);
    }
    for query in range_queries() {
        let path = format!(
            "query_range?query={}&start={}&end={t}&step=5",
            enc(&query),
            t - 30
        );
        compare(&query, path);
    }
    assert!(asked >= 100, "{asked} queries");
    assert!(
        failures.is_empty(),
        "{} of {asked} queries differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! The Prometheus HTTP API of the real binary, with what really calls it: Debian's `promtool
//! query instant|range|series|labels`, and Grafana's Prometheus datasource request by request
//! (Save & test, the metric and label browser, metadata, exemplars, step-aligned range
//! queries); bad queries get `bad_data` naming the problem.

mod common;

use common::{now_ms, url_encode as enc};

use std::process::Command;

use common::{post, Server};
use serde_json::{json, Value};
use sightline_collector::remote_write::decode::encode::write_request_v1;

/// Writes counters and a gauge, 15 s apart, over the last five minutes (ending at `end`).
fn load(server: &Server, end: i64) {
    let mut series = Vec::new();
    let times: Vec<i64> = (0..20).map(|i| end - (19 - i) * 15_000).collect();
    for (instance, per_step) in [("a", 10.0), ("b", 30.0)] {
        let samples: Vec<(f64, i64)> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (i as f64 * per_step, *t))
            .collect();
        series.push((
            vec![
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", instance),
            ],
            samples,
        ));
    }
    series.push((
        vec![
            ("__name__", "room_temperature_celsius"),
            ("room", "kitchen"),
        ],
        times.iter().map(|t| (21.5, *t)).collect(),
    ));
    let body = snap::raw::Encoder::new()
        .compress_vec(&write_request_v1(&series))
        .unwrap();
    let (status, _, reply) = post(
        &server.remote_write_url(),
        "application/x-protobuf",
        &[
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
        body,
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&reply));
}

fn api(server: &Server, path: &str) -> String {
    format!("http://{}/prometheus/api/v1/{path}", server.http_addr)
}

fn get(server: &Server, path_and_query: &str) -> (u16, Value) {
    let (status, body) = common::get(&api(server, path_and_query));
    let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path_and_query}: {body}"));
    (status, v)
}

fn post_form(server: &Server, path: &str, form: &str) -> (u16, Value) {
    let (status, _, body) = post(
        &api(server, path),
        "application/x-www-form-urlencoded",
        &[],
        form.as_bytes().to_vec(),
    );
    (status, serde_json::from_slice(&body).unwrap())
}

fn ok(got: (u16, Value)) -> Value {
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["status"], "success", "{}", got.1);
    got.1["data"].clone()
}

fn bad(got: (u16, Value), mentions: &str) {
    assert_eq!(got.0, 400, "{}", got.1);
    assert_eq!(got.1["status"], "error");
    assert_eq!(got.1["errorType"], "bad_data", "{}", got.1);
    let msg = got.1["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(mentions),
        "{msg:?} should mention {mentions:?}"
    );
}

#[test]
fn grafana_and_promtool_read_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // A whole second: promtool and Grafana send times in seconds.
    let end = now_ms() / 1000 * 1000;
    load(&server, end);
    let end_s = end / 1000;

    // Equality matchers go through the postings: every pair must hold, other matchers still do.
    let instances = |q: &str| -> Vec<String> {
        let mut v: Vec<String> = instant(&server, q, end_s)
            .iter()
            .map(|s| s["metric"]["instance"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(instances(r#"http_requests_total{job="api"}"#), ["a", "b"]);
    assert_eq!(
        instances(r#"http_requests_total{job="api", instance="b"}"#),
        ["b"]
    );
    assert_eq!(
        instances(r#"http_requests_total{job="api", instance!="a"}"#),
        ["b"]
    );
    assert!(instances(r#"http_requests_total{instance="a", instance="b"}"#).is_empty());
    assert!(instances(r#"http_requests_total{job="web"}"#).is_empty());
    assert!(instances(r#"room_temperature_celsius{job="api"}"#).is_empty());

    // Annotations, in Prometheus's words: an info for `rate` of a gauge's name, a warning for
    // a quantile outside [0, 1] and for buckets without `le`; none for a counter.
    let envelope = |q: &str| get(&server, &format!("query?query={}&time={end_s}", enc(q))).1;
    let e = envelope("rate(room_temperature_celsius[1m])");
    assert_eq!(
        e["infos"],
        json!([
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"room_temperature_celsius\""
        ]),
        "{e}"
    );
    assert!(e.get("warnings").is_none(), "{e}");
    let e = envelope("rate(http_requests_total[1m])");
    assert!(
        e.get("infos").is_none() && e.get("warnings").is_none(),
        "{e}"
    );
    let e = envelope("histogram_quantile(1.5, rate(http_requests_total[1m]))");
    assert_eq!(
        e["warnings"],
        json!([
            "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"\"",
            "PromQL warning: quantile value should be between 0 and 1, got 1.5"
        ]),
        "{e}"
    );

    // Grafana's Save & test: POST form, then buildinfo (without `features`, it is Prometheus).
    let r = post_form(&server, "query", "query=1%2B1&time=4");
    assert_eq!(r.0, 200);
    assert_eq!(
        r.1,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
    );
    let info = ok(get(&server, "status/buildinfo"));
    assert!(info["version"].as_str().unwrap().starts_with('3'));
    assert!(info.get("features").is_none(), "{info}");
    assert_eq!(ok(get(&server, "rules")), json!({"groups": []}));
    let exemplars = ok(get(
        &server,
        &format!(
            "query_exemplars?query=test&start={}&end={}",
            end - 3_600_000,
            end
        ),
    ));
    assert_eq!(exemplars, json!([]));

    // The metric and label browser.
    let names = ok(get(&server, "label/__name__/values"));
    assert_eq!(
        names,
        json!(["http_requests_total", "room_temperature_celsius"])
    );
    let labels = ok(get(
        &server,
        &format!(
            "labels?match[]={}&start={}&end={end_s}",
            enc("http_requests_total"),
            end_s - 3600
        ),
    ));
    assert_eq!(labels, json!(["__name__", "instance", "job"]));
    let values = ok(get(
        &server,
        &format!("label/instance/values?match[]={}", enc("{job=\"api\"}")),
    ));
    assert_eq!(values, json!(["a", "b"]));
    let (status, limited) = get(
        &server,
        &format!("series?match[]={}&limit=2", enc("{__name__!=\"\"}")),
    );
    assert_eq!(status, 200);
    assert_eq!(limited["data"].as_array().unwrap().len(), 2, "{limited}");
    assert!(limited["warnings"][0]
        .as_str()
        .unwrap()
        .contains("truncated"));
    let series = ok(get(
        &server,
        &format!("series?match[]={}", enc("room_temperature_celsius")),
    ));
    assert_eq!(
        series,
        json!([{"__name__": "room_temperature_celsius", "room": "kitchen"}])
    );

    // Instant queries: a counter's per-second rate (10 and 30 per 15 s; every sample inside
    // the window, so Prometheus's extrapolation gives exactly the slope).
    let rate = ok(get(
        &server,
        &format!(
            "query?query={}&time={end_s}",
            enc("sum by (instance) (rate(http_requests_total[2m]))")
        ),
    ));
    assert_eq!(rate["resultType"], "vector");
    let mut got: Vec<(String, f64)> = rate["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["instance"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2);
    assert!((got[0].1 - 10.0 / 15.0).abs() < 1e-9, "{got:?}");
    assert!((got[1].1 - 2.0).abs() < 1e-9, "{got:?}");

    // A range query: points at multiples of the step, values as strings.
    let step = 30;
    let start_s = (end_s - 240) / step * step;
    let range = ok(get(
        &server,
        &format!(
            "query_range?query={}&start={start_s}&end={end_s}&step={step}",
            enc("room_temperature_celsius")
        ),
    ));
    assert_eq!(range["resultType"], "matrix");
    let points = range["result"][0]["values"].as_array().unwrap();
    assert!(points.len() >= 8, "{range}");
    for p in points {
        assert_eq!(p[0].as_i64().unwrap() % step, 0, "{p}");
        assert_eq!(p[1], "21.5");
    }
    // POST form works the same, and NaN/Inf are strings.
    let inf = ok(post_form(
        &server,
        "query",
        &format!("query={}&time={end_s}", enc("vector(1/0)")),
    ));
    assert_eq!(inf["result"][0]["value"][1], "+Inf");

    // Bad input: each a bad_data naming the problem.
    bad(
        get(&server, &format!("query?query={}", enc("rate(x[5m]"))),
        "query",
    );
    bad(
        get(
            &server,
            &format!("query?query={}", enc("nosuchfunction(x)")),
        ),
        "nosuchfunction",
    );
    bad(
        get(&server, &format!("query?query={}", enc("rate(x)"))),
        "rate",
    );
    bad(
        get(&server, &format!("query?query={}", enc("x{a=~\"(\"}"))),
        "regex",
    );
    bad(get(&server, "series"), "match[]");
    bad(
        get(
            &server,
            &format!("query_range?query=up&start=0&end={end_s}&step=1"),
        ),
        "11,000 points",
    );
    bad(
        get(&server, "query_range?query=up&start=10&end=5&step=1"),
        "end",
    );
    bad(get(&server, "query?query=up&time=yesterday"), "time");

    // promtool, as a user runs it.
    let url = format!("http://{}/prometheus", server.http_addr);
    let promtool = |args: &[&str]| -> String {
        let out = Command::new("promtool")
            .arg("query")
            .args(args)
            .output()
            .expect("promtool (Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let instant = promtool(&["instant", &url, "room_temperature_celsius"]);
    assert!(
        instant.contains("room_temperature_celsius{room=\"kitchen\"} => 21.5"),
        "{instant}"
    );
    let start_arg = (end_s - 120).to_string();
    let end_arg = end_s.to_string();
    let ranged = promtool(&[
        "range",
        "--start",
        &start_arg,
        "--end",
        &end_arg,
        "--step",
        "30s",
        &url,
        "http_requests_total{instance=\"a\"}",
    ]);
    assert!(
        ranged.contains("http_requests_total{instance=\"a\", job=\"api\"} =>"),
        "{ranged}"
    );
    assert!(ranged.contains(" @["), "{ranged}");
    let series = promtool(&["series", "--match", "{job=\"api\"}", &url]);
    assert_eq!(series.lines().count(), 2, "{series}");
    let labels = promtool(&["labels", &url, "room"]);
    assert_eq!(labels.trim(), "kitchen");
}

/// One value of an instant query's vector, by the labels that pick it.
fn instant(server: &Server, query: &str, at_s: i64) -> Vec<Value> {
    let data = ok(get(
        server,
        &format!("query?query={}&time={at_s}", enc(query)),
    ));
    assert_eq!(data["resultType"], "vector", "{data}");
    data["result"].as_array().unwrap().clone()
}

fn only_value(server: &Server, query: &str, at_s: i64) -> f64 {
    let result = instant(server, query, at_s);
    assert_eq!(result.len(), 1, "{query}: {result:?}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

/// Span metrics: RED per operation and the service graph, computed from the rollups of spans
/// sent over OTLP, read with the queries Grafana's Tempo service map and RED panels and Jaeger's
/// Monitor tab send.
#[test]
fn spans_answer_as_span_metrics_and_the_service_graph() {
    use common::otlp::{request, span, Status};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Six calls frontend → checkout, all in one whole minute five minutes ago; two fail.
    let minute_ms = (now_ms() / 60_000 - 5) * 60_000;
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for n in 0..6u8 {
        let start = (minute_ms as u64 + 1_000 + u64::from(n) * 5_000) * 1_000_000;
        let mut client = span(n, "GET /cart");
        client.kind = 3;
        client.start_time_unix_nano = start;
        client.end_time_unix_nano = start + 30_000_000;
        let mut srv = span(n, "GET /cart");
        srv.span_id = vec![0x40 + n; 8];
        srv.parent_span_id = client.span_id.clone();
        srv.start_time_unix_nano = start + 5_000_000;
        srv.end_time_unix_nano = start + 25_000_000;
        if n < 2 {
            srv.status = Some(Status {
                code: 2,
                ..Default::default()
            });
        }
        clients.push(client);
        servers.push(srv);
    }
    for (service, spans) in [("frontend", clients), ("checkout", servers)] {
        let (status, _, body) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            common::otlp::encode(&request(service, spans)),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let now_s = now_ms() / 1000;

    // Tempo's names: a counter per operation, kind and status.
    let calls = instant(
        &server,
        r#"traces_spanmetrics_calls_total{service="checkout"}"#,
        now_s,
    );
    let by_status: Vec<(String, String)> = calls
        .iter()
        .map(|s| {
            assert_eq!(s["metric"]["span_name"], "GET /cart");
            assert_eq!(s["metric"]["span_kind"], "SPAN_KIND_SERVER");
            (
                s["metric"]["status_code"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_status,
        [
            ("STATUS_CODE_ERROR".to_string(), "2".to_string()),
            ("STATUS_CODE_UNSET".to_string(), "4".to_string())
        ]
    );
    // Nothing before the minute the spans are in.
    assert!(instant(
        &server,
        "traces_spanmetrics_calls_total",
        minute_ms / 1000 - 1
    )
    .is_empty());
    // All six calls took 20 ms: in the (16 ms, 32 ms] bucket, so the median is its middle.
    let p50 = only_value(
        &server,
        r#"histogram_quantile(0.5, sum by (le) (increase(traces_spanmetrics_latency_bucket{service="checkout"}[10m])))"#,
        now_s,
    );
    assert!((p50 - 0.024).abs() < 1e-9, "{p50}");
    assert!(
        (only_value(
            &server,
            r#"sum(traces_spanmetrics_latency_sum{service="checkout"})"#,
            now_s
        ) - 0.12)
            .abs()
            < 1e-9
    );

    // Jaeger's Monitor tab (the spanmetrics connector's names, in milliseconds).
    let rate = only_value(
        &server,
        r#"sum(rate(traces_span_metrics_calls_total{service_name =~ "checkout", span_kind =~ "SPAN_KIND_SERVER"}[10m])) by (service_name,span_name)"#,
        now_s,
    );
    assert!(rate > 0.0, "{rate}");
    let p95 = only_value(
        &server,
        r#"histogram_quantile(0.95, sum(rate(traces_span_metrics_duration_milliseconds_bucket{service_name =~ "checkout", span_kind =~ "SPAN_KIND_SERVER"}[10m])) by (service_name,le))"#,
        now_s,
    );
    assert!((p95 - 48.0).abs() < 1e-9, "{p95}");

    // The service graph, as Grafana's service map asks for it: the client waited 30 ms a call,
    // the server took 20 ms.
    let edge = r#"{client="frontend", server="checkout"}"#;
    for (metric, want) in [
        ("traces_service_graph_request_total", 6.0),
        ("traces_service_graph_request_failed_total", 2.0),
        ("traces_service_graph_request_server_seconds_sum", 0.12),
        ("traces_service_graph_request_client_seconds_sum", 0.18),
        ("traces_service_graph_request_server_seconds_count", 6.0),
    ] {
        let got = only_value(&server, &format!("sum({metric}{edge})"), now_s);
        assert!((got - want).abs() < 1e-9, "{metric}: {got}");
    }
    let map = ok(get(
        &server,
        &format!(
            "query_range?query={}&start={}&end={now_s}&step=60",
            enc("sum by (client, server) (rate(traces_service_graph_request_total[5m]))"),
            now_s - 1200
        ),
    ));
    assert_eq!(
        map["result"][0]["metric"],
        json!({"client": "frontend", "server": "checkout"})
    );

    // The metric browser lists them; metadata types them; exemplars lead to kept traces.
    let names = ok(get(&server, "label/__name__/values"));
    for name in [
        "traces_spanmetrics_calls_total",
        "traces_service_graph_request_total",
        "traces_span_metrics_duration_milliseconds_bucket",
    ] {
        assert!(names.as_array().unwrap().contains(&json!(name)), "{names}");
    }
    let services = ok(get(
        &server,
        &format!(
            "label/service/values?match[]={}",
            enc("traces_spanmetrics_calls_total")
        ),
    ));
    assert_eq!(services, json!(["checkout", "frontend"]));
    let meta = ok(get(&server, "metadata?metric=traces_spanmetrics_latency"));
    assert_eq!(meta["traces_spanmetrics_latency"][0]["type"], "histogram");
    let exemplars = ok(get(
        &server,
        &format!(
            "query_exemplars?query={}&start={}&end={now_s}",
            enc(
                r#"histogram_quantile(0.9, sum by (le) (rate(traces_spanmetrics_latency_bucket{service="checkout"}[5m])))"#
            ),
            now_s - 1200
        ),
    ));
    // One series per status, each with its slowest span of the minute, in the 32 ms bucket.
    let sets = exemplars.as_array().unwrap();
    assert_eq!(sets.len(), 2, "{exemplars}");
    for set in sets {
        assert_eq!(set["seriesLabels"]["le"], "0.032");
        let e = &set["exemplars"][0];
        assert_eq!(e["labels"]["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(e["value"], "0.02");
    }
}

/// The guardrails: selectors without a label matcher refused when asked, and a series limit,
/// each an error naming the limit; what they let through answers as usual.
#[test]
fn guardrails_refuse_broad_queries_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--require-label-matcher", "--query-max-series", "1"],
    );
    let end = now_ms() / 1000 * 1000;
    load(&server, end);
    let at = end / 1000;
    bad(
        get(
            &server,
            &format!("query?query=http_requests_total&time={at}"),
        ),
        "--require-label-matcher",
    );
    bad(
        get(
            &server,
            &format!(
                "query?query={}&time={at}",
                enc(r#"rate(http_requests_total{job=~".*"}[1m])"#)
            ),
        ),
        "--require-label-matcher",
    );
    let (status, body) = get(
        &server,
        &format!(
            "query?query={}&time={at}",
            enc(r#"http_requests_total{job="api"}"#)
        ),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--query-max-series"),
        "{body}"
    );
    let one = ok(get(
        &server,
        &format!(
            "query?query={}&time={at}",
            enc(r#"http_requests_total{instance="a"}"#)
        ),
    ));
    assert_eq!(one["result"].as_array().unwrap().len(), 1, "{one}");
}

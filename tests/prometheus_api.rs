//! The Prometheus HTTP API of the real binary, with what really calls it: Debian's `promtool
//! query instant|range|series|labels`, and Grafana's Prometheus datasource request by request
//! (Save & test, the metric and label browser, metadata, exemplars, step-aligned range
//! queries); bad queries get `bad_data` naming the problem.

mod common;

use std::process::Command;

use common::{post, Server};
use serde_json::{json, Value};
use sightline_collector::remote_write::decode::encode::write_request_v1;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

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

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn grafana_and_promtool_read_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // A whole second: promtool and Grafana send times in seconds.
    let end = now_ms() / 1000 * 1000;
    load(&server, end);
    let end_s = end / 1000;

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

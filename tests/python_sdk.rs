//! The official OpenTelemetry Python SDK (`opentelemetry-sdk` from PyPI) and its OTLP gRPC and
//! HTTP exporters — a client none of us wrote — against the real binary. The test command
//! installs the packages (tests/python/requirements.txt).

mod common;

use std::process::Command;

use common::{stored_spans, Server, Val};

/// Runs the Python sender; returns (trace id, span ids) it reports.
fn send(protocol: &str, endpoint: &str, service: &str) -> (String, Vec<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_traces.py");
    let out = Command::new("python3")
        .args([script, protocol, endpoint, service])
        .output()
        .expect("run python3 (the test command installs the OpenTelemetry packages)");
    assert!(
        out.status.success(),
        "python sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sender prints JSON");
    let ids = v["span_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (v["trace_id"].as_str().unwrap().to_string(), ids)
}

#[test]
fn python_sdk_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let grpc = send("grpc", &server.grpc_url(), "py-grpc");
    let http = send("http", &server.traces_url(), "py-http");
    server.stop();

    let spans = stored_spans(dir.path());
    assert_eq!(spans.len(), 8);
    for (service, (trace_id, ids)) in [("py-grpc", &grpc), ("py-http", &http)] {
        let mine: Vec<_> = spans.iter().filter(|s| s.service == service).collect();
        assert_eq!(mine.len(), 4, "{service}");
        let root = mine.iter().find(|s| s.name == "POST /orders").unwrap();
        assert_eq!(&root.span_id, ids.last().unwrap());
        assert_eq!(root.kind, 2);
        assert_eq!(root.http_status_code, Some(201));
        assert_eq!(root.http_method.as_deref(), Some("POST"));
        assert_eq!(root.resource["host.name"], Val::Str("py-host".into()));
        assert_eq!(root.scope_name.as_deref(), Some("py-test"));
        assert_eq!(root.scope_version.as_deref(), Some("3.1.4"));
        for (n, id) in ids[..3].iter().enumerate() {
            let c = mine
                .iter()
                .find(|s| &s.span_id == id)
                .expect("child stored");
            assert_eq!(&c.trace_id, trace_id);
            assert_eq!(c.parent_span_id.as_deref(), Some(root.span_id.as_str()));
            assert_eq!(c.kind, 3);
            assert_eq!(c.db_system.as_deref(), Some("postgresql"));
            assert_eq!(c.attributes["n"], Val::Int(n as i64));
            assert_eq!(c.attributes["ratio"], Val::Double(0.5));
            assert_eq!(c.attributes["ok"], Val::Bool(n != 2));
            assert_eq!(c.attributes["tags"], Val::Json(r#"["a","b"]"#.into()));
            assert_eq!(c.attributes["ints"], Val::Json("[1,2]".into()));
            assert_eq!(c.events[0].name, "row written");
            assert_eq!(c.events[0].attributes["rows"], Val::Int(n as i64 + 1));
            assert_eq!(c.links[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(c.links[0].span_id, "00f067aa0ba902b7");
            assert_eq!(c.links[0].attributes["why"], Val::Str("batch".into()));
            assert_eq!(c.status_code, if n == 2 { 2 } else { 0 });
            if n == 2 {
                assert_eq!(c.status_message.as_deref(), Some("duplicate key"));
            }
        }
    }
}

/// Runs the Python metrics sender; returns the values it recorded.
fn send_metrics(
    protocol: &str,
    endpoint: &str,
    service: &str,
    temporality: &str,
) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_metrics.py");
    let out = Command::new("python3")
        .args([script, protocol, endpoint, service, temporality])
        .output()
        .expect("run python3 (the test command installs the OpenTelemetry packages)");
    assert!(
        out.status.success(),
        "python metrics sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sender prints JSON")
}

/// Counter, up-down counter, histogram, exponential histogram and observable gauge from the
/// Python SDK, over gRPC and HTTP, with cumulative and with delta temporality: every stored
/// value is what the program recorded, under Prometheus 3's names.
#[test]
fn python_sdk_metrics_over_grpc_and_http_cumulative_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let runs = [
        (
            "grpc",
            server.grpc_url(),
            "py-grpc-cumulative",
            "cumulative",
        ),
        ("grpc", server.grpc_url(), "py-grpc-delta", "delta"),
        (
            "http",
            server.metrics_url(),
            "py-http-cumulative",
            "cumulative",
        ),
        ("http", server.metrics_url(), "py-http-delta", "delta"),
    ];
    let mut expected = Vec::new();
    for (protocol, endpoint, service, temporality) in &runs {
        expected.push((
            *service,
            send_metrics(protocol, endpoint, service, temporality),
        ));
    }
    server.stop();

    let stored = common::stored_metrics(dir.path());
    let last = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = stored.of(name, labels);
        assert!(
            !s.is_empty(),
            "no {name} {labels:?} among {:?}",
            series_names(&stored)
        );
        s.last().unwrap().value
    };
    for (service, want) in &expected {
        let job = format!("shop/{service}");
        let j = ("job", job.as_str());
        let f = |k: &str| want[k].as_f64().unwrap();
        assert_eq!(
            last("orders_total", &[j, ("region", "eu")]),
            f("orders_eu"),
            "{service}"
        );
        assert_eq!(
            last("orders_total", &[j, ("region", "us")]),
            f("orders_us"),
            "{service}"
        );
        assert_eq!(
            last("requests_in_flight", &[j]),
            f("in_flight"),
            "{service}"
        );
        assert_eq!(
            last("room_temperature_celsius", &[j, ("room", "lab")]),
            f("temperature")
        );
        let route = ("route", "/a");
        assert_eq!(
            last("request_duration_seconds_count", &[j, route]),
            f("duration_count")
        );
        let sum = last("request_duration_seconds_sum", &[j, route]);
        assert!((sum - f("duration_sum")).abs() < 1e-9, "{sum}");
        for (le, n) in want["duration_buckets"].as_object().unwrap() {
            assert_eq!(
                last("request_duration_seconds_bucket", &[j, route, ("le", le)]),
                n.as_f64().unwrap(),
                "{service} le={le}"
            );
        }
        let instance = ("instance", "pod-1");
        let sample = stored.of("orders_total", &[j, instance]);
        assert!(!sample.is_empty(), "instance from service.instance.id");
        assert!(sample[0].start.is_some(), "start time kept");
        assert!(
            !stored
                .of("target_info", &[j, instance, ("host_name", "py-host")])
                .is_empty(),
            "target_info carries the other resource attributes"
        );
        let native: Vec<_> = stored
            .histograms
            .iter()
            .filter(|h| h.labels.get("__name__").map(String::as_str) == Some("payload_size_bytes"))
            .filter(|h| h.labels.get("job") == Some(&job))
            .collect();
        let h = native
            .last()
            .expect("the exponential histogram is a native histogram");
        assert_eq!(h.count, f("size_count"));
        assert_eq!(h.sum, f("size_sum"));
        assert_eq!(
            h.positive_buckets.iter().sum::<f64>() + h.zero_count,
            h.count
        );
    }
    let orders = stored
        .metadata
        .iter()
        .find(|m| m.0 == "orders_total")
        .expect("metadata of orders_total");
    assert_eq!(
        (orders.1.as_str(), orders.3.as_str()),
        ("counter", "orders placed")
    );
    assert!(stored
        .metadata
        .iter()
        .any(|m| m.0 == "request_duration_seconds" && m.1 == "histogram" && m.2 == "seconds"));
}

fn series_names(m: &common::StoredMetrics) -> Vec<String> {
    let mut names: Vec<String> = m.samples.iter().map(|s| s.series()).collect();
    names.sort();
    names.dedup();
    names
}

/// `opentelemetry-exporter-zipkin-json` (Zipkin v2 JSON) to the Zipkin intake under `/zipkin`
/// on the HTTP port: the same spans arrive, with what Zipkin's format can carry.
#[test]
fn python_sdk_over_zipkin_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let url = format!("http://{}/zipkin/api/v2/spans", server.http_addr);
    let (trace_id, ids) = send("zipkin", &url, "py-zipkin");
    server.stop();

    let spans = stored_spans(dir.path());
    assert_eq!(spans.len(), 4);
    let root = spans.iter().find(|s| s.name == "POST /orders").unwrap();
    assert_eq!(&root.span_id, ids.last().unwrap());
    assert_eq!(root.service, "py-zipkin");
    assert_eq!(root.resource["service.name"], Val::Str("py-zipkin".into()));
    assert_eq!(root.kind, 2);
    assert_eq!(root.parent_span_id, None);
    // Zipkin tags are strings; the dedicated columns still read them.
    assert_eq!(root.http_status_code, Some(201));
    assert_eq!(root.http_method.as_deref(), Some("POST"));
    assert_eq!(root.scope_name.as_deref(), Some("py-test"));
    for (n, id) in ids[..3].iter().enumerate() {
        let c = spans.iter().find(|s| &s.span_id == id).expect("child");
        assert_eq!(c.trace_id, trace_id);
        assert_eq!(c.parent_span_id.as_deref(), Some(root.span_id.as_str()));
        assert_eq!(c.kind, 3);
        assert!(c.duration > 0 && c.start > 1_700_000_000_000_000_000);
        assert_eq!(c.db_system.as_deref(), Some("postgresql"));
        assert_eq!(c.attributes["n"], Val::Str(n.to_string()));
        assert_eq!(c.events.len(), 1, "{:?}", c.events);
        assert!(c.events[0].name.contains("row written"), "{:?}", c.events);
        assert_eq!(c.status_code, if n == 2 { 2 } else { 0 });
        if n == 2 {
            assert_eq!(c.status_message.as_deref(), Some("duplicate key"));
        }
    }
}

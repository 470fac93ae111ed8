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

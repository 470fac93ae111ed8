//! The real SOFATracer (`tracer-core` and `sofa-tracer-zipkin-plugin` from Maven Central, Java 17)
//! reports through its Zipkin reporter to Sightline's Zipkin intake (port 9411's router on an
//! ephemeral port), and calls a Rust service instrumented with `sightline-instrument` with the
//! `sftc_head` header SOFATracer injects: the stored trace is one trace, every parent link right,
//! the server half of SOFATracer's shared span id stored as a span of its own.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, StoredSpan, Val};

/// An example binary of `sightline-instrument`, built by `cargo test --workspace`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join(name)
}

struct Service(std::process::Child, String);

impl Service {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Service {
        use std::io::{BufRead, BufReader};
        let mut command = Command::new(example("two_services"));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the Rust example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service(child, address)
    }

    fn stop(mut self) {
        common::send_signal(self.0.id() as i32, libc::SIGTERM);
        let status = self.0.wait().expect("wait");
        assert!(status.success(), "example exited with {status}");
    }
}

fn one<'a>(spans: &'a [StoredSpan], service: &str, name: &str) -> &'a StoredSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} {name} in {spans:#?}");
    found[0]
}

#[test]
fn sofatracer_reports_one_trace_with_a_rust_service() {
    let dir = tempfile::tempdir().unwrap();
    let classpath = common::java_program("sofatracer", "SofaTracerReport", dir.path());
    let server = Server::start(&dir.path().join("data"), &[]);
    let otlp = server.grpc_url();
    let http_otlp = format!("http://{}", server.otlp_http_addr);
    let backend = Service::start(
        &["backend", "127.0.0.1:0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http_otlp.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    let backend_url = format!("http://{}", backend.1);
    let frontend = Service::start(
        &["frontend", "127.0.0.1:0", &backend_url],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_PROPAGATORS", "tracecontext,baggage,sofatracer"),
        ],
    );
    let out = Command::new("java")
        .arg(format!(
            "-Dlogging.path={}",
            dir.path().join("logs").display()
        ))
        .args(["-cp", &classpath, "SofaTracerReport"])
        .arg(format!("http://{}", server.zipkin_addr))
        .arg(format!("http://{}/checkout/7", frontend.1))
        .output()
        .expect("java");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rust 200"), "{stdout}");
    let sofa_trace_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace "))
        .expect("trace id printed")
        .trim()
        .to_string();
    let shadow_trace_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shadow "))
        .map(|id| format!("{:0>32}", id.trim()))
        .expect("shadow trace id printed");
    frontend.stop();
    backend.stop();

    // The Rust services export on shutdown; the Java reporter flushed before it printed.
    let trace_id = format!("{sofa_trace_id:0>32}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, _) = loop {
        let (status, body) = common::get(&format!(
            "http://{}/api/v1/traces/{trace_id}",
            server.http_addr
        ));
        let n = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["spans"].as_array().map(Vec::len))
            .unwrap_or(0);
        let shadow = common::stored_spans(&server.data_dir)
            .iter()
            .filter(|s| s.trace_id == shadow_trace_id)
            .count();
        if (n >= 10 && shadow >= 8) || Instant::now() > deadline {
            break (status, n);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200);

    // The load-test request's spans, SOFATracer's and the Rust services', are flagged, and kept
    // out of the RED figures and the topology unless asked for.
    let start = (common::now_ms() / 1000 - 600).to_string();
    let services = |load_test: &str| -> Vec<(String, u64)> {
        let topology = server.get_json(&format!(
            "/api/v1/topology?start={start}&load_test={load_test}"
        ));
        let mut nodes: Vec<(String, u64)> = topology["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["calls"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        nodes.sort();
        nodes
    };
    let regular = services("false");
    let shadow = services("true");
    let requests = |nodes: &[(String, u64)], name: &str| {
        nodes.iter().find(|(n, _)| n == name).map_or(0, |(_, r)| *r)
    };
    assert_eq!(requests(&regular, "order-app"), 1, "{regular:?}");
    assert_eq!(requests(&shadow, "order-app"), 1, "{shadow:?}");
    assert_eq!(requests(&regular, "frontend"), 1, "{regular:?}");
    assert_eq!(requests(&shadow, "frontend"), 1, "{shadow:?}");
    server.stop();

    let spans: Vec<StoredSpan> = common::stored_spans(&dir.path().join("data"))
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    // SOFATracer: order-app's server and client, stock-app's server half and its query; Rust:
    // frontend's server, checkout, client; backend's server, stock, reserve.
    assert_eq!(spans.len(), 10, "{spans:#?}");
    assert!(spans.iter().all(|s| !s.load_test), "{spans:#?}");
    let shadow: Vec<StoredSpan> = common::stored_spans(&dir.path().join("data"))
        .into_iter()
        .filter(|s| s.trace_id == shadow_trace_id)
        .collect();
    // SOFATracer's server and client; the Rust frontend's three spans and the backend's three.
    assert_eq!(shadow.len(), 8, "{shadow:#?}");
    assert!(shadow.iter().all(|s| s.load_test), "{shadow:#?}");
    let root = one(&spans, "order-app", "get /order");
    let client = one(&spans, "order-app", "get /stock");
    let callee = one(&spans, "stock-app", "get /stock");
    let query = one(&spans, "stock-app", "select stock");
    let rust = one(&spans, "frontend", "GET /checkout/{item}");

    // Ids: FNV-1a 64 of SOFATracer's dotted ids, as its reporter sends them.
    assert_eq!(root.span_id, "af63ad4c86019caf");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, 2);
    assert_eq!(client.span_id, "4e18dd181d0a2066");
    assert_eq!(client.parent_span_id.as_deref(), Some("af63ad4c86019caf"));
    assert_eq!(client.kind, 3);
    // The callee shares the client's id in SOFATracer: stored as its own span under the client.
    assert_ne!(callee.span_id, client.span_id);
    assert_eq!(callee.parent_span_id.as_deref(), Some("4e18dd181d0a2066"));
    assert_eq!(callee.kind, 2);
    assert_eq!(
        callee.attributes["zipkin.id"],
        Val::Str("4e18dd181d0a2066".into())
    );
    assert_eq!(
        query.parent_span_id.as_deref(),
        Some(callee.span_id.as_str())
    );
    // The Rust service joined under the Java client, through SOFATracer's own sftc_head.
    assert_eq!(rust.parent_span_id.as_deref(), Some("4e18dd181d0a2066"));
    assert_eq!(
        rust.attributes["sofatracer.trace_id"],
        Val::Str(sofa_trace_id.clone())
    );

    // Tags, logs, baggage, the error tag.
    assert_eq!(root.attributes["origin.span.id"], Val::Str("0".into()));
    assert_eq!(
        root.attributes["origin.parent.span.id"],
        Val::Str("".into())
    );
    assert_eq!(root.attributes["local.app"], Val::Str("order-app".into()));
    assert_eq!(
        root.attributes["request.url"],
        Val::Str("http://order.local/order".into())
    );
    assert_eq!(root.attributes["tenant"], Val::Str("acme".into()));
    assert_eq!(root.attributes["zone"], Val::Str("gz".into()));
    assert!(matches!(
        root.attributes.get("network.local.address"),
        Some(Val::Str(_))
    ));
    assert_eq!(root.resource["service.name"], Val::Str("order-app".into()));
    assert_eq!(root.status_code, 0);
    assert_eq!(client.status_code, 2);
    assert_eq!(client.status_message.as_deref(), Some("stock service slow"));
    assert_eq!(client.events.len(), 1);
    assert_eq!(client.events[0].name, "cache miss");
    assert!(client.start >= root.start && client.duration > 0);
    assert!(
        client.start % 1_000_000 == 0,
        "SOFATracer times are milliseconds"
    );
}

//! End to end: the instrumentation crate's two-service example (separate processes,
//! frontend → backend over HTTP through reqwest) sends to a running `sightline serve`, and
//! the stored trace has the right parent/child links across both services — for a W3C
//! caller and for a SOFATracer caller, with one service exporting over OTLP/gRPC and the
//! other over OTLP/HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// An example binary of `sightline-instrument`, built by `cargo test --workspace`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

struct Service {
    child: Child,
    address: String,
}

impl Service {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut command = Command::new(example("two_services"));
        command
            .args(args)
            .env_remove("OTEL_PROPAGATORS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start example");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Service { child, address }
    }

    /// SIGTERM: the example shuts down gracefully and its guard flushes.
    fn stop(mut self) {
        common::send_signal(self.child.id() as i32, libc::SIGTERM);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "example exited with {status}");
    }
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::blocking::Client::new();
    let mut request = client.get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().expect("request");
    (
        response.status().as_u16(),
        response.text().unwrap_or_default(),
    )
}

/// Runs Debian's `prometheus` scraping `target` every 200 ms and answers the first sample
/// of `query` it stores (its labels plus `value`), and the trace ids of the exemplars it
/// stored for `exemplars_of`.
fn scrape_with_prometheus(target: &str, query: &str, exemplars_of: &str) -> (Value, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: frontend\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/test.sh installs Debian's package)");
    let url = format!("http://127.0.0.1:{port}/api/v1/query?query={query}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        if let Ok(response) = reqwest::blocking::get(&url) {
            if let Ok(body) = response
                .text()
                .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
            {
                if let Some(sample) = body["data"]["result"].get(0) {
                    let mut labels = sample["metric"].clone();
                    labels["value"] = sample["value"][1].clone();
                    break labels;
                }
            }
        }
        if Instant::now() > deadline {
            let _ = prometheus.kill();
            let targets = reqwest::blocking::get(format!("http://127.0.0.1:{port}/api/v1/targets"))
                .and_then(|r| r.text())
                .unwrap_or_default();
            panic!("prometheus stored no {query}; targets: {targets}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query_exemplars?query={exemplars_of}&start=0&end=9999999999"
    );
    let mut trace_ids = Vec::new();
    while trace_ids.is_empty() && Instant::now() < deadline {
        if let Ok(body) = reqwest::blocking::get(&url).and_then(|r| r.text()) {
            let body: Value = serde_json::from_str(&body).unwrap_or_default();
            for series in body["data"].as_array().into_iter().flatten() {
                for exemplar in series["exemplars"].as_array().into_iter().flatten() {
                    if let Some(id) = exemplar["labels"]["trace_id"].as_str() {
                        trace_ids.push(id.to_string());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    (found, trace_ids)
}

/// The stored trace once it has `spans` spans (the services export asynchronously).
fn trace(server: &Server, trace_id: &str, spans: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = common::get(&format!(
            "http://{}/api/v1/traces/{trace_id}",
            server.http_addr
        ));
        if status == 200 {
            let found: Value = serde_json::from_str(&body).expect("json");
            let found = found["spans"].as_array().cloned().unwrap_or_default();
            if found.len() >= spans || Instant::now() > deadline {
                return found;
            }
        } else {
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {status} {body}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn one<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = spans
        .iter()
        .filter(|s| s["service"] == service && s["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} {name} in {spans:#?}");
    found[0]
}

/// frontend SERVER → `checkout` → CLIENT → backend SERVER → `stock` → `reserve`.
fn check_chain(spans: &[Value], root_parent: &str) -> Vec<Value> {
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let server = one(spans, "frontend", "GET /checkout/{item}");
    let checkout = one(spans, "frontend", "checkout");
    let client = one(spans, "frontend", "GET");
    let backend = one(spans, "backend", "GET /stock/{item}");
    let stock = one(spans, "backend", "stock");
    let reserve = one(spans, "backend", "reserve");
    assert_eq!(server["parent_span_id"], root_parent);
    assert_eq!(server["kind"], "server");
    assert_eq!(server["attributes"]["http.route"], "/checkout/{item}");
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    assert_eq!(checkout["parent_span_id"], server["span_id"]);
    assert_eq!(client["parent_span_id"], checkout["span_id"]);
    assert_eq!(client["kind"], "client");
    assert_eq!(client["attributes"]["http.response.status_code"], 200);
    assert_eq!(
        backend["parent_span_id"], client["span_id"],
        "joined across the hop"
    );
    assert_eq!(backend["kind"], "server");
    assert_eq!(stock["parent_span_id"], backend["span_id"]);
    assert_eq!(reserve["parent_span_id"], stock["span_id"]);
    assert_eq!(reserve["attributes"]["item.id"], 7);
    assert_eq!(reserve["events"][0]["name"], "reserved");
    vec![server.clone(), backend.clone()]
}

#[test]
fn example_services_join_one_trace_across_http_in_sightline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let endpoint = server.grpc_url();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    // The backend exports over OTLP/HTTP protobuf, the frontend over gRPC.
    let http_endpoint = format!("http://{}", server.otlp_http_addr);
    let backend = Service::start(
        &["backend", "127.0.0.1:0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http_endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    );
    let backend_url = format!("http://{}", backend.address);
    let frontend = Service::start(
        &["frontend", "127.0.0.1:0", &backend_url],
        &[
            env[0],
            ("OTEL_PROPAGATORS", "tracecontext,baggage,sofatracer"),
        ],
    );
    let url = format!("http://{}/checkout/7", frontend.address);

    // A W3C caller.
    let (status, body) = get_with(
        &url,
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert_eq!((status, body.as_str()), (200, "item 7: 93 left\n"));
    // A Java service using SOFATracer (its sftc_head, with system and business baggage).
    let (status, _) = get_with(
        &url,
        &[(
            "sftc_head",
            "tcid=0ad1348f1403169275002100356696&spid=0.1&pspid=0&sample=true&_sys_zone=gz&tenant=acme&",
        )],
    );
    assert_eq!(status, 200);
    // The stat log counted both requests.
    let (status, metrics) = get_with(&format!("http://{}/metrics", frontend.address), &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "http_server_requests_seconds_count{method=\"GET\",outcome=\"SUCCESS\",route=\"/checkout/{item}\",status=\"200\"} 2"
        ),
        "{metrics}"
    );
    // Debian's Prometheus scrapes it (it asks for OpenMetrics, exemplars included).
    let (scraped, exemplars) = scrape_with_prometheus(
        &frontend.address,
        "http_server_requests_seconds_count",
        "checkouts_total",
    );
    // `checkouts` is counted inside the request's span: its exemplar names the trace.
    assert!(
        exemplars
            .iter()
            .any(|id| id == "4bf92f3577b34da6a3ce929d0e0e4736"
                || id == "000ad1348f1403169275002100356696"),
        "{exemplars:?}"
    );
    assert_eq!(scraped["route"], "/checkout/{item}", "{scraped}");
    assert_eq!(scraped["status"], "200");
    assert_eq!(scraped["value"], "2");
    frontend.stop();
    backend.stop();

    let spans = trace(&server, "4bf92f3577b34da6a3ce929d0e0e4736", 6);
    let ends = check_chain(&spans, "00f067aa0ba902b7");
    assert_eq!(ends[0]["resource"]["service.name"], "frontend");
    assert_eq!(ends[1]["resource"]["service.name"], "backend");

    // SOFATracer's 30-digit trace id is left-padded, as Zipkin stores it; the parent is
    // the FNV-1a 64 of span id "0.1", the id SOFATracer's Zipkin reporter gives it.
    let spans = trace(&server, "000ad1348f1403169275002100356696", 6);
    let ends = check_chain(&spans, "4e18dd181d0a2066");
    let attributes = &ends[0]["attributes"];
    assert_eq!(
        attributes["sofatracer.trace_id"],
        "0ad1348f1403169275002100356696"
    );
    assert_eq!(attributes["sofatracer.parent_span_id"], "0.1");
    for span in &spans {
        if span["span_id"] != ends[0]["span_id"] {
            assert!(span["attributes"].get("sofatracer.trace_id").is_none());
        }
    }
    server.stop();

    // The services' OTLP metric exports (the frontend's over gRPC) arrived and were stored
    // under their Prometheus names.
    let stored = common::stored_metrics(dir.path());
    let checkouts = stored.of("checkouts_total", &[("job", "frontend"), ("outcome", "ok")]);
    assert_eq!(
        checkouts.last().map(|s| s.value),
        Some(2.0),
        "{:?}",
        stored
            .samples
            .iter()
            .map(|s| s.series())
            .collect::<std::collections::BTreeSet<_>>()
    );
}

//! The Zipkin v2 query API against the real Zipkin server as an oracle: Zipkin's own server
//! (`io.zipkin:zipkin-server`, its `exec` jar from Maven Central, in-memory storage) and
//! Sightline take the same spans — SOFATracer's shared ids, Brave-style shared spans, endpoints,
//! annotations, tags, upper-case names, a trace older than an hour — and every query Zipkin's UI
//! and Grafana's Zipkin datasource send gets the same JSON from both, compared field by field
//! (the spans of a trace in any order, as Zipkin's are). Dependencies are the exception, checked
//! link by link with their documented differences (docs/zipkin.md).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post, Running, Server};
use serde_json::{json, Value};

const ZIPKIN_VERSION: &str = "3.6.1";

fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    ts: i64,
    duration: i64,
    fields: Value,
) -> Value {
    let mut s = json!({"traceId": trace, "id": id, "timestamp": ts, "duration": duration});
    if let Some(p) = parent {
        s["parentId"] = json!(p);
    }
    for (k, v) in fields.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn endpoint(service: &str) -> Value {
    json!({"serviceName": service, "ipv4": "192.0.2.2"})
}

/// Four traces, ten minutes, nine minutes and two hours old, as three reporters would send them.
fn fixture(now: i64) -> Vec<Vec<Value>> {
    let min = 60_000_000;
    let (t1, t2, t3, t4) = (
        now - 10 * min,
        now - 9 * min,
        now - 8 * min,
        now - 120 * min,
    );
    let sofa = "c00002021796236616942100116981";
    let (root, client, query) = ("af63ad4c86019caf", "4e18dd181d0a2066", "b1ecc5b0e1cf206b");
    let sofa_tags = |origin: &str, parent: &str, app: &str, kind: &str| {
        json!({"origin.span.id": origin, "origin.parent.span.id": parent, "local.app": app,
               "span.kind": kind, "tenant": "acme"})
    };
    // SOFATracer: order-app's root server and its client; stock-app's server, which shares the
    // client's id, and its query (children first, as they finish first).
    let stock_app = vec![
        span(
            sofa,
            query,
            Some(client),
            t1 + 3000,
            3000,
            json!({"kind": "CLIENT", "name": "select stock",
            "localEndpoint": endpoint("stock-app"),
            "remoteEndpoint": {"serviceName": "mysql", "ipv4": "10.0.0.9", "port": 3306},
            "tags": sofa_tags("0.1.1", "0.1", "stock-app", "client")}),
        ),
        span(
            sofa,
            client,
            Some(root),
            t1 + 2000,
            20000,
            json!({"kind": "SERVER", "name": "get /stock",
            "localEndpoint": endpoint("stock-app"), "tags": sofa_tags("0.1", "0", "stock-app", "server")}),
        ),
    ];
    let mut order_tags = sofa_tags("0.1", "0", "order-app", "client");
    order_tags["error"] = json!("stock service slow");
    let order_app = vec![
        span(
            sofa,
            client,
            Some(root),
            t1 + 1000,
            31000,
            json!({"kind": "CLIENT", "name": "get /stock",
            "localEndpoint": endpoint("order-app"),
            "annotations": [{"timestamp": t1 + 1000, "value": "cache miss"}], "tags": order_tags}),
        ),
        span(
            sofa,
            root,
            None,
            t1,
            70000,
            json!({"kind": "SERVER", "name": "get /order",
            "localEndpoint": endpoint("order-app"), "tags": sofa_tags("0", "", "order-app", "server")}),
        ),
    ];
    // Brave: frontend calls backend, whose server span shares the client's id.
    let brave = "463ac35c9f6413ad";
    let brave_spans = vec![
        span(
            brave,
            "00000000000000a1",
            None,
            t2,
            90000,
            json!({"kind": "SERVER", "name": "GET /",
            "localEndpoint": {"serviceName": "Frontend", "ipv4": "10.0.0.1", "port": 8080},
            "tags": {"http.method": "GET", "http.path": "/"}}),
        ),
        span(
            brave,
            "00000000000000a2",
            Some("00000000000000a1"),
            t2 + 100,
            50000,
            json!({"kind": "CLIENT",
            "name": "GET /api", "localEndpoint": {"serviceName": "Frontend", "ipv4": "10.0.0.1"},
            "remoteEndpoint": {"serviceName": "backend", "ipv6": "2001:db8::c001", "port": 9000},
            "tags": {"http.method": "GET", "http.path": "/api"}}),
        ),
        span(
            brave,
            "00000000000000a2",
            Some("00000000000000a1"),
            t2 + 200,
            40000,
            json!({"kind": "SERVER",
            "name": "get /api", "shared": true, "localEndpoint": {"serviceName": "backend", "ipv4": "10.0.0.2"},
            "tags": {"http.method": "GET", "http.status_code": "500", "error": "500"}}),
        ),
        span(
            brave,
            "00000000000000a3",
            Some("00000000000000a2"),
            t2 + 300,
            30000,
            json!({
            "name": "db.query", "localEndpoint": {"serviceName": "backend"},
            "tags": {"db.instance": "stock"}}),
        ),
    ];
    // A producer and its consumer, upper-case names, a debug span.
    let messaging = "5af7183fb1d4cf5f5af7183fb1d4cf5f";
    let messaging_spans = vec![
        span(
            messaging,
            "0000000000000b01",
            None,
            t3,
            5000,
            json!({"kind": "PRODUCER", "name": "POST /Pay",
            "debug": true, "localEndpoint": {"serviceName": "Checkout"},
            "remoteEndpoint": {"serviceName": "kafka"}}),
        ),
        span(
            messaging,
            "0000000000000b02",
            Some("0000000000000b01"),
            t3 + 9000,
            2000,
            json!({
            "kind": "CONSUMER", "name": "ledger entry", "localEndpoint": {"serviceName": "ledger"},
            "remoteEndpoint": {"serviceName": "kafka"}}),
        ),
    ];
    let old = vec![span(
        "00000000000000c1",
        "00000000000000c1",
        None,
        t4,
        4_000_000,
        json!({
        "kind": "SERVER", "name": "get /report", "localEndpoint": {"serviceName": "frontend"},
        "tags": {"http.method": "GET"}}),
    )];
    vec![stock_app, order_app, brave_spans, messaging_spans, old]
}

/// A trace's spans in a fixed order; the spans of a list of traces likewise.
fn normalised(v: Value) -> Value {
    fn sort_spans(spans: &mut [Value]) {
        spans.sort_by_key(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["kind"].as_str().unwrap_or_default().to_string(),
            )
        });
    }
    match v {
        Value::Array(mut items) => {
            if items.iter().all(Value::is_array) {
                for t in &mut items {
                    if let Value::Array(spans) = t {
                        sort_spans(spans);
                    }
                }
            } else if items.iter().all(|i| i.get("traceId").is_some()) {
                sort_spans(&mut items);
            } else if items.iter().all(|i| i.get("parent").is_some()) {
                items.sort_by_key(|l| (l["parent"].to_string(), l["child"].to_string()));
            }
            Value::Array(items)
        }
        other => other,
    }
}

fn json_of(url: &str) -> (u16, Value) {
    let (status, body) = get(url);
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

#[test]
fn zipkin_api_answers_as_zipkin_does() {
    let jar = common::maven_jar("io.zipkin", "zipkin-server", ZIPKIN_VERSION, Some("exec"));
    let port = common::free_port();
    let _zipkin = Running(
        Command::new("java")
            .args(["-Xmx512m", "-jar"])
            .arg(&jar)
            .env("QUERY_PORT", port.to_string())
            .env("STORAGE_TYPE", "mem")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java"),
    );
    let zipkin = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--edge-wait", "1s"]);
    let sightline = format!("http://{}", server.zipkin_addr);
    common::wait_ready(&format!("{zipkin}/health"), "zipkin");

    let now = common::now_nanos() as i64 / 1000;
    for request in fixture(now) {
        let body = serde_json::to_vec(&request).unwrap();
        for base in [&zipkin, &sightline] {
            let (status, _, reply) = post(
                &format!("{base}/api/v2/spans"),
                "application/json",
                &[],
                body.clone(),
            );
            assert_eq!(status, 202, "{base}: {}", String::from_utf8_lossy(&reply));
        }
    }
    // The service graph comes from the rollups, once the call halves pair (or stop waiting).
    let now_ms = now / 1000 + 1000;
    let deadline = Instant::now() + Duration::from_secs(20);
    let dependencies = format!("/api/v2/dependencies?endTs={now_ms}&lookback=86400000");
    while json_of(&format!("{sightline}{dependencies}"))
        .1
        .as_array()
        .map_or(0, Vec::len)
        < 4
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut paths: Vec<String> = [
        "/api/v2/services",
        "/api/v2/traces",
        "/api/v2/traces?serviceName=frontend",
        "/api/v2/traces?serviceName=FRONTEND&spanName=get%20/api",
        "/api/v2/traces?serviceName=backend&annotationQuery=error",
        "/api/v2/traces?annotationQuery=http.method%3DGET",
        "/api/v2/traces?annotationQuery=cache%20miss",
        "/api/v2/traces?annotationQuery=tenant%3Dacme%20and%20error",
        "/api/v2/traces?annotationQuery=tenant%3Dother",
        "/api/v2/traces?minDuration=60000",
        "/api/v2/traces?minDuration=30000&maxDuration=40000",
        "/api/v2/traces?serviceName=stock-app&remoteServiceName=mysql",
        "/api/v2/traces?serviceName=nobody",
        "/api/v2/traces?limit=1",
        "/api/v2/trace/c00002021796236616942100116981",
        "/api/v2/trace/00c00002021796236616942100116981",
        "/api/v2/trace/463ac35c9f6413ad",
        "/api/v2/trace/0000000000000000463ac35c9f6413ad",
        "/api/v2/trace/5af7183fb1d4cf5f5af7183fb1d4cf5f",
        "/api/v2/traceMany?traceIds=463ac35c9f6413ad,5af7183fb1d4cf5f5af7183fb1d4cf5f",
        "/api/v2/autocompleteKeys",
    ]
    .map(str::to_string)
    .to_vec();
    paths.push(format!(
        "/api/v2/traces?serviceName=frontend&endTs={now_ms}&lookback=3600000"
    ));
    paths.push(format!(
        "/api/v2/traces?endTs={}&lookback=600000",
        now_ms - 8 * 60_000
    ));
    for service in [
        "order-app",
        "stock-app",
        "frontend",
        "Backend",
        "checkout",
        "ledger",
        "nobody",
    ] {
        paths.push(format!("/api/v2/spans?serviceName={service}"));
        paths.push(format!("/api/v2/remoteServices?serviceName={service}"));
    }

    let mut differences = Vec::new();
    for path in &paths {
        let (zs, z) = json_of(&format!("{zipkin}{path}"));
        let (ss, s) = json_of(&format!("{sightline}{path}"));
        assert_eq!(zs, 200, "zipkin {path}: {z}");
        let (z, s) = (normalised(z), normalised(s));
        if ss != 200 || z != s {
            differences.push(format!("{path}\n  zipkin:    {z}\n  sightline ({ss}): {s}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} queries differ:\n{}",
        differences.len(),
        paths.len(),
        differences.join("\n")
    );

    // Dependencies come from the service-graph rollups, not from walking the spans as Zipkin's
    // DependencyLinker does: the same links and counts for RPCs and uninstrumented remote
    // services; a producer links straight to its consumer (Zipkin goes through the broker's
    // remote service name); a call fails when either side says so (Zipkin asks the server).
    let link = |links: &Value, parent: &str, child: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["parent"] == parent && l["child"] == child)
            .cloned()
    };
    let z = json_of(&format!("{zipkin}{dependencies}")).1;
    let s = json_of(&format!("{sightline}{dependencies}")).1;
    for (parent, child) in [
        ("frontend", "backend"),
        ("order-app", "stock-app"),
        ("stock-app", "mysql"),
    ] {
        let (zl, sl) = (link(&z, parent, child), link(&s, parent, child));
        assert!(
            zl.is_some() && sl.is_some(),
            "{parent} → {child}: zipkin {z}, sightline {s}"
        );
        assert_eq!(
            zl.unwrap()["callCount"],
            sl.as_ref().unwrap()["callCount"],
            "{s}"
        );
    }
    assert_eq!(link(&s, "frontend", "backend").unwrap()["errorCount"], 1);
    assert_eq!(link(&z, "frontend", "backend").unwrap()["errorCount"], 1);
    assert_eq!(link(&s, "order-app", "stock-app").unwrap()["errorCount"], 1);
    assert_eq!(
        link(&z, "order-app", "stock-app")
            .unwrap()
            .get("errorCount"),
        None
    );
    assert_eq!(link(&s, "checkout", "ledger").unwrap()["callCount"], 1);
    assert!(link(&z, "checkout", "kafka").is_some() && link(&z, "kafka", "ledger").is_some());

    // Errors: Zipkin answers 400 or 404 with a message; so does Sightline.
    for (path, status) in [
        ("/api/v2/trace/xyz", 400),
        ("/api/v2/trace/00000000000000ff", 404),
        ("/api/v2/traces?minDuration=oops", 400),
        ("/api/v2/spans", 400),
    ] {
        let (got, body) = get(&format!("{sightline}{path}"));
        assert_eq!(got, status, "{path}: {body}");
        assert!(!body.is_empty());
    }
    // The same API under /zipkin on the HTTP port (Grafana's datasource URL).
    let (status, body) = get(&format!(
        "http://{}/zipkin/api/v2/services",
        server.http_addr
    ));
    assert_eq!(status, 200, "{body}");
    server.stop();
}

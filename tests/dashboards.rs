//! The dashboards' API on a hand-built shop whose answers are known: topology (a database, a
//! queue, an external API), top-N, RED series of a service and of an edge — with part of the
//! data in Parquet and part still buffered, and again after a restart.

mod common;

use std::time::{Duration, Instant};

use common::otlp::{self, span, Span};
use common::{post, Server};
use serde_json::{json, Value};

const MS: u64 = 1_000_000;
const MINUTE: u64 = 60_000_000_000;
const TRACES: u64 = 40;

fn id(trace: u64, role: u8) -> (Vec<u8>, Vec<u8>) {
    let mut t = vec![0x5a; 16];
    t[15] = trace as u8;
    let mut s = vec![role; 8];
    s[7] = trace as u8;
    (t, s)
}

fn at(first_minute: u64, i: u64) -> u64 {
    let minute = first_minute + if i < TRACES / 2 { 0 } else { MINUTE };
    minute + i * 100 * MS
}

fn make(
    i: u64,
    first_minute: u64,
    role: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    ms: u64,
) -> Span {
    let (trace_id, span_id) = id(i, role);
    let mut s = span(0, name);
    s.trace_id = trace_id;
    s.span_id = span_id;
    s.parent_span_id = parent.map(|p| id(i, p).1).unwrap_or_default();
    s.kind = kind;
    s.start_time_unix_nano = at(first_minute, i) + u64::from(role) * MS;
    s.end_time_unix_nano = s.start_time_unix_nano + ms * MS;
    s
}

fn failing_if(mut s: Span, error: bool) -> Span {
    if error {
        s.status = Some(otlp::Status {
            message: "failed".into(),
            code: 2,
        });
    }
    s
}

/// The shop, trace by trace (`i` in `range`): frontend → cart (→ postgresql, → the `orders`
/// queue → fulfillment) and, on even traces, frontend → payments → stripe (not instrumented).
/// Each service's spans go in a request of their own; callees are sent before callers for cart
/// and after them for payments, so pairing works both ways round.
fn send_shop(server: &Server, first_minute: u64, range: std::ops::Range<u64>) {
    let mut by_service: Vec<(&str, Vec<Span>)> = vec![
        ("cart", vec![]),
        ("fulfillment", vec![]),
        ("frontend", vec![]),
        ("payments", vec![]),
    ];
    for i in range {
        let push = |list: &mut Vec<(&str, Vec<Span>)>, service: &str, s: Span| {
            list.iter_mut()
                .find(|(n, _)| *n == service)
                .unwrap()
                .1
                .push(s);
        };
        let entry = failing_if(
            make(i, first_minute, 1, None, "GET /checkout", 2, 100 + i),
            i % 10 == 0,
        );
        push(&mut by_service, "frontend", entry);
        let call_cart = make(i, first_minute, 2, Some(1), "POST /cart", 3, 50 + i);
        push(&mut by_service, "frontend", call_cart);
        let cart = failing_if(
            make(i, first_minute, 3, Some(2), "POST /cart", 2, 40 + i),
            i % 4 == 0,
        );
        push(&mut by_service, "cart", cart);
        let mut query = make(i, first_minute, 4, Some(3), "SELECT cart", 3, 5 + i % 5);
        query.attributes = vec![otlp::kv("db.system", otlp::s("postgresql"))];
        push(&mut by_service, "cart", query);
        let messaging = vec![
            otlp::kv("messaging.system", otlp::s("kafka")),
            otlp::kv("messaging.destination.name", otlp::s("orders")),
        ];
        let mut publish = make(i, first_minute, 5, Some(3), "orders publish", 4, 1);
        publish.attributes = messaging.clone();
        push(&mut by_service, "cart", publish);
        let mut process = make(i, first_minute, 6, Some(5), "orders process", 5, 20);
        process.attributes = messaging;
        push(&mut by_service, "fulfillment", process);
        if i % 2 == 0 {
            let mut call_pay = make(i, first_minute, 7, Some(1), "POST /pay", 3, 30 + i);
            call_pay.attributes = vec![otlp::kv("server.address", otlp::s("payments.internal"))];
            push(&mut by_service, "frontend", call_pay);
            let pay = failing_if(
                make(i, first_minute, 8, Some(7), "POST /pay", 2, 25 + i),
                i % 6 == 0,
            );
            push(&mut by_service, "payments", pay);
            let mut charge = make(i, first_minute, 9, Some(8), "charge", 3, 10);
            charge.attributes = vec![otlp::kv("peer.service", otlp::s("stripe"))];
            push(&mut by_service, "payments", charge);
        }
    }
    for (service, spans) in by_service {
        let (status, _, body) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            otlp::encode(&otlp::request(service, spans)),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// Within the sketch's 1% of the exact quantile.
fn assert_quantile(got: &Value, exact_ms: f64, what: &str) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
    assert!(
        (got - exact_ms).abs() <= exact_ms * 0.01,
        "{what}: got {got}, exact {exact_ms}"
    );
}

fn node<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {t}"))
}

fn edge<'a>(t: &'a Value, source: &str, target: &str) -> &'a Value {
    t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {t}"))
}

/// Waits until the external edge has expired into place (its client half waits `--edge-wait`).
fn wait_for_stripe(server: &Server, window: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = server.get_json(&format!("/api/v1/topology?{window}"));
        if t["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"] == "stripe")
        {
            return t;
        }
        assert!(Instant::now() < deadline, "stripe never appeared: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check_everything(server: &Server, first_minute: u64) {
    let start = first_minute / 1_000_000_000;
    let window = format!("start={start}&end={}", start + 120);
    let t = wait_for_stripe(server, &window);

    // Nodes: services by their own requests, the others by what reaches them.
    let names: Vec<(&str, &str)> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("cart", "service"),
            ("frontend", "service"),
            ("fulfillment", "service"),
            ("orders", "messaging"),
            ("payments", "service"),
            ("postgresql", "database"),
            ("stripe", "external"),
        ]
    );
    let frontend = node(&t, "frontend");
    assert_eq!(frontend["calls"], 40);
    assert_eq!(frontend["errors"], 4);
    // Rates divide by the part of the window with data: it begins with the first span, 1 ms in.
    let covered = 119_999_000_000.0 / 1e9;
    assert_eq!(t["rate_seconds"], covered);
    assert_eq!(frontend["rate"], 40.0 / covered);
    assert_eq!(frontend["error_rate"], 0.1);
    assert_quantile(&frontend["p50_ms"], 119.0, "frontend p50");
    assert_quantile(&frontend["p99_ms"], 138.0, "frontend p99");
    assert_eq!(node(&t, "cart")["errors"], 10);
    assert_eq!(node(&t, "payments")["calls"], 20);
    assert_eq!(node(&t, "payments")["errors"], 7);
    assert_eq!(node(&t, "fulfillment")["calls"], 40);
    assert_eq!(node(&t, "postgresql")["calls"], 40);
    assert_quantile(&node(&t, "postgresql")["p99_ms"], 9.0, "postgresql p99");
    assert_eq!(node(&t, "orders")["calls"], 40);
    assert_eq!(node(&t, "stripe")["calls"], 20);

    // Edges: paired calls carry errors from either side and the caller's latency.
    let edges: Vec<(&str, &str, u64, u64)> = t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["calls"].as_u64().unwrap(),
                e["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            ("cart", "orders", 40, 0),
            ("cart", "postgresql", 40, 0),
            ("frontend", "cart", 40, 10),
            ("frontend", "payments", 20, 7),
            ("orders", "fulfillment", 40, 0),
            ("payments", "stripe", 20, 0),
        ]
    );
    let to_cart = edge(&t, "frontend", "cart");
    assert_quantile(&to_cart["p50_ms"], 69.0, "frontend -> cart p50");
    assert_eq!(to_cart["error_rate"], 0.25);
    assert_eq!(edge(&t, "cart", "postgresql")["target_kind"], "database");

    // Top-N, each ordering.
    let top = |q: &str| -> Vec<(String, String, String)> {
        server.get_json(&format!("/api/v1/top?{window}&{q}"))["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["service"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                    e["span_kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let row = |s: &str, o: &str, k: &str| (s.to_string(), o.to_string(), k.to_string());
    assert_eq!(
        top("by=p99&limit=3"),
        [
            row("frontend", "GET /checkout", "server"),
            row("frontend", "POST /cart", "client"),
            row("cart", "POST /cart", "server"),
        ]
    );
    assert_eq!(
        top("by=error_rate&limit=3"),
        [
            row("payments", "POST /pay", "server"),
            row("cart", "POST /cart", "server"),
            row("frontend", "GET /checkout", "server"),
        ]
    );
    assert_eq!(
        top("by=impact&limit=1"),
        [row("frontend", "GET /checkout", "server")]
    );
    assert_eq!(
        top("by=rate&service=payments"),
        [
            row("payments", "POST /pay", "server"),
            row("payments", "charge", "client"),
        ]
    );
    assert_eq!(
        top("by=p50&span_kind=consumer"),
        [row("fulfillment", "orders process", "consumer")]
    );
    let first = &server.get_json(&format!("/api/v1/top?{window}&by=impact&limit=1"))["data"][0];
    assert_eq!(first["calls"], 40);
    // Σ (100 + i) ms for i in 0..40.
    assert_eq!(first["impact"], 4.78);
    assert_quantile(&first["p95_ms"], 137.0, "GET /checkout p95");

    // RED series: per minute, of a service and of an edge.
    let s = server.get_json(&format!("/api/v1/red?service=frontend&{window}&step=60s"));
    assert_eq!(s["step_seconds"], 60);
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["t"], start);
    assert_eq!(points[1]["t"], start + 60);
    for (p, p50) in points.iter().zip([109.0, 129.0]) {
        assert_eq!(p["rate"], 20.0 / 60.0);
        assert_eq!(p["error_rate"], 0.1);
        assert_quantile(&p["p50_ms"], p50, "frontend p50 per minute");
    }
    let s = server.get_json(&format!(
        "/api/v1/red?source=frontend&target=cart&{window}&step=60s"
    ));
    let points = s["points"].as_array().unwrap();
    assert_eq!(points[0]["error_rate"], 0.25);
    assert_eq!(points[0]["calls"], 20);
    // Every call into a database: the node as the map measures it.
    let s = server.get_json(&format!("/api/v1/red?target=postgresql&{window}&step=120s"));
    assert_eq!(s["points"][0]["calls"], node(&t, "postgresql")["calls"]);
    let s = server.get_json(&format!(
        "/api/v1/red?service=cart&operation=SELECT+cart&{window}&step=120s"
    ));
    assert_eq!(s["points"][0]["calls"], 40);

    // The catalog over the window, databases, queues and external targets included.
    let services = server.get_json(&format!("/api/v1/services?{window}"));
    assert_eq!(
        services["data"],
        json!([
            {"name": "cart", "kind": "service"},
            {"name": "frontend", "kind": "service"},
            {"name": "fulfillment", "kind": "service"},
            {"name": "orders", "kind": "messaging"},
            {"name": "payments", "kind": "service"},
            {"name": "postgresql", "kind": "database"},
            {"name": "stripe", "kind": "external"},
        ])
    );
    let empty = server.get_json("/api/v1/services?start=0&end=60");
    assert_eq!(empty["data"], json!([]));

    // Trace search and trace by id over the same spans.
    let found = server.get_json(&format!(
        "/api/v1/traces?service=payments&error=true&{window}&limit=100"
    ));
    let mut ids: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..TRACES)
        .filter(|i| i % 6 == 0)
        .map(|i| common::hex(&id(i, 0).0))
        .collect();
    assert_eq!(ids, expected);
    let first = &found["data"][found["data"].as_array().unwrap().len() - 1];
    assert_eq!(first["root_service"], "frontend");
    assert_eq!(first["span_count"], 9);
    let trace = server.get_json(&format!("/api/v1/traces/{}", common::hex(&id(0, 0).0)));
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 9);
    assert_eq!(spans[0]["name"], "GET /checkout");
    assert_eq!(spans[0]["status_code"], "error");
}

#[test]
fn dashboards_answer_exactly_from_files_and_buffers_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--edge-wait", "1s", "--seal-max-age", "1h"];
    // An even minute, so that a two-minute step starts where the data does.
    let first_minute = ((common::now_nanos() / MINUTE - 5) & !1) * MINUTE;
    let server = Server::start(dir.path(), &flags);
    send_shop(&server, first_minute, 0..TRACES / 2);
    let (status, _, _) = post(
        &format!("http://{}/api/v1/admin/flush", server.http_addr),
        "text/plain",
        &[],
        Vec::new(),
    );
    assert_eq!(status, 200);
    send_shop(&server, first_minute, TRACES / 2..TRACES);
    let storage = server.get_json("/api/v1/status/storage");
    assert!(
        storage["spans_in_memory"].as_u64().unwrap() > 0,
        "{storage}"
    );
    assert!(storage["rollup_files"].as_u64().unwrap() > 0, "{storage}");
    check_everything(&server, first_minute);
    server.stop();

    let server = Server::start(dir.path(), &flags);
    check_everything(&server, first_minute);
    server.stop();
}

#[test]
fn dashboard_parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for (path, named) in [
        ("/api/v1/top?by=slowest", "by"),
        ("/api/v1/top?limit=0", "limit"),
        ("/api/v1/top?span_kind=sideways", "span_kind"),
        ("/api/v1/topology?start=yesterday", "start"),
        ("/api/v1/topology?start=200&end=100", "start"),
        ("/api/v1/red?service=a&step=45s", "step"),
        ("/api/v1/red?source=a&service=b", "source and/or target"),
        ("/api/v1/services?since=1h", "since"),
        ("/api/v1/topology?load_test=maybe", "load_test"),
        ("/api/v1/traces?load_test=yes", "load_test"),
    ] {
        let (status, body) = common::get(&format!("http://{}{path}", server.http_addr));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(named), "{path}: {body}");
    }
    server.stop();
}

/// Right after start-up "the last hour" holds a few seconds of spans: its rates divide by those
/// seconds (`rate_seconds` says by what), not by the hour.
#[test]
fn rates_right_after_start_up_divide_by_the_time_with_data() {
    use common::otlp::{encode, request, span};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = common::now_nanos();
    let spans: Vec<_> = (0..30u8)
        .map(|n| {
            let mut s = span(n, "GET /");
            // One call every 100 ms over the last 3 seconds.
            s.start_time_unix_nano = now - 3_000_000_000 + u64::from(n) * 100_000_000;
            s.end_time_unix_nano = s.start_time_unix_nano + 1_000_000;
            s
        })
        .collect();
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        encode(&request("web", spans)),
    );
    assert_eq!(status, 200);
    for path in ["/api/v1/topology", "/api/v1/top"] {
        let answer = server.get_json(path);
        let seconds = answer["rate_seconds"].as_f64().unwrap();
        assert!((3.0..30.0).contains(&seconds), "{path}: {answer}");
        let rate = if path.ends_with("top") {
            answer["data"][0]["rate"].as_f64().unwrap()
        } else {
            answer["nodes"][0]["rate"].as_f64().unwrap()
        };
        assert!((rate - 30.0 / seconds).abs() < 1e-9, "{path}: {answer}");
        // Over an hour it would have read 30 / 3600 = 0.008/s.
        assert!(rate > 1.0, "{path}: {answer}");
    }
}

/// Load-test (shadow) requests — SOFATracer's `mark=T` baggage, which reporters send as a tag —
/// are flagged, left out of the topology, top-N and RED figures, and shown on their own with
/// `load_test=true`; trace search finds either kind on request.
#[test]
fn load_test_traffic_is_kept_apart_and_shown_on_request() {
    use common::otlp::{encode, kv, request, s, span};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = common::now_nanos();
    let spans: Vec<_> = (0..10u8)
        .map(|n| {
            let mut sp = span(n, "GET /");
            sp.start_time_unix_nano = now - 2_000_000_000 + u64::from(n) * 100_000_000;
            sp.end_time_unix_nano = sp.start_time_unix_nano + 1_000_000;
            // Three of the ten are shadow traffic.
            if n < 3 {
                sp.attributes = vec![kv("mark", s("T"))];
            }
            sp
        })
        .collect();
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        encode(&request("web", spans)),
    );
    assert_eq!(status, 200);
    let calls = |path: &str| -> u64 {
        let answer = server.get_json(path);
        answer["nodes"]
            .as_array()
            .or(answer["data"].as_array())
            .and_then(|a| a.first())
            .map_or(0, |n| n["calls"].as_u64().unwrap())
    };
    assert_eq!(calls("/api/v1/topology"), 7);
    assert_eq!(calls("/api/v1/topology?load_test=false"), 7);
    assert_eq!(calls("/api/v1/topology?load_test=true"), 3);
    assert_eq!(calls("/api/v1/top"), 7);
    assert_eq!(calls("/api/v1/top?load_test=true"), 3);
    let red = |q: &str| -> f64 {
        let answer = server.get_json(&format!("/api/v1/red?service=web{q}"));
        answer["points"].as_array().map_or(0.0, |p| {
            p.iter().map(|p| p["calls"].as_f64().unwrap_or(0.0)).sum()
        })
    };
    assert_eq!((red(""), red("&load_test=true")), (7.0, 3.0));
    let traces = |q: &str| {
        server.get_json(&format!("/api/v1/traces?limit=100{q}"))["data"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(traces(""), 10);
    assert_eq!(traces("&load_test=true"), 3);
    assert_eq!(traces("&load_test=false"), 7);
    let shadow = server.get_json(&format!("/api/v1/traces/{}", common::hex(&[1u8; 16])));
    assert_eq!(shadow["spans"][0]["load_test"], true, "{shadow}");
    server.stop();
}

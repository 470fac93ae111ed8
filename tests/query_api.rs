//! The query API of the running binary over everything stored — Parquet files and spans
//! acknowledged a moment ago: SQL, trace by id, services and operations.

mod common;

use common::otlp::{self, span};
use common::{post, Server};
use serde_json::{json, Value};

fn sql(server: &Server, query: &str) -> (u16, Value) {
    let (status, _, body) = post(
        &format!("http://{}/api/v1/sql", server.http_addr),
        "application/json",
        &[],
        serde_json::to_vec(&json!({ "query": query })).unwrap(),
    );
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn send(server: &Server, service: &str, first: u8, n: u8) {
    let spans = (first..first + n)
        .map(|i| {
            let mut s = span(i, &format!("op-{}", i % 2));
            s.attributes = vec![otlp::kv(
                "http.response.status_code",
                otlp::i(200 + i64::from(i)),
            )];
            s
        })
        .collect();
    let body = otlp::encode(&otlp::request(service, spans));
    let (status, _, _) = post(&server.traces_url(), "application/x-protobuf", &[], body);
    assert_eq!(status, 200);
}

#[test]
fn sql_sees_parquet_and_unflushed_spans_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--seal-max-age", "1h"]);
    send(&server, "alpha", 1, 3);
    let (status, _, _) = post(
        &format!("http://{}/api/v1/admin/flush", server.http_addr),
        "text/plain",
        &[],
        Vec::new(),
    );
    assert_eq!(status, 200);
    let (status, body) = common::get(&format!(
        "http://{}/api/v1/status/storage",
        server.http_addr
    ));
    assert_eq!(status, 200);
    let storage: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(storage["spans_in_files"], 3);
    assert_eq!(storage["spans_in_memory"], 0);
    assert_eq!(storage["spans_acknowledged"], 3);
    assert_eq!(storage["files"], 1);
    assert_eq!(
        storage["files_flushed"].as_u64().unwrap(),
        1 + storage["rollup_files"].as_u64().unwrap(),
        "the span file and its rollups' files: {storage}"
    );
    send(&server, "beta", 10, 2);
    send(&server, "alpha", 20, 1);

    let (status, v) = sql(
        &server,
        "SELECT CAST(service_name AS VARCHAR) AS service, count(*) AS spans \
         FROM spans GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["columns"][0]["name"], "service");
    assert_eq!(v["columns"][1]["type"], "Int64");
    assert_eq!(v["rows"], json!([["alpha", 4], ["beta", 2]]));
    assert_eq!(v["truncated"], false);

    // A filter on a dedicated column, and an id rendered as hex.
    let (status, v) = sql(
        &server,
        "SELECT trace_id, http_status_code FROM spans WHERE http_status_code >= 220",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([["15151515151515151515151515151515", 220]])
    );

    // Time filters: the manifest's time ranges skip files, the answer stays exact.
    let (status, v) = sql(
        &server,
        "SELECT count(*) FROM spans WHERE start_time >= now() - INTERVAL '1 hour'",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([[6]]));
    let (status, v) = sql(
        &server,
        "SELECT count(*) FROM spans WHERE start_time < TIMESTAMP '2000-01-01T00:00:00Z'",
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([[0]]));

    // Writes and DDL are refused; bad SQL names the problem.
    for q in [
        "DELETE FROM spans",
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE spans",
    ] {
        let (status, v) = sql(&server, q);
        assert_eq!(status, 400, "{q}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not supported")
                || v["error"].as_str().unwrap().contains("DDL")
                || v["error"].as_str().unwrap().contains("DML"),
            "{q}: {v}"
        );
    }
    let (status, v) = sql(&server, "SELEC 1");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("SELEC"), "{v}");
    let (status, v) = sql(&server, "SELECT nope FROM spans");
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    server.stop();
}

#[test]
fn trace_by_id_returns_every_span_with_its_details_and_404s_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut root = span(1, "GET /cart");
    root.trace_id = vec![0xab; 16];
    root.attributes = vec![
        otlp::kv("http.response.status_code", otlp::i(500)),
        otlp::kv(
            "cached",
            opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(false),
        ),
    ];
    root.status = Some(otlp::Status {
        message: "boom".into(),
        code: 2,
    });
    let mut child = span(2, "SELECT carts");
    child.trace_id = vec![0xab; 16];
    child.parent_span_id = root.span_id.clone();
    child.kind = 3;
    child.start_time_unix_nano = root.start_time_unix_nano + 10;
    child.events = vec![otlp::span::Event {
        time_unix_nano: child.start_time_unix_nano + 1,
        name: "retry".into(),
        attributes: vec![otlp::kv("attempt", otlp::i(2))],
        ..Default::default()
    }];
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        otlp::encode(&otlp::request("cart", vec![root.clone()])),
    );
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        otlp::encode(&otlp::request("db-proxy", vec![child])),
    );
    assert_eq!(status, 200);

    let (status, body) = common::get(&format!(
        "http://{}/api/v1/traces/{}",
        server.http_addr,
        "ab".repeat(16)
    ));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trace_id"], "ab".repeat(16));
    let spans = v["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["name"], "GET /cart");
    assert_eq!(spans[0]["service"], "cart");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["parent_span_id"], Value::Null);
    assert_eq!(spans[0]["status_code"], "error");
    assert_eq!(spans[0]["status_message"], "boom");
    assert_eq!(
        spans[0]["attributes"],
        json!({"http.response.status_code": 500, "cached": false})
    );
    assert_eq!(spans[0]["resource"], json!({"service.name": "cart"}));
    assert_eq!(spans[0]["start_unix_nano"], root.start_time_unix_nano);
    assert_eq!(spans[0]["duration_nano"], 1_000_000);
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(spans[1]["kind"], "client");
    assert_eq!(spans[1]["service"], "db-proxy");
    assert_eq!(spans[1]["events"][0]["name"], "retry");
    assert_eq!(spans[1]["events"][0]["attributes"], json!({"attempt": 2}));

    let (status, body) = common::get(&format!(
        "http://{}/api/v1/traces/{}",
        server.http_addr,
        "cd".repeat(16)
    ));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not found"));
    let (status, body) = common::get(&format!(
        "http://{}/api/v1/traces/not-hex",
        server.http_addr
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("hex"));
    server.stop();
}

#[test]
fn services_include_uninstrumented_targets_and_operations_list_name_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--edge-wait", "200ms"]);
    let mut handler = span(1, "GET /cart");
    handler.kind = 2;
    let mut query = span(2, "SELECT carts");
    query.kind = 3;
    query.attributes = vec![otlp::kv("db.system", otlp::s("postgresql"))];
    let mut publish = span(3, "orders publish");
    publish.kind = 4;
    publish.attributes = vec![otlp::kv("messaging.system", otlp::s("kafka"))];
    let mut charge = span(4, "POST /charge");
    charge.kind = 3;
    charge.attributes = vec![otlp::kv("peer.service", otlp::s("stripe"))];
    let mut server_side = span(5, "charge");
    server_side.kind = 2;
    server_side.attributes = vec![otlp::kv("peer.service", otlp::s("ignored-on-servers"))];
    for (service, spans) in [
        ("cart", vec![handler, query, publish, charge]),
        ("payments", vec![server_side]),
    ] {
        let (status, _, _) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            otlp::encode(&otlp::request(service, spans)),
        );
        assert_eq!(status, 200);
    }
    // The call to stripe has no server half: it becomes an external target once it stops
    // waiting for one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let (status, body) = common::get(&format!("http://{}/api/v1/services", server.http_addr));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if body.contains("stripe") || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        v["data"],
        json!([
            {"name": "cart", "kind": "service"},
            {"name": "kafka", "kind": "messaging"},
            {"name": "payments", "kind": "service"},
            {"name": "postgresql", "kind": "database"},
            {"name": "stripe", "kind": "external"},
        ])
    );
    let (status, body) = common::get(&format!(
        "http://{}/api/v1/services/cart/operations",
        server.http_addr
    ));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["data"],
        json!([
            {"name": "GET /cart", "span_kind": "server"},
            {"name": "POST /charge", "span_kind": "client"},
            {"name": "SELECT carts", "span_kind": "client"},
            {"name": "orders publish", "span_kind": "producer"},
        ])
    );
    let (status, body) = common::get(&format!(
        "http://{}/api/v1/services/nobody/operations",
        server.http_addr
    ));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"],
        json!([])
    );
    server.stop();
}

/// Three traces: a fast good one, a slow one whose database span is slow, and one with an error.
fn send_search_fixture(server: &Server) -> (u64, [String; 3]) {
    let base = common::now_nanos() - 60_000_000_000;
    let mut ids = Vec::new();
    for (t, (root_ms, child_ms, status, region)) in [
        (10u64, 2u64, 0, "eu"),
        (900, 700, 0, "us"),
        (50, 5, 2, "eu"),
    ]
    .into_iter()
    .enumerate()
    {
        let t = t as u8;
        let mut root = span(10 + t, "GET /checkout");
        root.trace_id = vec![0x10 + t; 16];
        root.start_time_unix_nano = base + u64::from(t) * 1_000_000_000;
        root.end_time_unix_nano = root.start_time_unix_nano + root_ms * 1_000_000;
        root.attributes = vec![
            otlp::kv(
                "http.response.status_code",
                otlp::i(if status == 2 { 503 } else { 200 }),
            ),
            otlp::kv("region", otlp::s(region)),
            otlp::kv("cart.items", otlp::i(i64::from(t) + 1)),
        ];
        if status == 2 {
            root.status = Some(otlp::Status {
                message: "down".into(),
                code: 2,
            });
        }
        let mut child = span(20 + t, "SELECT orders");
        child.trace_id = root.trace_id.clone();
        child.parent_span_id = root.span_id.clone();
        child.kind = 3;
        child.start_time_unix_nano = root.start_time_unix_nano + 1_000_000;
        child.end_time_unix_nano = child.start_time_unix_nano + child_ms * 1_000_000;
        let (status_code, _, _) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            otlp::encode(&otlp::request("frontend", vec![root])),
        );
        assert_eq!(status_code, 200);
        let (status_code, _, _) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            otlp::encode(&otlp::request("orders-db", vec![child])),
        );
        assert_eq!(status_code, 200);
        ids.push(format!("{:02x}", 0x10 + t).repeat(16));
    }
    (base, [ids[0].clone(), ids[1].clone(), ids[2].clone()])
}

fn search(server: &Server, query: &str) -> Vec<Value> {
    let (status, body) = common::get(&format!(
        "http://{}/api/v1/traces?{query}",
        server.http_addr
    ));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn ids_of(found: &[Value]) -> Vec<&str> {
    found
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect()
}

#[test]
fn trace_search_applies_each_filter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (base, [fast, slow, failing]) = send_search_fixture(&server);

    // Newest first, with the summary of each trace.
    let all = search(&server, "");
    assert_eq!(
        ids_of(&all),
        [failing.as_str(), slow.as_str(), fast.as_str()]
    );
    let s = &all[1];
    assert_eq!(s["root_service"], "frontend");
    assert_eq!(s["root_operation"], "GET /checkout");
    assert_eq!(s["start_unix_nano"], base + 1_000_000_000);
    assert_eq!(s["duration_nano"], 900_000_000);
    assert_eq!(s["span_count"], 2);
    assert_eq!(s["error_count"], 0);
    assert_eq!(s["services"], json!(["frontend", "orders-db"]));
    assert_eq!(all[0]["error_count"], 1);

    assert_eq!(ids_of(&search(&server, "error=true")), [failing.as_str()]);
    assert_eq!(
        ids_of(&search(&server, "service=orders-db&min_duration=100ms")),
        [slow.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "operation=SELECT+orders&max_duration=3ms")),
        [fast.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "min_trace_duration=0.5s")),
        [slow.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "max_trace_duration=20ms")),
        [fast.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "attr=http.response.status_code%3E%3D500")),
        [failing.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "attr=region%3Deu")),
        [failing.as_str(), fast.as_str()]
    );
    assert_eq!(
        ids_of(&search(
            &server,
            "attr=region%3Deu&attr=http.response.status_code%3D200"
        )),
        [fast.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "attr=region!%3Deu")),
        [slow.as_str()]
    );
    // An attribute without a dedicated column, compared as a number and as text.
    assert_eq!(
        ids_of(&search(&server, "attr=cart.items%3E%3D2")),
        [failing.as_str(), slow.as_str()]
    );
    assert_eq!(
        ids_of(&search(&server, "attr=cart.items%3D1")),
        [fast.as_str()]
    );
    assert!(search(&server, "attr=cart.items%3Cone").is_empty());
    assert_eq!(ids_of(&search(&server, "limit=1")), [failing.as_str()]);
    let start = (base + 1_500_000_000) as f64 / 1e9;
    assert_eq!(
        ids_of(&search(&server, &format!("start={start}"))),
        [failing.as_str()]
    );
    assert!(search(&server, "service=nobody").is_empty());

    let (status, body) = common::get(&format!(
        "http://{}/api/v1/traces?min_duration=soon",
        server.http_addr
    ));
    assert_eq!(status, 400);
    assert!(body.contains("min_duration"), "{body}");
    server.stop();
}

/// A query sees one version of the store: ingesting steadily with short seals while counting,
/// no answer is ever above what was acknowledged, nor below what was acknowledged before the
/// query began. (Before, a chunk just flushed could be counted in memory and in its file: 18 of
/// 2,793 answers counted more spans than had been acknowledged.)
#[test]
fn counts_during_ingest_never_exceed_nor_miss_acknowledged_spans() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--seal-max-age", "200ms"]);
    const PER_REQUEST: u64 = 50;
    let body = otlp::encode(&otlp::request(
        "steady",
        (0..PER_REQUEST as u8).map(|i| span(i, "op")).collect(),
    ));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), server.traces_url());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, _, _) = post(&url, "application/x-protobuf", &[], body.clone());
                assert_eq!(status, 200);
                acked.fetch_add(PER_REQUEST, Ordering::SeqCst);
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut answers = 0;
    while std::time::Instant::now() < deadline {
        let before = acked.load(Ordering::SeqCst);
        let (status, v) = sql(&server, "SELECT count(*) AS n FROM spans");
        let after = acked.load(Ordering::SeqCst);
        assert_eq!(status, 200, "{v}");
        let n = v["rows"][0][0].as_u64().unwrap();
        assert!(
            n >= before,
            "{n} spans counted, {before} acknowledged before the query"
        );
        // The one request in flight may be stored before its acknowledgement arrives.
        assert!(
            n <= after + PER_REQUEST,
            "{n} spans counted, only {after} acknowledged"
        );
        answers += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(answers > 50, "{answers} answers");
    let (_, storage) = common::get(&format!(
        "http://{}/api/v1/status/storage",
        server.http_addr
    ));
    let storage: Value = serde_json::from_str(&storage).unwrap();
    assert!(
        storage["files_flushed"].as_u64().unwrap() > 5,
        "flushes happened meanwhile: {storage}"
    );
}

//! SQL over everything stored — Parquet files and spans acknowledged a moment ago — through
//! `POST /api/v1/sql` of the running binary.

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

//! The demo shop: `sightline serve --demo` shows a living topology within seconds, and
//! `sightline demo --endpoint` feeds any server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn nodes(t: &Value) -> Vec<(String, String)> {
    t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn serve_demo_shows_the_whole_shop_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo", "--edge-wait", "1s"]);
    let expected: Vec<(String, String)> = [
        ("auth", "service"),
        ("cart", "service"),
        ("catalog", "service"),
        ("frontend", "service"),
        ("fulfillment", "service"),
        ("orders", "messaging"),
        ("payments", "service"),
        ("postgresql", "database"),
        ("stripe", "external"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let started = Instant::now();
    let t = loop {
        let t = server.get_json("/api/v1/topology");
        if nodes(&t) == expected {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the shop is incomplete: {:?}",
            nodes(&t)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let edges: Vec<(&str, &str)> = t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    for edge in [
        ("frontend", "auth"),
        ("frontend", "catalog"),
        ("frontend", "cart"),
        ("frontend", "payments"),
        ("catalog", "postgresql"),
        ("payments", "stripe"),
        ("payments", "orders"),
        ("orders", "fulfillment"),
    ] {
        assert!(edges.contains(&edge), "{edge:?} missing from {edges:?}");
    }
    let top = server.get_json("/api/v1/top?by=impact&limit=1");
    assert_eq!(top["data"][0]["service"], "frontend", "{top}");
    server.stop();
}

#[test]
fn demo_command_sends_to_any_endpoint_and_stops_after_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let status = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["demo", "--endpoint", &server.grpc_url(), "--duration", "2s"])
        .args(["--rate", "50"])
        .status()
        .unwrap();
    assert!(status.success());
    let v = server.get_json("/api/v1/status/storage");
    let spans = v["spans_acknowledged"].as_u64().unwrap();
    // About 100 traces of 5–20 spans.
    assert!(spans > 300, "{v}");
    server.stop();
}

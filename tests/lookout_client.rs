//! The real SOFALookout client (`com.alipay.sofa.lookout:lookout-client` 1.6.1 from Maven
//! Central) in a small Java 17 program (tests/lookout/), pushing a counter, a timer, a gauge, a
//! distribution summary and a mixin to Sightline's gateway on port 7200 — once below the snappy
//! threshold (text/plain) and once above it (snappy) — over several steps: every stored value is
//! what the client reported for its step.

mod common;

use std::path::Path;
use std::process::Command;

use common::{stored_metrics, Server, StoredMetrics};

fn build(out: &Path) -> String {
    common::java_program("lookout", "LookoutPush", out)
}

/// Runs the program; returns the step and the starts of the steps it recorded in.
fn push(classpath: &str, app: &str, threshold: u32, logs: &Path) -> (i64, Vec<i64>) {
    let out = Command::new("java")
        .arg(format!("-Dlogging.path={}", logs.display()))
        .args([
            "-cp",
            classpath,
            "LookoutPush",
            app,
            &threshold.to_string(),
            "3",
        ])
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "LookoutPush failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rfind(|l| l.starts_with('{'))
        .expect("LookoutPush prints its steps")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let steps = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    (v["step"].as_i64().unwrap(), steps)
}

/// The value of a series at `ts`.
fn at(m: &StoredMetrics, name: &str, labels: &[(&str, &str)], ts: i64) -> Option<f64> {
    m.of(name, labels)
        .iter()
        .find(|s| s.ts == ts)
        .map(|s| s.value)
}

#[test]
fn the_lookout_client_reports_every_meter_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let classpath = build(dir.path());
    // The client knows no port but 7200.
    let server = Server::start(
        &dir.path().join("data"),
        &["--lookout-addr", "127.0.0.1:7200"],
    );
    let logs = dir.path().join("logs");
    let plain = push(&classpath, "lookout-plain", 100_000, &logs);
    let snappy = push(&classpath, "lookout-snappy", 2, &logs);
    server.stop();

    let m = stored_metrics(&dir.path().join("data"));
    for (app, (step, starts)) in [("lookout-plain", &plain), ("lookout-snappy", &snappy)] {
        let a = ("app", app);
        // A record's time is the end of the step it counts.
        let ends: Vec<i64> = starts.iter().map(|s| s + step).collect();
        for &t in &ends {
            assert_eq!(
                at(&m, "orders.count", &[a, ("region", "eu")], t),
                Some(3.0),
                "{app} {t}"
            );
            assert_eq!(
                at(&m, "orders.rate", &[a, ("region", "eu")], t),
                Some(1.5),
                "{app}"
            );
            assert_eq!(
                at(&m, "pool.taken.count", &[a, ("name", "db")], t),
                Some(2.0)
            );
            assert_eq!(
                at(&m, "pool.taken.rate", &[a, ("name", "db")], t),
                Some(1.0)
            );
            assert_eq!(at(&m, "pool.idle", &[a, ("name", "db")], t), Some(4.0));
            assert_eq!(at(&m, "queue.size.value", &[a], t), Some(7.0));
            assert_eq!(at(&m, "payload.size.rate", &[a], t), Some(1.0));
            assert_eq!(at(&m, "payload.size.max", &[a], t), Some(30.0));
            assert_eq!(at(&m, "payload.size.totalAmount", &[a], t), Some(20.0));
            for shard in ["0", "77", "149"] {
                assert_eq!(
                    at(&m, "shard.requests.count", &[a, ("shard", shard)], t),
                    Some(1.0),
                    "{app} shard {shard}"
                );
            }
        }
        // The timer reports the steps whose rounds it saw end: 100 ms and 300 ms each.
        let timer: Vec<_> = m
            .of("rpc.call.totalTime", &[a, ("method", "pay")])
            .into_iter()
            .filter(|s| s.value != 0.0)
            .collect();
        assert!(timer.len() >= 2, "{app}: {timer:?}");
        for s in timer {
            assert_eq!(s.value, 0.4);
            assert_eq!(
                at(&m, "rpc.call.elapPerExec", &[a, ("method", "pay")], s.ts),
                Some(0.2)
            );
            assert_eq!(
                at(&m, "rpc.call.max", &[a, ("method", "pay")], s.ts),
                Some(0.3)
            );
        }
        let one = &m.of("orders.count", &[a])[0];
        assert!(one.labels.contains_key("host") && one.labels.contains_key("ip"));
        assert!(!one.labels.contains_key("_type_") && !one.labels.contains_key("priority"));
    }
    assert!(m
        .metadata
        .iter()
        .any(|md| md.0 == "rpc.call.elapPerExec" && md.3.contains("timer")));
}

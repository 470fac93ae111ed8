//! Nothing acknowledged is lost: across a clean restart, and after `kill -9` in the middle of
//! ingest — whether the spans were still in the WAL or already in Parquet.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{self, span};
use common::{hex, post, stored_spans, Server};

/// A request of `n` spans with ids derived from `seq`, so every span id is unique.
fn batch(seq: u32, n: u32) -> (Vec<u8>, Vec<String>) {
    let spans: Vec<_> = (0..n)
        .map(|k| {
            let mut sp = span(0, "durable");
            sp.trace_id = [seq.to_be_bytes(), [7; 4], [7; 4], k.to_be_bytes()].concat();
            sp.span_id = [seq.to_be_bytes(), k.to_be_bytes()].concat();
            sp.attributes = vec![otlp::kv("seq", otlp::i(i64::from(seq)))];
            sp
        })
        .collect();
    let ids = spans.iter().map(|s| hex(&s.span_id)).collect();
    (otlp::encode(&otlp::request("durable", spans)), ids)
}

#[test]
fn restart_keeps_everything_and_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (body, mut expected) = batch(1, 50);
    assert_eq!(
        post(&server.traces_url(), "application/x-protobuf", &[], body).0,
        200
    );
    server.stop();

    let server = Server::start(dir.path(), &[]);
    let (body, ids) = batch(2, 30);
    expected.extend(ids);
    assert_eq!(
        post(&server.traces_url(), "application/x-protobuf", &[], body).0,
        200
    );
    server.stop();

    let stored: Vec<String> = stored_spans(dir.path())
        .into_iter()
        .map(|s| s.span_id)
        .collect();
    assert_eq!(stored.len(), 80, "no span lost, none duplicated");
    assert_eq!(
        stored.iter().collect::<HashSet<_>>(),
        expected.iter().collect::<HashSet<_>>()
    );
}

/// Several writers ingest; the server is killed with SIGKILL at `kill_after`; every span whose
/// request got a 200 must be there after restart, exactly once.
fn kill_mid_ingest(extra: &[&str], kill_after: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), extra);
    let url = server.traces_url();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u32)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut seq = w * 1_000_000 + 1;
                // Bounded: at most 2,000 requests per writer.
                while !stop.load(Ordering::Relaxed) && seq < w * 1_000_000 + 2_000 {
                    let (body, ids) = batch(seq, 40);
                    seq += 1;
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .timeout(Duration::from_secs(10))
                        .send();
                    match resp {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(kill_after);
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() > 1000,
        "the test ingested too little to mean anything: {}",
        acked.len()
    );

    // Restart: the WAL is replayed into Parquet.
    let server = Server::start(dir.path(), extra);
    server.stop();
    let stored: Vec<String> = stored_spans(dir.path())
        .into_iter()
        .map(|s| s.span_id)
        .collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a span was stored twice");
    let missing: Vec<_> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

#[test]
fn kill9_mid_ingest_loses_nothing_acknowledged_from_the_wal() {
    // Long seal age: everything acknowledged is only in the WAL when the server dies.
    kill_mid_ingest(&["--seal-max-age", "1h"], Duration::from_millis(1500));
}

#[test]
fn kill9_mid_ingest_loses_nothing_while_parquet_files_are_written() {
    // Tiny seals: Parquet writes, manifest updates and WAL deletions are under way at the kill.
    kill_mid_ingest(
        &[
            "--seal-max-bytes",
            "64KiB",
            "--seal-max-age",
            "100ms",
            "--maintenance-interval",
            "200ms",
            "--compaction-target-rows",
            "5000",
        ],
        Duration::from_millis(2500),
    );
}

/// Metrics too: writers remote-write distinct samples, the server is killed with SIGKILL with
/// some in the WAL and some being flushed, and every sample whose request got a 204 is there
/// after restart, exactly once.
#[test]
fn kill9_mid_metrics_ingest_loses_nothing_acknowledged() {
    use sightline_collector::remote_write::decode::encode::write_request_v1;
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--seal-max-bytes", "256KiB", "--seal-max-age", "200ms"];
    let server = Server::start(dir.path(), &extra);
    let url = server.remote_write_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let acked = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u32)
        .map(|w| {
            let (url, acked, stop) = (url.clone(), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let writer = format!("w{w}");
                for round in 0..2_000i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // 50 series, one sample each, at a time no other round uses.
                    let ts = now - 60_000 + round;
                    let ids: Vec<String> = (0..50).map(|i| i.to_string()).collect();
                    let series: Vec<_> = ids
                        .iter()
                        .map(|id| {
                            (
                                vec![
                                    ("__name__", "durable"),
                                    ("id", id.as_str()),
                                    ("writer", writer.as_str()),
                                ],
                                vec![(round as f64, ts)],
                            )
                        })
                        .collect();
                    let body = snap::raw::Encoder::new()
                        .compress_vec(&write_request_v1(&series))
                        .unwrap();
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "snappy")
                        .body(body)
                        .timeout(Duration::from_secs(10))
                        .send();
                    match resp {
                        Ok(r) if r.status() == 204 => acked
                            .lock()
                            .unwrap()
                            .extend(ids.iter().map(|id| (format!("{writer}/{id}"), ts))),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked: HashSet<(String, i64)> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() > 5000, "too little ingested: {}", acked.len());

    let server = Server::start(dir.path(), &extra);
    server.stop();
    let stored: Vec<(String, i64)> = common::stored_metrics(dir.path())
        .samples
        .into_iter()
        .filter(|s| s.labels["__name__"] == "durable")
        .map(|s| (format!("{}/{}", s.labels["writer"], s.labels["id"]), s.ts))
        .collect();
    let unique: HashSet<&(String, i64)> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a sample was stored twice");
    let missing: Vec<_> = acked.iter().filter(|k| !unique.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged samples lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

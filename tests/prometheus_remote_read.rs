//! Prometheus remote read from Prometheus itself: Debian's Prometheus 2.42 (which asks for
//! `SAMPLES`) and Prometheus 3.16 built with `go install` (which asks for `STREAMED_XOR_CHUNKS`
//! first), each with an empty local store and `remote_read` pointed at Sightline, return
//! exactly the samples written to Sightline; bad requests are refused with the problem named.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, get, go_binary, now_ms, post, start_prometheus, url_encode, Server};
use serde_json::Value;
use sightline_collector::remote_write::decode::encode::write_request_v1;

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// Three series over the last hour, at irregular times, with values that take every path of
/// the XOR encoding (repeats, small and large changes, negatives, a stale marker).
fn written(end: i64) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut out = Vec::new();
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for (name, kind) in [
        ("rr_requests_total", 0),
        ("rr_temperature", 1),
        ("rr_queue", 2),
    ] {
        let mut t = end - 3_600_000;
        let mut v = 0.0;
        let mut points = Vec::new();
        while t < end - 1_000 {
            v = match kind {
                0 => v + (next() % 5) as f64,
                1 => 20.0 + (next() % 1000) as f64 / 37.0 - 13.5,
                _ => {
                    if next() % 3 == 0 {
                        v
                    } else {
                        (next() % 100_000) as f64 * 1e6 - 4e10
                    }
                }
            };
            points.push((t, v));
            // Mostly 15 s apart, sometimes jittered, sometimes a long gap.
            t += match next() % 10 {
                0 => 1 + (next() % 200_000) as i64,
                1 | 2 => 15_000 + (next() % 2_000) as i64 - 1_000,
                _ => 15_000,
            };
        }
        out.push((name.to_string(), points));
    }
    // The queue goes away with a stale marker.
    let queue = &mut out[2].1;
    let last = queue.last().unwrap().0;
    queue.push((last + 500, f64::from_bits(STALE)));
    out
}

/// The raw samples of `query` (a range selector) from a Prometheus-API server, by series name.
fn raw_samples(base: &str, query: &str, at_ms: i64) -> BTreeMap<String, Vec<(i64, u64)>> {
    let url = format!(
        "{base}/api/v1/query?query={}&time={}",
        query
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('~', "%7E"),
        at_ms as f64 / 1000.0
    );
    let (status, body) = get(&url);
    assert_eq!(status, 200, "{url}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let points = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                (t, p[1].as_str().unwrap().parse::<f64>().unwrap().to_bits())
            })
            .collect();
        out.insert(
            s["metric"]["__name__"].as_str().unwrap().to_string(),
            points,
        );
    }
    out
}

/// The sum of a counter's lines with `label` in a `/metrics` page.
fn counted(base: &str, counter: &str, label: &str) -> f64 {
    let (_, text) = get(&format!("{base}/metrics"));
    text.lines()
        .filter(|l| l.starts_with(&format!("{counter}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn prometheus_reads_back_what_sightline_holds() {
    let dir = tempfile::tempdir().unwrap();
    // An hour of history at once, as a backfill would send it.
    let server = Server::start(
        &dir.path().join("sightline"),
        &["--out-of-order-window", "2h"],
    );
    let end = now_ms() / 1000 * 1000;
    let series = written(end);
    let body: Vec<_> = series
        .iter()
        .map(|(name, points)| {
            (
                vec![("__name__", name.as_str()), ("job", "rr")],
                points.iter().map(|(t, v)| (*v, *t)).collect(),
            )
        })
        .collect();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&write_request_v1(&body))
        .unwrap();
    let (status, _, reply) = post(
        &server.remote_write_url(),
        "application/x-protobuf",
        &[("content-encoding", "snappy")],
        compressed,
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&reply));
    // A range selector returns every sample but stale markers.
    let want: BTreeMap<String, Vec<(i64, u64)>> = series
        .iter()
        .map(|(name, points)| {
            let kept = points
                .iter()
                .filter(|(_, v)| v.to_bits() != STALE)
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            (name.clone(), kept)
        })
        .collect();
    let query = r#"{__name__=~"rr_.*"}[2h]"#;
    let read_url = format!("http://{}/prometheus/api/v1/read", server.http_addr);
    let sightline = format!("http://{}/prometheus", server.http_addr);
    assert_eq!(raw_samples(&sightline, query, end), want);

    // Which response type Sightline answered with, from its own /metrics.
    let answered = |kind: &str| {
        counted(
            &format!("http://{}", server.http_addr),
            "sightline_remote_read_requests_total",
            &format!("response_type=\"{kind}\""),
        )
    };
    let prometheus_3 = go_binary(
        "github.com/prometheus/prometheus/cmd/prometheus",
        "v0.316.0",
    );
    for (binary, response) in [
        (std::path::PathBuf::from("prometheus"), "samples"),
        (prometheus_3.clone(), "streamed_xor_chunks"),
    ] {
        let before = answered(response);
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let _prometheus = start_prometheus(
            &binary,
            home.path(),
            port,
            &format!("remote_read:\n  - url: {read_url}\n    read_recent: true\n"),
            &[],
        );
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = raw_samples(&base, query, end);
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(got, want, "{} via {response}", binary.display());
        assert!(
            answered(response) > before,
            "{} read {response}",
            binary.display()
        );
        if binary == prometheus_3 {
            // Prometheus 3 says so too: it decoded chunks.
            assert!(
                counted(
                    &base,
                    "prometheus_remote_read_client_queries_total",
                    "response_type=\"chunked\""
                ) >= 1.0
            );
        }
        // PromQL over what was read equals Sightline's own answer.
        let rate = "sum(rate(rr_requests_total[10m]))";
        let at = format!("query?query={}&time={}", url_encode(rate), end / 1000);
        let (_, theirs) = get(&format!("{base}/api/v1/{at}"));
        let (_, ours) = get(&format!("{sightline}/api/v1/{at}"));
        let value = |b: &str| {
            serde_json::from_str::<Value>(b).unwrap()["data"]["result"][0]["value"][1].clone()
        };
        assert_eq!(value(&theirs), value(&ours), "{theirs} vs {ours}");
    }

    // Bad requests name the problem; what was stored stays readable.
    for (body, problem) in [
        (b"not snappy at all".to_vec(), "snappy"),
        (
            snap::raw::Encoder::new()
                .compress_vec(b"\xff\xff\xff")
                .unwrap(),
            "ReadRequest",
        ),
    ] {
        let (status, _, reply) = post(&read_url, "application/x-protobuf", &[], body);
        let reply = String::from_utf8_lossy(&reply);
        assert_eq!(status, 400, "{reply}");
        assert!(reply.contains(problem), "{reply}");
    }
    assert_eq!(raw_samples(&sightline, query, end), want);
}

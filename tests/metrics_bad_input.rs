//! Hostile metrics through the real binary's remote-write endpoint: each gets a 4xx naming the
//! problem, the server stays up, what was stored before is intact, and the refusals are counted
//! by reason in `/api/v1/status/storage`. NaN and ±Inf are values Prometheus takes, and so are
//! they here.

mod common;

use common::now_ms;

use common::{post, stored_metrics, Server};
use sightline_collector::remote_write::decode::encode::write_request_v1;
use sightline_collector::wire::Writer;

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

/// Sends a raw body with the given content encoding; returns status and body text.
fn send(server: &Server, body: Vec<u8>, encoding: &str) -> (u16, String) {
    let (status, _, body) = post(
        &server.remote_write_url(),
        "application/x-protobuf",
        &[("content-encoding", encoding)],
        body,
    );
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn write(server: &Server, labels: &[(&str, &str)], samples: &[(f64, i64)]) -> (u16, String) {
    let body = write_request_v1(&[(labels.to_vec(), samples.to_vec())]);
    send(server, snappy(&body), "snappy")
}

/// A request whose one label holds raw (not UTF-8) bytes.
fn raw_label_request(name: &[u8], value: &[u8], now: i64) -> Vec<u8> {
    let mut ts = Writer::default();
    for (n, v) in [(&b"__name__"[..], &b"up"[..]), (name, value)] {
        let mut l = Writer::default();
        l.bytes_field(1, n);
        l.bytes_field(2, v);
        ts.bytes_field(1, &l.buf);
    }
    let mut s = Writer::default();
    s.double_field(1, 1.0);
    s.varint_field(2, now as u64);
    ts.bytes_field(2, &s.buf);
    let mut req = Writer::default();
    req.bytes_field(1, &ts.buf);
    req.buf
}

fn expect(got: (u16, String), status: u16, mentions: &str, case: &str) {
    assert_eq!(got.0, status, "{case}: {}", got.1);
    assert!(
        got.1.contains(mentions),
        "{case}: {:?} does not name {mentions:?}",
        got.1
    );
}

#[test]
fn remote_write_answers_hostile_metrics_and_keeps_earlier_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let now = now_ms();
    let before = [("__name__", "kept"), ("job", "before")];
    assert_eq!(write(&server, &before, &[(42.0, now - 1000)]).0, 204);

    expect(
        send(&server, snappy(b"\xff\xff\xff\xff garbage"), "snappy"),
        400,
        "invalid remote write protobuf",
        "garbage",
    );
    expect(
        send(&server, b"\x40not snappy at all".to_vec(), "snappy"),
        400,
        "invalid snappy",
        "bad snappy",
    );
    // A snappy header that declares 1 GiB (a bomb) is refused before anything is inflated.
    let bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
    expect(
        send(&server, bomb, "snappy"),
        413,
        "after decompression",
        "snappy bomb",
    );
    expect(
        send(&server, vec![0u8; (64 << 20) + 1], "snappy"),
        413,
        "exceeds",
        "over 64 MiB",
    );
    expect(
        send(
            &server,
            snappy(&raw_label_request(b"job", b"\xff\xfe", now)),
            "snappy",
        ),
        400,
        "UTF-8",
        "invalid UTF-8",
    );
    expect(
        write(
            &server,
            &[("__name__", "x"), ("a", "1"), ("a", "2")],
            &[(1.0, now)],
        ),
        400,
        "appears twice",
        "duplicate label",
    );
    expect(
        write(&server, &[("__name__", "x"), ("", "1")], &[(1.0, now)]),
        400,
        "a label name is empty",
        "empty label name",
    );
    expect(
        write(&server, &[("__name__", ""), ("job", "x")], &[(1.0, now)]),
        400,
        "metric name",
        "empty metric name",
    );
    expect(
        write(
            &server,
            &[("__name__", "x")],
            &[(1.0, now + 3 * 365 * 86_400_000)],
        ),
        400,
        "sample_too_new",
        "years ahead",
    );
    expect(
        write(
            &server,
            &[("__name__", "x")],
            &[(1.0, now - 3 * 365 * 86_400_000)],
        ),
        400,
        "sample_too_old",
        "years ago",
    );
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("l{i}"), "v".to_string()))
        .collect();
    let mut labels: Vec<(&str, &str)> =
        many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    labels.push(("__name__", "wide"));
    expect(
        write(&server, &labels, &[(1.0, now)]),
        400,
        "labels_per_series_limit",
        "10,000 labels",
    );
    // NaN and infinities are values.
    let special = [("__name__", "special")];
    assert_eq!(
        write(
            &server,
            &special,
            &[
                (f64::NAN, now - 3),
                (f64::INFINITY, now - 2),
                (f64::NEG_INFINITY, now - 1)
            ]
        )
        .0,
        204
    );

    // A million new series in one request: the first 100,000 are taken, the rest refused.
    let names: Vec<String> = (0..1_000_000).map(|i| format!("s{i}")).collect();
    let series: Vec<_> = names
        .iter()
        .map(|n| {
            (
                vec![("__name__", "flood"), ("id", n.as_str())],
                vec![(1.0, now)],
            )
        })
        .collect();
    let (status, message) = send(&server, snappy(&write_request_v1(&series)), "snappy");
    assert_eq!(status, 400, "{message}");
    assert!(
        message.starts_with("900000 samples refused: new_series_per_request_limit"),
        "{message}"
    );

    assert!(server.is_running());
    let status = server.get_json("/api/v1/status/storage");
    let rejections = &status["metric_rejections"];
    assert_eq!(
        rejections["new_series_per_request_limit"], 900_000,
        "{status}"
    );
    for reason in [
        "invalid_labels",
        "sample_too_new",
        "sample_too_old",
        "labels_per_series_limit",
    ] {
        assert!(
            rejections[reason].as_u64().unwrap_or(0) >= 1,
            "{reason}: {status}"
        );
    }
    assert_eq!(status["active_series"], 100_000 + 2, "{status}");
    server.stop();

    let stored = stored_metrics(dir.path());
    let kept = stored.of("kept", &[("job", "before")]);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].value, 42.0);
    let special = stored.of("special", &[]);
    assert!(special[0].value.is_nan());
    assert_eq!(special[1].value, f64::INFINITY);
    assert_eq!(special[2].value, f64::NEG_INFINITY);
    assert_eq!(stored.of("flood", &[]).len(), 100_000);
    assert!(stored.of("x", &[]).is_empty() && stored.of("wide", &[]).is_empty());
}

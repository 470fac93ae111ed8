//! The receiver compliance suite: garbage, truncated, oversized, hostile and unsupported input
//! gets its documented answer, the server stays up, and what was stored before is intact.

mod common;

use common::otlp::{self, span};
use common::{get, grpc_export, gzip, post, stored_spans, Server};

/// 64 MiB: the OTLP request limit after decompression.
const LIMIT: usize = 64 << 20;

fn good_request(n: u8) -> Vec<u8> {
    otlp::encode(&otlp::request("before", vec![span(n, "kept")]))
}

fn message_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn http_receiver_answers_bad_input_and_keeps_earlier_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let url = server.traces_url();
    let (status, _, _) = post(&url, "application/x-protobuf", &[], good_request(1));
    assert_eq!(status, 200);

    // Garbage protobuf: 400 with a google.rpc.Status naming the problem.
    let (status, headers, body) = post(
        &url,
        "application/x-protobuf",
        &[],
        b"\xff\xff\xff\xff garbage".to_vec(),
    );
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let status_msg = decode_rpc_status(&body);
    assert_eq!(status_msg.0, 3);
    assert!(
        status_msg.1.starts_with("invalid OTLP protobuf"),
        "{}",
        status_msg.1
    );

    // Truncated: a valid request cut in half.
    let whole = good_request(2);
    let (status, _, body) = post(
        &url,
        "application/x-protobuf",
        &[],
        whole[..whole.len() / 2].to_vec(),
    );
    assert_eq!(status, 400);
    assert!(
        decode_rpc_status(&body).1.contains("truncated"),
        "{:?}",
        decode_rpc_status(&body)
    );

    // Garbage JSON, and JSON of the wrong shape.
    let (status, _, body) = post(
        &url,
        "application/json",
        &[],
        b"{\"resourceSpans\": [".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(
        message_of(&body).starts_with("invalid OTLP/JSON"),
        "{}",
        message_of(&body)
    );
    let (status, _, body) = post(
        &url,
        "application/json",
        &[],
        b"{\"resourceSpans\": 5}".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(
        message_of(&body).contains("invalid type"),
        "{}",
        message_of(&body)
    );

    // Unsupported content type and encoding: 415.
    let (status, _, body) = post(&url, "text/plain", &[], b"hello".to_vec());
    assert_eq!(status, 415);
    assert!(message_of(&body).contains("unsupported content type"));
    let (status, _, _) = post(
        &url,
        "application/x-protobuf",
        &[("content-encoding", "br")],
        good_request(3),
    );
    assert_eq!(status, 415);

    // Invalid gzip: 400. A gzip bomb (tiny body, 100 MiB inflated): 413, no OOM.
    let (status, _, body) = post(
        &url,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        b"not gzip at all".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(decode_rpc_status(&body).1.contains("gzip"));
    let bomb = gzip(&vec![0u8; 100 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, _, body) = post(
        &url,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        bomb,
    );
    assert_eq!(status, 413);
    assert_eq!(decode_rpc_status(&body).0, 8);
    assert!(decode_rpc_status(&body).1.contains("after decompression"));

    // Oversized: 413 before the body is even read in full.
    let (status, _, _) = post(&url, "application/x-protobuf", &[], vec![0u8; LIMIT + 1]);
    assert_eq!(status, 413);

    // An empty request is a valid request with nothing in it.
    let (status, _, body) = post(&url, "application/x-protobuf", &[], Vec::new());
    assert_eq!(status, 200);
    assert!(body.is_empty());

    // Gzip that is fine is fine.
    let (status, _, _) = post(
        &url,
        "application/x-protobuf",
        &[("content-encoding", "gzip")],
        gzip(&good_request(4)),
    );
    assert_eq!(status, 200);

    assert!(server.is_running());
    assert_eq!(get(&format!("http://{}/healthz", server.http_addr)).0, 200);
    server.stop();
    let spans = stored_spans(dir.path());
    let mut names: Vec<_> = spans
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    names.sort();
    assert_eq!(names, [("before", "kept"), ("before", "kept")]);
}

/// (code, message) of a protobuf `google.rpc.Status`.
fn decode_rpc_status(b: &[u8]) -> (i32, String) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let s = <RpcStatus as prost::Message>::decode(b).expect("google.rpc.Status");
    (s.code, s.message)
}

#[test]
fn grpc_receiver_answers_bad_input_and_keeps_earlier_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let url = server.grpc_url();
    grpc_export(&url, good_request(1), false).expect("good request");

    let err = grpc_export(&url, b"\xff\xff\xff garbage".to_vec(), false).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid OTLP protobuf"),
        "{}",
        err.message()
    );

    let whole = good_request(2);
    let err = grpc_export(&url, whole[..whole.len() - 3].to_vec(), false).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("truncated"), "{}", err.message());

    // 100 MiB of zeros, gzip-compressed by the client: over the limit once inflated.
    let err = grpc_export(&url, vec![0u8; 100 << 20], true).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("after decompression"),
        "{}",
        err.message()
    );

    // Over the limit uncompressed.
    let err = grpc_export(&url, vec![0u8; LIMIT + 10], false).unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    grpc_export(&url, good_request(3), true).expect("good gzip request");
    assert!(server.is_running());
    server.stop();
    assert_eq!(stored_spans(dir.path()).len(), 2);
}

#[test]
fn saturated_server_answers_503_with_retry_after_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of 2 MiB: a request that would take more is refused, not queued without bound.
    let mut server = Server::start(dir.path(), &["--memory-budget", "2MiB"]);
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        good_request(1),
    );
    assert_eq!(status, 200);

    let many: Vec<_> = (0..2000u32)
        .map(|n| {
            let mut sp = span(0, "bulk");
            sp.trace_id = [n.to_le_bytes(), [1; 4], [2; 4], [3; 4]].concat();
            sp.span_id = [n.to_le_bytes(), [9; 4]].concat();
            sp.attributes = (0..10)
                .map(|k| otlp::kv(&format!("key{k}"), otlp::s(&"x".repeat(100))))
                .collect();
            sp
        })
        .collect();
    let big = otlp::encode(&otlp::request("bulk", many));
    assert!(big.len() > 2 << 20);
    let (status, headers, body) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        big.clone(),
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["retry-after"], "1");
    assert!(decode_rpc_status(&body).1.contains("memory budget"));

    let err = grpc_export(&server.grpc_url(), big, false).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let details = err.details();
    assert!(
        String::from_utf8_lossy(details).contains("google.rpc.RetryInfo"),
        "UNAVAILABLE carries RetryInfo"
    );

    // Small requests still go through, and nothing acknowledged was lost.
    let (status, _, _) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        good_request(2),
    );
    assert_eq!(status, 200);
    assert!(server.is_running());
    server.stop();
    assert_eq!(stored_spans(dir.path()).len(), 2);
}

fn zipkin_span(trace: &str, id: &str, timestamp: u64) -> serde_json::Value {
    serde_json::json!({
        "traceId": trace, "id": id, "name": "kept", "timestamp": timestamp, "duration": 5,
        "localEndpoint": {"serviceName": "zipkin-before"}
    })
}

#[test]
fn zipkin_intake_answers_hostile_spans_and_keeps_earlier_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let url = server.zipkin_url();
    let now = common::now_nanos() / 1000;
    let body = |spans: &[serde_json::Value]| serde_json::to_vec(spans).unwrap();
    let send = |ct: &str, headers: &[(&str, &str)], b: Vec<u8>| {
        let (status, _, reply) = post(&url, ct, headers, b);
        (status, String::from_utf8_lossy(&reply).into_owned())
    };
    let good = body(&[zipkin_span("1", "1", now)]);
    assert_eq!(send("application/json", &[], good.clone()).0, 202);

    let bad: [(Vec<u8>, &str); 9] = [
        (
            b"[{\"traceId\": \"1\", garbage".to_vec(),
            "invalid zipkin json",
        ),
        (good[..good.len() / 2].to_vec(), "invalid zipkin json"),
        (
            body(&[zipkin_span("0", "1", now)]),
            "traceid \"0\" is all zeros",
        ),
        (body(&[zipkin_span("1", "0", now)]), "id \"0\" is all zeros"),
        (
            body(&[zipkin_span(&"a".repeat(33), "1", now)]),
            "more than 32",
        ),
        (
            body(&[zipkin_span("1", "xyz", now)]),
            "id \"xyz\" is not hex",
        ),
        // Seconds where microseconds belong.
        (
            body(&[zipkin_span("1", "2", now / 1_000_000)]),
            "not microseconds",
        ),
        // One bad span among good ones fails the request, as on Zipkin's server.
        (
            body(&[
                zipkin_span("1", "3", now),
                zipkin_span("1", "4", now * 1000),
            ]),
            "span 1: timestamp",
        ),
        (b"\x0a\x05\x0a\x03abc".to_vec(), "invalid zipkin json"),
    ];
    for (b, mentions) in bad {
        let (status, message) = send("application/json", &[], b);
        assert_eq!(status, 400, "{mentions}: {message}");
        assert!(
            message.to_lowercase().contains(mentions),
            "{mentions}: {message}"
        );
    }
    let (status, message) = send(
        "application/x-protobuf",
        &[],
        b"\x0a\x05\x0a\x03ab".to_vec(),
    );
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("invalid Zipkin protobuf"), "{message}");
    // A gzip bomb: 80 MiB of zeros in a small body.
    let bomb = gzip(&vec![0u8; LIMIT + (16 << 20)]);
    let (status, message) = send("application/json", &[("content-encoding", "gzip")], bomb);
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("after decompression"), "{message}");
    let (status, message) = send(
        "application/json",
        &[("content-encoding", "br")],
        good.clone(),
    );
    assert_eq!(status, 415, "{message}");
    let (status, _) = send(
        "application/json",
        &[("content-encoding", "gzip")],
        gzip(&body(&[zipkin_span("1", "5", now)])),
    );
    assert_eq!(status, 202);

    assert!(server.is_running());
    server.stop();
    let spans = stored_spans(dir.path());
    let mut ids: Vec<_> = spans.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["0000000000000001", "0000000000000005"]);
    assert!(spans.iter().all(|s| s.service == "zipkin-before"));
}

#[test]
fn sofatracer_stat_intake_answers_hostile_lines_and_keeps_earlier_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let url = |query: &str| format!("http://{}/sofatracer/stat{query}", server.zipkin_addr);
    // Now, as SOFATracer writes it (local time; this test writes UTC).
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S.000"])
        .output()
        .unwrap();
    let time = String::from_utf8(date.stdout).unwrap().trim().to_string();
    let line = |count: &str| {
        format!(
            r#"{{"time":"{time}","stat.key":{{"local.app":"stat-before","request.url":"http://x/a","method":"GET"}},"count":{count},"total.cost.milliseconds":50,"success":"Y","load.test":"F"}}"#
        )
    };
    let send = |query: &str, ct: &str, headers: &[(&str, &str)], b: Vec<u8>| {
        let (status, _, reply) = post(&url(query), ct, headers, b);
        (status, String::from_utf8_lossy(&reply).into_owned())
    };
    let q = "?log=spring-mvc-stat.log";
    assert_eq!(send(q, "text/plain", &[], line("5").into_bytes()).0, 202);

    let good = line("1");
    let bad: [(&str, Vec<u8>, &str); 9] = [
        (
            q,
            b"{\"time\": garbage".to_vec(),
            "line 1: not a json object",
        ),
        (
            q,
            good.as_bytes()[..good.len() / 2].to_vec(),
            "line 1: not a json object",
        ),
        // One bad line among good ones fails the request.
        (
            q,
            format!("{good}\n{}", line("-3")).into_bytes(),
            "line 2: count",
        ),
        (q, line("\"lots\"").into_bytes(), "count"),
        (q, good.replace(&time, "1796207460").into_bytes(), "time"),
        (q, vec![0xff, 0xfe, b'{'], "not utf-8"),
        (
            "",
            good.clone().into_bytes(),
            "the log parameter is missing",
        ),
        ("?log=x&interval=0", good.clone().into_bytes(), "interval"),
        (
            "?log=x&utc_offset=8",
            good.clone().into_bytes(),
            "utc_offset",
        ),
    ];
    for (query, b, mentions) in bad {
        let (status, message) = send(query, "text/plain", &[], b);
        assert_eq!(status, 400, "{mentions}: {message}");
        assert!(
            message.to_lowercase().contains(mentions),
            "{mentions}: {message}"
        );
    }
    let bomb = gzip(&vec![b'\n'; LIMIT + (16 << 20)]);
    let (status, message) = send(q, "text/plain", &[("content-encoding", "gzip")], bomb);
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("after decompression"), "{message}");
    let (status, message) = send(q, "application/x-protobuf", &[], good.clone().into_bytes());
    assert_eq!(status, 415, "{message}");
    let (status, _) = send(
        q,
        "application/x-ndjson",
        &[("content-encoding", "gzip")],
        gzip(line("2").as_bytes()),
    );
    assert_eq!(status, 202);

    assert!(server.is_running());
    let top = server.get_json("/api/v1/top?service=stat-before&by=rate");
    assert_eq!(top["data"][0]["calls"], 7, "{top}");
    assert_eq!(top["data"].as_array().unwrap().len(), 1, "{top}");
    server.stop();
}

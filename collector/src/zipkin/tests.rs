use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use serde_json::json;
use sightline_storage::arrow::array::{Array, AsArray, FixedSizeBinaryArray, Int8Array};
use sightline_storage::schema::col;
use sightline_storage::span_table::SPANS_TABLE;

use super::*;
use crate::receiver::compliance::{http_post, run, Outcome, Subject};
use crate::wire::Writer;

const NOW_MICROS: u64 = 1_795_288_800_000_000;

fn json_body(spans: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(spans).unwrap()
}

fn good_json(rows: usize) -> Vec<u8> {
    let spans: Vec<_> = (0..rows)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", i + 1),
                "id": format!("{:016x}", i + 1),
                "name": "get /",
                "kind": "SERVER",
                "timestamp": NOW_MICROS,
                "duration": 1200,
                "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
                "tags": {"http.method": "GET", "http.status_code": "200"}
            })
        })
        .collect();
    json_body(&spans)
}

fn proto_span(trace: &[u8], id: &[u8], parent: Option<&[u8]>, kind: u64) -> Vec<u8> {
    let mut s = Writer::default();
    s.bytes_field(1, trace);
    if let Some(p) = parent {
        s.bytes_field(2, p);
    }
    s.bytes_field(3, id);
    s.varint_field(4, kind);
    s.bytes_field(5, b"get /");
    s.fixed64_field(6, NOW_MICROS);
    s.varint_field(7, 1200);
    let mut local = Writer::default();
    local.bytes_field(1, b"frontend");
    local.bytes_field(2, &[10, 0, 0, 1]);
    local.varint_field(4, 8080);
    s.bytes_field(8, &local.buf);
    let mut tag = Writer::default();
    tag.bytes_field(1, b"http.method");
    tag.bytes_field(2, b"GET");
    s.bytes_field(11, &tag.buf);
    let mut annotation = Writer::default();
    annotation.fixed64_field(1, NOW_MICROS + 10);
    annotation.bytes_field(2, b"cache miss");
    s.bytes_field(10, &annotation.buf);
    s.buf
}

fn good_proto(rows: usize) -> Vec<u8> {
    let mut list = Writer::default();
    for i in 0..rows {
        let span = proto_span(&[1 + i as u8; 16], &[1 + i as u8; 8], None, 2);
        list.bytes_field(1, &span);
    }
    list.buf
}

struct Zipkin(Format);

impl Subject for Zipkin {
    fn name(&self) -> &'static str {
        match self.0 {
            Format::Json => "zipkin json",
            Format::Protobuf => "zipkin protobuf",
        }
    }

    fn router(&self, receiving: Arc<Receiving>) -> Router {
        router(receiving)
    }

    fn request(
        &self,
        body: Vec<u8>,
        encoding: Encoding,
        content_type: Option<&str>,
    ) -> Request<Body> {
        let default = match self.0 {
            Format::Json => "application/json",
            Format::Protobuf => "application/x-protobuf",
        };
        http_post(
            SPANS_PATH,
            content_type.unwrap_or(default),
            body.len(),
            encoding,
        )
        .body(Body::from(body))
        .unwrap()
    }

    fn good_body(&self, rows: usize) -> Vec<u8> {
        match self.0 {
            Format::Json => good_json(rows),
            Format::Protobuf => good_proto(rows),
        }
    }

    fn table(&self) -> &'static str {
        SPANS_TABLE
    }

    fn encodings(&self) -> &'static [Encoding] {
        &[Encoding::Gzip]
    }

    fn read(&self, status: u16, _headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
        (
            Outcome::of_status(status),
            String::from_utf8_lossy(body).into_owned(),
        )
    }

    fn empty_body(&self) -> Outcome {
        match self.0 {
            Format::Json => Outcome::Rejected,
            Format::Protobuf => Outcome::Stored,
        }
    }
}

/// SOFATracer's stat endpoint: lines of one log, each row its own endpoint.
struct StatLines;

impl Subject for StatLines {
    fn name(&self) -> &'static str {
        "sofatracer stat"
    }

    fn router(&self, receiving: Arc<Receiving>) -> Router {
        router(receiving)
    }

    fn request(
        &self,
        body: Vec<u8>,
        encoding: Encoding,
        content_type: Option<&str>,
    ) -> Request<Body> {
        let path = format!("{STAT_PATH}?log=spring-mvc-stat.log");
        http_post(
            &path,
            content_type.unwrap_or("text/plain"),
            body.len(),
            encoding,
        )
        .body(Body::from(body))
        .unwrap()
    }

    fn good_body(&self, rows: usize) -> Vec<u8> {
        (0..rows)
            .map(|i| {
                format!(
                    r#"{{"time":"2026-11-21 19:20:00.000","stat.key":{{"local.app":"order-app","request.url":"http://order.local/order/{i}","method":"GET"}},"count":3,"total.cost.milliseconds":30,"success":"Y","load.test":"F"}}"#
                ) + "\n"
            })
            .collect::<String>()
            .into_bytes()
    }

    fn table(&self) -> &'static str {
        sightline_storage::rollup::SPAN_STATS_TABLE
    }

    fn encodings(&self) -> &'static [Encoding] {
        &[Encoding::Gzip]
    }

    fn read(&self, status: u16, _headers: &HeaderMap, body: &[u8]) -> (Outcome, String) {
        (
            Outcome::of_status(status),
            String::from_utf8_lossy(body).into_owned(),
        )
    }
}

#[tokio::test]
async fn zipkin_receiver_passes_the_compliance_suite() {
    run(&Zipkin(Format::Json)).await;
    run(&Zipkin(Format::Protobuf)).await;
    run(&StatLines).await;
}

fn batch(body: &[u8], format: Format) -> RecordBatch {
    decode(body, format).unwrap().expect("spans")
}

fn ids(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let a: &FixedSizeBinaryArray = batch.column_by_name(column).unwrap().as_fixed_size_binary();
    (0..a.len())
        .map(|i| {
            a.is_valid(i).then(|| {
                a.value(i)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
        })
        .collect()
}

fn hex(b: [u8; 8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The attributes of row `row` as (key, text) pairs.
fn attributes(batch: &RecordBatch, row: usize) -> Vec<(String, String)> {
    let map = batch.column_by_name(col::ATTRIBUTES).unwrap().as_map();
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_struct();
    (0..keys.len())
        .map(|i| {
            let text = values
                .columns()
                .iter()
                .find(|c| c.is_valid(i))
                .map(|c| {
                    sightline_storage::arrow::util::display::array_value_to_string(c, i).unwrap()
                })
                .unwrap_or_default();
            (keys.value(i).to_string(), text)
        })
        .collect()
}

#[test]
fn json_and_protobuf_spans_land_the_same() {
    let from_json = batch(&good_json(1), Format::Json);
    let mut list = Writer::default();
    list.bytes_field(
        1,
        &proto_span(
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            None,
            2,
        ),
    );
    let from_proto = batch(&list.buf, Format::Protobuf);
    for column in [col::TRACE_ID, col::SPAN_ID] {
        assert_eq!(ids(&from_json, column), ids(&from_proto, column));
    }
    let kind: &Int8Array = from_json
        .column_by_name(col::SPAN_KIND)
        .unwrap()
        .as_primitive();
    assert_eq!(kind.value(0), sightline_storage::SpanKind::Server as i8);
    let attrs = attributes(&from_proto, 0);
    assert!(attrs.contains(&("network.local.address".into(), "10.0.0.1".into())));
    assert!(attrs.contains(&("network.local.port".into(), "8080".into())));
    assert!(attrs.contains(&("http.method".into(), "GET".into())));
}

#[test]
fn short_ids_are_left_padded_and_bad_ids_named() {
    let span = |trace: &str, id: &str| {
        json_body(&[json!({"traceId": trace, "id": id, "name": "x", "timestamp": NOW_MICROS})])
    };
    let b = batch(&span("0ad1348f1403169275002100356696", "abc"), Format::Json);
    assert_eq!(
        ids(&b, col::TRACE_ID),
        [Some("000ad1348f1403169275002100356696".to_string())]
    );
    assert_eq!(
        ids(&b, col::SPAN_ID),
        [Some("0000000000000abc".to_string())]
    );
    for (trace, id, problem) in [
        ("0", "1", "traceId \"0\" is all zeros"),
        ("1", "0000", "id \"0000\" is all zeros"),
        ("xyz", "1", "traceId \"xyz\" is not hex"),
        (&"1".repeat(33), "1", "has 33 hex digits, more than 32"),
        ("1", &"1".repeat(17), "has 17 hex digits, more than 16"),
        ("", "1", "traceId is missing"),
    ] {
        let e = decode(&span(trace, id), Format::Json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("span 0") && e.contains(problem), "{e}");
    }
}

#[test]
fn timestamps_in_seconds_or_nanoseconds_are_refused() {
    for (timestamp, hint) in [
        (1_795_288_800u64, "seconds or milliseconds"),
        (1_795_288_800_000, "seconds or milliseconds"),
        (1_795_288_800_000_000_000, "nanoseconds"),
    ] {
        let body = json_body(&[json!({"traceId": "1", "id": "2", "timestamp": timestamp})]);
        let e = decode(&body, Format::Json).unwrap_err().to_string();
        assert!(e.contains("not microseconds") && e.contains(hint), "{e}");
    }
    let missing = json_body(&[json!({"traceId": "1", "id": "2"})]);
    let e = decode(&missing, Format::Json).unwrap_err().to_string();
    assert!(e.contains("timestamp is missing"), "{e}");
}

#[test]
fn error_tags_set_the_status_and_annotations_become_events() {
    let body = json_body(&[
        json!({"traceId": "1", "id": "2", "timestamp": NOW_MICROS, "tags": {"error": "connection refused"},
               "annotations": [{"timestamp": NOW_MICROS + 5, "value": "retry"}]}),
        json!({"traceId": "1", "id": "3", "timestamp": NOW_MICROS, "tags": {"error": "false"}}),
        json!({"traceId": "1", "id": "4", "timestamp": NOW_MICROS,
               "tags": {"otel.status_code": "ERROR", "otel.status_description": "boom", "error": "boom"}}),
    ]);
    let b = batch(&body, Format::Json);
    let status: &Int8Array = b.column_by_name(col::STATUS_CODE).unwrap().as_primitive();
    assert_eq!(
        (status.value(0), status.value(1), status.value(2)),
        (2, 0, 2)
    );
    let message = b
        .column_by_name(col::STATUS_MESSAGE)
        .unwrap()
        .as_string::<i32>();
    assert_eq!(message.value(0), "connection refused");
    assert_eq!(message.value(2), "boom");
    let events = b.column_by_name(col::EVENTS).unwrap().as_list::<i32>();
    assert_eq!(events.value_length(0), 1);
    assert_eq!(events.value_length(1), 0);
}

/// A SOFATracer span as its Zipkin reporter sends it (ids hashed, originals in tags).
fn sofa_span(service: &str, kind: &str, origin: &str, parent: &str) -> serde_json::Value {
    let mut span = json!({
        "traceId": "0ad1348f1403169275002100356696",
        "id": hex(sofatracer::span_id(origin)),
        "name": "op",
        "kind": kind,
        "timestamp": NOW_MICROS,
        "duration": 10,
        "localEndpoint": {"serviceName": service},
        "tags": {"origin.span.id": origin, "origin.parent.span.id": parent, "local.app": service}
    });
    if !parent.is_empty() {
        span["parentId"] = json!(hex(sofatracer::span_id(parent)));
    }
    span
}

#[test]
fn sofatracer_server_halves_get_their_own_id_and_keep_their_children() {
    let client = hex(sofatracer::span_id("0.1"));
    let server = hex(span::server_half_id(sofatracer::span_id("0.1")));
    // The caller (root server 0, client 0.1) and the callee (server 0.1, its client 0.1.1),
    // reported in separate requests, the callee's child before its server.
    let caller = batch(
        &json_body(&[
            sofa_span("a", "CLIENT", "0.1", "0"),
            sofa_span("a", "SERVER", "0", ""),
        ]),
        Format::Json,
    );
    let child = batch(
        &json_body(&[sofa_span("b", "CLIENT", "0.1.1", "0.1")]),
        Format::Json,
    );
    let callee = batch(
        &json_body(&[sofa_span("b", "SERVER", "0.1", "0")]),
        Format::Json,
    );
    let root = hex(sofatracer::span_id("0"));
    assert_eq!(
        ids(&caller, col::SPAN_ID),
        [Some(client.clone()), Some(root.clone())]
    );
    assert_eq!(ids(&caller, col::PARENT_SPAN_ID), [Some(root), None]);
    assert_eq!(ids(&callee, col::SPAN_ID), [Some(server.clone())]);
    assert_eq!(ids(&callee, col::PARENT_SPAN_ID), [Some(client.clone())]);
    assert_eq!(ids(&child, col::PARENT_SPAN_ID), [Some(server)]);
    assert!(attributes(&callee, 0).contains(&("zipkin.id".into(), client)));
}

#[test]
fn sofatracer_ids_from_a_b3_caller_are_taken_as_they_are() {
    // A Rust service (sightline-instrument) called the Java service with span id 00f067aa0ba902b7;
    // the reporter hashed it, the original tag gives it back.
    let rust_client = "00f067aa0ba902b7";
    let server = sofa_span("java", "SERVER", rust_client, "");
    let child = sofa_span("java", "CLIENT", &format!("{rust_client}.1"), rust_client);
    let b = batch(&json_body(&[child, server]), Format::Json);
    let half = hex(span::server_half_id(sofatracer::span_id(rust_client)));
    assert_eq!(ids(&b, col::SPAN_ID)[1], Some(half.clone()));
    assert_eq!(
        ids(&b, col::PARENT_SPAN_ID)[1],
        Some(rust_client.to_string())
    );
    assert_eq!(ids(&b, col::PARENT_SPAN_ID)[0], Some(half));
}

#[test]
fn a_nested_local_span_in_the_same_request_keeps_its_parent() {
    // 0.1 is a local span (SOFATracer reports it as CLIENT) with a child 0.1.1, in one request.
    let b = batch(
        &json_body(&[
            sofa_span("a", "CLIENT", "0.1.1", "0.1"),
            sofa_span("a", "CLIENT", "0.1", "0"),
        ]),
        Format::Json,
    );
    assert_eq!(
        ids(&b, col::PARENT_SPAN_ID)[0],
        Some(hex(sofatracer::span_id("0.1")))
    );
}

#[test]
fn zipkin_shared_server_spans_are_split_from_their_client() {
    let body = json_body(&[
        json!({"traceId": "1", "id": "a", "kind": "SERVER", "shared": true, "parentId": "9",
               "timestamp": NOW_MICROS, "localEndpoint": {"serviceName": "backend"}}),
        json!({"traceId": "1", "id": "b", "parentId": "a", "timestamp": NOW_MICROS,
               "localEndpoint": {"serviceName": "backend"}}),
    ]);
    let b = batch(&body, Format::Json);
    let shared = [0, 0, 0, 0, 0, 0, 0, 0xa];
    let half = hex(span::server_half_id(shared));
    assert_eq!(
        ids(&b, col::SPAN_ID),
        [Some(half.clone()), Some(hex([0, 0, 0, 0, 0, 0, 0, 0xb]))]
    );
    assert_eq!(
        ids(&b, col::PARENT_SPAN_ID),
        [Some(hex(shared)), Some(half)]
    );
    let attrs = attributes(&b, 0);
    assert!(attrs.contains(&("zipkin.shared".into(), "true".into())));
    assert!(attrs.contains(&("zipkin.parent_id".into(), "0000000000000009".into())));
}

#[test]
fn unknown_kinds_and_tag_values_of_other_types() {
    let bad = json_body(&[
        json!({"traceId": "1", "id": "2", "timestamp": NOW_MICROS, "kind": "SIDEWAYS"}),
    ]);
    let e = decode(&bad, Format::Json).unwrap_err().to_string();
    assert!(e.contains("kind \"SIDEWAYS\""), "{e}");
    let numbers = json_body(&[json!({"traceId": "1", "id": "2", "timestamp": NOW_MICROS,
                                     "tags": {"retries": 3, "cached": true}})]);
    let attrs = attributes(&batch(&numbers, Format::Json), 0);
    assert!(attrs.contains(&("retries".into(), "3".into())));
    assert!(attrs.contains(&("cached".into(), "true".into())));
}

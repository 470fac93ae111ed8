//! OTLP requests in every encoding reach storage with every field intact, and partial success
//! reports exactly what was dropped.

mod common;

use common::otlp::{self, i, kv, s, span};
use common::{grpc_export, post, stored_spans, Server, Val};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, ArrayValue, KeyValueList};

/// A span exercising every attribute type, events, links, status and dedicated columns.
fn rich_span() -> otlp::Span {
    let mut sp = span(7, "GET /orders/{id}");
    sp.parent_span_id = vec![0xaa; 8];
    sp.trace_state = "vendor=abc".into();
    sp.kind = 3;
    sp.end_time_unix_nano = sp.start_time_unix_nano + 12_345_678;
    sp.attributes = vec![
        kv("http.request.method", s("GET")),
        kv("http.route", s("/orders/{id}")),
        kv("http.response.status_code", i(503)),
        kv("peer.service", s("orders-db-proxy")),
        kv("server.address", s("orders.internal")),
        kv("db.system", s("postgresql")),
        kv("rpc.service", s("OrderService")),
        kv("rpc.method", s("Get")),
        kv("messaging.system", s("kafka")),
        kv("messaging.destination.name", s("orders")),
        kv("retry.count", i(-3)),
        kv("ratio", Value::DoubleValue(0.25)),
        kv("cached", Value::BoolValue(true)),
        kv("blob", Value::BytesValue(vec![0, 1, 2, 255])),
        kv(
            "tags",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(s("a\"b")),
                    },
                    opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(i(2)) },
                    opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(Value::BoolValue(false)),
                    },
                ],
            }),
        ),
        kv(
            "nested",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("x", Value::DoubleValue(1.5)), kv("y", s("z"))],
            }),
        ),
    ];
    sp.events = vec![otlp::span::Event {
        time_unix_nano: sp.start_time_unix_nano + 5,
        name: "exception".into(),
        attributes: vec![kv("exception.type", s("Timeout")), kv("attempt", i(2))],
        ..Default::default()
    }];
    sp.links = vec![otlp::span::Link {
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        trace_state: "k=v".into(),
        attributes: vec![kv("link.kind", s("follows"))],
        ..Default::default()
    }];
    sp.status = Some(otlp::Status {
        message: "upstream timed out".into(),
        code: 2,
    });
    sp
}

fn assert_rich(stored: &common::StoredSpan, original: &otlp::Span, service: &str) {
    assert_eq!(stored.service, service);
    assert_eq!(stored.name, "GET /orders/{id}");
    assert_eq!(stored.trace_id, common::hex(&original.trace_id));
    assert_eq!(stored.span_id, common::hex(&original.span_id));
    assert_eq!(stored.parent_span_id.as_deref(), Some("aaaaaaaaaaaaaaaa"));
    assert_eq!(stored.trace_state.as_deref(), Some("vendor=abc"));
    assert_eq!(stored.kind, 3);
    assert_eq!(stored.start, original.start_time_unix_nano as i64);
    assert_eq!(stored.duration, 12_345_678);
    assert_eq!(stored.status_code, 2);
    assert_eq!(stored.status_message.as_deref(), Some("upstream timed out"));
    assert_eq!(stored.scope_name.as_deref(), Some("tests"));
    assert_eq!(stored.scope_version.as_deref(), Some("1.0"));
    assert_eq!(
        stored.resource.get("service.name"),
        Some(&Val::Str(service.into()))
    );
    let a = &stored.attributes;
    assert_eq!(a.len(), 16);
    assert_eq!(a["retry.count"], Val::Int(-3));
    assert_eq!(a["ratio"], Val::Double(0.25));
    assert_eq!(a["cached"], Val::Bool(true));
    assert_eq!(a["blob"], Val::Bytes(vec![0, 1, 2, 255]));
    assert_eq!(a["tags"], Val::Json(r#"["a\"b",2,false]"#.into()));
    assert_eq!(a["nested"], Val::Json(r#"{"x":1.5,"y":"z"}"#.into()));
    assert_eq!(a["http.response.status_code"], Val::Int(503));
    assert_eq!(stored.http_method.as_deref(), Some("GET"));
    assert_eq!(stored.http_route.as_deref(), Some("/orders/{id}"));
    assert_eq!(stored.http_status_code, Some(503));
    assert_eq!(stored.peer_service.as_deref(), Some("orders-db-proxy"));
    assert_eq!(stored.server_address.as_deref(), Some("orders.internal"));
    assert_eq!(stored.db_system.as_deref(), Some("postgresql"));
    assert_eq!(stored.rpc_service.as_deref(), Some("OrderService"));
    assert_eq!(stored.rpc_method.as_deref(), Some("Get"));
    assert_eq!(stored.messaging_system.as_deref(), Some("kafka"));
    assert_eq!(stored.messaging_destination.as_deref(), Some("orders"));
    assert_eq!(stored.events.len(), 1);
    let e = &stored.events[0];
    assert_eq!(e.name, "exception");
    assert_eq!(e.time, original.start_time_unix_nano as i64 + 5);
    assert_eq!(e.attributes["exception.type"], Val::Str("Timeout".into()));
    assert_eq!(e.attributes["attempt"], Val::Int(2));
    assert_eq!(stored.links.len(), 1);
    let l = &stored.links[0];
    assert_eq!(l.trace_id, "11".repeat(16));
    assert_eq!(l.span_id, "22".repeat(8));
    assert_eq!(l.trace_state.as_deref(), Some("k=v"));
    assert_eq!(l.attributes["link.kind"], Val::Str("follows".into()));
}

#[test]
fn every_field_survives_http_protobuf_and_grpc_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let sp = rich_span();
    let body = otlp::encode(&otlp::request("checkout", vec![sp.clone()]));
    let (status, headers, resp) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        body.clone(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(otlp::decode_response(&resp).partial_success, None);

    let mut sp2 = sp.clone();
    sp2.span_id = vec![0x77; 8];
    let body2 = otlp::encode(&otlp::request("payments", vec![sp2.clone()]));
    let resp = grpc_export(&server.grpc_url(), body2, true).expect("grpc export");
    assert_eq!(otlp::decode_response(&resp).partial_success, None);
    server.stop();

    let spans = stored_spans(dir.path());
    assert_eq!(spans.len(), 2);
    let checkout = spans.iter().find(|s| s.service == "checkout").unwrap();
    let payments = spans.iter().find(|s| s.service == "payments").unwrap();
    assert_rich(checkout, &sp, "checkout");
    assert_rich(payments, &sp2, "payments");
}

#[test]
fn otlp_json_with_hex_ids_and_string_integers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let start = common::now_nanos();
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"manual","version":"2"}},"spans":[
          {{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
            "name":"I'm a server span","kind":2,"startTimeUnixNano":"{start}","endTimeUnixNano":{end},
            "attributes":[{{"key":"my.span.attr","value":{{"stringValue":"some value"}}}},
                          {{"key":"http.status_code","value":{{"intValue":"404"}}}},
                          {{"key":"n","value":{{"doubleValue":"NaN"}}}},
                          {{"key":"b","value":{{"bytesValue":"AAEC"}}}},
                          {{"key":"list","value":{{"arrayValue":{{"values":[{{"intValue":1}},{{"stringValue":"two"}}]}}}}}}],
            "events":[{{"timeUnixNano":"{start}","name":"started","attributes":[]}}],
            "status":{{"code":2,"message":"not found"}},
            "someFutureField":{{"ignored":true}}}}]}}]}}]}}"#,
        end = start + 1000
    );
    let (status, headers, resp) = post(
        &server.traces_url(),
        "application/json",
        &[],
        json.into_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(resp, b"{}");
    server.stop();

    let spans = stored_spans(dir.path());
    assert_eq!(spans.len(), 1);
    let sp = &spans[0];
    assert_eq!(sp.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(sp.span_id, "eee19b7ec3c1b174");
    assert_eq!(sp.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
    assert_eq!(sp.service, "json-svc");
    assert_eq!(sp.kind, 2);
    assert_eq!(sp.start, start as i64);
    assert_eq!(sp.duration, 1000);
    assert_eq!(sp.status_code, 2);
    assert_eq!(sp.http_status_code, Some(404));
    assert_eq!(sp.attributes["http.status_code"], Val::Int(404));
    assert!(matches!(sp.attributes["n"], Val::Double(d) if d.is_nan()));
    assert_eq!(sp.attributes["b"], Val::Bytes(vec![0, 1, 2]));
    assert_eq!(sp.attributes["list"], Val::Json(r#"[1,"two"]"#.into()));
    assert_eq!(sp.events[0].name, "started");
}

fn partial_request() -> Vec<u8> {
    let good = span(1, "good");
    let mut zero_trace = span(2, "zero trace");
    zero_trace.trace_id = vec![0; 16];
    let mut backwards = span(3, "backwards");
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let mut short_id = span(4, "short id");
    short_id.span_id = vec![1, 2, 3];
    otlp::encode(&otlp::request(
        "partial",
        vec![good, zero_trace, backwards, short_id],
    ))
}

const PARTIAL_MESSAGE: &str = "rejected 3 spans: trace_id is all zeros (1), span_id is not 8 bytes (1), end time is before start time (1)";

#[test]
fn invalid_spans_are_a_partial_success_in_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    let (status, _, resp) = post(
        &server.traces_url(),
        "application/x-protobuf",
        &[],
        partial_request(),
    );
    assert_eq!(status, 200);
    let partial = otlp::decode_response(&resp)
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert_eq!(partial.error_message, PARTIAL_MESSAGE);

    let resp = grpc_export(&server.grpc_url(), partial_request(), false).expect("grpc");
    let partial = otlp::decode_response(&resp)
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 3);

    let start = common::now_nanos();
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[
        {{"traceId":"00000000000000000000000000000000","spanId":"0102030405060708","name":"zero","startTimeUnixNano":"{start}","endTimeUnixNano":"{start}"}},
        {{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"ok","startTimeUnixNano":"{start}","endTimeUnixNano":"{start}"}}]}}]}}]}}"#
    );
    let (status, _, resp) = post(
        &server.traces_url(),
        "application/json",
        &[],
        json.into_bytes(),
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], 1);
    assert_eq!(
        v["partialSuccess"]["errorMessage"],
        "rejected 1 span: trace_id is all zeros (1)"
    );
    server.stop();

    let spans = stored_spans(dir.path());
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["good", "good", "ok"]);
    assert!(spans.iter().any(|s| s.service == "unknown_service"));
}

//! The official OpenTelemetry Rust SDK and `opentelemetry-otlp` exporter — over gRPC (gzip),
//! HTTP/protobuf and HTTP/JSON — against the real binary.

mod common;

use std::collections::HashSet;

use common::{stored_spans, Server, StoredSpan, Val};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Emits a parent and a child span with every attribute type, an event, a link and an error.
fn emit(provider: &SdkTracerProvider) -> (String, String) {
    let tracer = provider.tracer_with_scope(
        opentelemetry::InstrumentationScope::builder("sdk-test")
            .with_version("0.1.0")
            .build(),
    );
    let mut parent = tracer
        .span_builder("GET /checkout")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/checkout"),
            KeyValue::new("http.response.status_code", 500i64),
        ])
        .start(&tracer);
    parent.set_status(Status::error("card declined"));
    let parent_cx = Context::current_with_span(parent);
    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        opentelemetry::trace::SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let mut child = tracer
        .span_builder("charge card")
        .with_kind(SpanKind::Client)
        .with_links(vec![Link::with_context(linked)])
        .start_with_context(&tracer, &parent_cx);
    child.set_attribute(KeyValue::new("s", "text"));
    child.set_attribute(KeyValue::new("i", -42i64));
    child.set_attribute(KeyValue::new("f", 2.5f64));
    child.set_attribute(KeyValue::new("b", true));
    child.set_attribute(KeyValue::new(
        "as",
        Value::Array(Array::String(vec![
            StringValue::from("x"),
            StringValue::from("y"),
        ])),
    ));
    child.set_attribute(KeyValue::new("ai", Value::Array(Array::I64(vec![1, 2, 3]))));
    child.set_attribute(KeyValue::new("af", Value::Array(Array::F64(vec![0.5]))));
    child.set_attribute(KeyValue::new(
        "ab",
        Value::Array(Array::Bool(vec![true, false])),
    ));
    child.set_attribute(KeyValue::new("peer.service", "card-gateway"));
    child.add_event("retry", vec![KeyValue::new("attempt", 2i64)]);
    let trace_id = child.span_context().trace_id().to_string();
    let child_id = child.span_context().span_id().to_string();
    child.end();
    parent_cx.span().end();
    (trace_id, child_id)
}

fn provider(exporter: SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("deployment.environment.name", "test"))
                .build(),
        )
        .build()
}

fn check(spans: &[StoredSpan], service: &str, trace_id: &str, child_id: &str) {
    let mine: Vec<&StoredSpan> = spans.iter().filter(|s| s.service == service).collect();
    assert_eq!(mine.len(), 2, "{service}: {mine:#?}");
    let child = mine
        .iter()
        .find(|s| s.span_id == child_id)
        .expect("child stored");
    let parent = mine
        .iter()
        .find(|s| s.name == "GET /checkout")
        .expect("parent stored");
    assert_eq!(child.trace_id, trace_id);
    assert_eq!(parent.trace_id, trace_id);
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str())
    );
    assert_eq!(parent.parent_span_id, None);
    assert_eq!((parent.kind, child.kind), (2, 3));
    assert_eq!(parent.status_code, 2);
    assert_eq!(parent.status_message.as_deref(), Some("card declined"));
    assert_eq!(parent.http_status_code, Some(500));
    assert_eq!(parent.http_route.as_deref(), Some("/checkout"));
    assert_eq!(child.scope_name.as_deref(), Some("sdk-test"));
    assert_eq!(child.scope_version.as_deref(), Some("0.1.0"));
    let a = &child.attributes;
    assert_eq!(a["s"], Val::Str("text".into()));
    assert_eq!(a["i"], Val::Int(-42));
    assert_eq!(a["f"], Val::Double(2.5));
    assert_eq!(a["b"], Val::Bool(true));
    assert_eq!(a["as"], Val::Json(r#"["x","y"]"#.into()));
    assert_eq!(a["ai"], Val::Json("[1,2,3]".into()));
    assert_eq!(a["af"], Val::Json("[0.5]".into()));
    assert_eq!(a["ab"], Val::Json("[true,false]".into()));
    assert_eq!(child.peer_service.as_deref(), Some("card-gateway"));
    assert_eq!(child.events.len(), 1);
    assert_eq!(child.events[0].name, "retry");
    assert_eq!(child.events[0].attributes["attempt"], Val::Int(2));
    assert_eq!(child.links.len(), 1);
    assert_eq!(child.links[0].trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(child.links[0].span_id, "b7ad6b7169203331");
    assert_eq!(
        child.resource["deployment.environment.name"],
        Val::Str("test".into())
    );
    assert!(child.duration >= 0 && parent.duration >= child.duration);
}

#[test]
fn rust_sdk_over_grpc_http_protobuf_and_http_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sent = Vec::new();
    {
        // tonic's channel lives on this runtime; the SDK's batch thread drives exports.
        let _guard = rt.enter();
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(server.grpc_url())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap();
        let p = provider(exporter, "rust-grpc");
        sent.push(("rust-grpc", emit(&p)));
        p.force_flush().unwrap();
        p.shutdown().unwrap();
    }
    for (service, protocol) in [
        ("rust-http-protobuf", Protocol::HttpBinary),
        ("rust-http-json", Protocol::HttpJson),
    ] {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(server.traces_url())
            .build()
            .unwrap();
        let p = provider(exporter, service);
        sent.push((service, emit(&p)));
        p.force_flush().unwrap();
        p.shutdown().unwrap();
    }
    server.stop();
    let spans = stored_spans(dir.path());
    assert_eq!(spans.len(), 6);
    for (service, (trace_id, child_id)) in &sent {
        check(&spans, service, trace_id, child_id);
    }
    let traces: HashSet<_> = spans.iter().map(|s| s.trace_id.clone()).collect();
    assert_eq!(traces.len(), 3);
}

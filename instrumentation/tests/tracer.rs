//! The OpenTracing-style API, sampling, context across tasks and `tracing` spans — all
//! through the real exporter into a real OTLP/gRPC receiver.

mod common;

use std::time::Duration;

use common::{hex, string_attr, Receiver};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoKind;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use sightline_instrument::sampling::{Rule, Sampler};
use sightline_instrument::task::{self, Traced};
use sightline_instrument::{Builder, Instrumentation, SpanKind};
use tracing_subscriber::layer::SubscriberExt as _;

fn setup(receiver: &Receiver, sampler: Sampler) -> Instrumentation {
    Builder::new("tracer-test")
        .endpoint(receiver.endpoint())
        .sampler(sampler)
        .without_metrics()
        .without_tracing_subscriber()
        .batch_delay(Duration::from_millis(20))
        .init()
        .unwrap()
}

fn named<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    &spans
        .iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| {
            panic!(
                "{name} not in {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        })
        .1
}

#[test]
fn opentracing_api_child_of_follows_from_tags_logs_baggage() {
    let receiver = Receiver::start();
    let guard = setup(&receiver, Sampler::default());
    let tracer = guard.tracer();

    let mut root = tracer
        .span("GET /orders")
        .tag("span.kind", "server")
        .tag("http.method", "GET")
        .start();
    root.set_baggage_item("tenant", "acme");
    let mut db = tracer
        .span("SELECT orders")
        .child_of(&root.context())
        .start();
    assert_eq!(
        db.baggage_item("tenant").as_deref(),
        Some("acme"),
        "baggage flows to children"
    );
    db.set_tag("db.type", "postgresql")
        .set_tag("http.status_code", 503_i64)
        .set_tag("error", true)
        .log([("event", "retry"), ("attempt", "2")]);
    db.finish();
    let later = tracer
        .span("send email")
        .follows_from(&root.context())
        .start();
    later.finish();
    // The active span is the implicit parent.
    let child_of_active = {
        let _active = root.activate();
        let span = tracer.span("implicit child").start();
        let context = span.context();
        span.finish();
        context
    };
    let standalone = tracer.span("new trace").ignore_active_span().start();
    let standalone_trace = standalone.context().trace_id();
    standalone.finish();
    let root_context = root.context();
    root.finish();
    guard.flush().unwrap();

    let spans = receiver.wait_spans(|s| s.len() >= 5);
    let root = named(&spans, "GET /orders");
    assert_eq!(root.kind, ProtoKind::Server as i32);
    assert_eq!(
        string_attr(&root.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(hex(&root.trace_id), root_context.trace_id());
    assert_eq!(
        string_attr(&root.attributes, "sampler.type").as_deref(),
        Some("const")
    );

    let db = named(&spans, "SELECT orders");
    assert_eq!(db.parent_span_id, root.span_id);
    assert_eq!(db.trace_id, root.trace_id);
    assert_eq!(
        string_attr(&db.attributes, "db.system").as_deref(),
        Some("postgresql")
    );
    assert_eq!(
        string_attr(&db.attributes, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        db.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(db.events.len(), 1);
    assert_eq!(db.events[0].name, "retry");
    assert_eq!(
        string_attr(&db.events[0].attributes, "attempt").as_deref(),
        Some("2")
    );
    assert_eq!(
        string_attr(&db.attributes, "sampler.type"),
        None,
        "children follow silently"
    );

    let later = named(&spans, "send email");
    assert_eq!(
        later.parent_span_id, root.span_id,
        "the only reference becomes the parent"
    );
    assert_eq!(later.links.len(), 1);
    assert_eq!(later.links[0].span_id, root.span_id);
    assert_eq!(
        string_attr(&later.links[0].attributes, "opentracing.ref_type").as_deref(),
        Some("follows_from")
    );

    let implicit = named(&spans, "implicit child");
    assert_eq!(hex(&implicit.span_id), child_of_active.span_id());
    assert_eq!(implicit.parent_span_id, root.span_id);
    let new_trace = named(&spans, "new trace");
    assert!(new_trace.parent_span_id.is_empty());
    assert_eq!(hex(&new_trace.trace_id), standalone_trace);
    assert_ne!(new_trace.trace_id, root.trace_id);
    drop(guard);
    receiver.stop();
}

#[test]
fn sampling_rules_ratio_and_kept_errors() {
    let receiver = Receiver::start();
    let sampler = Sampler::ratio(0.5)
        .rule(Rule::route("/health", 0.0))
        .rule(Rule::operation("checkout*", 1.0))
        .keep_errors(true);
    let guard = setup(&receiver, sampler);
    let tracer = guard.tracer();
    for _ in 0..50 {
        tracer
            .span("GET /health")
            .tag("url.path", "/health")
            .start()
            .finish();
    }
    let mut failing = tracer
        .span("GET /health")
        .tag("url.path", "/health")
        .start();
    failing.set_tag("error", true);
    failing.finish();
    for _ in 0..20 {
        tracer.span("checkout cart").start().finish();
    }
    for _ in 0..400 {
        tracer.span("browse").start().finish();
    }
    guard.flush().unwrap();
    let spans =
        receiver.wait_spans(|s| s.iter().filter(|(_, s)| s.name == "checkout cart").count() == 20);
    let count = |name: &str| spans.iter().filter(|(_, s)| s.name == name).count();
    // Health checks: none sampled, but the one that failed is kept.
    assert_eq!(count("GET /health"), 1);
    let health = named(&spans, "GET /health");
    assert_eq!(
        health.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        string_attr(&health.attributes, "sampler.rule").as_deref(),
        Some("route=/health")
    );
    assert_eq!(guard.stats().unsampled_errors(), 1);
    // Rule by operation: all of them, recorded as such.
    assert_eq!(count("checkout cart"), 20);
    let checkout = named(&spans, "checkout cart");
    assert_eq!(
        string_attr(&checkout.attributes, "sampler.rule").as_deref(),
        Some("operation=checkout*")
    );
    // Ratio 0.5 over 400 random traces.
    let browse = count("browse");
    assert!((140..=260).contains(&browse), "{browse} of 400 at 50%");
    let b = named(&spans, "browse");
    assert_eq!(
        string_attr(&b.attributes, "sampler.type").as_deref(),
        Some("probabilistic")
    );
    assert_eq!(
        string_attr(&b.attributes, "sampler.param").as_deref(),
        Some("0.5")
    );
    drop(guard);
    receiver.stop();
}

#[test]
fn context_crosses_spawn_spawn_blocking_channels_and_tracing_spans() {
    let receiver = Receiver::start();
    let guard = setup(&receiver, Sampler::default());
    let tracer = guard.tracer().clone();
    let subscriber = tracing_subscriber::registry().with(guard.tracing_layer());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _default = tracing::subscriber::set_default(subscriber);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Traced<u32>>(4);
    let consumer = {
        let tracer = tracer.clone();
        runtime.spawn(async move {
            let job = rx.recv().await.unwrap();
            job.in_context(|n| tracer.span(format!("consume {n}")).start().finish());
        })
    };
    runtime.block_on(async {
        let root = tracer.span("request").kind(SpanKind::Server).start();
        let _active = root.activate();
        let t = tracer.clone();
        task::spawn(async move { t.span("spawned").start().finish() })
            .await
            .unwrap();
        let t = tracer.clone();
        task::spawn_blocking(move || t.span("blocking").start().finish())
            .await
            .unwrap();
        tx.send(Traced::new(7)).await.unwrap();
        instrumented_step(tracer.clone()).await;
        drop(_active);
        root.finish();
    });
    runtime.block_on(consumer).unwrap();
    guard.flush().unwrap();
    let spans = receiver.wait_spans(|s| s.len() >= 6);
    let root = named(&spans, "request");
    for name in ["spawned", "blocking", "consume 7", "instrumented_step"] {
        assert_eq!(named(&spans, name).parent_span_id, root.span_id, "{name}");
        assert_eq!(named(&spans, name).trace_id, root.trace_id, "{name}");
    }
    // An OpenTracing-style span inside a `tracing` span is its child.
    let step = named(&spans, "instrumented_step");
    assert_eq!(named(&spans, "inside tracing").parent_span_id, step.span_id);
    drop(guard);
    receiver.stop();
}

#[tracing::instrument(skip(tracer))]
async fn instrumented_step(tracer: sightline_instrument::Tracer) {
    tracer.span("inside tracing").start().finish();
}

#[test]
fn load_test_baggage_marks_every_span_of_the_request() {
    let receiver = Receiver::start();
    let guard = setup(&receiver, Sampler::default());
    let tracer = guard.tracer();
    let mut shadow = tracer.span("GET /shadow").start();
    shadow.set_baggage_item("mark", "T");
    let child = tracer
        .span("shadow child")
        .child_of(&shadow.context())
        .start();
    let grandchild = tracer
        .span("shadow grandchild")
        .child_of(&child.context())
        .start();
    grandchild.finish();
    child.finish();
    shadow.finish();
    let mut regular = tracer.span("GET /regular").start();
    regular.set_baggage_item("mark", "F");
    let regular_child = tracer
        .span("regular child")
        .child_of(&regular.context())
        .start();
    regular_child.finish();
    regular.finish();
    guard.flush().unwrap();

    let spans = receiver.wait_spans(|s| s.len() >= 5);
    for name in ["shadow child", "shadow grandchild"] {
        assert_eq!(
            string_attr(&named(&spans, name).attributes, "mark").as_deref(),
            Some("T"),
            "{name}"
        );
    }
    assert_eq!(
        string_attr(&named(&spans, "regular child").attributes, "mark"),
        None
    );
}

use std::time::Duration;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::*;

/// A known sequence of calls on each kind of meter.
fn populate(registry: &Registry) {
    let ok = registry.counter(
        Id::new("http.requests")
            .with_tag("route", "/a")
            .with_tag("code", "200"),
    );
    ok.inc();
    ok.add(4);
    registry
        .counter(
            Id::new("http.requests")
                .with_tag("code", "500")
                .with_tag("route", "/a"),
        )
        .inc();
    let timer = registry.timer(Id::new("db.query"));
    for ms in [3, 30, 300] {
        timer.record(Duration::from_millis(ms));
    }
    let sizes = registry.summary(Id::new("payload.size").with_tag("dir", "in"));
    for bytes in [100.0, 250.5, 4096.0] {
        sizes.record(bytes);
    }
    registry.gauge(Id::new("queue.depth"), || 7.0);
    let pool = registry.mixin(Id::new("pool").with_tag("name", "io"));
    pool.counter("tasks").add(9);
    pool.gauge("threads", || 4.0);
}

#[test]
fn values_are_exact_after_a_known_sequence() {
    let registry = Registry::new();
    populate(&registry);
    let same = registry.counter(
        Id::new("http.requests")
            .with_tag("code", "200")
            .with_tag("route", "/a"),
    );
    assert_eq!(
        same.count(),
        5,
        "tag order does not matter; the same Id is the same meter"
    );
    let timer = registry.timer(Id::new("db.query")).snapshot();
    assert_eq!(timer.count, 3);
    assert_eq!(timer.total, Duration::from_millis(333));
    assert_eq!(timer.max, Duration::from_millis(300));
    // 3 ms ≤ 0.005, 30 ms ≤ 0.05, 300 ms ≤ 0.5.
    assert_eq!(timer.buckets, vec![1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]);
    let sizes = registry
        .summary(Id::new("payload.size").with_tag("dir", "in"))
        .snapshot();
    assert_eq!((sizes.count, sizes.total, sizes.max), (3, 4446.5, 4096.0));
    assert_eq!(registry.len(), 6);
}

#[test]
fn prometheus_text_is_exact() {
    let registry = Registry::new();
    populate(&registry);
    let text = registry.render(Format::Prometheus);
    let expected = "\
# TYPE db_query_seconds histogram
db_query_seconds_bucket{le=\"0.005\"} 1
db_query_seconds_bucket{le=\"0.01\"} 1
db_query_seconds_bucket{le=\"0.025\"} 1
db_query_seconds_bucket{le=\"0.05\"} 2
db_query_seconds_bucket{le=\"0.1\"} 2
db_query_seconds_bucket{le=\"0.25\"} 2
db_query_seconds_bucket{le=\"0.5\"} 3
db_query_seconds_bucket{le=\"1\"} 3
db_query_seconds_bucket{le=\"2.5\"} 3
db_query_seconds_bucket{le=\"5\"} 3
db_query_seconds_bucket{le=\"10\"} 3
db_query_seconds_bucket{le=\"+Inf\"} 3
db_query_seconds_sum 0.333
db_query_seconds_count 3
# TYPE db_query_seconds_max gauge
db_query_seconds_max 0.3
# TYPE http_requests_total counter
http_requests_total{code=\"200\",route=\"/a\"} 5
http_requests_total{code=\"500\",route=\"/a\"} 1
# TYPE payload_size summary
payload_size_sum{dir=\"in\"} 4446.5
payload_size_count{dir=\"in\"} 3
# TYPE payload_size_max gauge
payload_size_max{dir=\"in\"} 4096
# TYPE pool_tasks_total counter
pool_tasks_total{name=\"io\"} 9
# TYPE pool_threads gauge
pool_threads{name=\"io\"} 4
# TYPE queue_depth gauge
queue_depth 7
";
    assert_eq!(text, expected);
}

#[test]
fn openmetrics_carries_exemplars_of_the_current_trace() {
    let registry = Registry::new();
    let counter = registry.counter(Id::new("orders"));
    let timer = registry.timer(Id::new("checkout"));
    counter.inc(); // outside any span: no exemplar
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("test");
    let span = tracer.start("work");
    let (trace_id, span_id) = (
        span.span_context().trace_id().to_string(),
        span.span_context().span_id().to_string(),
    );
    let cx = opentelemetry::Context::current_with_span(span);
    {
        let _attached = cx.attach();
        counter.add(2);
        timer.record(Duration::from_millis(40));
    }
    let text = registry.render(Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE orders counter\n"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("orders_total "))
        .unwrap();
    assert!(
        line.starts_with(&format!(
            "orders_total 3 # {{trace_id=\"{trace_id}\",span_id=\"{span_id}\"}} 2 "
        ),),
        "{line}"
    );
    let bucket = text
        .lines()
        .find(|l| l.starts_with("checkout_seconds_bucket{le=\"0.05\"}"))
        .unwrap();
    assert!(
        bucket.contains(&format!("# {{trace_id=\"{trace_id}\"")),
        "{bucket}"
    );
    assert!(bucket.contains("} 0.04 "), "{bucket}");
    let other = text
        .lines()
        .find(|l| l.starts_with("checkout_seconds_bucket{le=\"0.1\"}"))
        .unwrap();
    assert!(
        !other.contains('#'),
        "only the bucket observed carries the exemplar: {other}"
    );
    // Text 0.0.4 has no exemplars.
    assert!(!registry.render(Format::Prometheus).contains("trace_id"));
}

#[test]
fn the_cap_refuses_new_ids_and_counts_them() {
    let registry = Registry::with_max_ids(3);
    for i in 0..5 {
        registry
            .counter(Id::new("c").with_tag("i", i.to_string()))
            .inc();
    }
    assert_eq!(registry.len(), 3);
    assert_eq!(registry.refused(), 2);
    // A refused Id still works for the caller; it is only not exported.
    let refused = registry.counter(Id::new("c").with_tag("i", "9"));
    refused.add(3);
    assert_eq!(refused.count(), 3);
    assert!(!registry.render(Format::Prometheus).contains("i=\"9\""));
    // An existing Id is never refused.
    registry.counter(Id::new("c").with_tag("i", "0")).inc();
    assert!(registry
        .render(Format::Prometheus)
        .contains("c_total{i=\"0\"} 2"));
}

#[test]
fn a_name_keeps_its_kind() {
    let registry = Registry::new();
    registry.counter(Id::new("x")).inc();
    let timer = registry.timer(Id::new("x").with_tag("k", "v"));
    timer.record(Duration::from_secs(1));
    assert_eq!(registry.conflicts(), 1);
    assert_eq!(registry.len(), 1);
}

#[test]
fn labels_are_sanitised_and_escaped() {
    let registry = Registry::new();
    registry
        .counter(Id::new("9lives.total").with_tag("user-agent", "say \"hi\"\\\n"))
        .inc();
    let text = registry.render(Format::Prometheus);
    assert!(
        text.contains("_9lives_total{user_agent=\"say \\\"hi\\\"\\\\\\n\"} 1"),
        "{text}"
    );
}

#[test]
fn format_negotiation() {
    assert_eq!(Format::negotiate(None), Format::Prometheus);
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )),
        Format::OpenMetrics
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        "application/openmetrics-text".parse().unwrap(),
    );
    let response = exposition(&Registry::new(), &headers);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(response.body(), "# EOF\n");
}

#[test]
fn a_trace_context_is_current_inside_attach() {
    // Guard for the exemplar tests above: attaching makes the span current.
    let provider = SdkTracerProvider::builder().build();
    let span = provider.tracer("t").start("s");
    let cx = opentelemetry::Context::current_with_span(span);
    let _g = cx.attach();
    assert!(opentelemetry::Context::current()
        .span()
        .span_context()
        .is_sampled());
}

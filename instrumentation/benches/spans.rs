//! What the crate costs on top of bare `opentelemetry_sdk` doing the same work, measured
//! in one run: a span start + finish, and one instrumented HTTP request.
//!
//! Both sides export through a batching processor into the same exporter that discards,
//! so the figures are the in-process cost the application pays.
//!
//! ```sh
//! cargo bench -p sightline-instrument --bench spans
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use sightline_instrument::export::{ExportFuture, ExportStats, QueueConfig, QueueingProcessor};
use sightline_instrument::metrics::Registry;
use sightline_instrument::middleware::HttpServerLayer;
use sightline_instrument::propagation::{HeaderExtractor, Propagation};
use sightline_instrument::sampling::Sampler;
use sightline_instrument::Tracer;
use tower_layer::Layer as _;
use tower_service::Service as _;

/// Deep enough that neither pipeline drops spans while the benchmark outpaces its
/// export thread for a moment (a drop would move the span's destruction onto the
/// measured thread).
const QUEUE: usize = 1 << 16;

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

fn bare_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(Discard)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(QUEUE)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn sightline_tracer() -> (SdkTracerProvider, Tracer) {
    let run = |export: ExportFuture<'_>| -> OTelSdkResult { futures_executor::block_on(export) };
    let processor = QueueingProcessor::start(
        Discard,
        QueueConfig {
            max_queue: QUEUE,
            ..QueueConfig::default()
        },
        Arc::new(ExportStats::default()),
        run,
    );
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::default())
        .with_span_processor(processor)
        .build();
    let tracer = Tracer::new(&provider, Propagation::default());
    (provider, tracer)
}

fn spans(c: &mut Criterion) {
    let bare = bare_provider();
    let bare_tracer = bare.tracer("bench");
    let (_provider, tracer) = sightline_tracer();
    let bare_span = |tracer: &opentelemetry_sdk::trace::SdkTracer| {
        let mut span = tracer
            .span_builder("checkout")
            .with_kind(SpanKind::Internal)
            .with_attributes([KeyValue::new("order.id", 42_i64)])
            .start(tracer);
        opentelemetry::trace::Span::end(&mut span);
    };
    let our_span = |tracer: &Tracer| {
        tracer
            .span("checkout")
            .tag("order.id", 42_i64)
            .start()
            .finish();
    };
    // A root span takes (and records) the sampling decision; a child follows its parent.
    let mut group = c.benchmark_group("root span start+finish");
    group.bench_function("bare opentelemetry_sdk", |b| {
        b.iter(|| bare_span(&bare_tracer))
    });
    group.bench_function("sightline-instrument", |b| b.iter(|| our_span(&tracer)));
    group.finish();

    let mut group = c.benchmark_group("child span start+finish");
    group.bench_function("bare opentelemetry_sdk", |b| {
        let parent = bare_tracer.start("parent");
        let _active = Context::current_with_span(parent).attach();
        b.iter(|| bare_span(&bare_tracer))
    });
    group.bench_function("sightline-instrument", |b| {
        let parent = tracer.span("parent").start();
        let _active = parent.activate();
        b.iter(|| our_span(&tracer))
    });
    group.finish();
}

fn request() -> http::Request<String> {
    http::Request::builder()
        .method("GET")
        .uri("/orders/42")
        .header("host", "shop.example:8080")
        .header("user-agent", "bench/1.0")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(String::new())
        .expect("request")
}

async fn handler(_request: http::Request<String>) -> Result<http::Response<String>, Infallible> {
    Ok(http::Response::new("ok".to_string()))
}

/// What the layer does, written against the bare SDK.
async fn bare_server(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    propagator: &TraceContextPropagator,
    request: http::Request<String>,
) -> Result<http::Response<String>, Infallible> {
    let parent = propagator.extract(&HeaderExtractor(request.headers()));
    let method = request.method().as_str().to_string();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", request.uri().path().to_string()),
    ];
    if let Some(host) = request.headers().get("host").and_then(|v| v.to_str().ok()) {
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if let Some(agent) = request
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
    }
    let span = tracer
        .span_builder(method)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let response = {
        let _attached = cx.clone().attach();
        handler(request).await
    };
    let span = cx.span();
    if let Ok(response) = &response {
        let code = response.status().as_u16();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        span.set_attribute(KeyValue::new(
            "http.response.body.size",
            response.body().len() as i64,
        ));
        if code >= 500 {
            span.set_status(Status::error(format!("HTTP {code}")));
        }
    }
    span.end();
    response
}

fn requests(c: &mut Criterion) {
    let bare = bare_provider();
    let bare_tracer = bare.tracer("bench");
    let propagator = TraceContextPropagator::new();
    let (_provider, tracer) = sightline_tracer();
    let mut layered = HttpServerLayer::new(tracer.clone()).layer(tower::service_fn(handler));
    let registry = Registry::new();
    let mut with_stat_log = HttpServerLayer::new(tracer)
        .with_stat_log(&registry)
        .layer(tower::service_fn(handler));
    let mut group = c.benchmark_group("instrumented request");
    group.bench_function("bare opentelemetry_sdk", |b| {
        b.iter(|| futures_executor::block_on(bare_server(&bare_tracer, &propagator, request())))
    });
    group.bench_function("sightline-instrument layer", |b| {
        b.iter(|| futures_executor::block_on(layered.call(request())))
    });
    group.bench_function("sightline-instrument layer + stat log", |b| {
        b.iter(|| futures_executor::block_on(with_stat_log.call(request())))
    });
    group.finish();
}

criterion_group!(benches, spans, requests);
criterion_main!(benches);

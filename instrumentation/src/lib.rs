//! # sightline-instrument
//!
//! Tracing and tagged metrics for Rust services — what SOFATracer and SOFALookout's
//! client are for Java services — on OpenTelemetry, so it works with every other SDK and
//! collector (and best with [Sightline](https://github.com/sightline)).
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     // OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4317); the guard
//!     // flushes on drop.
//!     let _guard = sightline_instrument::init("checkout").expect("instrumentation");
//!     handle_order(42).await;
//! }
//!
//! #[tracing::instrument]
//! async fn handle_order(id: u64) {
//!     // `tracing` spans are OpenTelemetry spans; the OpenTracing-style API nests inside.
//!     let tracer = sightline_instrument::tracer();
//!     let mut span = tracer.span("reserve stock").tag("order.id", id as i64).start();
//!     span.log([("event", "reserved")]);
//!     span.finish();
//!     sightline_instrument::registry()
//!         .counter(sightline_instrument::metrics::Id::new("orders").with_tag("outcome", "ok"))
//!         .inc();
//! }
//! ```
//!
//! - [`init`] / [`Builder`]: resource, OTLP exporter (gRPC or HTTP), a bounded export
//!   queue that never blocks, sampling, propagation, the `tracing` layer.
//! - [`Tracer`], [`Span`], [`SpanContext`]: OpenTracing-style spans (child_of,
//!   follows_from, tags, logs, baggage, inject/extract).
//! - [`propagation`]: W3C, B3 single and multi, SOFATracer, composable.
//! - [`sampling`]: parent-based, ratio, rules per route or operation, keep errors.
//! - [`task`]: context across `tokio::spawn`, `spawn_blocking` and channels.
//! - [`middleware`]: a tower layer for servers (axum, tonic) with a per-endpoint stat
//!   log, and a reqwest client extension.
//! - [`metrics`]: a Metrics 2.0 registry, exported over OTLP and as Prometheus /
//!   OpenMetrics text.

pub mod export;
pub mod metrics;
pub mod middleware;
pub mod propagation;
pub mod sampling;
mod setup;
pub mod task;
mod tracer;

use std::sync::{OnceLock, RwLock};

pub use opentelemetry::trace::SpanKind;
pub use setup::{Builder, InitError, Instrumentation, Protocol};
pub use tracer::{Span, SpanBuilder, SpanContext, Tracer, SCOPE};

/// Sets up tracing and metrics for `service` with defaults and the standard
/// `OTEL_*` environment variables; see [`Builder`] for the rest.
pub fn init(service: impl Into<String>) -> Result<Instrumentation, InitError> {
    Builder::new(service).init()
}

static TRACER: RwLock<Option<Tracer>> = RwLock::new(None);
static REGISTRY: OnceLock<RwLock<metrics::Registry>> = OnceLock::new();
static NOOP: OnceLock<Tracer> = OnceLock::new();

/// The tracer [`init`] set up (one that records nothing before that).
pub fn tracer() -> Tracer {
    if let Ok(slot) = TRACER.read() {
        if let Some(tracer) = slot.as_ref() {
            return tracer.clone();
        }
    }
    NOOP.get_or_init(Tracer::noop).clone()
}

/// The process-wide metrics registry: [`init`] exports it.
pub fn registry() -> metrics::Registry {
    let slot = REGISTRY.get_or_init(|| RwLock::new(metrics::Registry::new()));
    match slot.read() {
        Ok(registry) => registry.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn set_global(tracer: Tracer, registry: metrics::Registry) {
    if let Ok(mut slot) = TRACER.write() {
        *slot = Some(tracer);
    }
    let slot = REGISTRY.get_or_init(|| RwLock::new(registry.clone()));
    if let Ok(mut current) = slot.write() {
        *current = registry;
    }
}

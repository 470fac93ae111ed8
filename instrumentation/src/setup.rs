//! Set-up in one call: resource, OTLP exporters, batching, sampling, propagation, the
//! `tracing` layer and the metrics registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::export::{ExportFuture, ExportStats, QueueConfig, QueueingProcessor};
use crate::metrics::{Id, Priority, Registry};
use crate::propagation::Propagation;
use crate::sampling::Sampler;
use crate::tracer::{Tracer, SCOPE};

/// Why set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot start the export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("invalid OTLP header {0:?}")]
    Header(String),
    #[error(transparent)]
    Propagation(#[from] crate::propagation::UnknownFormat),
    #[error("the thread building the HTTP exporter panicked")]
    Thread,
    #[error("unknown OTLP protocol {0:?} (known: grpc, http/protobuf, http/json)")]
    Protocol(String),
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (default endpoint `http://localhost:4317`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default endpoint `http://localhost:4318`).
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
}

impl Protocol {
    fn parse(value: &str) -> Result<Self, InitError> {
        match value.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(InitError::Protocol(other.to_string())),
        }
    }

    /// `OTEL_EXPORTER_OTLP_{signal}_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn from_env(signal: &str) -> Result<Option<Self>, InitError> {
        let specific = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
        match std::env::var(specific).or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            Ok(value) => Protocol::parse(&value).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// Everything [`crate::init`] sets up, configurable.
///
/// ```no_run
/// use sightline_instrument::{sampling::{Rule, Sampler}, Builder, Protocol};
///
/// let _guard = Builder::new("checkout")
///     .attribute("deployment.environment.name", "staging")
///     .endpoint("http://sightline:4317")
///     .protocol(Protocol::Grpc)
///     .sampler(Sampler::ratio(0.25).rule(Rule::route("/health", 0.01)).keep_errors(true))
///     .init()
///     .expect("instrumentation");
/// ```
pub struct Builder {
    service: String,
    attributes: Vec<KeyValue>,
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    headers: Vec<(String, String)>,
    sampler: Option<Sampler>,
    propagation: Option<Propagation>,
    queue: QueueConfig,
    timeout: Duration,
    traces: bool,
    metrics: bool,
    subscriber: bool,
    registry: Option<Registry>,
    steps: [Option<Duration>; 3],
}

impl Builder {
    pub fn new(service: impl Into<String>) -> Self {
        Builder {
            service: service.into(),
            attributes: Vec::new(),
            endpoint: None,
            protocol: None,
            headers: Vec::new(),
            sampler: None,
            propagation: None,
            queue: QueueConfig::default(),
            timeout: Duration::from_secs(10),
            traces: true,
            metrics: true,
            subscriber: true,
            registry: None,
            steps: [None; 3],
        }
    }

    /// A resource attribute (`OTEL_RESOURCE_ATTRIBUTES` adds more).
    pub fn attribute(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// The collector's base URL (`http://host:4317` for gRPC, `http://host:4318` for
    /// HTTP, which gets `/v1/traces` and `/v1/metrics` appended). Without it the
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables apply, then the protocol's default.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The transport; otherwise `OTEL_EXPORTER_OTLP_PROTOCOL`, then gRPC.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// A header sent with every export (as well as `OTEL_EXPORTER_OTLP_HEADERS`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The sampler; otherwise `OTEL_TRACES_SAMPLER`, then everything (parent-based).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// The propagation formats; otherwise `OTEL_PROPAGATORS`, then W3C.
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = Some(propagation);
        self
    }

    /// Spans held at most while the collector is slow or down (default 2048); past it
    /// finished spans are dropped and counted.
    pub fn max_queue(mut self, spans: usize) -> Self {
        self.queue.max_queue = spans;
        self
    }

    /// Spans per export at most (default 512).
    pub fn max_batch(mut self, spans: usize) -> Self {
        self.queue.max_batch = spans;
        self
    }

    /// How long a partial batch waits before export (default 1 s).
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.queue.delay = delay;
        self
    }

    /// Timeout of one export call (default 10 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Turns trace export off (spans are still created for propagation).
    pub fn without_traces(mut self) -> Self {
        self.traces = false;
        self
    }

    /// Turns OTLP metric export off (the registry and its exposition still work).
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self
    }

    /// Leaves the global `tracing` subscriber alone; compose
    /// [`Instrumentation::tracing_layer`] into your own.
    pub fn without_tracing_subscriber(mut self) -> Self {
        self.subscriber = false;
        self
    }

    /// The registry to export (default: [`crate::registry`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The OTLP export step of one priority (defaults 2 s / 30 s / 60 s).
    pub fn metric_step(mut self, priority: Priority, step: Duration) -> Self {
        self.steps[priority.index()] = Some(step);
        self
    }

    /// Sets everything up and makes the tracer, propagation and registry global.
    pub fn init(self) -> Result<Instrumentation, InitError> {
        let resource = Resource::builder()
            .with_service_name(self.service.clone())
            .with_attributes(self.attributes.clone())
            .build();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sightline-otlp")
            .enable_all()
            .build()?;
        let propagation = match (self.propagation.clone(), std::env::var("OTEL_PROPAGATORS")) {
            (Some(p), _) => p,
            (None, Ok(list)) => Propagation::parse(&list)?,
            (None, Err(_)) => Propagation::default(),
        };
        let sampler = self
            .sampler
            .clone()
            .or_else(Sampler::from_env)
            .unwrap_or_default();
        let stats = Arc::new(ExportStats::default());
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(sampler);
        if self.traces {
            let protocol = match self.protocol {
                Some(p) => p,
                None => Protocol::from_env("TRACES")?.unwrap_or(Protocol::Grpc),
            };
            provider = provider.with_span_processor(self.span_processor(
                protocol,
                &runtime,
                stats.clone(),
            )?);
        }
        let provider = provider.build();
        let registry = self.registry.clone().unwrap_or_else(crate::registry);
        let meters = if self.metrics {
            let protocol = match self.protocol {
                Some(p) => p,
                None => Protocol::from_env("METRICS")?.unwrap_or(Protocol::Grpc),
            };
            let meters = self.meter_providers(protocol, &runtime, &resource)?;
            crate::metrics::otlp::export(&registry, &meters);
            Some(meters)
        } else {
            None
        };
        self_metrics(&registry, &stats);

        let tracer = Tracer::new(&provider, propagation.clone());
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(propagation);
        crate::set_global(tracer.clone(), registry.clone());
        let mut subscriber_installed = false;
        if self.subscriber {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            subscriber_installed = tracing_subscriber::registry()
                .with(filter)
                .with(tracing_subscriber::fmt::layer())
                .with(otel_layer(&provider))
                .try_init()
                .is_ok();
        }
        Ok(Instrumentation {
            provider,
            meters,
            tracer,
            registry,
            stats,
            runtime: Some(runtime),
            subscriber_installed,
        })
    }

    fn span_processor(
        &self,
        protocol: Protocol,
        runtime: &tokio::runtime::Runtime,
        stats: Arc<ExportStats>,
    ) -> Result<QueueingProcessor, InitError> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let config = self.queue;
        match protocol {
            Protocol::Grpc => {
                // The channel lives on the export runtime; exports are driven inside it.
                let _entered = runtime.enter();
                let exporter = self.grpc(builder.with_tonic())?.build()?;
                let handle = runtime.handle().clone();
                let run =
                    move |export: ExportFuture<'_>| -> OTelSdkResult { handle.block_on(export) };
                Ok(QueueingProcessor::start(exporter, config, stats, run))
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let builder = self.http(builder.with_http(), protocol, "traces");
                let exporter = off_runtime(move || builder.build())?;
                let run = |export: ExportFuture<'_>| -> OTelSdkResult {
                    futures_executor::block_on(export)
                };
                Ok(QueueingProcessor::start(exporter, config, stats, run))
            }
        }
    }

    fn meter_providers(
        &self,
        protocol: Protocol,
        runtime: &tokio::runtime::Runtime,
        resource: &Resource,
    ) -> Result<[SdkMeterProvider; 3], InitError> {
        let steps = crate::metrics::otlp::steps(&self.steps);
        let mut providers = Vec::with_capacity(3);
        for step in steps {
            let builder = opentelemetry_otlp::MetricExporter::builder();
            let exporter = match protocol {
                Protocol::Grpc => {
                    let _entered = runtime.enter();
                    self.grpc(builder.with_tonic())?.build()?
                }
                Protocol::HttpProtobuf | Protocol::HttpJson => {
                    let builder = self.http(builder.with_http(), protocol, "metrics");
                    off_runtime(move || builder.build())?
                }
            };
            let reader = PeriodicReader::builder(exporter)
                .with_interval(step)
                .build();
            providers.push(
                SdkMeterProvider::builder()
                    .with_resource(resource.clone())
                    .with_reader(reader)
                    .build(),
            );
        }
        let [high, normal, low]: [SdkMeterProvider; 3] =
            providers.try_into().map_err(|_| InitError::Thread)?;
        Ok([high, normal, low])
    }

    /// A gRPC exporter builder with this builder's timeout, headers and endpoint.
    fn grpc<B: WithExportConfig + WithTonicConfig>(&self, builder: B) -> Result<B, InitError> {
        let builder = builder
            .with_timeout(self.timeout)
            .with_metadata(self.metadata()?);
        Ok(match &self.endpoint {
            Some(endpoint) => builder.with_endpoint(endpoint.clone()),
            None => builder,
        })
    }

    /// An HTTP exporter builder with this builder's protocol, timeout, headers and the
    /// endpoint of `signal`.
    fn http<B: WithExportConfig + WithHttpConfig>(
        &self,
        builder: B,
        protocol: Protocol,
        signal: &str,
    ) -> B {
        let builder = builder
            .with_protocol(otlp_protocol(protocol))
            .with_timeout(self.timeout)
            .with_headers(self.headers.iter().cloned().collect::<HashMap<_, _>>());
        match &self.endpoint {
            Some(endpoint) => builder.with_endpoint(signal_url(endpoint, signal)),
            None => builder,
        }
    }

    fn metadata(
        &self,
    ) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, InitError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = http::header::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| InitError::Header(name.clone()))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|_| InitError::Header(name.to_string()))?;
            headers.insert(name, value);
        }
        Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers))
    }
}

/// Builds on a thread of its own: the blocking HTTP client must be built (and used)
/// outside any async runtime, and `init` may be called inside one.
fn off_runtime<T: Send>(
    build: impl FnOnce() -> Result<T, opentelemetry_otlp::ExporterBuildError> + Send,
) -> Result<T, InitError> {
    Ok(std::thread::scope(|s| s.spawn(build).join()).map_err(|_| InitError::Thread)??)
}

fn otlp_protocol(protocol: Protocol) -> opentelemetry_otlp::Protocol {
    match protocol {
        Protocol::Grpc => opentelemetry_otlp::Protocol::Grpc,
        Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    }
}

/// `base` + `/v1/{signal}`, as the OTLP specification builds per-signal URLs.
fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// The pipeline's own health as metrics: what was exported, dropped or refused.
fn self_metrics(registry: &Registry, stats: &Arc<ExportStats>) {
    type Read = fn(&ExportStats) -> u64;
    let counts: [(&str, Read); 3] = [
        ("exported", ExportStats::exported),
        ("dropped", ExportStats::dropped),
        ("failed", ExportStats::failed),
    ];
    for (name, read) in counts {
        let stats = stats.clone();
        registry.gauge(
            Id::new(format!("sightline.instrument.spans.{name}")),
            move || read(&stats) as f64,
        );
    }
    registry.gauge(
        Id::new("sightline.instrument.metrics.refused_ids"),
        registry.refused_reader(),
    );
}

/// The `tracing` → OpenTelemetry layer, without the exporter's own transport crates
/// (their spans would be exported by the exporter, forever).
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            let target = meta.target();
            !["h2", "hyper", "tonic", "tower", "reqwest", "opentelemetry"]
                .iter()
                .any(|t| target.starts_with(t))
        }))
}

/// What [`crate::init`] set up. Flushes and shuts the exporters down when dropped.
pub struct Instrumentation {
    provider: SdkTracerProvider,
    meters: Option<[SdkMeterProvider; 3]>,
    tracer: Tracer,
    registry: Registry,
    stats: Arc<ExportStats>,
    runtime: Option<tokio::runtime::Runtime>,
    subscriber_installed: bool,
}

impl std::fmt::Debug for Instrumentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumentation")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Instrumentation {
    /// The OpenTracing-style tracer.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The metrics registry being exported.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenTelemetry tracer provider (for other OpenTelemetry integrations).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exported, dropped and failed span counts.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Whether `init` installed the global `tracing` subscriber (false when the
    /// application had one already).
    pub fn subscriber_installed(&self) -> bool {
        self.subscriber_installed
    }

    /// A `tracing` layer turning `tracing` spans into OpenTelemetry spans, for
    /// applications that build their own subscriber.
    pub fn tracing_layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        otel_layer(&self.provider)
    }

    /// Exports every finished span now (and metrics of every priority).
    pub fn flush(&self) -> OTelSdkResult {
        let spans = self.provider.force_flush();
        if let Some(meters) = &self.meters {
            for meter in meters {
                let _ = meter.force_flush();
            }
        }
        spans
    }
}

impl Drop for Instrumentation {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
        if let Some(meters) = &self.meters {
            for meter in meters {
                let _ = meter.shutdown();
            }
        }
        // Dropping a runtime inside another one's task would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

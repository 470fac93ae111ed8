//! An OpenTracing-style API on OpenTelemetry: [`Tracer`], [`Span`], [`SpanContext`].
//!
//! ```
//! use sightline_instrument::{SpanKind, Tracer};
//! use std::collections::HashMap;
//!
//! let tracer = Tracer::noop();
//! let mut server = tracer.span("GET /cart").kind(SpanKind::Server).tag("http.method", "GET").start();
//! server.set_baggage_item("tenant", "acme");
//!
//! let mut db = tracer.span("SELECT cart").child_of(&server.context()).start();
//! db.set_tag("db.type", "postgresql");
//! db.log([("event", "rows"), ("count", "3")]);
//! db.finish();
//!
//! // Carry the context to another service.
//! let mut headers = HashMap::new();
//! tracer.inject(&server.context(), &mut headers);
//! let remote = tracer.extract(&headers).expect("a parent");
//! assert_eq!(remote.baggage_item("tenant").as_deref(), Some("acme"));
//! server.finish();
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::baggage::{BaggageExt, BaggageMetadata};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{
    Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, ContextGuard, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span as SdkSpan};

use crate::propagation::{add_baggage, Propagation, SOFA_SYS_BAGGAGE};

/// The instrumentation scope spans of this crate's API are reported under.
pub const SCOPE: &str = "sightline-instrument";

/// Starts spans and carries their contexts across process boundaries.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: SdkTracer,
    propagation: Arc<Propagation>,
}

impl Tracer {
    /// A tracer on `provider` that propagates with `propagation`.
    pub fn new(provider: &SdkTracerProvider, propagation: Propagation) -> Self {
        Tracer {
            inner: provider.tracer(SCOPE),
            propagation: Arc::new(propagation),
        }
    }

    /// A tracer whose spans go nowhere (for tests and examples).
    pub fn noop() -> Self {
        Tracer::new(
            &SdkTracerProvider::builder().build(),
            Propagation::default(),
        )
    }

    /// The underlying OpenTelemetry tracer.
    pub fn otel(&self) -> &SdkTracer {
        &self.inner
    }

    /// The propagation formats of [`Tracer::inject`] and [`Tracer::extract`].
    pub fn propagation(&self) -> &Propagation {
        &self.propagation
    }

    /// Begins a span; the active span (if any) is its parent unless a reference says
    /// otherwise.
    pub fn span(&self, operation: impl Into<Cow<'static, str>>) -> SpanBuilder<'_> {
        SpanBuilder {
            tracer: self,
            operation: operation.into(),
            kind: SpanKind::Internal,
            parent: None,
            follows: Vec::new(),
            tags: Vec::new(),
            status: None,
            start: None,
            ignore_active: false,
        }
    }

    /// Writes `context` (span and baggage) into `carrier` in every configured format.
    pub fn inject(&self, context: &SpanContext, carrier: &mut dyn Injector) {
        self.propagation.inject(&context.cx, carrier);
    }

    /// Reads a remote parent from `carrier`; `None` when it carries neither a trace nor
    /// baggage.
    pub fn extract(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let cx = self.propagation.extract(carrier);
        let found = cx.span().span_context().is_valid() || !cx.baggage().is_empty();
        found.then(|| SpanContext { cx })
    }

    /// The context of the active span, to pass as a reference or to inject.
    pub fn active(&self) -> SpanContext {
        SpanContext {
            cx: Context::current(),
        }
    }
}

/// The part of a span that crosses boundaries: trace and span id, sampling, baggage.
#[derive(Clone, Debug)]
pub struct SpanContext {
    cx: Context,
}

impl SpanContext {
    /// From an OpenTelemetry context (for interoperating with other OpenTelemetry code).
    pub fn from_otel(cx: Context) -> Self {
        SpanContext { cx }
    }

    /// The OpenTelemetry context: attach it, or hand it to other OpenTelemetry code.
    pub fn otel(&self) -> &Context {
        &self.cx
    }

    /// 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        self.cx.span().span_context().span_id().to_string()
    }

    /// Whether the trace is sampled (exported).
    pub fn is_sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// One baggage item.
    pub fn baggage_item(&self, key: &str) -> Option<String> {
        self.cx.baggage().get(key).map(|v| v.to_string())
    }

    /// All baggage items.
    pub fn baggage_items(&self) -> Vec<(String, String)> {
        self.cx
            .baggage()
            .iter()
            .map(|(k, (v, _))| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Options of a span about to start.
#[must_use = "a span starts only with .start()"]
pub struct SpanBuilder<'t> {
    tracer: &'t Tracer,
    operation: Cow<'static, str>,
    kind: SpanKind,
    parent: Option<Context>,
    follows: Vec<Context>,
    tags: Vec<KeyValue>,
    status: Option<Status>,
    start: Option<SystemTime>,
    ignore_active: bool,
}

impl SpanBuilder<'_> {
    /// The parent: the new span is part of the work of `parent`.
    pub fn child_of(mut self, parent: &SpanContext) -> Self {
        self.parent = Some(parent.cx.clone());
        self
    }

    /// A causal predecessor that does not wait for the new span. The first one becomes
    /// the parent when there is no `child_of`; every one is recorded as a link with
    /// `opentracing.ref_type=follows_from`.
    pub fn follows_from(mut self, predecessor: &SpanContext) -> Self {
        self.follows.push(predecessor.cx.clone());
        self
    }

    /// Starts a new trace even when a span is active.
    pub fn ignore_active_span(mut self) -> Self {
        self.ignore_active = true;
        self
    }

    /// The span kind (the tag `span.kind` does the same).
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    /// A tag, as [`Span::set_tag`].
    pub fn tag(mut self, key: impl Into<Key>, value: impl Into<Value>) -> Self {
        match Tag::from_opentracing(key.into(), value.into()) {
            Tag::Kind(kind) => self.kind = kind,
            Tag::Error(status) => self.status = Some(status),
            Tag::Attribute(kv) => self.tags.push(kv),
        }
        self
    }

    /// An explicit start time.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start = Some(at);
        self
    }

    /// Starts the span.
    pub fn start(self) -> Span {
        let parent = match (self.parent, self.follows.first()) {
            (Some(parent), _) => parent,
            (None, Some(first)) => first.clone(),
            (None, None) if self.ignore_active => Context::new(),
            (None, None) => Context::current(),
        };
        let links: Vec<Link> = self
            .follows
            .iter()
            .map(|cx| {
                Link::new(
                    cx.span().span_context().clone(),
                    vec![KeyValue::new("opentracing.ref_type", "follows_from")],
                    0,
                )
            })
            .collect();
        let mut builder = self
            .tracer
            .inner
            .span_builder(self.operation)
            .with_kind(self.kind)
            .with_attributes(self.tags);
        if !links.is_empty() {
            builder = builder.with_links(links);
        }
        if let Some(at) = self.start {
            builder = builder.with_start_time(at);
        }
        let mut span = builder.start_with_context(&self.tracer.inner, &parent);
        if let Some(status) = self.status {
            span.set_status(status);
        }
        Span {
            span,
            parent,
            finished: false,
        }
    }
}

/// A timed operation. Finishes on [`Span::finish`], or when dropped.
#[derive(Debug)]
pub struct Span {
    // Owned, not shared through a context: recording needs no lock.
    span: SdkSpan,
    // The parent's context, with this span's baggage.
    parent: Context,
    finished: bool,
}

impl Span {
    /// The context to pass to `child_of`, `follows_from` or `inject`.
    pub fn context(&self) -> SpanContext {
        SpanContext {
            cx: self
                .parent
                .with_remote_span_context(self.span.span_context().clone()),
        }
    }

    /// Makes this span the active one until the guard drops: spans started meanwhile
    /// (this API's and `tracing`'s) are its children.
    pub fn activate(&self) -> ContextGuard {
        self.context().cx.attach()
    }

    /// Sets a tag. OpenTracing's standard tags map to OpenTelemetry: `span.kind` is
    /// recorded as `opentracing.span_kind` (the kind is fixed at start), `error=true`
    /// sets the error status, `http.method`, `http.url`, `http.status_code`, `db.type`,
    /// `db.statement`, `peer.hostname` and `peer.port` become their semantic-convention
    /// names; everything else is kept as it is.
    pub fn set_tag(&mut self, key: impl Into<Key>, value: impl Into<Value>) -> &mut Self {
        match Tag::from_opentracing(key.into(), value.into()) {
            Tag::Kind(kind) => self.span.set_attribute(KeyValue::new(
                "opentracing.span_kind",
                format!("{kind:?}").to_lowercase(),
            )),
            Tag::Error(status) => self.span.set_status(status),
            Tag::Attribute(kv) => self.span.set_attribute(kv),
        }
        self
    }

    /// Records a structured log; the field `event` (or `message`) names it.
    pub fn log<K, V>(&mut self, fields: impl IntoIterator<Item = (K, V)>) -> &mut Self
    where
        K: Into<opentelemetry::Key>,
        V: Into<Value>,
    {
        let mut name: Cow<'static, str> = Cow::Borrowed("log");
        let mut attributes = Vec::new();
        for (key, value) in fields {
            let kv = KeyValue::new(key, value);
            if kv.key.as_str() == "event" || (kv.key.as_str() == "message" && name == "log") {
                name = Cow::Owned(kv.value.as_str().into_owned());
            }
            attributes.push(kv);
        }
        self.span.add_event(name, attributes);
        self
    }

    /// Sets a baggage item: it travels with this span's context to every descendant,
    /// across processes.
    pub fn set_baggage_item(&mut self, key: &str, value: &str) -> &mut Self {
        self.put_baggage(key, value, BaggageMetadata::default())
    }

    /// Sets a SOFATracer system baggage item (`_sys_` / `baggage-sys-`).
    pub fn set_sys_baggage_item(&mut self, key: &str, value: &str) -> &mut Self {
        self.put_baggage(key, value, BaggageMetadata::from(SOFA_SYS_BAGGAGE))
    }

    fn put_baggage(&mut self, key: &str, value: &str, metadata: BaggageMetadata) -> &mut Self {
        self.parent = add_baggage(
            &self.parent,
            [(key.to_string(), value.to_string(), metadata)],
        );
        self
    }

    /// One baggage item of this span's context.
    pub fn baggage_item(&self, key: &str) -> Option<String> {
        self.parent.baggage().get(key).map(|v| v.to_string())
    }

    /// Renames the operation.
    pub fn set_operation_name(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Self {
        self.span.update_name(name);
        self
    }

    /// Ends the span now.
    pub fn finish(mut self) {
        self.end();
    }

    /// Ends the span at `at`.
    pub fn finish_at(mut self, at: SystemTime) {
        self.finished = true;
        self.span.end_with_timestamp(at);
    }

    fn end(&mut self) {
        if !self.finished {
            self.finished = true;
            self.span.end();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end();
    }
}

/// What an OpenTracing tag becomes.
enum Tag {
    Kind(SpanKind),
    Error(Status),
    Attribute(KeyValue),
}

impl Tag {
    fn from_opentracing(key: Key, value: Value) -> Tag {
        match key.as_str() {
            "span.kind" => match value.as_str().to_ascii_lowercase().as_str() {
                "server" => Tag::Kind(SpanKind::Server),
                "client" => Tag::Kind(SpanKind::Client),
                "producer" => Tag::Kind(SpanKind::Producer),
                "consumer" => Tag::Kind(SpanKind::Consumer),
                _ => Tag::Kind(SpanKind::Internal),
            },
            "error" => {
                let is_error = match &value {
                    Value::Bool(b) => *b,
                    other => other.as_str() == "true",
                };
                if is_error {
                    Tag::Error(Status::error(""))
                } else {
                    Tag::Error(Status::Unset)
                }
            }
            _ => {
                let name = match key.as_str() {
                    "http.method" => "http.request.method",
                    "http.url" => "url.full",
                    "http.status_code" => "http.response.status_code",
                    "db.type" => "db.system",
                    "db.statement" => "db.query.text",
                    "peer.hostname" => "server.address",
                    "peer.port" => "server.port",
                    _ => return Tag::Attribute(KeyValue::new(key, value)),
                };
                Tag::Attribute(KeyValue::new(name, value))
            }
        }
    }
}

//! A tower layer for HTTP servers (axum, tonic, hyper): one SERVER span per request,
//! parented on the incoming headers, and the stat log.
//!
//! ```
//! use sightline_instrument::middleware::HttpServerLayer;
//!
//! let tracer = sightline_instrument::tracer();
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders/{id}", axum::routing::get(|| async { "ok" }))
//!     .layer(HttpServerLayer::new(tracer).with_stat_log(&sightline_instrument::registry()));
//! # let _ = app;
//! ```
//!
//! The span is named `{method} {route}`; the route is axum's matched path (feature
//! `axum`), a gRPC method's path, or absent (the span is then named by the method alone,
//! so raw paths never explode the number of operations). It records
//! `http.request.method`, `url.path`, `url.scheme`, `http.route`, `server.address`,
//! `user_agent.original`, `http.request.body.size`, `http.response.status_code` and
//! `http.response.body.size` (when the body's size is known), and marks 5xx answers and
//! service errors as errors.
//!
//! The stat log — SOFATracer's per-endpoint digest — is the timer
//! [`STAT_LOG_METRIC`] tagged `route`, `method`, `status` and `outcome`, recorded for
//! every request whether or not its trace is sampled.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use http_body::Body;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::{Id, Priority, Registry, Timer};
use crate::propagation::HeaderExtractor;
use crate::Tracer;

/// The stat log's timer: requests per route, method, status and outcome.
pub const STAT_LOG_METRIC: &str = "http.server.requests";

/// Wraps a service in [`HttpServer`].
#[derive(Clone, Debug)]
pub struct HttpServerLayer {
    tracer: Tracer,
    stat_log: Option<StatLog>,
}

impl HttpServerLayer {
    pub fn new(tracer: Tracer) -> Self {
        HttpServerLayer {
            tracer,
            stat_log: None,
        }
    }

    /// Also records every request in `registry` (see the module documentation).
    pub fn with_stat_log(mut self, registry: &Registry) -> Self {
        self.stat_log = Some(StatLog {
            registry: registry.clone(),
            timers: Arc::default(),
        });
        self
    }
}

impl<S> Layer<S> for HttpServerLayer {
    type Service = HttpServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpServer {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`HttpServerLayer`] produces.
#[derive(Clone, Debug)]
pub struct HttpServer<S> {
    inner: S,
    layer: HttpServerLayer,
}

/// The route template of a request, if the router told us.
fn route<B>(request: &Request<B>) -> Option<String> {
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str().to_string());
    }
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    grpc.then(|| request.uri().path().to_string())
}

fn header<B>(request: &Request<B>, name: http::header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

impl<S, B, ResBody> Service<Request<B>> for HttpServer<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display,
    ResBody: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let tracer = &self.layer.tracer;
        let parent = tracer
            .propagation()
            .extract(&HeaderExtractor(request.headers()));
        let request_method = request.method().clone();
        let method = request_method.as_str().to_string();
        let route = route(&request);
        let name = match &route {
            Some(route) => format!("{method} {route}"),
            None => method.clone(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", request.uri().path().to_string()),
        ];
        if let Some(scheme) = request.uri().scheme_str() {
            attributes.push(KeyValue::new("url.scheme", scheme.to_string()));
        }
        if let Some(route) = &route {
            attributes.push(KeyValue::new("http.route", route.clone()));
        }
        if let Some(host) = header(&request, http::header::HOST).or(request.uri().host()) {
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(agent) = header(&request, http::header::USER_AGENT) {
            attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
        }
        if let Some(size) =
            header(&request, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<i64>().ok())
        {
            attributes.push(KeyValue::new("http.request.body.size", size));
        }
        let span = tracer
            .otel()
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer.otel(), &parent);
        let cx = parent.with_span(span);
        let inner = {
            let _attached = cx.clone().attach();
            self.inner.call(request)
        };
        let stat = self.layer.stat_log.clone().map(|log| StatEntry {
            log,
            route,
            method: request_method,
        });
        ResponseFuture {
            inner,
            cx,
            started,
            stat,
        }
    }
}

type TimersByRoute = HashMap<String, HashMap<(Method, u16), Timer>>;

/// The stat log's timers, cached per route, method and status so that a request
/// records with one lookup and no allocation once its endpoint has been seen.
#[derive(Clone, Debug)]
struct StatLog {
    registry: Registry,
    timers: Arc<RwLock<TimersByRoute>>,
}

impl StatLog {
    fn timer(&self, route: &str, method: &Method, status: u16) -> Timer {
        if let Ok(timers) = self.timers.read() {
            if let Some(timer) = timers
                .get(route)
                .and_then(|m| m.get(&(method.clone(), status)))
            {
                return timer.clone();
            }
        }
        let (code, outcome) = match status {
            0 => ("none".to_string(), "SERVER_ERROR"),
            100..=399 => (status.to_string(), "SUCCESS"),
            400..=499 => (status.to_string(), "CLIENT_ERROR"),
            _ => (status.to_string(), "SERVER_ERROR"),
        };
        let id = Id::new(STAT_LOG_METRIC).with_tags([
            ("route", route),
            ("method", method.as_str()),
            ("status", code.as_str()),
            ("outcome", outcome),
        ]);
        let timer = self.registry.timer_with(id, Priority::Normal);
        if let Ok(mut timers) = self.timers.write() {
            timers
                .entry(route.to_string())
                .or_default()
                .insert((method.clone(), status), timer.clone());
        }
        timer
    }
}

/// One request's stat-log entry, recorded when its response is ready.
#[derive(Debug)]
struct StatEntry {
    log: StatLog,
    route: Option<String>,
    method: Method,
}

impl StatEntry {
    fn record(self, status: Option<u16>, started: Instant) {
        let route = self.route.as_deref().unwrap_or("UNKNOWN");
        self.log
            .timer(route, &self.method, status.unwrap_or(0))
            .record(started.elapsed());
    }
}

pin_project! {
    /// Ends the SERVER span when the response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        cx: Context,
        started: Instant,
        stat: Option<StatEntry>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: std::fmt::Display,
    ResBody: Body,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this.cx.clone().attach();
            match this.inner.poll(task) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            }
        };
        let span = this.cx.span();
        let status = match &result {
            Ok(response) => {
                let code = response.status().as_u16();
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                let size = response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .or_else(|| response.body().size_hint().exact());
                if let Some(size) = size {
                    span.set_attribute(KeyValue::new(
                        "http.response.body.size",
                        i64::try_from(size).unwrap_or(i64::MAX),
                    ));
                }
                if code >= 500 {
                    span.set_status(Status::error(format!("HTTP {code}")));
                }
                Some(code)
            }
            Err(error) => {
                span.set_status(Status::error(error.to_string()));
                None
            }
        };
        span.end();
        if let Some(stat) = this.stat.take() {
            stat.record(status, *this.started);
        }
        Poll::Ready(result)
    }
}

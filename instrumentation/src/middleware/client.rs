//! CLIENT spans for reqwest, with the trace context injected into the request.
//!
//! ```no_run
//! use sightline_instrument::middleware::TracedRequest as _;
//!
//! # async fn call() -> reqwest::Result<()> {
//! let client = reqwest::Client::new();
//! let response = client.get("http://backend:8080/stock/42").send_traced().await?;
//! # let _ = response; Ok(())
//! # }
//! ```
//!
//! The span (named by the method, as the semantic conventions ask) is a child of the
//! active span and records `http.request.method`, `url.full`, `server.address`,
//! `server.port`, `http.response.status_code` and `http.response.body.size`; status 4xx
//! and 5xx and transport errors mark it as an error.

use std::future::Future;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

use crate::propagation::HeaderInjector;
use crate::Tracer;

/// Sends a reqwest request inside a CLIENT span.
pub trait TracedRequest {
    /// With the global tracer ([`crate::tracer`]).
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;

    /// With `tracer`.
    fn send_traced_with(
        self,
        tracer: Tracer,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl TracedRequest for reqwest::RequestBuilder {
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
        self.send_traced_with(crate::tracer())
    }

    fn send_traced_with(
        self,
        tracer: Tracer,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
        let (client, request) = self.build_split();
        let parent = Context::current();
        async move {
            let mut request = request?;
            let url = request.url();
            let mut attributes = vec![
                KeyValue::new("http.request.method", request.method().as_str().to_string()),
                KeyValue::new("url.full", redacted(url)),
            ];
            if let Some(host) = url.host_str() {
                attributes.push(KeyValue::new("server.address", host.to_string()));
            }
            if let Some(port) = url.port_or_known_default() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
            let span = tracer
                .otel()
                .span_builder(request.method().as_str().to_string())
                .with_kind(SpanKind::Client)
                .with_attributes(attributes)
                .start_with_context(tracer.otel(), &parent);
            let cx = parent.with_span(span);
            tracer
                .propagation()
                .inject(&cx, &mut HeaderInjector(request.headers_mut()));
            let result = client.execute(request).with_context(cx.clone()).await;
            let span = cx.span();
            match &result {
                Ok(response) => {
                    let code = response.status().as_u16();
                    span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                    if let Some(size) = response.content_length() {
                        span.set_attribute(KeyValue::new(
                            "http.response.body.size",
                            i64::try_from(size).unwrap_or(i64::MAX),
                        ));
                    }
                    if code >= 400 {
                        span.set_status(Status::error(format!("HTTP {code}")));
                    }
                }
                Err(error) => {
                    span.set_attribute(KeyValue::new("error.type", error_type(error)));
                    span.set_status(Status::error(error.to_string()));
                }
            }
            span.end();
            result
        }
    }
}

/// The URL without credentials.
fn redacted(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() {
        let _ = url.set_username("REDACTED");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("REDACTED"));
    }
    url.to_string()
}

fn error_type(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_request() {
        "request"
    } else {
        "other"
    }
}

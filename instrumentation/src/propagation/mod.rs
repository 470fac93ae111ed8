//! Trace-context propagation: which headers carry a trace between services.
//!
//! A [`Propagation`] is an ordered list of [`Format`]s. Injection writes every format;
//! extraction takes the span context from the first format that carries a valid one and
//! merges the baggage of all of them, so a service can accept W3C, B3 and SOFATracer
//! callers at once while its own calls speak all the formats its peers need.
//!
//! ```
//! use sightline_instrument::propagation::{Format, Propagation};
//! use std::collections::HashMap;
//!
//! let propagation = Propagation::new([Format::TraceContext, Format::Baggage, Format::B3Multi]);
//! let mut carrier = HashMap::new();
//! carrier.insert(
//!     "traceparent".to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
//! );
//! let cx = propagation.extract(&carrier);
//! use opentelemetry::trace::TraceContextExt;
//! assert_eq!(
//!     cx.span().span_context().trace_id().to_string(),
//!     "4bf92f3577b34da6a3ce929d0e0e4736"
//! );
//! ```

mod b3;
mod carrier;
mod sofa;

use std::fmt;
use std::str::FromStr;

use opentelemetry::baggage::{Baggage, BaggageExt, BaggageMetadata, KeyValueMetadata};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

pub use b3::{B3Multi, B3Single};
pub use carrier::{HeaderExtractor, HeaderInjector};
pub use sofa::{SofaTracer, SofaTracerIds, SOFA_SYS_BAGGAGE};

/// One way of writing a trace context into headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// W3C `traceparent` + `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin B3 single header: `b3: {trace}-{span}-{sampled}-{parent}`.
    B3Single,
    /// Zipkin B3 multi header: `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, ...
    B3Multi,
    /// SOFATracer: `sftc_head`, and its X-B3 headers with `baggage-{k}` / `baggage-sys-{k}`.
    SofaTracer,
}

/// An `OTEL_PROPAGATORS` entry this crate does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown propagation format {0:?} (known: tracecontext, baggage, b3, b3multi, sofatracer)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Names as in `OTEL_PROPAGATORS`, plus `sofatracer`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tracecontext" => Ok(Format::TraceContext),
            "baggage" => Ok(Format::Baggage),
            "b3" => Ok(Format::B3Single),
            "b3multi" => Ok(Format::B3Multi),
            "sofatracer" | "sofa" => Ok(Format::SofaTracer),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

impl Format {
    fn propagator(self) -> Box<dyn TextMapPropagator + Send + Sync> {
        match self {
            Format::TraceContext => Box::new(TraceContextPropagator::new()),
            Format::Baggage => Box::new(BaggagePropagator::new()),
            Format::B3Single => Box::new(B3Single::new()),
            Format::B3Multi => Box::new(B3Multi::new()),
            Format::SofaTracer => Box::new(SofaTracer::new()),
        }
    }
}

/// An ordered, composable set of propagation formats.
pub struct Propagation {
    formats: Vec<Format>,
    propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>>,
    fields: Vec<String>,
}

impl fmt::Debug for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagation")
            .field("formats", &self.formats)
            .finish()
    }
}

impl Clone for Propagation {
    fn clone(&self) -> Self {
        Propagation::new(self.formats.iter().copied())
    }
}

impl Default for Propagation {
    /// W3C trace context and baggage.
    fn default() -> Self {
        Propagation::new([Format::TraceContext, Format::Baggage])
    }
}

impl Propagation {
    /// The formats, in order of precedence for extraction.
    pub fn new(formats: impl IntoIterator<Item = Format>) -> Self {
        let mut unique: Vec<Format> = Vec::new();
        for format in formats {
            if !unique.contains(&format) {
                unique.push(format);
            }
        }
        let propagators: Vec<_> = unique.iter().map(|f| f.propagator()).collect();
        let fields = propagators
            .iter()
            .flat_map(|p| p.fields().map(str::to_string).collect::<Vec<_>>())
            .collect();
        Propagation {
            formats: unique,
            propagators,
            fields,
        }
    }

    /// From a comma-separated list such as `OTEL_PROPAGATORS`'s value
    /// (`tracecontext,baggage,b3multi`); `none` gives an empty set.
    pub fn parse(list: &str) -> Result<Self, UnknownFormat> {
        let formats = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty() && *name != "none")
            .map(Format::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Propagation::new(formats))
    }

    /// The formats in order of precedence.
    pub fn formats(&self) -> &[Format] {
        &self.formats
    }

    /// Writes `cx`'s span context and baggage in every format.
    pub fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        for propagator in &self.propagators {
            propagator.inject_context(cx, carrier);
        }
    }

    /// Reads a remote parent: the span context of the first format that has a valid one,
    /// with the baggage of all formats merged (earlier formats win on a key clash).
    pub fn extract(&self, carrier: &dyn Extractor) -> Context {
        self.extract_with_context(&Context::new(), carrier)
    }
}

impl TextMapPropagator for Propagation {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.inject(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut parent: Option<Context> = None;
        let mut baggage: Vec<_> = Vec::new();
        for propagator in &self.propagators {
            let found = propagator.extract_with_context(&Context::new(), extractor);
            for (key, (value, metadata)) in found.baggage() {
                if !baggage.iter().any(|(k, _, _)| k == key) {
                    baggage.push((key.clone(), value.clone(), metadata.clone()));
                }
            }
            if parent.is_none() && found.span().span_context().is_valid() {
                parent = Some(found);
            }
        }
        let base = match parent {
            Some(found) => found,
            None => cx.clone(),
        };
        if baggage.is_empty() {
            return base;
        }
        let mut merged = Baggage::new();
        for (key, value, metadata) in baggage {
            merged.insert_with_metadata(key, value, metadata);
        }
        base.with_baggage(merged)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

/// `cx` with `items` added to its baggage (replacing items of the same key).
pub(crate) fn add_baggage(
    cx: &Context,
    items: impl IntoIterator<Item = (String, String, BaggageMetadata)>,
) -> Context {
    let mut baggage: Baggage = cx
        .baggage()
        .iter()
        .map(|(k, (v, m))| KeyValueMetadata::new(k.clone(), v.clone(), m.clone()))
        .collect();
    for (key, value, metadata) in items {
        baggage.insert_with_metadata(key, value, metadata);
    }
    cx.with_baggage(baggage)
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Parses 1..=`width` hex digits as a big-endian number, left-padded with zeros.
fn parse_hex_u128(s: &str, width: usize) -> Option<u128> {
    if s.is_empty() || s.len() > width || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests;

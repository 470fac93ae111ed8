//! Zipkin B3 propagation, single (`b3`) and multi (`X-B3-*`) header.
//!
//! Trace ids of 16 hex digits are left-padded to 128 bits; the debug flag (`d`,
//! `X-B3-Flags: 1`) counts as sampled. Injection writes 32-hex trace ids.

use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use super::{hex, parse_hex_u128};

const B3: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

/// `b3: {TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}`.
#[derive(Debug)]
pub struct B3Single {
    fields: [String; 1],
}

/// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags`.
#[derive(Debug)]
pub struct B3Multi {
    fields: [String; 5],
}

impl B3Single {
    pub fn new() -> Self {
        B3Single {
            fields: [B3.to_string()],
        }
    }
}

impl Default for B3Single {
    fn default() -> Self {
        Self::new()
    }
}

impl B3Multi {
    pub fn new() -> Self {
        B3Multi {
            fields: [TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS].map(str::to_string),
        }
    }
}

impl Default for B3Multi {
    fn default() -> Self {
        Self::new()
    }
}

/// A trace id of 16 or 32 hex digits (B3 allows both).
pub(super) fn b3_trace_id(s: &str) -> Option<TraceId> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    parse_hex_u128(s, 32)
        .filter(|v| *v != 0)
        .map(|v| TraceId::from_bytes(v.to_be_bytes()))
}

pub(super) fn b3_span_id(s: &str) -> Option<SpanId> {
    if s.len() != 16 {
        return None;
    }
    parse_hex_u128(s, 16)
        .filter(|v| *v != 0)
        .map(|v| SpanId::from_bytes((v as u64).to_be_bytes()))
}

/// `1`, `d` and `true` sample; `0` and `false` do not; anything else defers (unsampled).
fn sampled(state: &str) -> Option<bool> {
    match state {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace_id, span_id, flags, true, TraceState::default())
}

impl TextMapPropagator for B3Single {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let flag = if sc.is_sampled() { "1" } else { "0" };
        injector.set(
            B3,
            format!(
                "{}-{}-{flag}",
                hex(&sc.trace_id().to_bytes()),
                hex(&sc.span_id().to_bytes())
            ),
        );
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(value) = extractor.get(B3) else {
            return cx.clone();
        };
        let mut parts = value.trim().split('-');
        let (Some(trace), Some(span)) = (parts.next(), parts.next()) else {
            return cx.clone(); // a bare sampling state carries no parent
        };
        let state = parts.next().map(sampled).unwrap_or(None).unwrap_or(false);
        match (b3_trace_id(trace), b3_span_id(span)) {
            (Some(t), Some(s)) => cx.with_remote_span_context(remote(t, s, state)),
            _ => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

impl TextMapPropagator for B3Multi {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        injector.set(TRACE_ID, hex(&sc.trace_id().to_bytes()));
        injector.set(SPAN_ID, hex(&sc.span_id().to_bytes()));
        injector.set(SAMPLED, if sc.is_sampled() { "1" } else { "0" }.to_string());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let trace = extractor.get(TRACE_ID).map(str::trim).and_then(b3_trace_id);
        let span = extractor.get(SPAN_ID).map(str::trim).and_then(b3_span_id);
        let (Some(trace), Some(span)) = (trace, span) else {
            return cx.clone();
        };
        let debug = extractor.get(FLAGS).map(str::trim) == Some("1");
        let state = extractor
            .get(SAMPLED)
            .map(|v| v.trim().to_ascii_lowercase())
            .and_then(|v| sampled(&v))
            .unwrap_or(false);
        cx.with_remote_span_context(remote(trace, span, debug || state))
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

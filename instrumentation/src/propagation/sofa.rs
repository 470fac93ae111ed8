//! SOFATracer propagation, so a Rust service joins the trace of a Java service that uses
//! SOFATracer.
//!
//! SOFATracer writes either one header, `sftc_head: tcid=..&spid=..&pspid=..&sample=true&_sys_k=v&k=v`
//! (values with `%`, `&` and `=` percent-encoded), or its B3 flavour: `X-B3-TraceId`,
//! `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled` (`true`/`false`) plus
//! `baggage-{k}` and `baggage-sys-{k}` (URL-encoded values).
//!
//! Its ids are not OpenTelemetry ids, so they are mapped deterministically:
//! - trace id (`0ad1348f1403169275002100356696`: IP, epoch ms, sequence, pid): when it is
//!   at most 32 hex digits (after dropping the load-test suffix `T`), it is left-padded to
//!   32, exactly as Zipkin normalises it when SOFATracer's Zipkin reporter sends it, so the
//!   Java spans and ours land in one trace; otherwise it is hashed (FNV-1a, 128 bits);
//! - span id (`0.1.2`, shared by the client and server of one call): 16 hex digits are
//!   taken as they are, anything else is hashed with FNV-1a 64 — the id SOFATracer's Zipkin
//!   reporter gives that span, so our server span's parent is the Java client span.
//!
//! The originals travel in the context as [`SofaTracerIds`]: spans started under it record
//! them as `sofatracer.trace_id` and `sofatracer.parent_span_id`, and injection sends the
//! original trace id back so the Java side keeps its own id. System baggage is baggage
//! with the metadata [`SOFA_SYS_BAGGAGE`].

use opentelemetry::baggage::{BaggageExt, BaggageMetadata};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use super::{add_baggage, hex, parse_hex_u128};

const HEAD: &str = "sftc_head";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const SAMPLED: &str = "x-b3-sampled";
const BAGGAGE_PREFIX: &str = "baggage-";
const SYS_BAGGAGE_PREFIX: &str = "baggage-sys-";
const HEAD_SYS_PREFIX: &str = "_sys_";

/// Baggage metadata that marks SOFATracer system baggage (`_sys_k`, `baggage-sys-k`).
pub const SOFA_SYS_BAGGAGE: &str = "sofa-sys";

/// The SOFATracer ids a remote parent arrived with, kept in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SofaTracerIds {
    /// The original trace id, as SOFATracer wrote it.
    pub trace_id: String,
    /// The original (dotted) id of the remote parent span.
    pub span_id: String,
    /// The trace id it maps to.
    pub mapped: TraceId,
}

/// The SOFATracer propagator (`sftc_head` and X-B3 + `baggage-*`).
#[derive(Debug)]
pub struct SofaTracer {
    fields: Vec<String>,
}

impl SofaTracer {
    pub fn new() -> Self {
        SofaTracer {
            fields: [HEAD, TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED]
                .map(str::to_string)
                .to_vec(),
        }
    }
}

impl Default for SofaTracer {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a 64 over the id's characters, as SOFATracer's Zipkin reporter computes span ids.
pub fn sofa_span_id(id: &str) -> SpanId {
    if id.len() == 16 {
        if let Some(v) = parse_hex_u128(id, 16).filter(|v| *v != 0) {
            return SpanId::from_bytes((v as u64).to_be_bytes());
        }
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for unit in id.encode_utf16() {
        hash ^= u64::from(unit);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    SpanId::from_bytes(hash.max(1).to_be_bytes())
}

/// The trace id a SOFATracer trace id maps to (see the module documentation); `None` for
/// an id of zeros, which no tracer issues.
pub fn sofa_trace_id(id: &str) -> Option<TraceId> {
    let trimmed = id.strip_suffix('T').unwrap_or(id);
    if let Some(v) = parse_hex_u128(trimmed, 32) {
        return (v != 0).then(|| TraceId::from_bytes(v.to_be_bytes()));
    }
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in id.bytes() {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    Some(TraceId::from_bytes(hash.max(1).to_be_bytes()))
}

/// Decodes `%XX` sequences (and `+` is kept: SOFATracer does not write it for spaces).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digit = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what would break a header value or a `k=v&` list.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~!*'()/:@,;".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Parsed {
    trace_id: String,
    span_id: String,
    sampled: bool,
    baggage: Vec<(String, String, bool)>,
}

fn parse_head(value: &str) -> Option<Parsed> {
    // SOFATracer's own HTTP injector URL-encodes the whole head (`tcid%3D...%26spid%3D...`);
    // its RPC and message carriers send it as it is.
    let decoded;
    let value = if value.contains('=') {
        value
    } else {
        decoded = percent_decode(&value.replace('+', " "));
        decoded.as_str()
    };
    let mut parsed = Parsed {
        trace_id: String::new(),
        span_id: String::new(),
        sampled: false,
        baggage: Vec::new(),
    };
    for pair in value.split('&') {
        let Some((key, raw)) = pair.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), percent_decode(raw.trim()));
        if key.is_empty() || value.is_empty() {
            continue;
        }
        match key {
            "tcid" => parsed.trace_id = value,
            "spid" => parsed.span_id = value,
            "pspid" => {}
            "sample" => parsed.sampled = value.eq_ignore_ascii_case("true"),
            _ => match key.strip_prefix(HEAD_SYS_PREFIX) {
                Some(sys) => parsed.baggage.push((sys.to_string(), value, true)),
                None => parsed.baggage.push((key.to_string(), value, false)),
            },
        }
    }
    (!parsed.trace_id.is_empty()).then_some(parsed)
}

fn parse_b3(extractor: &dyn Extractor) -> Option<Parsed> {
    let trace_id = extractor.get(TRACE_ID)?.trim().to_string();
    if trace_id.is_empty() {
        return None;
    }
    let span_id = extractor
        .get(SPAN_ID)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let sampled = extractor
        .get(SAMPLED)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"))
        .unwrap_or(false);
    let mut baggage = Vec::new();
    for key in extractor.keys() {
        let lower = key.to_ascii_lowercase();
        let (name, sys) = if let Some(k) = lower.strip_prefix(SYS_BAGGAGE_PREFIX) {
            (k.to_string(), true)
        } else if let Some(k) = lower.strip_prefix(BAGGAGE_PREFIX) {
            (k.to_string(), false)
        } else {
            continue;
        };
        if let Some(value) = extractor.get(key).filter(|v| !v.is_empty()) {
            baggage.push((name, percent_decode(value), sys));
        }
    }
    Some(Parsed {
        trace_id,
        span_id,
        sampled,
        baggage,
    })
}

impl TextMapPropagator for SofaTracer {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        // Send the Java side its own trace id back when the trace came from it.
        let trace_id = match cx.get::<SofaTracerIds>() {
            Some(ids) if ids.mapped == sc.trace_id() => ids.trace_id.clone(),
            _ => hex(&sc.trace_id().to_bytes()),
        };
        let span_id = hex(&sc.span_id().to_bytes());
        let sampled = sc.is_sampled();
        let mut head = format!("tcid={trace_id}&spid={span_id}&sample={sampled}&");
        for (key, (value, metadata)) in cx.baggage() {
            let sys = metadata.as_str() == SOFA_SYS_BAGGAGE;
            let prefix = if sys { HEAD_SYS_PREFIX } else { "" };
            head.push_str(&format!(
                "{prefix}{}={}&",
                percent_encode(key.as_str()),
                percent_encode(value.as_str())
            ));
            let header = if sys {
                SYS_BAGGAGE_PREFIX
            } else {
                BAGGAGE_PREFIX
            };
            injector.set(
                &format!("{header}{}", key.as_str().to_ascii_lowercase()),
                percent_encode(value.as_str()),
            );
        }
        injector.set(HEAD, head);
        injector.set(TRACE_ID, trace_id);
        injector.set(SPAN_ID, span_id);
        injector.set(SAMPLED, sampled.to_string());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some(parsed) = extractor
            .get(HEAD)
            .and_then(parse_head)
            .or_else(|| parse_b3(extractor))
        else {
            return cx.clone();
        };
        let Some(mapped) = sofa_trace_id(&parsed.trace_id) else {
            return cx.clone();
        };
        let span_id = if parsed.span_id.is_empty() {
            "0".to_string()
        } else {
            parsed.span_id
        };
        let flags = if parsed.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            mapped,
            sofa_span_id(&span_id),
            flags,
            true,
            TraceState::default(),
        );
        let mut cx = cx
            .with_remote_span_context(remote)
            .with_value(SofaTracerIds {
                trace_id: parsed.trace_id,
                span_id,
                mapped,
            });
        if !parsed.baggage.is_empty() {
            cx = add_baggage(
                &cx,
                parsed.baggage.into_iter().map(|(key, value, sys)| {
                    let metadata = if sys {
                        BaggageMetadata::from(SOFA_SYS_BAGGAGE)
                    } else {
                        BaggageMetadata::default()
                    };
                    (key, value, metadata)
                }),
            );
        }
        cx
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

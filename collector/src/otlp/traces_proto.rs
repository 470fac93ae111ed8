//! OTLP `ExportTraceServiceRequest` in protobuf, decoded straight into Arrow column builders.
//!
//! Each span is read twice: a first pass picks out its ids and times (skipping nested messages
//! by length) so it can be validated before anything is appended; a second pass appends
//! attributes, events and links. No span, attribute or event becomes an object of its own.

use base64::Engine as _;
use sightline_storage::{AttrValue, DedicatedAttributes, SpanBatchBuilder, SpanKind};

use super::traces::{self, push_json_double, push_json_string, RawSpanIds, Rejections};
use crate::wire::{Reader, WireError};

/// Decodes a whole request into `out`; returns the spans it rejected. An error means the request
/// is malformed; `out` must then be discarded.
pub fn decode_request(buf: &[u8], out: &mut SpanBatchBuilder) -> Result<Rejections, WireError> {
    let mut d = Decoder {
        out,
        scratch: String::new(),
        rejections: Rejections::default(),
    };
    let mut r = Reader::new(buf);
    while let Some((field, v)) = r.next()? {
        if field == 1 {
            d.resource_spans(v.bytes("resource_spans")?)?;
        }
    }
    Ok(d.rejections)
}

struct Decoder<'o> {
    out: &'o mut SpanBatchBuilder,
    /// Holds the JSON text of an array or key-value-list value while it is appended.
    scratch: String,
    rejections: Rejections,
}

/// A resource's attributes, decoded once and appended to each of its spans.
struct ResourceCtx<'a> {
    attributes: Vec<(&'a str, ResourceValue<'a>)>,
    service_name: &'a str,
}

enum ResourceValue<'a> {
    Value(AttrValue<'a>),
    /// An array or key-value list, rendered as JSON.
    Json(String),
}

struct ScopeCtx<'a> {
    name: &'a str,
    version: &'a str,
}

/// Whose attributes a `KeyValue` belongs to.
#[derive(Clone, Copy)]
enum Target {
    Span,
    Event,
    Link,
}

/// An attribute value as decoded: borrowed from the request, or rendered into the scratch text.
enum Decoded<'a> {
    Value(AttrValue<'a>),
    Json,
}

impl Decoder<'_> {
    fn resource_spans(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut resource = ResourceCtx {
            attributes: Vec::new(),
            service_name: traces::UNKNOWN_SERVICE,
        };
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            if field == 1 {
                resource.attributes.clear();
                let mut rr = Reader::new(v.bytes("resource")?);
                while let Some((f, v)) = rr.next()? {
                    if f == 1 {
                        let (key, value) = key_value_raw(v.bytes("resource attribute")?)?;
                        let key = utf8(key, "attribute key")?;
                        let value = match self.any_value(value)? {
                            Decoded::Value(v) => {
                                if let ("service.name", AttrValue::Str(s)) = (key, v) {
                                    resource.service_name = s;
                                }
                                ResourceValue::Value(v)
                            }
                            Decoded::Json => ResourceValue::Json(self.scratch.clone()),
                        };
                        resource.attributes.push((key, value));
                    }
                }
            }
        }
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            if field == 2 {
                self.scope_spans(v.bytes("scope_spans")?, &resource)?;
            }
        }
        Ok(())
    }

    fn scope_spans(&mut self, buf: &[u8], resource: &ResourceCtx<'_>) -> Result<(), WireError> {
        let mut scope = ScopeCtx {
            name: "",
            version: "",
        };
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            if field == 1 {
                let mut sr = Reader::new(v.bytes("scope")?);
                while let Some((f, v)) = sr.next()? {
                    match f {
                        1 => scope.name = v.str("scope.name")?,
                        2 => scope.version = v.str("scope.version")?,
                        _ => {}
                    }
                }
            }
        }
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            if field == 2 {
                self.span(v.bytes("span")?, resource, &scope)?;
            }
        }
        Ok(())
    }

    fn span(
        &mut self,
        buf: &[u8],
        resource: &ResourceCtx<'_>,
        scope: &ScopeCtx<'_>,
    ) -> Result<(), WireError> {
        let mut fields = traces::empty_fields();
        fields.service_name = resource.service_name;
        fields.scope_name = scope.name;
        fields.scope_version = scope.version;
        let mut raw = RawSpanIds {
            trace_id: &[],
            span_id: &[],
            parent_span_id: &[],
            start: 0,
            end: 0,
        };
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            match field {
                1 => raw.trace_id = v.bytes("span.trace_id")?,
                2 => raw.span_id = v.bytes("span.span_id")?,
                3 => fields.trace_state = v.str("span.trace_state")?,
                4 => raw.parent_span_id = v.bytes("span.parent_span_id")?,
                5 => fields.name = v.str("span.name")?,
                6 => fields.kind = SpanKind::from_i32(v.varint("span.kind")? as i32),
                7 => raw.start = v.fixed64("span.start_time_unix_nano")?,
                8 => raw.end = v.fixed64("span.end_time_unix_nano")?,
                15 => {
                    let mut sr = Reader::new(v.bytes("span.status")?);
                    while let Some((f, v)) = sr.next()? {
                        match f {
                            2 => fields.status_message = v.str("status.message")?,
                            3 => fields.status_code = (v.varint("status.code")? as i8).clamp(0, 2),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Err(rejection) = traces::validate(&raw, &mut fields) {
            self.rejections.add(rejection);
            return Ok(());
        }

        self.out.begin_span(&fields);
        for (key, value) in &resource.attributes {
            let value = match value {
                ResourceValue::Value(v) => *v,
                ResourceValue::Json(s) => AttrValue::Json(s),
            };
            self.out.push_resource_attribute(key, value);
        }
        let mut dedicated = DedicatedAttributes::default();
        let mut r = Reader::new(buf);
        while let Some((field, v)) = r.next()? {
            match field {
                9 => self.key_value(
                    v.bytes("span.attributes")?,
                    Target::Span,
                    Some(&mut dedicated),
                )?,
                11 => self.event(v.bytes("span.events")?)?,
                13 => self.link(v.bytes("span.links")?)?,
                _ => {}
            }
        }
        self.out.finish_span(&dedicated);
        Ok(())
    }

    fn event(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let (mut time, mut name) = (0u64, "");
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next()? {
            match f {
                1 => time = v.fixed64("event.time_unix_nano")?,
                2 => name = v.str("event.name")?,
                _ => {}
            }
        }
        self.out.begin_event(time, name);
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next()? {
            if f == 3 {
                self.key_value(v.bytes("event.attributes")?, Target::Event, None)?;
            }
        }
        Ok(())
    }

    fn link(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let (mut trace_id, mut span_id, mut state) = (&[][..], &[][..], "");
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next()? {
            match f {
                1 => trace_id = v.bytes("link.trace_id")?,
                2 => span_id = v.bytes("link.span_id")?,
                3 => state = v.str("link.trace_state")?,
                _ => {}
            }
        }
        let trace_id: [u8; 16] = trace_id
            .try_into()
            .map_err(|_| WireError("link.trace_id is not 16 bytes".into()))?;
        let span_id: [u8; 8] = span_id
            .try_into()
            .map_err(|_| WireError("link.span_id is not 8 bytes".into()))?;
        self.out.begin_link(trace_id, span_id, state);
        let mut r = Reader::new(buf);
        while let Some((f, v)) = r.next()? {
            if f == 4 {
                self.key_value(v.bytes("link.attributes")?, Target::Link, None)?;
            }
        }
        Ok(())
    }

    /// Appends one `KeyValue` to the attributes of `target`; span attributes also feed the
    /// dedicated columns.
    fn key_value<'a>(
        &mut self,
        kv: &'a [u8],
        target: Target,
        dedicated: Option<&mut DedicatedAttributes<'a>>,
    ) -> Result<(), WireError> {
        let (key, value) = key_value_raw(kv)?;
        let key = utf8(key, "attribute key")?;
        let value = match self.any_value(value)? {
            Decoded::Value(v) => {
                if let Some(d) = dedicated {
                    d.observe(key, v);
                }
                v
            }
            Decoded::Json => AttrValue::Json(&self.scratch),
        };
        match target {
            Target::Span => self.out.push_attribute(key, value),
            Target::Event => self.out.push_event_attribute(key, value),
            Target::Link => self.out.push_link_attribute(key, value),
        }
        Ok(())
    }

    fn any_value<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<'a>, WireError> {
        let mut r = Reader::new(buf);
        let mut value = AttrValue::Empty;
        while let Some((f, v)) = r.next()? {
            value = match f {
                1 => AttrValue::Str(v.str("string_value")?),
                2 => AttrValue::Bool(v.varint("bool_value")? != 0),
                3 => AttrValue::Int(v.varint("int_value")? as i64),
                4 => AttrValue::Double(f64::from_bits(v.fixed64("double_value")?)),
                5 | 6 => {
                    self.scratch.clear();
                    let mut s = std::mem::take(&mut self.scratch);
                    let result = render_json(buf, &mut s, 0);
                    self.scratch = s;
                    result?;
                    return Ok(Decoded::Json);
                }
                7 => AttrValue::Bytes(v.bytes("bytes_value")?),
                _ => value,
            };
        }
        Ok(Decoded::Value(value))
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    simdutf8::basic::from_utf8(b).map_err(|_| WireError(format!("{what} is not valid UTF-8")))
}

/// Splits a `KeyValue` into its key and its raw `AnyValue`.
fn key_value_raw(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => key = v.bytes("attribute key")?,
            2 => value = v.bytes("attribute value")?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// Nesting deeper than this is hostile, not telemetry.
const MAX_DEPTH: usize = 32;

/// Renders a raw `AnyValue` as JSON, keeping element types.
fn render_json(buf: &[u8], out: &mut String, depth: usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError(format!(
            "attribute value nested deeper than {MAX_DEPTH}"
        )));
    }
    let mut r = Reader::new(buf);
    let mut last = None;
    while let Some((f, v)) = r.next()? {
        last = Some((f, v));
    }
    match last {
        None => out.push_str("null"),
        Some((1, v)) => push_json_string(out, v.str("string_value")?),
        Some((2, v)) => out.push_str(if v.varint("bool_value")? != 0 {
            "true"
        } else {
            "false"
        }),
        Some((3, v)) => out.push_str(&(v.varint("int_value")? as i64).to_string()),
        Some((4, v)) => push_json_double(out, f64::from_bits(v.fixed64("double_value")?)),
        Some((5, v)) => {
            out.push('[');
            let mut r = Reader::new(v.bytes("array_value")?);
            let mut first = true;
            while let Some((f, v)) = r.next()? {
                if f == 1 {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    render_json(v.bytes("array element")?, out, depth + 1)?;
                }
            }
            out.push(']');
        }
        Some((6, v)) => {
            out.push('{');
            let mut r = Reader::new(v.bytes("kvlist_value")?);
            let mut first = true;
            while let Some((f, v)) = r.next()? {
                if f == 1 {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    let (key, value) = key_value_raw(v.bytes("kvlist entry")?)?;
                    push_json_string(out, utf8(key, "kvlist key")?);
                    out.push(':');
                    render_json(value, out, depth + 1)?;
                }
            }
            out.push('}');
        }
        Some((7, v)) => push_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(v.bytes("bytes_value")?),
        ),
        Some(_) => out.push_str("null"),
    }
    Ok(())
}

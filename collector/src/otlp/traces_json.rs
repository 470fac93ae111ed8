//! OTLP/JSON trace requests (the protobuf JSON mapping with OTLP's exceptions: hex ids, integer
//! enums, 64-bit integers as strings or numbers), decoded into the same Arrow builders as
//! protobuf. Strings without escapes are borrowed from the request.

use std::borrow::Cow;

use base64::Engine as _;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use sightline_storage::{AttrValue, DedicatedAttributes, SpanBatchBuilder, SpanKind};

use super::traces::{self, push_json_double, push_json_string, RawSpanIds, Rejections};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    #[serde(borrow, default)]
    resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    #[serde(borrow, default)]
    resource: Option<Resource<'a>>,
    #[serde(borrow, default)]
    scope_spans: Vec<ScopeSpans<'a>>,
}

#[derive(Deserialize, Default)]
struct Resource<'a> {
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScopeSpans<'a> {
    #[serde(borrow, default)]
    scope: Option<Scope<'a>>,
    #[serde(borrow, default)]
    spans: Vec<Span<'a>>,
}

#[derive(Deserialize, Default)]
struct Scope<'a> {
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    #[serde(borrow, default)]
    trace_id: Cow<'a, str>,
    #[serde(borrow, default)]
    span_id: Cow<'a, str>,
    #[serde(borrow, default)]
    trace_state: Cow<'a, str>,
    #[serde(borrow, default)]
    parent_span_id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(default, deserialize_with = "enum_number")]
    kind: i64,
    #[serde(default, deserialize_with = "integer")]
    start_time_unix_nano: i128,
    #[serde(default, deserialize_with = "integer")]
    end_time_unix_nano: i128,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
    #[serde(borrow, default)]
    events: Vec<Event<'a>>,
    #[serde(borrow, default)]
    links: Vec<Link<'a>>,
    #[serde(borrow, default)]
    status: Option<Status<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(default, deserialize_with = "integer")]
    time_unix_nano: i128,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Link<'a> {
    #[serde(borrow, default)]
    trace_id: Cow<'a, str>,
    #[serde(borrow, default)]
    span_id: Cow<'a, str>,
    #[serde(borrow, default)]
    trace_state: Cow<'a, str>,
    #[serde(borrow, default)]
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Deserialize, Default)]
struct Status<'a> {
    #[serde(borrow, default)]
    message: Cow<'a, str>,
    #[serde(default, deserialize_with = "enum_number")]
    code: i64,
}

#[derive(Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow, default)]
    value: Option<AnyValue<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AnyValue<'a> {
    #[serde(borrow, default)]
    string_value: Option<Cow<'a, str>>,
    #[serde(default)]
    bool_value: Option<bool>,
    #[serde(default, deserialize_with = "opt_integer")]
    int_value: Option<i128>,
    #[serde(default, deserialize_with = "opt_double")]
    double_value: Option<f64>,
    #[serde(borrow, default)]
    array_value: Option<ArrayValue<'a>>,
    #[serde(borrow, default)]
    kvlist_value: Option<KvList<'a>>,
    #[serde(borrow, default)]
    bytes_value: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ArrayValue<'a> {
    #[serde(borrow, default)]
    values: Vec<AnyValue<'a>>,
}

#[derive(Deserialize, Default)]
struct KvList<'a> {
    #[serde(borrow, default)]
    values: Vec<KeyValue<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString<'a> {
    // Unsigned and signed first: buffered untagged numbers do not deserialize as i128, and as
    // f64 they would lose the nanoseconds of a timestamp.
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    #[serde(borrow)]
    Str(Cow<'a, str>),
}

/// 64-bit integers arrive as JSON numbers or as decimal strings.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Unsigned(u) => Ok(i128::from(u)),
        NumberOrString::Signed(i) => Ok(i128::from(i)),
        NumberOrString::Float(f) if f.fract() == 0.0 => Ok(f as i128),
        NumberOrString::Float(f) => Err(de::Error::custom(format!("{f} is not an integer"))),
        NumberOrString::Str(s) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("{s:?} is not an integer"))),
    }
}

fn opt_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
    integer(d).map(Some)
}

fn opt_double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Unsigned(u) => Ok(Some(u as f64)),
        NumberOrString::Signed(i) => Ok(Some(i as f64)),
        NumberOrString::Float(f) => Ok(Some(f)),
        NumberOrString::Str(s) => match s.as_ref() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            other => other
                .parse()
                .map(Some)
                .map_err(|_| de::Error::custom(format!("{other:?} is not a number"))),
        },
    }
}

/// Enums are integers in OTLP/JSON; the protobuf mapping's names are accepted too.
fn enum_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match NumberOrString::deserialize(d)? {
        NumberOrString::Unsigned(u) => Ok(u as i64),
        NumberOrString::Signed(i) => Ok(i),
        NumberOrString::Float(f) => Ok(f as i64),
        NumberOrString::Str(s) => Ok(match s.as_ref() {
            "SPAN_KIND_INTERNAL" => 1,
            "SPAN_KIND_SERVER" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => 2,
            _ => 0,
        }),
    }
}

/// Decodes an OTLP/JSON request into `out`; returns the spans it rejected.
pub fn decode_request(buf: &[u8], out: &mut SpanBatchBuilder) -> Result<Rejections, String> {
    let request: ExportRequest<'_> =
        serde_json::from_slice(buf).map_err(|e| format!("invalid OTLP/JSON: {e}"))?;
    let mut rejections = Rejections::default();
    let mut scratch = String::new();
    let mut bytes_scratch = Vec::new();
    for rs in &request.resource_spans {
        let resource_attrs: &[KeyValue<'_>] = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service_name = resource_attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.string_value.as_deref())
            .unwrap_or(traces::UNKNOWN_SERVICE);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref();
            for span in &ss.spans {
                let mut fields = traces::empty_fields();
                fields.service_name = service_name;
                fields.scope_name = scope.map(|s| s.name.as_ref()).unwrap_or_default();
                fields.scope_version = scope.map(|s| s.version.as_ref()).unwrap_or_default();
                fields.trace_state = &span.trace_state;
                fields.name = &span.name;
                fields.kind = SpanKind::from_i32(span.kind as i32);
                if let Some(st) = &span.status {
                    fields.status_message = &st.message;
                    fields.status_code = st.code.clamp(0, 2) as i8;
                }
                let trace_id = hex_id(&span.trace_id);
                let span_id = hex_id(&span.span_id);
                let parent = hex_id(&span.parent_span_id);
                let raw = RawSpanIds {
                    trace_id: &trace_id,
                    span_id: &span_id,
                    parent_span_id: &parent,
                    start: clamp_u64(span.start_time_unix_nano),
                    end: clamp_u64(span.end_time_unix_nano),
                };
                if let Err(r) = traces::validate(&raw, &mut fields) {
                    rejections.add(r);
                    continue;
                }
                out.begin_span(&fields);
                for kv in resource_attrs {
                    let v = attr_value(kv.value.as_ref(), &mut scratch, &mut bytes_scratch)?;
                    out.push_resource_attribute(&kv.key, v);
                }
                let mut dedicated = DedicatedAttributes::default();
                for kv in &span.attributes {
                    if let Some(AnyValue {
                        string_value: Some(s),
                        ..
                    }) = &kv.value
                    {
                        dedicated.observe(&kv.key, AttrValue::Str(s));
                    } else if let Some(AnyValue {
                        int_value: Some(i), ..
                    }) = &kv.value
                    {
                        dedicated.observe(&kv.key, AttrValue::Int(*i as i64));
                    }
                    let v = attr_value(kv.value.as_ref(), &mut scratch, &mut bytes_scratch)?;
                    out.push_attribute(&kv.key, v);
                }
                for e in &span.events {
                    out.begin_event(clamp_u64(e.time_unix_nano), &e.name);
                    for kv in &e.attributes {
                        let v = attr_value(kv.value.as_ref(), &mut scratch, &mut bytes_scratch)?;
                        out.push_event_attribute(&kv.key, v);
                    }
                }
                for l in &span.links {
                    let tid: [u8; 16] = hex_id(&l.trace_id)
                        .try_into()
                        .map_err(|_| "link traceId is not 32 hex digits".to_string())?;
                    let sid: [u8; 8] = hex_id(&l.span_id)
                        .try_into()
                        .map_err(|_| "link spanId is not 16 hex digits".to_string())?;
                    out.begin_link(tid, sid, &l.trace_state);
                    for kv in &l.attributes {
                        let v = attr_value(kv.value.as_ref(), &mut scratch, &mut bytes_scratch)?;
                        out.push_link_attribute(&kv.key, v);
                    }
                }
                out.finish_span(&dedicated);
            }
        }
    }
    Ok(rejections)
}

fn clamp_u64(v: i128) -> u64 {
    v.clamp(0, u64::MAX as i128) as u64
}

/// Hex to bytes; anything that is not even-length hex yields an empty id (rejected as such).
fn hex_id(s: &str) -> Vec<u8> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return Vec::new();
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default()
}

fn attr_value<'s>(
    v: Option<&'s AnyValue<'_>>,
    scratch: &'s mut String,
    bytes_scratch: &'s mut Vec<u8>,
) -> Result<AttrValue<'s>, String> {
    let Some(v) = v else {
        return Ok(AttrValue::Empty);
    };
    Ok(if let Some(s) = &v.string_value {
        AttrValue::Str(s)
    } else if let Some(b) = v.bool_value {
        AttrValue::Bool(b)
    } else if let Some(i) = v.int_value {
        AttrValue::Int(i64::try_from(i).map_err(|_| format!("intValue {i} out of range"))?)
    } else if let Some(d) = v.double_value {
        AttrValue::Double(d)
    } else if let Some(b) = &v.bytes_value {
        *bytes_scratch = base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|e| format!("bytesValue is not base64: {e}"))?;
        AttrValue::Bytes(bytes_scratch)
    } else if v.array_value.is_some() || v.kvlist_value.is_some() {
        scratch.clear();
        render_json(v, scratch, 0)?;
        AttrValue::Json(scratch)
    } else {
        AttrValue::Empty
    })
}

const MAX_DEPTH: usize = 32;

fn render_json(v: &AnyValue<'_>, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("attribute value nested deeper than {MAX_DEPTH}"));
    }
    if let Some(s) = &v.string_value {
        push_json_string(out, s);
    } else if let Some(b) = v.bool_value {
        out.push_str(if b { "true" } else { "false" });
    } else if let Some(i) = v.int_value {
        out.push_str(&i.to_string());
    } else if let Some(d) = v.double_value {
        push_json_double(out, d);
    } else if let Some(b) = &v.bytes_value {
        push_json_string(out, b);
    } else if let Some(a) = &v.array_value {
        out.push('[');
        for (i, e) in a.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            render_json(e, out, depth + 1)?;
        }
        out.push(']');
    } else if let Some(kv) = &v.kvlist_value {
        out.push('{');
        for (i, e) in kv.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, &e.key);
            out.push(':');
            match &e.value {
                Some(v) => render_json(v, out, depth + 1)?,
                None => out.push_str("null"),
            }
        }
        out.push('}');
    } else {
        out.push_str("null");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_timestamps_keep_every_digit_as_number_or_string() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "integer")]
            a: i128,
            #[serde(deserialize_with = "integer")]
            b: i128,
        }
        let t: T =
            serde_json::from_str(r#"{"a":1700000000123456789,"b":"1700000000123456789"}"#).unwrap();
        assert_eq!(t.a, 1_700_000_000_123_456_789);
        assert_eq!(t.b, 1_700_000_000_123_456_789);
    }

    #[test]
    fn hex_ids_accept_both_cases_and_reject_junk() {
        assert_eq!(hex_id("0aFF"), vec![0x0a, 0xff]);
        assert!(hex_id("0g").is_empty());
        assert!(hex_id("abc").is_empty());
    }
}

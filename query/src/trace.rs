//! Trace by id: the spans of traces read back from the `spans` table as [`SpanRecord`]s — typed,
//! so each API renders them in its own shape (the native JSON of docs/api.md here; Zipkin's,
//! Jaeger's and Tempo's in their modules).

use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array,
    Int8Array, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit, Expr};
use serde_json::{json, Map, Value};

use crate::columns;
use crate::engine::QueryEngine;
use crate::error::QueryError;

/// Parses a 32-hex-digit trace id (a shorter one is left-padded with zeros, as Zipkin and Jaeger
/// ids of 16 digits are).
pub fn parse_trace_id(s: &str) -> Result<[u8; 16], QueryError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::BadQuery(format!(
            "trace id {s:?} is not 1 to 32 hex digits"
        )));
    }
    let padded = format!("{s:0>32}");
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16)
            .map_err(|e| QueryError::BadQuery(e.to_string()))?;
    }
    Ok(id)
}

/// An attribute value as stored: arrays and key-value lists are kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Json(Value),
}

impl AttrValue {
    /// The value in its own JSON type; bytes as hex.
    pub fn to_json(&self) -> Value {
        match self {
            AttrValue::Str(s) => Value::String(s.clone()),
            AttrValue::Int(i) => json!(i),
            AttrValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(d.to_string())),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Bytes(b) => Value::String(columns::hex(b)),
            AttrValue::Json(v) => v.clone(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub type Attributes = Vec<(String, AttrValue)>;

pub fn attribute<'a>(attributes: &'a Attributes, key: &str) -> Option<&'a AttrValue> {
    attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub time_unix_nano: i64,
    pub name: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_state: Option<String>,
    pub attributes: Attributes,
}

/// One stored span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub service: String,
    pub name: String,
    /// OTLP's numbering: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i8,
    pub start_unix_nano: i64,
    pub duration_nano: i64,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i8,
    pub status_message: Option<String>,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub resource: Attributes,
    pub attributes: Attributes,
    pub events: Vec<EventRecord>,
    pub links: Vec<LinkRecord>,
    /// Load-test (shadow) traffic.
    pub load_test: bool,
}

fn id_literal(id: &[u8; 16]) -> Expr {
    lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))
}

/// The spans of some traces, each trace's spans in start order.
pub async fn records_of_traces(
    engine: &QueryEngine,
    ids: &[[u8; 16]],
) -> Result<Vec<SpanRecord>, QueryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let filter = match ids {
        [one] => col("trace_id").eq(id_literal(one)),
        many => col("trace_id").in_list(many.iter().map(id_literal).collect(), false),
    };
    let df = engine
        .context()
        .table("spans")
        .await?
        .filter(filter)?
        .sort(vec![
            col("trace_id").sort(true, false),
            col("start_time").sort(true, false),
        ])?;
    let mut spans = Vec::new();
    for b in &df.collect().await? {
        spans.extend(records(b)?);
    }
    Ok(spans)
}

/// The spans of a trace as the API's native JSON, ordered by start time; `None` when no span has
/// that id.
pub async fn trace_by_id(engine: &QueryEngine, id: [u8; 16]) -> Result<Option<Value>, QueryError> {
    let spans: Vec<Value> = records_of_traces(engine, &[id])
        .await?
        .iter()
        .map(native_json)
        .collect();
    if spans.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        json!({ "trace_id": columns::hex(&id), "spans": spans }),
    ))
}

fn attributes_json(attributes: &Attributes) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<Map<String, Value>>(),
    )
}

fn status_name(c: i8) -> &'static str {
    match c {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// A span as the API's native JSON (docs/api.md).
pub fn native_json(s: &SpanRecord) -> Value {
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            json!({
                "time_unix_nano": e.time_unix_nano,
                "name": e.name,
                "attributes": attributes_json(&e.attributes),
            })
        })
        .collect();
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": columns::hex(&l.trace_id),
                "span_id": columns::hex(&l.span_id),
                "attributes": attributes_json(&l.attributes),
            })
        })
        .collect();
    json!({
        "trace_id": columns::hex(&s.trace_id),
        "span_id": columns::hex(&s.span_id),
        "parent_span_id": s.parent_span_id.map(|p| columns::hex(&p)),
        "service": s.service,
        "name": s.name,
        "kind": crate::catalog::span_kind_name(s.kind),
        "start_unix_nano": s.start_unix_nano,
        "duration_nano": s.duration_nano,
        "status_code": status_name(s.status_code),
        "status_message": s.status_message,
        "attributes": attributes_json(&s.attributes),
        "resource": attributes_json(&s.resource),
        "events": events,
        "links": links,
        "load_test": s.load_test,
    })
}

/// A map of typed attribute values; arrays and key-value lists (stored as JSON text) are parsed
/// back.
fn attributes(map: &MapArray, row: usize) -> Attributes {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let Some(values) = entries.column(1).as_any().downcast_ref::<StructArray>() else {
        return Vec::new();
    };
    let s = values.column(0).as_string::<i32>();
    let i = values.column(1).as_any().downcast_ref::<Int64Array>();
    let d = values.column(2).as_any().downcast_ref::<Float64Array>();
    let bo = values.column(3).as_any().downcast_ref::<BooleanArray>();
    let by = values.column(4).as_any().downcast_ref::<BinaryArray>();
    let j = values.column(5).as_string::<i32>();
    let mut out = Vec::with_capacity(entries.len());
    for r in 0..entries.len() {
        let v = if !s.is_null(r) {
            AttrValue::Str(s.value(r).to_string())
        } else if let Some(i) = i.filter(|a| !a.is_null(r)) {
            AttrValue::Int(i.value(r))
        } else if let Some(d) = d.filter(|a| !a.is_null(r)) {
            AttrValue::Double(d.value(r))
        } else if let Some(b) = bo.filter(|a| !a.is_null(r)) {
            AttrValue::Bool(b.value(r))
        } else if let Some(b) = by.filter(|a| !a.is_null(r)) {
            AttrValue::Bytes(b.value(r).to_vec())
        } else if !j.is_null(r) {
            AttrValue::Json(serde_json::from_str(j.value(r)).unwrap_or(Value::Null))
        } else {
            AttrValue::Json(Value::Null)
        };
        out.push((keys.value(r).to_string(), v));
    }
    out
}

fn fixed<const N: usize>(a: &FixedSizeBinaryArray, row: usize) -> [u8; N] {
    let mut id = [0u8; N];
    let v = a.value(row);
    let n = v.len().min(N);
    id[..n].copy_from_slice(&v[..n]);
    id
}

fn records(b: &RecordBatch) -> Result<Vec<SpanRecord>, QueryError> {
    let trace = columns::typed::<FixedSizeBinaryArray>(b, "trace_id")?;
    let span = columns::typed::<FixedSizeBinaryArray>(b, "span_id")?;
    let parent = columns::typed::<FixedSizeBinaryArray>(b, "parent_span_id")?;
    let trace_state = columns::strings(b, "trace_state")?;
    let service = columns::strings(b, "service_name")?;
    let name = columns::strings(b, "span_name")?;
    let kind = columns::typed::<Int8Array>(b, "span_kind")?;
    let start = columns::typed::<TimestampNanosecondArray>(b, "start_time")?;
    let duration = columns::typed::<Int64Array>(b, "duration_nano")?;
    let status = columns::typed::<Int8Array>(b, "status_code")?;
    let message = columns::typed::<StringArray>(b, "status_message")?;
    let scope_name = columns::strings(b, "scope_name")?;
    let scope_version = columns::strings(b, "scope_version")?;
    let resource = columns::typed::<MapArray>(b, "resource_attributes")?;
    let attrs = columns::typed::<MapArray>(b, "attributes")?;
    let events = columns::typed::<ListArray>(b, "events")?;
    let links = columns::typed::<ListArray>(b, "links")?;
    let load_test = columns::typed::<BooleanArray>(b, "load_test")?;
    let mut out = Vec::with_capacity(b.num_rows());
    for row in 0..b.num_rows() {
        let ev = events.value(row);
        let ev = ev
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| QueryError::Execution("events are not structs".into()))?;
        let ev_time = ev
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>();
        let ev_name = ev.column(1).as_string::<i32>();
        let ev_attrs = ev.column(2).as_any().downcast_ref::<MapArray>();
        let events = (0..ev.len())
            .map(|e| EventRecord {
                time_unix_nano: ev_time.map_or(0, |t| t.value(e)),
                name: ev_name.value(e).to_string(),
                attributes: ev_attrs.map(|m| attributes(m, e)).unwrap_or_default(),
            })
            .collect();
        let lk = links.value(row);
        let lk = lk
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| QueryError::Execution("links are not structs".into()))?;
        let lk_trace = lk.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>();
        let lk_span = lk.column(1).as_any().downcast_ref::<FixedSizeBinaryArray>();
        let lk_state = lk.column(2).as_string_opt::<i32>();
        let lk_attrs = lk.column(3).as_any().downcast_ref::<MapArray>();
        let links = (0..lk.len())
            .map(|l| LinkRecord {
                trace_id: lk_trace.map_or([0; 16], |a| fixed(a, l)),
                span_id: lk_span.map_or([0; 8], |a| fixed(a, l)),
                trace_state: lk_state.and_then(|a| columns::opt_string(a, l)),
                attributes: lk_attrs.map(|m| attributes(m, l)).unwrap_or_default(),
            })
            .collect();
        out.push(SpanRecord {
            trace_id: fixed(trace, row),
            span_id: fixed(span, row),
            parent_span_id: (!parent.is_null(row)).then(|| fixed(parent, row)),
            trace_state: columns::opt_string(&trace_state, row).filter(|s| !s.is_empty()),
            service: service.value(row).to_string(),
            name: name.value(row).to_string(),
            kind: kind.value(row),
            start_unix_nano: start.value(row),
            duration_nano: duration.value(row),
            status_code: status.value(row),
            status_message: columns::opt_string(message, row),
            scope_name: columns::opt_string(&scope_name, row).filter(|s| !s.is_empty()),
            scope_version: columns::opt_string(&scope_version, row).filter(|s| !s.is_empty()),
            resource: attributes(resource, row),
            attributes: attributes(attrs, row),
            events,
            links,
            load_test: load_test.is_valid(row) && load_test.value(row),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_and_pad() {
        assert_eq!(
            parse_trace_id("0102030405060708090a0b0c0d0e0f10").unwrap()[15],
            0x10
        );
        let short = parse_trace_id("00000000000000ff").unwrap();
        assert_eq!(short[15], 0xff);
        assert_eq!(short[0], 0);
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"a".repeat(33)).is_err());
    }
}

//! Trace by id: the spans of one trace as the API's JSON (docs/api.md).

use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array,
    Int8Array, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
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

/// The spans of a trace, ordered by start time; `None` when no span has that id.
pub async fn trace_by_id(engine: &QueryEngine, id: [u8; 16]) -> Result<Option<Value>, QueryError> {
    let df = engine
        .context()
        .table("spans")
        .await?
        .filter(col("trace_id").eq(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))))?
        .sort(vec![col("start_time").sort(true, false)])?;
    let batches = df.collect().await?;
    let mut spans = Vec::new();
    for b in &batches {
        spans.extend(spans_json(b)?);
    }
    if spans.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        json!({ "trace_id": columns::hex(&id), "spans": spans }),
    ))
}

/// The spans of some traces, as the API's JSON, each trace's spans in start order: what the
/// Zipkin, Jaeger and Tempo APIs render in their own shapes.
pub async fn spans_of_traces(
    engine: &QueryEngine,
    ids: &[[u8; 16]],
) -> Result<Vec<Value>, QueryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))))
        .collect();
    let df = engine
        .context()
        .table("spans")
        .await?
        .filter(col("trace_id").in_list(list, false))?
        .sort(vec![
            col("trace_id").sort(true, false),
            col("start_time").sort(true, false),
        ])?;
    let mut spans = Vec::new();
    for b in &df.collect().await? {
        spans.extend(spans_json(b)?);
    }
    Ok(spans)
}

fn opt_str(a: &StringArray, i: usize) -> Value {
    columns::opt_string(a, i).map_or(Value::Null, Value::String)
}

/// A map of typed attribute values as a JSON object, each value in its own JSON type; arrays and
/// key-value lists (stored as JSON text) are parsed back; bytes become base64-free hex.
fn attributes(map: &MapArray, row: usize) -> Value {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_any().downcast_ref::<StructArray>();
    let mut out = Map::new();
    let Some(values) = values else {
        return Value::Object(out);
    };
    let s = values.column(0).as_string::<i32>();
    let i = values.column(1).as_any().downcast_ref::<Int64Array>();
    let d = values.column(2).as_any().downcast_ref::<Float64Array>();
    let bo = values.column(3).as_any().downcast_ref::<BooleanArray>();
    let by = values.column(4).as_any().downcast_ref::<BinaryArray>();
    let j = values.column(5).as_string::<i32>();
    for r in 0..entries.len() {
        let v = if !s.is_null(r) {
            Value::String(s.value(r).to_string())
        } else if let Some(i) = i.filter(|a| !a.is_null(r)) {
            json!(i.value(r))
        } else if let Some(d) = d.filter(|a| !a.is_null(r)) {
            serde_json::Number::from_f64(d.value(r))
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(d.value(r).to_string()))
        } else if let Some(b) = bo.filter(|a| !a.is_null(r)) {
            Value::Bool(b.value(r))
        } else if let Some(b) = by.filter(|a| !a.is_null(r)) {
            Value::String(columns::hex(b.value(r)))
        } else if !j.is_null(r) {
            serde_json::from_str(j.value(r)).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        out.insert(keys.value(r).to_string(), v);
    }
    Value::Object(out)
}

fn status_name(c: i8) -> &'static str {
    match c {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn spans_json(b: &RecordBatch) -> Result<Vec<Value>, QueryError> {
    let trace = columns::typed::<FixedSizeBinaryArray>(b, "trace_id")?;
    let span = columns::typed::<FixedSizeBinaryArray>(b, "span_id")?;
    let parent = columns::typed::<FixedSizeBinaryArray>(b, "parent_span_id")?;
    let service = columns::strings(b, "service_name")?;
    let name = columns::strings(b, "span_name")?;
    let kind = columns::typed::<Int8Array>(b, "span_kind")?;
    let start = columns::typed::<TimestampNanosecondArray>(b, "start_time")?;
    let duration = columns::typed::<Int64Array>(b, "duration_nano")?;
    let status = columns::typed::<Int8Array>(b, "status_code")?;
    let message = columns::typed::<StringArray>(b, "status_message")?;
    let resource = columns::typed::<MapArray>(b, "resource_attributes")?;
    let attrs = columns::typed::<MapArray>(b, "attributes")?;
    let events = columns::typed::<ListArray>(b, "events")?;
    let links = columns::typed::<ListArray>(b, "links")?;
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
        let events_json: Vec<Value> = (0..ev.len())
            .map(|e| {
                json!({
                    "time_unix_nano": ev_time.map(|t| t.value(e)),
                    "name": ev_name.value(e),
                    "attributes": ev_attrs.map(|m| attributes(m, e)).unwrap_or(Value::Null),
                })
            })
            .collect();
        let lk = links.value(row);
        let lk = lk
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| QueryError::Execution("links are not structs".into()))?;
        let lk_trace = lk.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>();
        let lk_span = lk.column(1).as_any().downcast_ref::<FixedSizeBinaryArray>();
        let lk_attrs = lk.column(3).as_any().downcast_ref::<MapArray>();
        let links_json: Vec<Value> = (0..lk.len())
            .map(|l| {
                json!({
                    "trace_id": lk_trace.map(|a| columns::hex(a.value(l))),
                    "span_id": lk_span.map(|a| columns::hex(a.value(l))),
                    "attributes": lk_attrs.map(|m| attributes(m, l)).unwrap_or(Value::Null),
                })
            })
            .collect();
        out.push(json!({
            "trace_id": columns::hex(trace.value(row)),
            "span_id": columns::hex(span.value(row)),
            "parent_span_id": if parent.is_null(row) { Value::Null } else { Value::String(columns::hex(parent.value(row))) },
            "service": service.value(row),
            "name": name.value(row),
            "kind": crate::catalog::span_kind_name(kind.value(row)),
            "start_unix_nano": start.value(row),
            "duration_nano": duration.value(row),
            "status_code": status_name(status.value(row)),
            "status_message": opt_str(message, row),
            "attributes": attributes(attrs, row),
            "resource": attributes(resource, row),
            "events": events_json,
            "links": links_json,
        }));
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

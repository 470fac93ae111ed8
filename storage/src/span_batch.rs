//! Builds span record batches column by column. Receivers decode their wire format straight into
//! a [`SpanBatchBuilder`]: a span costs appends to column buffers, never an object of its own.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder,
    Int32Builder, Int64Builder, Int8Builder, ListArray, MapArray, RecordBatch, StringBuilder,
    StringDictionaryBuilder, StructArray, TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;

use crate::schema::{self, col, SpanKind};

/// One attribute value as a receiver sees it, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    /// Arrays and key-value lists, rendered as JSON by the receiver.
    Json(&'a str),
    Empty,
}

/// The scalar fields of one span.
#[derive(Debug, Clone, Copy)]
pub struct SpanFields<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: &'a str,
    pub service_name: &'a str,
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status_code: i8,
    pub status_message: &'a str,
    pub scope_name: &'a str,
    pub scope_version: &'a str,
}

/// Builds a map column of attributes (`key` → typed value), one map per row.
pub struct AttributesBuilder {
    offsets: Vec<i32>,
    keys: StringBuilder,
    str: StringBuilder,
    int: Int64Builder,
    double: Float64Builder,
    bool: BooleanBuilder,
    bytes: BinaryBuilder,
    json: StringBuilder,
}

impl Default for AttributesBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// Bytes of string data reserved per item: typical keys and values are shorter.
const STR_BYTES: usize = 16;

impl AttributesBuilder {
    pub fn with_capacity(items: usize) -> Self {
        Self {
            offsets: vec![0],
            keys: StringBuilder::with_capacity(items, items * STR_BYTES),
            str: StringBuilder::with_capacity(items, items * STR_BYTES),
            int: Int64Builder::with_capacity(items),
            double: Float64Builder::with_capacity(items),
            bool: BooleanBuilder::with_capacity(items),
            bytes: BinaryBuilder::with_capacity(items, 0),
            json: StringBuilder::with_capacity(items, 0),
        }
    }

    pub fn push(&mut self, key: &str, value: AttrValue<'_>) {
        self.keys.append_value(key);
        let (mut s, mut i, mut d, mut b, mut by, mut j) = (None, None, None, None, None, None);
        match value {
            AttrValue::Str(v) => s = Some(v),
            AttrValue::Int(v) => i = Some(v),
            AttrValue::Double(v) => d = Some(v),
            AttrValue::Bool(v) => b = Some(v),
            AttrValue::Bytes(v) => by = Some(v),
            AttrValue::Json(v) => j = Some(v),
            AttrValue::Empty => {}
        }
        self.str.append_option(s);
        self.int.append_option(i);
        self.double.append_option(d);
        self.bool.append_option(b);
        self.bytes.append_option(by);
        self.json.append_option(j);
    }

    /// Closes the current map: what was pushed since the last call belongs to one row.
    pub fn finish_row(&mut self) {
        self.offsets.push(self.keys.len() as i32);
    }

    fn finish(&mut self) -> Result<MapArray, ArrowError> {
        let values = StructArray::try_new(
            schema::attribute_value_fields(),
            vec![
                Arc::new(self.str.finish()) as ArrayRef,
                Arc::new(self.int.finish()),
                Arc::new(self.double.finish()),
                Arc::new(self.bool.finish()),
                Arc::new(self.bytes.finish()),
                Arc::new(self.json.finish()),
            ],
            None,
        )?;
        let entries_field = schema::attribute_entries_field();
        let arrow::datatypes::DataType::Struct(entry_fields) = entries_field.data_type() else {
            unreachable!("attribute entries are a struct");
        };
        let entries = StructArray::try_new(
            entry_fields.clone(),
            vec![Arc::new(self.keys.finish()) as ArrayRef, Arc::new(values)],
            None,
        )?;
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.offsets, vec![0]).into());
        MapArray::try_new(entries_field, offsets, entries, None, false)
    }
}

struct EventsBuilder {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: AttributesBuilder,
}

struct LinksBuilder {
    offsets: Vec<i32>,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    attributes: AttributesBuilder,
}

impl EventsBuilder {
    fn with_capacity(items: usize) -> Self {
        Self {
            offsets: vec![0],
            time: TimestampNanosecondBuilder::with_capacity(items).with_timezone("UTC"),
            name: StringBuilder::with_capacity(items, items * STR_BYTES),
            attributes: AttributesBuilder::with_capacity(items * 2),
        }
    }
}

impl LinksBuilder {
    fn with_capacity(items: usize) -> Self {
        Self {
            offsets: vec![0],
            trace_id: FixedSizeBinaryBuilder::with_capacity(items, 16),
            span_id: FixedSizeBinaryBuilder::with_capacity(items, 8),
            trace_state: StringBuilder::with_capacity(items, 0),
            attributes: AttributesBuilder::with_capacity(items),
        }
    }
}

type DictBuilder = StringDictionaryBuilder<Int32Type>;

/// Attributes that dashboards filter on get columns of their own. Receivers feed every span
/// attribute through [`DedicatedAttributes::observe`] and hand the result to
/// [`SpanBatchBuilder::finish_span`].
#[derive(Debug, Default, Clone, Copy)]
pub struct DedicatedAttributes<'a> {
    pub http_method: Option<&'a str>,
    pub http_route: Option<&'a str>,
    pub http_status_code: Option<i32>,
    pub peer_service: Option<&'a str>,
    pub server_address: Option<&'a str>,
    pub db_system: Option<&'a str>,
    pub rpc_service: Option<&'a str>,
    pub rpc_method: Option<&'a str>,
    pub messaging_system: Option<&'a str>,
    pub messaging_destination: Option<&'a str>,
    pub load_test: bool,
}

/// Whether a span attribute marks load-test traffic: SOFATracer's business baggage `mark=T`
/// (which its Zipkin reporter sends as a tag, and `sightline-instrument` records on every span
/// of the request), or the `load.test=T` of SOFATracer's logs.
pub fn marks_load_test(key: &str, value: AttrValue<'_>) -> bool {
    match (key, value) {
        ("mark", AttrValue::Str(v)) => v == "T",
        ("load.test", AttrValue::Str(v)) => v == "T" || v == "true",
        ("load.test", AttrValue::Bool(v)) => v,
        _ => false,
    }
}

impl<'a> DedicatedAttributes<'a> {
    /// Takes both the current and the older semantic-convention names; the first seen wins.
    pub fn observe(&mut self, key: &str, value: AttrValue<'a>) {
        if marks_load_test(key, value) {
            self.load_test = true;
        }
        fn set<'a>(slot: &mut Option<&'a str>, value: AttrValue<'a>) {
            if let (None, AttrValue::Str(s)) = (&slot, value) {
                *slot = Some(s);
            }
        }
        let Some(column) = schema::dedicated_column(key) else {
            return;
        };
        match column {
            col::HTTP_METHOD => set(&mut self.http_method, value),
            col::HTTP_ROUTE => set(&mut self.http_route, value),
            col::HTTP_STATUS_CODE if self.http_status_code.is_none() => {
                self.http_status_code = match value {
                    AttrValue::Int(v) => i32::try_from(v).ok(),
                    AttrValue::Str(s) => s.trim().parse().ok(),
                    AttrValue::Double(d) if d.fract() == 0.0 => Some(d as i32),
                    _ => None,
                };
            }
            col::PEER_SERVICE => set(&mut self.peer_service, value),
            col::SERVER_ADDRESS => set(&mut self.server_address, value),
            col::DB_SYSTEM => set(&mut self.db_system, value),
            col::RPC_SERVICE => set(&mut self.rpc_service, value),
            col::RPC_METHOD => set(&mut self.rpc_method, value),
            col::MESSAGING_SYSTEM => set(&mut self.messaging_system, value),
            col::MESSAGING_DESTINATION => set(&mut self.messaging_destination, value),
            _ => {}
        }
    }
}

/// Column builders for one batch of spans.
///
/// A span is appended in this order: [`begin_span`](Self::begin_span) with its scalar fields,
/// then any number of resource attributes, attributes, events and links, then
/// [`finish_span`](Self::finish_span). A receiver validates a span before it begins it, so a
/// span is never half-written.
pub struct SpanBatchBuilder {
    rows: usize,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent_span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    service_name: DictBuilder,
    span_name: DictBuilder,
    span_kind: Int8Builder,
    start_time: TimestampNanosecondBuilder,
    duration_nano: Int64Builder,
    status_code: Int8Builder,
    status_message: StringBuilder,
    scope_name: DictBuilder,
    scope_version: DictBuilder,
    resource_attributes: AttributesBuilder,
    attributes: AttributesBuilder,
    events: EventsBuilder,
    links: LinksBuilder,
    http_method: DictBuilder,
    http_route: DictBuilder,
    http_status_code: Int32Builder,
    peer_service: DictBuilder,
    server_address: DictBuilder,
    db_system: DictBuilder,
    rpc_service: DictBuilder,
    rpc_method: DictBuilder,
    messaging_system: DictBuilder,
    messaging_destination: DictBuilder,
    load_test: BooleanBuilder,
}

impl Default for SpanBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A dictionary column: few distinct values, one key per span.
fn dict(spans: usize) -> DictBuilder {
    DictBuilder::with_capacity(spans, 16, 16 * STR_BYTES)
}

impl SpanBatchBuilder {
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// Sized for about `spans` spans, so a small request does not carry the buffers of a large
    /// one: the builders grow when needed, and a batch's memory counts against the budget.
    pub fn with_capacity(spans: usize) -> Self {
        let n = spans.max(1);
        Self {
            rows: 0,
            trace_id: FixedSizeBinaryBuilder::with_capacity(n, 16),
            span_id: FixedSizeBinaryBuilder::with_capacity(n, 8),
            parent_span_id: FixedSizeBinaryBuilder::with_capacity(n, 8),
            trace_state: StringBuilder::with_capacity(n, 0),
            service_name: dict(n),
            span_name: dict(n),
            span_kind: Int8Builder::with_capacity(n),
            start_time: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            duration_nano: Int64Builder::with_capacity(n),
            status_code: Int8Builder::with_capacity(n),
            status_message: StringBuilder::with_capacity(n, 0),
            scope_name: dict(n),
            scope_version: dict(n),
            resource_attributes: AttributesBuilder::with_capacity(n * 4),
            attributes: AttributesBuilder::with_capacity(n * 12),
            events: EventsBuilder::with_capacity(n / 8 + 1),
            links: LinksBuilder::with_capacity(n / 16 + 1),
            http_method: dict(n),
            http_route: dict(n),
            http_status_code: Int32Builder::with_capacity(n),
            peer_service: dict(n),
            server_address: dict(n),
            db_system: dict(n),
            rpc_service: dict(n),
            rpc_method: dict(n),
            messaging_system: dict(n),
            messaging_destination: dict(n),
            load_test: BooleanBuilder::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn begin_span(&mut self, s: &SpanFields<'_>) {
        // Fixed-size appends cannot fail: the slices have the builders' widths.
        let _ = self.trace_id.append_value(s.trace_id);
        let _ = self.span_id.append_value(s.span_id);
        match s.parent_span_id {
            Some(p) => {
                let _ = self.parent_span_id.append_value(p);
            }
            None => self.parent_span_id.append_null(),
        }
        self.trace_state.append_option(non_empty(s.trace_state));
        self.service_name.append_value(s.service_name);
        self.span_name.append_value(s.name);
        self.span_kind.append_value(s.kind as i8);
        self.start_time.append_value(s.start_unix_nano as i64);
        self.duration_nano
            .append_value(s.end_unix_nano.saturating_sub(s.start_unix_nano) as i64);
        self.status_code.append_value(s.status_code);
        self.status_message
            .append_option(non_empty(s.status_message));
        append_dict(&mut self.scope_name, non_empty(s.scope_name));
        append_dict(&mut self.scope_version, non_empty(s.scope_version));
    }

    pub fn push_resource_attribute(&mut self, key: &str, value: AttrValue<'_>) {
        self.resource_attributes.push(key, value);
    }

    pub fn push_attribute(&mut self, key: &str, value: AttrValue<'_>) {
        self.attributes.push(key, value);
    }

    /// Starts an event of the current span; its attributes follow through
    /// [`push_event_attribute`](Self::push_event_attribute).
    pub fn begin_event(&mut self, time_unix_nano: u64, name: &str) {
        if self.events.time.len() > 0 {
            self.events.attributes.finish_row();
        }
        self.events.time.append_value(time_unix_nano as i64);
        self.events.name.append_value(name);
    }

    pub fn push_event_attribute(&mut self, key: &str, value: AttrValue<'_>) {
        self.events.attributes.push(key, value);
    }

    pub fn begin_link(&mut self, trace_id: [u8; 16], span_id: [u8; 8], trace_state: &str) {
        if self.links.trace_id.len() > 0 {
            self.links.attributes.finish_row();
        }
        let _ = self.links.trace_id.append_value(trace_id);
        let _ = self.links.span_id.append_value(span_id);
        self.links.trace_state.append_option(non_empty(trace_state));
    }

    pub fn push_link_attribute(&mut self, key: &str, value: AttrValue<'_>) {
        self.links.attributes.push(key, value);
    }

    pub fn finish_span(&mut self, d: &DedicatedAttributes<'_>) {
        self.resource_attributes.finish_row();
        self.attributes.finish_row();
        self.events.offsets.push(self.events.time.len() as i32);
        self.links.offsets.push(self.links.trace_id.len() as i32);
        append_dict(&mut self.http_method, d.http_method);
        append_dict(&mut self.http_route, d.http_route);
        self.http_status_code.append_option(d.http_status_code);
        append_dict(&mut self.peer_service, d.peer_service);
        append_dict(&mut self.server_address, d.server_address);
        append_dict(&mut self.db_system, d.db_system);
        append_dict(&mut self.rpc_service, d.rpc_service);
        append_dict(&mut self.rpc_method, d.rpc_method);
        append_dict(&mut self.messaging_system, d.messaging_system);
        append_dict(&mut self.messaging_destination, d.messaging_destination);
        self.load_test.append_value(d.load_test);
        self.rows += 1;
    }

    /// Takes the rows built so far as a batch and leaves the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let events = {
            let e = &mut self.events;
            if e.time.len() > 0 {
                e.attributes.finish_row();
            }
            let structs = StructArray::try_new(
                schema::event_fields(),
                vec![
                    Arc::new(e.time.finish()) as ArrayRef,
                    Arc::new(e.name.finish()),
                    Arc::new(e.attributes.finish()?),
                ],
                None,
            )?;
            let offsets = OffsetBuffer::new(std::mem::replace(&mut e.offsets, vec![0]).into());
            ListArray::try_new(schema::event_item_field(), offsets, Arc::new(structs), None)?
        };
        let links = {
            let l = &mut self.links;
            if l.trace_id.len() > 0 {
                l.attributes.finish_row();
            }
            let structs = StructArray::try_new(
                schema::link_fields(),
                vec![
                    Arc::new(l.trace_id.finish()) as ArrayRef,
                    Arc::new(l.span_id.finish()),
                    Arc::new(l.trace_state.finish()),
                    Arc::new(l.attributes.finish()?),
                ],
                None,
            )?;
            let offsets = OffsetBuffer::new(std::mem::replace(&mut l.offsets, vec![0]).into());
            ListArray::try_new(schema::link_item_field(), offsets, Arc::new(structs), None)?
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.span_name.finish()),
            Arc::new(self.span_kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.duration_nano.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.resource_attributes.finish()?),
            Arc::new(self.attributes.finish()?),
            Arc::new(events),
            Arc::new(links),
            Arc::new(self.http_method.finish()),
            Arc::new(self.http_route.finish()),
            Arc::new(self.http_status_code.finish()),
            Arc::new(self.peer_service.finish()),
            Arc::new(self.server_address.finish()),
            Arc::new(self.db_system.finish()),
            Arc::new(self.rpc_service.finish()),
            Arc::new(self.rpc_method.finish()),
            Arc::new(self.messaging_system.finish()),
            Arc::new(self.messaging_destination.finish()),
            Arc::new(self.load_test.finish()),
        ];
        RecordBatch::try_new(schema::span_schema(), columns)
    }
}

fn append_dict(b: &mut DictBuilder, v: Option<&str>) {
    match v {
        Some(v) => {
            b.append_value(v);
        }
        None => b.append_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SpanKind;

    fn one_span(b: &mut SpanBatchBuilder) {
        b.begin_span(&SpanFields {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            trace_state: "",
            service_name: "svc",
            name: "op",
            kind: SpanKind::Server,
            start_unix_nano: 10,
            end_unix_nano: 20,
            status_code: 0,
            status_message: "",
            scope_name: "",
            scope_version: "",
        });
        b.push_attribute("http.route", AttrValue::Str("/a"));
        let mut d = DedicatedAttributes::default();
        d.observe("http.route", AttrValue::Str("/a"));
        d.observe("http.status_code", AttrValue::Str("404"));
        b.finish_span(&d);
    }

    #[test]
    fn a_small_request_makes_a_small_batch() {
        let mut b = SpanBatchBuilder::with_capacity(1);
        one_span(&mut b);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        // Memory counts against the ingest budget: one span must not cost a 1,024-row batch.
        assert!(
            batch.get_array_memory_size() < 64 << 10,
            "{}",
            batch.get_array_memory_size()
        );
    }

    #[test]
    fn builder_is_reusable_after_finish() {
        let mut b = SpanBatchBuilder::new();
        one_span(&mut b);
        one_span(&mut b);
        assert_eq!(b.finish().unwrap().num_rows(), 2);
        one_span(&mut b);
        let again = b.finish().unwrap();
        assert_eq!(again.num_rows(), 1);
        assert_eq!(again.schema(), crate::schema::span_schema());
    }
}

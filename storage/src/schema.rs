//! The one Arrow schema for spans, used by the WAL, the in-memory buffers, the Parquet files and
//! (later) the query engine. A change here is a change of the on-disk format.

use std::sync::{Arc, OnceLock};

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

/// Column names, so no other module spells them.
pub mod col {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const SERVICE_NAME: &str = "service_name";
    pub const SPAN_NAME: &str = "span_name";
    pub const SPAN_KIND: &str = "span_kind";
    pub const START_TIME: &str = "start_time";
    pub const DURATION_NANO: &str = "duration_nano";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    pub const ATTRIBUTES: &str = "attributes";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
    pub const HTTP_METHOD: &str = "http_method";
    pub const HTTP_ROUTE: &str = "http_route";
    pub const HTTP_STATUS_CODE: &str = "http_status_code";
    pub const PEER_SERVICE: &str = "peer_service";
    pub const SERVER_ADDRESS: &str = "server_address";
    pub const DB_SYSTEM: &str = "db_system";
    pub const RPC_SERVICE: &str = "rpc_service";
    pub const RPC_METHOD: &str = "rpc_method";
    pub const MESSAGING_SYSTEM: &str = "messaging_system";
    pub const MESSAGING_DESTINATION: &str = "messaging_destination";
    /// Load-test (shadow) traffic: SOFATracer's `mark=T` baggage (see
    /// [`crate::span_batch::marks_load_test`]).
    pub const LOAD_TEST: &str = "load_test";
}

/// The dedicated column that holds a span attribute, under its current or its older
/// semantic-convention name.
pub fn dedicated_column(key: &str) -> Option<&'static str> {
    Some(match key {
        "http.request.method" | "http.method" => col::HTTP_METHOD,
        "http.route" => col::HTTP_ROUTE,
        "http.response.status_code" | "http.status_code" => col::HTTP_STATUS_CODE,
        "peer.service" => col::PEER_SERVICE,
        "server.address" | "net.peer.name" => col::SERVER_ADDRESS,
        "db.system" | "db.system.name" => col::DB_SYSTEM,
        "rpc.service" => col::RPC_SERVICE,
        "rpc.method" => col::RPC_METHOD,
        "messaging.system" => col::MESSAGING_SYSTEM,
        "messaging.destination.name" | "messaging.destination" => col::MESSAGING_DESTINATION,
        _ => return None,
    })
}

/// Fields of one attribute value. Exactly one is set; arrays and key-value lists are kept as JSON
/// text in `json` (their elements keep their JSON types), an empty value has none set.
pub mod value_field {
    pub const STR: &str = "str";
    pub const INT: &str = "int";
    pub const DOUBLE: &str = "double";
    pub const BOOL: &str = "bool";
    pub const BYTES: &str = "bytes";
    pub const JSON: &str = "json";
}

/// OTLP span kinds, stored as their protocol numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    /// Unknown numbers become `Unspecified`, as the OTLP spec asks of receivers.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// OTLP status codes: 0 unset, 1 ok, 2 error.
pub const STATUS_ERROR: i8 = 2;

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub fn attribute_value_fields() -> Fields {
    Fields::from(vec![
        Field::new(value_field::STR, DataType::Utf8, true),
        Field::new(value_field::INT, DataType::Int64, true),
        Field::new(value_field::DOUBLE, DataType::Float64, true),
        Field::new(value_field::BOOL, DataType::Boolean, true),
        Field::new(value_field::BYTES, DataType::Binary, true),
        Field::new(value_field::JSON, DataType::Utf8, true),
    ])
}

/// The `entries` field of an attribute map: `key` → typed `value`.
pub fn attribute_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Struct(attribute_value_fields()), false),
        ])),
        false,
    ))
}

pub fn attributes_type() -> DataType {
    DataType::Map(attribute_entries_field(), false)
}

pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", attributes_type(), false),
    ])
}

pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", attributes_type(), false),
    ])
}

pub fn event_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(event_fields()), false))
}

pub fn link_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(link_fields()), false))
}

/// The span schema. Built once; every batch shares the same `Arc`.
pub fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
                Field::new(col::SPAN_ID, DataType::FixedSizeBinary(8), false),
                Field::new(col::PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true),
                Field::new(col::TRACE_STATE, DataType::Utf8, true),
                Field::new(col::SERVICE_NAME, dict_utf8(), false),
                Field::new(col::SPAN_NAME, dict_utf8(), false),
                Field::new(col::SPAN_KIND, DataType::Int8, false),
                Field::new(col::START_TIME, timestamp_type(), false),
                Field::new(col::DURATION_NANO, DataType::Int64, false),
                Field::new(col::STATUS_CODE, DataType::Int8, false),
                Field::new(col::STATUS_MESSAGE, DataType::Utf8, true),
                Field::new(col::SCOPE_NAME, dict_utf8(), true),
                Field::new(col::SCOPE_VERSION, dict_utf8(), true),
                Field::new(col::RESOURCE_ATTRIBUTES, attributes_type(), false),
                Field::new(col::ATTRIBUTES, attributes_type(), false),
                Field::new(col::EVENTS, DataType::List(event_item_field()), false),
                Field::new(col::LINKS, DataType::List(link_item_field()), false),
                Field::new(col::HTTP_METHOD, dict_utf8(), true),
                Field::new(col::HTTP_ROUTE, dict_utf8(), true),
                Field::new(col::HTTP_STATUS_CODE, DataType::Int32, true),
                Field::new(col::PEER_SERVICE, dict_utf8(), true),
                Field::new(col::SERVER_ADDRESS, dict_utf8(), true),
                Field::new(col::DB_SYSTEM, dict_utf8(), true),
                Field::new(col::RPC_SERVICE, dict_utf8(), true),
                Field::new(col::RPC_METHOD, dict_utf8(), true),
                Field::new(col::MESSAGING_SYSTEM, dict_utf8(), true),
                Field::new(col::MESSAGING_DESTINATION, dict_utf8(), true),
                // Nullable, and last: files and WAL records written before it read it as null
                // (not load test); see [`conform`].
                Field::new(col::LOAD_TEST, DataType::Boolean, true),
            ]))
        })
        .clone()
}

/// A batch written under an older version of a table's schema, in the current one: the columns
/// added since (nullable, by rule) are null. Batches already in it are returned as they are.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(ArrowError::SchemaError(format!(
                "column {} is missing and may not be null",
                field.name()
            ))),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

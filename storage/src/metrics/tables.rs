//! The metric tables: their Arrow schemas, Parquet layouts and specs.
//!
//! - `metric_series`: one row per series and hour partition it has samples in — its id, metric
//!   name and labels — so samples carry only the id, and a query of an hour finds the series of
//!   that hour in that hour's files.
//! - `metric_postings`: the inverted index of `metric_series` — one row per series, hour and
//!   label (the name too, as `__name__`), sorted by metric, label, value and series — so an
//!   equality matcher finds its series in a page or two of it instead of testing every
//!   series of the metric.
//! - `metric_samples`: (metric, series, timestamp, value), sorted by those, one row per sample.
//! - `metric_histograms`: native histograms, every field kept.
//! - `metric_exemplars`: exemplars with their series — how a metric leads to a trace.
//! - `metric_metadata`: type, unit and help per metric family, as of each hour.
//!
//! Samples are sorted by five-minute window, then metric name, then series, then time: a
//! series' samples of a window sit together (its id and the metric name cost nearly nothing once
//! run-length encoded; its timestamps are a near-constant step that delta encoding shrinks to a
//! few bits), a query for one metric reads only the pages whose statistics hold its name, and a
//! query of the last minutes only the pages of their windows.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::engine::{Effort, Merge, Source, TableSpec};
use crate::error::StorageError;

pub const SERIES_TABLE: &str = "metric_series";
pub const POSTINGS_TABLE: &str = "metric_postings";
pub const SAMPLES_TABLE: &str = "metric_samples";
pub const HISTOGRAMS_TABLE: &str = "metric_histograms";
pub const EXEMPLARS_TABLE: &str = "metric_exemplars";
pub const METADATA_TABLE: &str = "metric_metadata";

/// Column names of the metric tables, so no other module spells them.
pub mod col {
    pub const TIME: &str = "time";
    pub const TIMESTAMP: &str = "timestamp";
    pub const START_TIMESTAMP: &str = "start_timestamp";
    pub const SERIES_ID: &str = "series_id";
    pub const CHECK: &str = "check";
    pub const METRIC: &str = "metric";
    pub const LABELS: &str = "labels";
    pub const LABEL: &str = "label";
    pub const LABEL_VALUE: &str = "label_value";
    pub const VALUE: &str = "value";
    pub const COUNT: &str = "count";
    pub const SUM: &str = "sum";
    pub const SCHEMA: &str = "schema";
    pub const ZERO_THRESHOLD: &str = "zero_threshold";
    pub const ZERO_COUNT: &str = "zero_count";
    pub const NEGATIVE_SPANS: &str = "negative_spans";
    pub const NEGATIVE_BUCKETS: &str = "negative_buckets";
    pub const POSITIVE_SPANS: &str = "positive_spans";
    pub const POSITIVE_BUCKETS: &str = "positive_buckets";
    pub const CUSTOM_VALUES: &str = "custom_values";
    pub const RESET_HINT: &str = "reset_hint";
    pub const FLOAT: &str = "float";
    pub const TYPE: &str = "type";
    pub const UNIT: &str = "unit";
    pub const HELP: &str = "help";
}

pub fn millis_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A label: `{name, value}`.
pub fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ])
}

pub fn labels_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(label_fields()), false))
}

pub fn labels_type() -> DataType {
    DataType::List(labels_item_field())
}

pub fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("offset", DataType::Int32, false),
        Field::new("length", DataType::UInt32, false),
    ])
}

pub fn spans_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(span_fields()), false))
}

pub fn f64_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float64, false))
}

macro_rules! schema_fn {
    ($name:ident, $fields:expr) => {
        pub fn $name() -> SchemaRef {
            static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
            SCHEMA
                .get_or_init(|| Arc::new(Schema::new($fields)))
                .clone()
        }
    };
}

schema_fn!(
    series_schema,
    vec![
        Field::new(col::TIME, millis_type(), false),
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::SERIES_ID, DataType::UInt64, false),
        Field::new(col::CHECK, DataType::UInt32, false),
        Field::new(col::LABELS, labels_type(), false),
    ]
);

schema_fn!(
    postings_schema,
    vec![
        Field::new(col::TIME, millis_type(), false),
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::LABEL, dict_utf8(), false),
        Field::new(col::LABEL_VALUE, DataType::Utf8, false),
        Field::new(col::SERIES_ID, DataType::UInt64, false),
    ]
);

schema_fn!(
    samples_schema,
    vec![
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::SERIES_ID, DataType::UInt64, false),
        Field::new(col::TIMESTAMP, millis_type(), false),
        Field::new(col::VALUE, DataType::Float64, false),
        Field::new(col::START_TIMESTAMP, millis_type(), true),
    ]
);

schema_fn!(
    histograms_schema,
    vec![
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::SERIES_ID, DataType::UInt64, false),
        Field::new(col::TIMESTAMP, millis_type(), false),
        Field::new(col::START_TIMESTAMP, millis_type(), true),
        Field::new(col::COUNT, DataType::Float64, false),
        Field::new(col::SUM, DataType::Float64, false),
        Field::new(col::SCHEMA, DataType::Int32, false),
        Field::new(col::ZERO_THRESHOLD, DataType::Float64, false),
        Field::new(col::ZERO_COUNT, DataType::Float64, false),
        Field::new(
            col::NEGATIVE_SPANS,
            DataType::List(spans_item_field()),
            false
        ),
        Field::new(
            col::NEGATIVE_BUCKETS,
            DataType::List(f64_item_field()),
            false
        ),
        Field::new(
            col::POSITIVE_SPANS,
            DataType::List(spans_item_field()),
            false
        ),
        Field::new(
            col::POSITIVE_BUCKETS,
            DataType::List(f64_item_field()),
            false
        ),
        Field::new(col::CUSTOM_VALUES, DataType::List(f64_item_field()), false),
        Field::new(col::RESET_HINT, DataType::Int8, false),
        Field::new(col::FLOAT, DataType::Boolean, false),
    ]
);

schema_fn!(
    exemplars_schema,
    vec![
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::SERIES_ID, DataType::UInt64, false),
        Field::new(col::TIMESTAMP, millis_type(), false),
        Field::new(col::VALUE, DataType::Float64, false),
        Field::new(col::LABELS, labels_type(), false),
    ]
);

schema_fn!(
    metadata_schema,
    vec![
        Field::new(col::TIME, millis_type(), false),
        Field::new(col::METRIC, dict_utf8(), false),
        Field::new(col::TYPE, dict_utf8(), false),
        Field::new(col::UNIT, DataType::Utf8, false),
        Field::new(col::HELP, DataType::Utf8, false),
    ]
);

fn zstd(effort: Effort) -> Result<Compression, StorageError> {
    let level = match effort {
        Effort::Flush => 1,
        Effort::Compaction => 9,
    };
    Ok(Compression::ZSTD(ZstdLevel::try_new(level)?))
}

fn base(effort: Effort) -> Result<WriterPropertiesBuilder, StorageError> {
    Ok(WriterProperties::builder()
        .set_compression(zstd(effort)?)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(1 << 20)))
}

/// Sorted ids and times are delta-encoded; values are split by byte so that zstd finds the
/// slowly changing exponent and high mantissa bytes of a series' values together.
fn with_sample_encodings(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    let mut b = b;
    for (column, encoding) in [
        (col::SERIES_ID, Encoding::DELTA_BINARY_PACKED),
        (col::TIMESTAMP, Encoding::DELTA_BINARY_PACKED),
        (col::START_TIMESTAMP, Encoding::DELTA_BINARY_PACKED),
        (col::VALUE, Encoding::BYTE_STREAM_SPLIT),
    ] {
        let path = ColumnPath::from(column);
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, encoding);
    }
    b
}

fn samples_properties(_rows: usize, effort: Effort) -> Result<WriterProperties, StorageError> {
    Ok(with_sample_encodings(base(effort)?).build())
}

fn small_table_properties(_rows: usize, effort: Effort) -> Result<WriterProperties, StorageError> {
    Ok(base(effort)?.build())
}

/// Columns of the series and postings tables whose values are nearly all distinct — series ids,
/// checks, label values like pod names — are stored without a dictionary: it would hold every
/// value anyway, and a lookup of one series would decode each column chunk's megabyte
/// dictionary page to read a row of it.
fn without_dictionary(b: WriterPropertiesBuilder, columns: &[&[&str]]) -> WriterPropertiesBuilder {
    columns.iter().fold(b, |b, path| {
        let path = ColumnPath::new(path.iter().map(|p| p.to_string()).collect());
        b.set_column_dictionary_enabled(path, false)
    })
}

/// See [`LOOKUP_PAGE_ROWS`].
fn lookup_table(effort: Effort) -> Result<WriterPropertiesBuilder, StorageError> {
    Ok(base(effort)?
        .set_compression(Compression::LZ4_RAW)
        .set_data_page_row_count_limit(LOOKUP_PAGE_ROWS))
}

fn series_properties(_rows: usize, effort: Effort) -> Result<WriterProperties, StorageError> {
    // Ids are sorted within a metric: their deltas take fewer bits than the ids.
    let b = lookup_table(effort)?.set_column_encoding(
        ColumnPath::from(col::SERIES_ID),
        Encoding::DELTA_BINARY_PACKED,
    );
    Ok(without_dictionary(
        b,
        &[
            &[col::SERIES_ID],
            &[col::CHECK],
            &[col::LABELS, "list", "item", "value"],
        ],
    )
    .build())
}

fn postings_properties(_rows: usize, effort: Effort) -> Result<WriterProperties, StorageError> {
    Ok(without_dictionary(
        lookup_table(effort)?,
        &[&[col::SERIES_ID], &[col::LABEL_VALUE]],
    )
    .build())
}

/// The series and postings tables are read by lookups of a few series: each decodes and
/// decompresses a page of every column it reads, and sets up a decompressor per column chunk.
/// Their pages are kept short, and compressed with LZ4, whose decompressor costs nothing to set
/// up and is several times faster than zstd's (zstd's setup alone was a fifth of a one-series
/// lookup); they are a small part of a store.
const LOOKUP_PAGE_ROWS: usize = 4096;

fn spec(
    name: &'static str,
    schema: SchemaRef,
    time_column: &'static str,
    sort_key: Vec<&'static str>,
    unique: usize,
    properties: fn(usize, Effort) -> Result<WriterProperties, StorageError>,
    target_rows: Option<u64>,
) -> TableSpec {
    TableSpec {
        name,
        schema,
        time_column,
        sort_key,
        sort_window_nanos: None,
        merge: Merge::Dedup { unique },
        source: Source::Logged,
        properties,
        compaction_target_rows: target_rows,
    }
}

/// Samples sort by five-minute window first, then by metric, series and time: an instant query
/// (a five-minute lookback or `rate(x[5m])`) reads two windows of an hour's twelve, while a
/// series' samples still sit together within each window for the encodings above.
const SAMPLE_WINDOW_NANOS: i64 = 5 * 60 * 1_000_000_000;

/// Rows per sample file compaction aims for: an hour of a million series at a 15 s interval is
/// 240 million samples; files of 64 million keep a merge's output in reach of one pass.
const SAMPLE_FILE_ROWS: u64 = 64 << 20;

/// The specs of every metric table.
pub fn metric_tables() -> Vec<TableSpec> {
    vec![
        spec(
            SERIES_TABLE,
            series_schema(),
            col::TIME,
            vec![col::METRIC, col::SERIES_ID],
            2,
            series_properties,
            Some(SAMPLE_FILE_ROWS),
        ),
        spec(
            POSTINGS_TABLE,
            postings_schema(),
            col::TIME,
            vec![col::METRIC, col::LABEL, col::LABEL_VALUE, col::SERIES_ID],
            4,
            postings_properties,
            Some(SAMPLE_FILE_ROWS),
        ),
        TableSpec {
            sort_window_nanos: Some(SAMPLE_WINDOW_NANOS),
            ..spec(
                SAMPLES_TABLE,
                samples_schema(),
                col::TIMESTAMP,
                vec![col::METRIC, col::SERIES_ID, col::TIMESTAMP],
                3,
                samples_properties,
                Some(SAMPLE_FILE_ROWS),
            )
        },
        TableSpec {
            sort_window_nanos: Some(SAMPLE_WINDOW_NANOS),
            ..spec(
                HISTOGRAMS_TABLE,
                histograms_schema(),
                col::TIMESTAMP,
                vec![col::METRIC, col::SERIES_ID, col::TIMESTAMP],
                3,
                samples_properties,
                Some(SAMPLE_FILE_ROWS / 16),
            )
        },
        spec(
            EXEMPLARS_TABLE,
            exemplars_schema(),
            col::TIMESTAMP,
            vec![col::METRIC, col::SERIES_ID, col::TIMESTAMP],
            3,
            small_table_properties,
            None,
        ),
        spec(
            METADATA_TABLE,
            metadata_schema(),
            col::TIME,
            vec![col::METRIC, col::TYPE, col::UNIT, col::HELP, col::TIME],
            4,
            small_table_properties,
            None,
        ),
    ]
}

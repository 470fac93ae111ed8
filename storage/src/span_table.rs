//! The `spans` table: rows sorted by (service, trace id, start) so that service and trace-id
//! filters prune row groups by their statistics, plus a bloom filter on `trace_id` for lookups
//! by id.

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::engine::{Effort, Merge, Source, TableSpec};
use crate::error::StorageError;
use crate::schema::{col, span_schema};

pub const SPANS_TABLE: &str = "spans";
/// Rows per row group: small enough that a service or trace-id range prunes most of a file.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per data page: a lookup by trace id decompresses only the pages holding its spans, so
/// pages of nested columns (attributes, events) must not span a whole row group.
const PAGE_ROWS: usize = 4 * 1024;

/// The sort key of span files: (service, trace id, start time).
const SORT_KEY: [&str; 3] = [col::SERVICE_NAME, col::TRACE_ID, col::START_TIME];

fn writer_properties(rows: usize, effort: Effort) -> Result<WriterProperties, StorageError> {
    let level = match effort {
        Effort::Flush => 1,
        Effort::Compaction => 9,
    };
    let random_ids = [col::SPAN_ID, col::PARENT_SPAN_ID];
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_column_bloom_filter_enabled(ColumnPath::from(col::TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(col::TRACE_ID), 0.01)
        .set_column_bloom_filter_max_ndv(
            ColumnPath::from(col::TRACE_ID),
            rows.clamp(1, ROW_GROUP_ROWS) as u64,
        );
    for c in random_ids {
        // A dictionary of random ids only costs time: every value is distinct.
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    Ok(builder.build())
}

/// The spans table's spec.
pub fn spans_table() -> TableSpec {
    TableSpec {
        name: SPANS_TABLE,
        schema: span_schema(),
        time_column: col::START_TIME,
        sort_key: SORT_KEY.to_vec(),
        sort_window_nanos: None,
        merge: Merge::Sorted,
        source: Source::Logged,
        properties: writer_properties,
        compaction_target_rows: None,
    }
}

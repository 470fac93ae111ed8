//! The rollup tables' specs: hour-partitioned like spans, derived from them (and `span_red` also
//! from `span_stats`), and small — a row
//! per key and minute — so a merge simply sums the rows of every input with equal keys.

use arrow::array::RecordBatch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::stats::SPAN_STATS_TABLE;
use super::table::{col, Aggregate, EdgeKey, RedKey, RollupKey};
use crate::engine::{Effort, Merge, Source, TableSpec};
use crate::error::StorageError;
use crate::span_table::SPANS_TABLE;

const ROW_GROUP_ROWS: usize = 64 * 1024;

fn writer_properties(_rows: usize, _effort: Effort) -> Result<WriterProperties, StorageError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// Sums rows with equal keys (the merge rule of both tables).
pub fn combine<K: RollupKey>(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, StorageError> {
    let mut sum = Aggregate::<K>::default();
    for batch in batches {
        sum.add_batch(batch)?;
    }
    sum.to_batch()
}

fn spec<K: RollupKey>(from: &'static [&'static str]) -> TableSpec {
    TableSpec {
        name: K::dir(),
        schema: K::schema(),
        time_column: col::TIME,
        // Rows are written in key order by the aggregate; no re-sorting.
        sort_key: Vec::new(),
        sort_window_nanos: None,
        merge: Merge::Combine(combine::<K>),
        source: Source::Derived { from },
        properties: writer_properties,
        compaction_target_rows: None,
    }
}

pub fn span_red_table() -> TableSpec {
    spec::<RedKey>(&[SPANS_TABLE, SPAN_STATS_TABLE])
}

pub fn service_edges_table() -> TableSpec {
    spec::<EdgeKey>(&[SPANS_TABLE])
}

/// Spans counted before they arrived (see [`super::stats`]): logged, in `span_red`'s schema,
/// summed like it.
pub fn span_stats_table() -> TableSpec {
    TableSpec {
        name: SPAN_STATS_TABLE,
        source: Source::Logged,
        ..spec::<RedKey>(&[])
    }
}

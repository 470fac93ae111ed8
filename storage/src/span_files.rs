//! Span Parquet files: one hour partition per directory, rows sorted by (service, trace id, start)
//! so that service and trace-id filters prune row groups by their statistics, plus a bloom filter
//! on `trace_id` for lookups by id.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::row::{RowConverter, SortField};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::StorageError;
use crate::manifest::{rename_durably, FileEntry};
use crate::schema::{col, span_schema};

pub const SPANS_DIR: &str = "spans";
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Rows per row group: small enough that a service or trace-id range prunes most of a file.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// How hard to compress: fresh flushes favour speed, compaction favours size.
#[derive(Debug, Clone, Copy)]
pub enum Effort {
    Flush,
    Compaction,
}

pub fn hour_of(unix_nano: i64) -> i64 {
    unix_nano.div_euclid(NANOS_PER_HOUR)
}

/// `spans/hour=2026-11-21T19`, relative to the data directory.
pub fn partition_dir(hour: i64) -> String {
    let days = hour.div_euclid(24);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{SPANS_DIR}/hour={y:04}-{m:02}-{d:02}T{:02}",
        hour.rem_euclid(24)
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn start_times(batch: &RecordBatch) -> &TimestampNanosecondArray {
    batch
        .column(batch.schema().index_of(col::START_TIME).unwrap_or(7))
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .expect("start_time is a nanosecond timestamp")
}

/// Splits batches into their hour partitions.
pub fn split_by_hour(
    batches: &[RecordBatch],
) -> Result<Vec<(i64, Vec<RecordBatch>)>, StorageError> {
    let mut out: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    let mut push = |hour: i64, b: RecordBatch| match out.iter_mut().find(|(h, _)| *h == hour) {
        Some((_, v)) => v.push(b),
        None => out.push((hour, vec![b])),
    };
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let times = start_times(batch);
        let first = hour_of(times.value(0));
        if times.values().iter().all(|t| hour_of(*t) == first) {
            push(first, batch.clone());
            continue;
        }
        let mut hours: Vec<i64> = times.values().iter().map(|t| hour_of(*t)).collect();
        let per_row = hours.clone();
        hours.sort_unstable();
        hours.dedup();
        for hour in hours {
            let idx: UInt32Array = per_row
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == hour)
                .map(|(i, _)| i as u32)
                .collect();
            push(hour, take_record_batch(batch, &idx)?);
        }
    }
    Ok(out)
}

/// Sorts rows by (service, trace id, start time).
pub fn sort_for_storage(batch: &RecordBatch) -> Result<RecordBatch, StorageError> {
    if batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let keys = [col::SERVICE_NAME, col::TRACE_ID, col::START_TIME];
    let mut fields = Vec::with_capacity(keys.len());
    let mut columns = Vec::with_capacity(keys.len());
    for k in keys {
        let i = schema.index_of(k)?;
        fields.push(SortField::new(schema.field(i).data_type().clone()));
        columns.push(batch.column(i).clone());
    }
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(&columns)?;
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    Ok(take_record_batch(batch, &UInt32Array::from(order))?)
}

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
        .set_column_bloom_filter_enabled(ColumnPath::from(col::TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(col::TRACE_ID), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(col::TRACE_ID), rows.max(1) as u64);
    for c in random_ids {
        // A dictionary of random ids only costs time: every value is distinct.
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    Ok(builder.build())
}

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `batches` (all of one hour) as one sorted Parquet file: to a temporary name, fsync,
/// then rename, so a crash never leaves a half file under a real name.
pub fn write_file(
    data_dir: &Path,
    hour: i64,
    batches: &[RecordBatch],
    effort: Effort,
) -> Result<FileEntry, StorageError> {
    let schema = span_schema();
    let merged = concat_batches(&schema, batches)?;
    let sorted = sort_for_storage(&merged)?;
    drop(merged);
    let times = start_times(&sorted);
    let (min, max) = times
        .values()
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));

    let rel_dir = partition_dir(hour);
    let dir = data_dir.join(&rel_dir);
    fs::create_dir_all(&dir).map_err(|e| StorageError::io("create partition", &dir, e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!(
        "{now:x}-{:x}-{}.parquet",
        FILE_SEQ.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    );
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| StorageError::io("create parquet", &tmp, e))?;
    let props = writer_properties(sorted.num_rows(), effort)?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?;
    writer.write(&sorted)?;
    let file = writer.into_inner()?;
    file.sync_all()
        .map_err(|e| StorageError::io("sync parquet", &tmp, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| StorageError::io("stat parquet", &tmp, e))?
        .len();
    let final_path = dir.join(&name);
    rename_durably(&tmp, &final_path)?;
    Ok(FileEntry {
        path: format!("{rel_dir}/{name}"),
        hour,
        rows: sorted.num_rows() as u64,
        bytes,
        min_start_unix_nano: min,
        max_start_unix_nano: max,
        level: 0,
    })
}

/// Reads a whole span file.
pub fn read_file(data_dir: &Path, entry: &FileEntry) -> Result<Vec<RecordBatch>, StorageError> {
    let path = data_dir.join(&entry.path);
    let file = File::open(&path).map_err(|e| StorageError::io("open parquet", &path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_calendar_hours() {
        // 2026-11-21T19:20:00Z
        let ns = 1_795_288_800_000_000_000i64;
        assert_eq!(partition_dir(hour_of(ns)), "spans/hour=2026-11-21T19");
        assert_eq!(partition_dir(0), "spans/hour=1970-01-01T00");
        assert_eq!(
            partition_dir(hour_of(951_782_400 * 1_000_000_000)),
            "spans/hour=2000-02-29T00"
        );
    }
}

//! Span Parquet files: one hour partition per directory, rows sorted by (service, trace id, start)
//! so that service and trace-id filters prune row groups by their statistics, plus a bloom filter
//! on `trace_id` for lookups by id.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use std::path::PathBuf;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
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

/// The sort key of span files: (service, trace id, start time).
const SORT_KEY: [&str; 3] = [col::SERVICE_NAME, col::TRACE_ID, col::START_TIME];
/// Rows per slice handed to the Parquet writer while sorting or merging: small enough that a
/// slice costs little memory, large enough that the per-slice overhead vanishes.
const SLICE_ROWS: usize = 8 * 1024;

fn sort_converter() -> Result<RowConverter, StorageError> {
    let schema = span_schema();
    let fields = SORT_KEY
        .iter()
        .map(|k| {
            let i = schema.index_of(k)?;
            Ok(SortField::new(schema.field(i).data_type().clone()))
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(RowConverter::new(fields)?)
}

fn sort_rows(converter: &RowConverter, batch: &RecordBatch) -> Result<Rows, StorageError> {
    let columns = SORT_KEY
        .iter()
        .map(|k| Ok(batch.column(batch.schema().index_of(k)?).clone()))
        .collect::<Result<Vec<_>, StorageError>>()?;
    Ok(converter.convert_columns(&columns)?)
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

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A span file being written: to a temporary name, renamed into place by [`finish`](Self::finish)
/// after an fsync, so a crash never leaves a half file under a real name.
struct SpanFileWriter {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    rel_path: String,
    hour: i64,
    rows: u64,
    min: i64,
    max: i64,
}

impl SpanFileWriter {
    fn create(
        data_dir: &Path,
        hour: i64,
        rows: usize,
        effort: Effort,
    ) -> Result<Self, StorageError> {
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
        let props = writer_properties(rows, effort)?;
        Ok(Self {
            writer: ArrowWriter::try_new(file, span_schema(), Some(props))?,
            tmp,
            final_path: dir.join(&name),
            rel_path: format!("{rel_dir}/{name}"),
            hour,
            rows: 0,
            min: i64::MAX,
            max: i64::MIN,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        for t in start_times(batch).values() {
            self.min = self.min.min(*t);
            self.max = self.max.max(*t);
        }
        self.rows += batch.num_rows() as u64;
        Ok(self.writer.write(batch)?)
    }

    fn finish(self) -> Result<FileEntry, StorageError> {
        let file = self.writer.into_inner()?;
        file.sync_all()
            .map_err(|e| StorageError::io("sync parquet", &self.tmp, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| StorageError::io("stat parquet", &self.tmp, e))?
            .len();
        rename_durably(&self.tmp, &self.final_path)?;
        Ok(FileEntry {
            path: self.rel_path,
            hour: self.hour,
            rows: self.rows,
            bytes,
            min_start_unix_nano: self.min,
            max_start_unix_nano: self.max,
            level: 0,
        })
    }
}

/// Writes `batches` (all of one hour) as one Parquet file sorted by (service, trace id, start).
/// The batches are not concatenated: rows are ordered by index and copied out in small slices,
/// so writing costs little memory beyond the batches themselves.
pub fn write_file(
    data_dir: &Path,
    hour: i64,
    batches: &[RecordBatch],
    effort: Effort,
) -> Result<FileEntry, StorageError> {
    let converter = sort_converter()?;
    let keys = batches
        .iter()
        .map(|b| sort_rows(&converter, b))
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
    for (bi, b) in batches.iter().enumerate() {
        order.extend((0..b.num_rows()).map(|r| (bi, r)));
    }
    order.sort_unstable_by(|a, b| keys[a.0].row(a.1).cmp(&keys[b.0].row(b.1)));
    drop(keys);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = SpanFileWriter::create(data_dir, hour, total, effort)?;
    for slice in order.chunks(SLICE_ROWS) {
        out.write(&interleave_record_batch(&refs, slice)?)?;
    }
    out.finish()
}

/// One sorted input of a merge: the current batch of a file and where the merge stands in it.
struct MergeInput {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    keys: Rows,
    pos: usize,
    slot: usize,
}

impl MergeInput {
    fn open(
        data_dir: &Path,
        entry: &FileEntry,
        converter: &RowConverter,
    ) -> Result<Option<Self>, StorageError> {
        let path = data_dir.join(&entry.path);
        let file = File::open(&path).map_err(|e| StorageError::io("open parquet", &path, e))?;
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(SLICE_ROWS)
            .build()?;
        let Some(batch) = reader.next().transpose()? else {
            return Ok(None);
        };
        let keys = sort_rows(converter, &batch)?;
        Ok(Some(Self {
            reader,
            batch,
            keys,
            pos: 0,
            slot: 0,
        }))
    }
}

/// Merges sorted span files of one hour into one sorted file, streaming: memory holds one small
/// batch per input and one slice of output, whatever the size of the files.
pub fn merge_files(
    data_dir: &Path,
    inputs: &[FileEntry],
    effort: Effort,
) -> Result<FileEntry, StorageError> {
    let hour = inputs.first().map(|f| f.hour).unwrap_or_default();
    let total: u64 = inputs.iter().map(|f| f.rows).sum();
    let converter = sort_converter()?;
    let mut cursors = Vec::new();
    for entry in inputs {
        if let Some(c) = MergeInput::open(data_dir, entry, &converter)? {
            cursors.push(c);
        }
    }
    let mut out = SpanFileWriter::create(data_dir, hour, total as usize, effort)?;
    // Batches the pending output slice points into: each cursor's current batch, plus batches
    // a cursor has moved past while the slice still refers to them.
    let mut held: Vec<RecordBatch> = Vec::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        held.push(c.batch.clone());
        c.slot = i;
    }
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(SLICE_ROWS);
    while !cursors.is_empty() {
        let mut best = 0;
        for i in 1..cursors.len() {
            let (a, b) = (&cursors[i], &cursors[best]);
            if a.keys.row(a.pos) < b.keys.row(b.pos) {
                best = i;
            }
        }
        let c = &mut cursors[best];
        pending.push((c.slot, c.pos));
        c.pos += 1;
        if c.pos == c.batch.num_rows() {
            match c.reader.next().transpose()? {
                Some(next) => {
                    c.keys = sort_rows(&converter, &next)?;
                    c.batch = next;
                    c.pos = 0;
                    c.slot = held.len();
                    held.push(c.batch.clone());
                }
                None => {
                    cursors.swap_remove(best);
                }
            }
        }
        if pending.len() == SLICE_ROWS || (cursors.is_empty() && !pending.is_empty()) {
            let refs: Vec<&RecordBatch> = held.iter().collect();
            out.write(&interleave_record_batch(&refs, &pending)?)?;
            pending.clear();
            held.clear();
            for (i, c) in cursors.iter_mut().enumerate() {
                held.push(c.batch.clone());
                c.slot = i;
            }
        }
    }
    out.finish()
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

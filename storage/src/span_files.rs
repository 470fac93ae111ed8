//! Span Parquet files: one hour partition per directory, rows sorted by (service, trace id, start)
//! so that service and trace-id filters prune row groups by their statistics, plus a bloom filter
//! on `trace_id` for lookups by id.

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::StorageError;
use crate::manifest::FileEntry;
use crate::partition::{split_batch_by_hour, PartitionFileWriter};
use crate::schema::{col, span_schema};

pub const SPANS_DIR: &str = "spans";
/// Rows per row group: small enough that a service or trace-id range prunes most of a file.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per data page: a lookup by trace id decompresses only the pages holding its spans, so
/// pages of nested columns (attributes, events) must not span a whole row group.
const PAGE_ROWS: usize = 4 * 1024;

/// How hard to compress: fresh flushes favour speed, compaction favours size.
#[derive(Debug, Clone, Copy)]
pub enum Effort {
    Flush,
    Compaction,
}

/// Splits batches into their hour partitions.
pub fn split_by_hour(
    batches: &[RecordBatch],
) -> Result<Vec<(i64, Vec<RecordBatch>)>, StorageError> {
    let time_column = span_schema().index_of(col::START_TIME)?;
    let mut out: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    for batch in batches {
        for (hour, part) in split_batch_by_hour(batch, time_column)? {
            match out.iter_mut().find(|(h, _)| *h == hour) {
                Some((_, v)) => v.push(part),
                None => out.push((hour, vec![part])),
            }
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

fn span_file_writer(
    data_dir: &Path,
    hour: i64,
    rows: usize,
    effort: Effort,
) -> Result<PartitionFileWriter, StorageError> {
    let schema = span_schema();
    let time_column = schema.index_of(col::START_TIME)?;
    PartitionFileWriter::create(
        data_dir,
        SPANS_DIR,
        hour,
        schema,
        time_column,
        writer_properties(rows, effort)?,
    )
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
    let mut out = span_file_writer(data_dir, hour, total, effort)?;
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
    let mut out = span_file_writer(data_dir, hour, total as usize, effort)?;
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

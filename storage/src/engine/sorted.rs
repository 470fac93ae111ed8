//! Writing a table's rows as a file in its sort order, and merging files of one partition into
//! one, by the table's [`Merge`] rule.
//!
//! Rows are never concatenated: they are ordered by index over the input batches and copied out
//! in small slices, and merges stream — one small batch per input and one slice of output in
//! memory, whatever the size of the files.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::manifest::FileEntry;
use super::partition::{timestamps_nanos, PartitionFileWriter};
use super::table::{Effort, Merge, TableSpec};
use crate::error::StorageError;
use crate::files::FileStore;
use crate::schema;

/// Rows per slice handed to the Parquet writer while sorting or merging: small enough that a
/// slice costs little memory, large enough that the per-slice overhead vanishes.
const SLICE_ROWS: usize = 8 * 1024;

/// Comparable encodings of a prefix of a table's sort key — after the time window, for a table
/// that sorts by window first.
struct KeyEncoder {
    converter: RowConverter,
    columns: Vec<String>,
    window: Option<TimeWindow>,
}

/// A table's time column cut into windows of `nanos`.
#[derive(Clone, Copy)]
struct TimeWindow {
    column: &'static str,
    nanos: i64,
}

impl TimeWindow {
    fn of(spec: &TableSpec) -> Option<Self> {
        spec.sort_window_nanos.filter(|n| *n > 0).map(|nanos| Self {
            column: spec.time_column,
            nanos,
        })
    }

    /// The window of each row of `batch`.
    fn column(&self, batch: &RecordBatch) -> Result<Vec<i64>, StorageError> {
        let times = batch.column(batch.schema().index_of(self.column)?);
        Ok(timestamps_nanos(times)?
            .into_iter()
            .map(|t| t.div_euclid(self.nanos))
            .collect())
    }
}

impl KeyEncoder {
    fn new(spec: &TableSpec, len: usize) -> Result<Option<Self>, StorageError> {
        if len == 0 {
            return Ok(None);
        }
        let window = TimeWindow::of(spec);
        let columns: Vec<String> = spec.sort_key[..len].iter().map(|s| s.to_string()).collect();
        let mut fields = Vec::new();
        if window.is_some() {
            fields.push(SortField::new(DataType::Int64));
        }
        for k in &columns {
            let i = spec.schema.index_of(k)?;
            fields.push(SortField::new(spec.schema.field(i).data_type().clone()));
        }
        Ok(Some(Self {
            converter: RowConverter::new(fields)?,
            columns,
            window,
        }))
    }

    fn rows(&self, batch: &RecordBatch) -> Result<Rows, StorageError> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(w) = &self.window {
            columns.push(Arc::new(Int64Array::from(w.column(batch)?)));
        }
        for k in &self.columns {
            columns.push(batch.column(batch.schema().index_of(k)?).clone());
        }
        Ok(self.converter.convert_columns(&columns)?)
    }
}

/// The sort key, and the prefix of it that makes a row unique (for [`Merge::Dedup`]).
struct Keys {
    sort: Option<KeyEncoder>,
    /// `None` when rows are not deduplicated or the whole sort key is the unique key.
    unique: Option<KeyEncoder>,
    dedup: bool,
}

impl Keys {
    fn of(spec: &TableSpec) -> Result<Self, StorageError> {
        let (dedup, unique_len) = match spec.merge {
            Merge::Dedup { unique } => (true, unique.min(spec.sort_key.len())),
            _ => (false, 0),
        };
        let unique = if dedup && unique_len < spec.sort_key.len() {
            KeyEncoder::new(spec, unique_len)?
        } else {
            None
        };
        Ok(Self {
            sort: KeyEncoder::new(spec, spec.sort_key.len())?,
            unique,
            dedup,
        })
    }
}

/// Writes `batches` (all of one hour) as one file in the table's sort order; for a dedup table,
/// of rows equal in the unique key only the last written is kept. A [`Merge::Combine`] table's
/// rows are combined first.
pub fn write_file(
    files: &dyn FileStore,
    tenant: &str,
    spec: &TableSpec,
    hour: i64,
    batches: &[RecordBatch],
    effort: Effort,
) -> Result<Option<FileEntry>, StorageError> {
    let combined;
    let batches = match spec.merge {
        Merge::Combine(combine) if batches.len() > 1 => match combine(batches)? {
            Some(b) => {
                combined = [b];
                &combined[..]
            }
            None => return Ok(None),
        },
        _ => batches,
    };
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if total == 0 {
        return Ok(None);
    }
    let keys = Keys::of(spec)?;
    let mut out = PartitionFileWriter::create(files, tenant, spec, hour, total, effort)?;
    let Some(sort) = &keys.sort else {
        for b in batches {
            out.write(b)?;
        }
        return Ok(Some(out.finish()?));
    };
    if let Some(order) = fast_order(spec, batches, keys.dedup)? {
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        for slice in order.chunks(SLICE_ROWS) {
            out.write(&interleave_record_batch(&refs, slice)?)?;
        }
        return Ok(Some(out.finish()?));
    }
    let rows = batches
        .iter()
        .map(|b| sort.rows(b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
    for (bi, b) in batches.iter().enumerate() {
        order.extend((0..b.num_rows()).map(|r| (bi, r)));
    }
    // Ties keep the order of writing, so the last of equal rows is the newest.
    order.sort_unstable_by(|a, b| rows[a.0].row(a.1).cmp(&rows[b.0].row(b.1)).then(a.cmp(b)));
    if keys.dedup {
        let unique = match &keys.unique {
            Some(u) => Some(
                batches
                    .iter()
                    .map(|b| u.rows(b))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let key_rows = unique.as_ref().unwrap_or(&rows);
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(order.len());
        for (i, &(bi, r)) in order.iter().enumerate() {
            let last_of_run = order
                .get(i + 1)
                .is_none_or(|&(nb, nr)| key_rows[nb].row(nr) != key_rows[bi].row(r));
            if last_of_run {
                kept.push((bi, r));
            }
        }
        order = kept;
    }
    drop(rows);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    for slice in order.chunks(SLICE_ROWS) {
        out.write(&interleave_record_batch(&refs, slice)?)?;
    }
    Ok(Some(out.finish()?))
}

/// One row's sort key as order-preserving integers, for sort keys of at most four columns (the
/// time window counting as one) of integers, timestamps or dictionary-encoded strings (the
/// metric tables').
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FastKey {
    key: [u64; FAST_KEY_COLUMNS],
    batch: u32,
    row: u32,
}

const FAST_KEY_COLUMNS: usize = 4;

/// Flipping a signed integer's sign bit makes its bits, as unsigned, sort as the signed value.
const SIGN_FLIP: u64 = 1 << 63;

/// Order-preserving integers of a column's values, or `None` for a type the fast path does not
/// know (or a column with nulls). Dictionary keys become the rank of their string among every
/// batch's dictionaries.
fn ordinal_columns(
    batches: &[RecordBatch],
    column: &str,
) -> Result<Option<Vec<Vec<u64>>>, StorageError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMillisecondType,
        TimestampNanosecondType, UInt32Type, UInt64Type,
    };
    let arrays: Vec<_> = batches
        .iter()
        .map(|b| b.column(b.schema().index_of(column).unwrap_or(0)).clone())
        .collect();
    if arrays.iter().any(|a| a.null_count() > 0) {
        return Ok(None);
    }
    let Some(first) = arrays.first() else {
        return Ok(Some(Vec::new()));
    };
    let out = match first.data_type() {
        DataType::UInt64 => arrays
            .iter()
            .map(|a| a.as_primitive::<UInt64Type>().values().to_vec())
            .collect(),
        DataType::UInt32 => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<UInt32Type>()
                    .values()
                    .iter()
                    .map(|v| u64::from(*v))
                    .collect()
            })
            .collect(),
        DataType::Int64 => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .map(|v| (*v as u64) ^ SIGN_FLIP)
                    .collect()
            })
            .collect(),
        DataType::Int32 => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|v| (i64::from(*v) as u64) ^ SIGN_FLIP)
                    .collect()
            })
            .collect(),
        DataType::Int8 => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .map(|v| (i64::from(*v) as u64) ^ SIGN_FLIP)
                    .collect()
            })
            .collect(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .map(|v| (*v as u64) ^ SIGN_FLIP)
                    .collect()
            })
            .collect(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => arrays
            .iter()
            .map(|a| {
                a.as_primitive::<TimestampNanosecondType>()
                    .values()
                    .iter()
                    .map(|v| (*v as u64) ^ SIGN_FLIP)
                    .collect()
            })
            .collect(),
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let mut all: Vec<&str> = Vec::new();
            for a in &arrays {
                let d = a.as_dictionary::<Int32Type>();
                all.extend(d.values().as_string::<i32>().iter().flatten());
            }
            all.sort_unstable();
            all.dedup();
            arrays
                .iter()
                .map(|a| {
                    let d = a.as_dictionary::<Int32Type>();
                    let values = d.values().as_string::<i32>();
                    let ranks: Vec<u64> = (0..values.len())
                        .map(|i| all.binary_search(&values.value(i)).unwrap_or(0) as u64)
                        .collect();
                    d.keys()
                        .values()
                        .iter()
                        .map(|k| ranks.get(*k as usize).copied().unwrap_or(0))
                        .collect()
                })
                .collect()
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// The write order of `batches` by plain integer comparisons, when the table's sort key allows
/// (see [`FastKey`]); for a dedup table, of rows equal in the unique key only the last written.
/// `None` sends the caller to the general (row-encoded) sort.
fn fast_order(
    spec: &TableSpec,
    batches: &[RecordBatch],
    dedup: bool,
) -> Result<Option<Vec<(usize, usize)>>, StorageError> {
    let window = TimeWindow::of(spec);
    let key_len = spec.sort_key.len() + usize::from(window.is_some());
    if spec.sort_key.is_empty() || key_len > FAST_KEY_COLUMNS {
        return Ok(None);
    }
    let mut columns = Vec::new();
    if let Some(w) = &window {
        columns.push(
            batches
                .iter()
                .map(|b| {
                    Ok(w.column(b)?
                        .into_iter()
                        .map(|v| (v as u64) ^ SIGN_FLIP)
                        .collect())
                })
                .collect::<Result<Vec<Vec<u64>>, StorageError>>()?,
        );
    }
    for c in &spec.sort_key {
        match ordinal_columns(batches, c)? {
            Some(v) => columns.push(v),
            None => return Ok(None),
        }
    }
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut keys: Vec<FastKey> = Vec::with_capacity(total);
    for (bi, b) in batches.iter().enumerate() {
        for r in 0..b.num_rows() {
            let mut key = [0u64; FAST_KEY_COLUMNS];
            for (slot, col) in key.iter_mut().zip(&columns) {
                *slot = col[bi][r];
            }
            keys.push(FastKey {
                key,
                batch: bi as u32,
                row: r as u32,
            });
        }
    }
    drop(columns);
    // Ties keep the order of writing, so the last of equal rows is the newest.
    keys.sort_unstable();
    let unique = match spec.merge {
        Merge::Dedup { unique } => unique.min(spec.sort_key.len()),
        _ => 0,
    } + usize::from(window.is_some());
    let mut order = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let last_of_run = !dedup
            || keys
                .get(i + 1)
                .is_none_or(|n| n.key[..unique] != k.key[..unique]);
        if last_of_run {
            order.push((k.batch as usize, k.row as usize));
        }
    }
    Ok(Some(order))
}

/// Reads a whole file, in the table's current schema (see [`schema::conform`]).
pub fn read_file(
    files: &dyn FileStore,
    entry: &FileEntry,
    table_schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(files.open(&entry.path)?)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader
        .map(|b| Ok(schema::conform(b?, table_schema)?))
        .collect()
}

/// Reads some columns of a whole file (by name; columns the file lacks are left out).
pub fn read_columns(
    files: &dyn FileStore,
    entry: &FileEntry,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, StorageError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(files.open(&entry.path)?)?;
    let roots: Vec<usize> = columns
        .iter()
        .filter_map(|c| builder.schema().index_of(c).ok())
        .collect();
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
    builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::from)
}

/// One sorted input of a merge: the current batch of a file and where the merge stands in it.
struct MergeInput {
    reader: ParquetRecordBatchReader,
    /// The table's current schema, which every batch read is put in.
    schema: SchemaRef,
    batch: RecordBatch,
    keys: Rows,
    unique: Option<Rows>,
    pos: usize,
    slot: usize,
    /// Lower is newer: among rows equal in the whole sort key, the newest comes first.
    rank: usize,
}

impl MergeInput {
    fn open(
        files: &dyn FileStore,
        entry: &FileEntry,
        spec: &TableSpec,
        keys: &Keys,
        rank: usize,
    ) -> Result<Option<Self>, StorageError> {
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(files.open(&entry.path)?)?
            .with_batch_size(SLICE_ROWS)
            .build()?;
        let Some(batch) = reader.next().transpose()? else {
            return Ok(None);
        };
        let batch = schema::conform(batch, &spec.schema)?;
        let mut input = Self {
            reader,
            schema: spec.schema.clone(),
            batch: RecordBatch::new_empty(batch.schema()),
            keys: empty_rows(keys)?,
            unique: None,
            pos: 0,
            slot: 0,
            rank,
        };
        input.load(batch, keys)?;
        Ok(Some(input))
    }

    fn load(&mut self, batch: RecordBatch, keys: &Keys) -> Result<(), StorageError> {
        let sort = keys.sort.as_ref().ok_or_else(no_sort_key)?;
        self.keys = sort.rows(&batch)?;
        self.unique = match &keys.unique {
            Some(u) => Some(u.rows(&batch)?),
            None => None,
        };
        self.batch = batch;
        self.pos = 0;
        Ok(())
    }

    fn head(&self) -> arrow::row::Row<'_> {
        self.keys.row(self.pos)
    }

    fn unique_head(&self) -> arrow::row::Row<'_> {
        match &self.unique {
            Some(u) => u.row(self.pos),
            None => self.keys.row(self.pos),
        }
    }

    /// Orders inputs by their current row, newest first among equals.
    fn before(&self, other: &MergeInput) -> bool {
        (self.head(), self.rank) < (other.head(), other.rank)
    }
}

fn empty_rows(keys: &Keys) -> Result<Rows, StorageError> {
    let sort = keys.sort.as_ref().ok_or_else(no_sort_key)?;
    Ok(sort.converter.empty_rows(0, 0))
}

fn no_sort_key() -> StorageError {
    StorageError::Schema("a streaming merge needs a sort key".into())
}

/// Merges files of one tenant's table and hour into one file by the table's merge rule; `None`
/// when the inputs held no rows. `inputs` must be ordered newest first (see [`FileEntry::seq`]).
pub fn merge_files(
    files: &dyn FileStore,
    tenant: &str,
    spec: &TableSpec,
    inputs: &[FileEntry],
    effort: Effort,
) -> Result<Option<FileEntry>, StorageError> {
    let hour = inputs.first().map(|f| f.hour).unwrap_or_default();
    if let Merge::Combine(combine) = spec.merge {
        let mut all = Vec::new();
        for entry in inputs {
            all.extend(read_file(files, entry, &spec.schema)?);
        }
        return match combine(&all)? {
            Some(batch) => write_file(files, tenant, spec, hour, &[batch], effort),
            None => Ok(None),
        };
    }
    let keys = Keys::of(spec)?;
    let total: u64 = inputs.iter().map(|f| f.rows).sum();
    let mut cursors = Vec::new();
    for (rank, entry) in inputs.iter().enumerate() {
        if let Some(c) = MergeInput::open(files, entry, spec, &keys, rank)? {
            cursors.push(c);
        }
    }
    if cursors.is_empty() {
        return Ok(None);
    }
    let mut out = PartitionFileWriter::create(files, tenant, spec, hour, total as usize, effort)?;
    // Batches the pending output slice points into: each cursor's current batch, plus batches
    // a cursor has moved past while the slice still refers to them.
    let mut held: Vec<RecordBatch> = Vec::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        held.push(c.batch.clone());
        c.slot = i;
    }
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(SLICE_ROWS);
    let mut last_unique: Option<OwnedRow> = None;
    while !cursors.is_empty() {
        let mut best = 0;
        for i in 1..cursors.len() {
            if cursors[i].before(&cursors[best]) {
                best = i;
            }
        }
        let c = &mut cursors[best];
        let duplicate = keys.dedup
            && last_unique
                .as_ref()
                .is_some_and(|u| u.row() == c.unique_head());
        if !duplicate {
            if keys.dedup {
                last_unique = Some(c.unique_head().owned());
            }
            pending.push((c.slot, c.pos));
        }
        c.pos += 1;
        if c.pos == c.batch.num_rows() {
            match c.reader.next().transpose()? {
                Some(next) => {
                    let next = schema::conform(next, &c.schema)?;
                    c.load(next, &keys)?;
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
    Ok(Some(out.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::LocalDir;
    use crate::metrics::tables::{metric_tables, samples_schema, SAMPLES_TABLE};
    use arrow::array::{AsArray, DictionaryArray, Float64Array, Int32Array, StringArray};
    use arrow::array::{TimestampMillisecondArray, UInt64Array};
    use arrow::datatypes::{Float64Type, Int32Type, UInt64Type};
    use std::sync::Arc;

    fn samples(
        metric_values: &[&str],
        keys: Vec<i32>,
        ids: Vec<u64>,
        ts: Vec<i64>,
        v: Vec<f64>,
    ) -> RecordBatch {
        let dict = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys),
            Arc::new(StringArray::from(metric_values.to_vec())),
        )
        .unwrap();
        let n = ids.len();
        RecordBatch::try_new(
            samples_schema(),
            vec![
                Arc::new(dict),
                Arc::new(UInt64Array::from(ids)),
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Float64Array::from(v)),
                Arc::new(TimestampMillisecondArray::from(vec![None; n]).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn files_written_before_a_column_was_added_merge_and_read_with_it_null() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalDir::new(dir.path()).unwrap();
        let spec = metric_tables()
            .into_iter()
            .find(|t| t.name == SAMPLES_TABLE)
            .unwrap();
        // The same table as an older version wrote it: without its last (nullable) column.
        let mut old_spec = spec.clone();
        let fields = spec.schema.fields();
        old_spec.schema = Arc::new(arrow::datatypes::Schema::new(
            fields[..fields.len() - 1].to_vec(),
        ));
        let old_batch = samples(&["m"], vec![0], vec![1], vec![10], vec![1.0]);
        let old_batch = RecordBatch::try_new(
            old_spec.schema.clone(),
            old_batch.columns()[..fields.len() - 1].to_vec(),
        )
        .unwrap();
        let old = write_file(&files, "t", &old_spec, 0, &[old_batch], Effort::Flush)
            .unwrap()
            .unwrap();
        let new = samples(&["m"], vec![0], vec![2], vec![10], vec![2.0]);
        let new = write_file(&files, "t", &spec, 0, &[new], Effort::Flush)
            .unwrap()
            .unwrap();
        let read = read_file(&files, &old, &spec.schema).unwrap();
        assert_eq!(read[0].schema(), spec.schema);
        assert!(read[0].column(fields.len() - 1).is_null(0));
        let merged = merge_files(&files, "t", &spec, &[new, old], Effort::Compaction)
            .unwrap()
            .unwrap();
        let out = &read_file(&files, &merged, &spec.schema).unwrap()[0];
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.column(fields.len() - 1).null_count(), 2);
    }

    #[test]
    fn samples_sort_by_metric_series_time_and_the_last_duplicate_wins() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalDir::new(dir.path()).unwrap();
        let spec = metric_tables()
            .into_iter()
            .find(|t| t.name == SAMPLES_TABLE)
            .unwrap();
        // Two batches with their own dictionaries, in another order than the names sort.
        let a = samples(
            &["zeta", "alpha"],
            vec![0, 1, 1],
            vec![5, 9, 2],
            vec![20, 10, 10],
            vec![1.0, 2.0, 3.0],
        );
        let b = samples(
            &["alpha"],
            vec![0, 0],
            vec![9, 2],
            vec![10, 5],
            vec![4.0, 5.0],
        );
        let entry = write_file(&files, "t", &spec, 0, &[a, b], Effort::Flush)
            .unwrap()
            .unwrap();
        let out = read_file(&files, &entry, &spec.schema).unwrap();
        let b = &out[0];
        let d = b.column(0).as_dictionary::<Int32Type>();
        let names: Vec<&str> = d
            .keys()
            .values()
            .iter()
            .map(|k| d.values().as_string::<i32>().value(*k as usize))
            .collect();
        let ids = b.column(1).as_primitive::<UInt64Type>().values().to_vec();
        let values = b.column(3).as_primitive::<Float64Type>().values().to_vec();
        assert_eq!(names, vec!["alpha", "alpha", "alpha", "zeta"]);
        assert_eq!(ids, vec![2, 2, 9, 5]);
        // alpha/9@10 was written twice: the newer (4.0) is kept.
        assert_eq!(values, vec![5.0, 3.0, 4.0, 1.0]);
    }

    #[test]
    fn samples_sort_by_five_minute_window_before_series() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalDir::new(dir.path()).unwrap();
        let spec = metric_tables()
            .into_iter()
            .find(|t| t.name == SAMPLES_TABLE)
            .unwrap();
        let minute = 60_000;
        let batch = samples(
            &["m"],
            vec![0, 0, 0, 0],
            vec![9, 2, 2, 9],
            vec![6 * minute, 4 * minute, 5 * minute, minute],
            vec![1.0, 2.0, 3.0, 4.0],
        );
        let mut flushed = None;
        for effort in [Effort::Flush, Effort::Compaction] {
            let entry = write_file(&files, "t", &spec, 0, std::slice::from_ref(&batch), effort)
                .unwrap()
                .unwrap();
            let b = &read_file(&files, &entry, &spec.schema).unwrap()[0];
            let ids = b.column(1).as_primitive::<UInt64Type>().values().to_vec();
            let values = b.column(3).as_primitive::<Float64Type>().values().to_vec();
            // Window 0 (minutes 0-4): series 2, then 9; window 1 (minutes 5-9): series 2, then 9.
            assert_eq!(ids, vec![2, 9, 2, 9]);
            assert_eq!(values, vec![2.0, 4.0, 3.0, 1.0]);
            flushed.get_or_insert(entry);
        }
        // A merge of files keeps the order.
        let a = flushed.unwrap();
        let later = samples(&["m"], vec![0], vec![5], vec![2 * minute], vec![7.0]);
        let b = write_file(&files, "t", &spec, 0, &[later], Effort::Flush)
            .unwrap()
            .unwrap();
        let merged = merge_files(&files, "t", &spec, &[b, a], Effort::Compaction)
            .unwrap()
            .unwrap();
        let out = &read_file(&files, &merged, &spec.schema).unwrap()[0];
        let ids = out.column(1).as_primitive::<UInt64Type>().values().to_vec();
        assert_eq!(ids, vec![2, 5, 9, 2, 9]);
    }
}

//! Writing a table's rows as a file in its sort order, and merging files of one partition into
//! one, by the table's [`Merge`] rule.
//!
//! Rows are never concatenated: they are ordered by index over the input batches and copied out
//! in small slices, and merges stream — one small batch per input and one slice of output in
//! memory, whatever the size of the files.

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::manifest::FileEntry;
use super::partition::PartitionFileWriter;
use super::table::{Effort, Merge, TableSpec};
use crate::error::StorageError;
use crate::files::FileStore;

/// Rows per slice handed to the Parquet writer while sorting or merging: small enough that a
/// slice costs little memory, large enough that the per-slice overhead vanishes.
const SLICE_ROWS: usize = 8 * 1024;

/// Comparable encodings of a prefix of a table's sort key.
struct KeyEncoder {
    converter: RowConverter,
    columns: Vec<String>,
}

impl KeyEncoder {
    fn new(spec: &TableSpec, len: usize) -> Result<Option<Self>, StorageError> {
        if len == 0 {
            return Ok(None);
        }
        let columns: Vec<String> = spec.sort_key[..len].iter().map(|s| s.to_string()).collect();
        let fields = columns
            .iter()
            .map(|k| {
                let i = spec.schema.index_of(k)?;
                Ok(SortField::new(spec.schema.field(i).data_type().clone()))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(Some(Self {
            converter: RowConverter::new(fields)?,
            columns,
        }))
    }

    fn rows(&self, batch: &RecordBatch) -> Result<Rows, StorageError> {
        let columns = self
            .columns
            .iter()
            .map(|k| Ok(batch.column(batch.schema().index_of(k)?).clone()))
            .collect::<Result<Vec<_>, StorageError>>()?;
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

/// Reads a whole file.
pub fn read_file(
    files: &dyn FileStore,
    entry: &FileEntry,
) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(files.open(&entry.path)?)?
        .with_batch_size(64 * 1024)
        .build()?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::from)
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
        keys: &Keys,
        rank: usize,
    ) -> Result<Option<Self>, StorageError> {
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(files.open(&entry.path)?)?
            .with_batch_size(SLICE_ROWS)
            .build()?;
        let Some(batch) = reader.next().transpose()? else {
            return Ok(None);
        };
        let mut input = Self {
            reader,
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
            all.extend(read_file(files, entry)?);
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
        if let Some(c) = MergeInput::open(files, entry, &keys, rank)? {
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

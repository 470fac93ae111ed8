//! Key lookups: the rows of one table whose key columns hold given values, in a time range, read
//! straight from the version's files and buffers without planning a query.
//!
//! A query engine that already knows what it wants — a metric's series by id, a label pair's
//! postings — pays for a general query's planning and scan setup on every read, which for a
//! selective lookup is most of its cost. Here files are pruned by their time ranges, row groups
//! and pages by the page index of the constrained columns (their footers are cached: files
//! never change once written), and the rows of the pages left by the values themselves, before
//! any other column is decoded — except where the statistics of every page left prove a
//! constraint already (pages of one metric, pages inside the time range): that column is not
//! read at all.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{and, filter_record_batch};
use arrow::datatypes::{
    DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt64Type,
};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use super::manifest::FileEntry;
use super::table::TableSpec;
use super::version::Version;
use crate::error::StorageError;
use crate::files::{FileReader, FileStore};
use crate::schema;

/// The values a column must hold one of.
#[derive(Debug, Clone, PartialEq)]
pub enum OneOf {
    /// For `Utf8` and dictionary-encoded `Utf8` columns.
    Strings(Vec<String>),
    /// For `UInt64` columns.
    Ids(Vec<u64>),
}

impl OneOf {
    fn sorted(mut self) -> Self {
        match &mut self {
            OneOf::Strings(v) => {
                v.sort();
                v.dedup();
            }
            OneOf::Ids(v) => {
                v.sort_unstable();
                v.dedup();
            }
        }
        self
    }
}

/// What to read of a table.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// Each column must hold one of its values.
    pub equal: Vec<(&'static str, OneOf)>,
    /// Inclusive range of the table's time column, unix ns.
    pub time: (i64, i64),
    /// The columns to return (they come in the table's order).
    pub columns: Vec<&'static str>,
}

/// Footers (with page indexes) of the files read by lookups, by path.
#[derive(Debug, Default)]
pub struct FooterCache {
    footers: Mutex<Footers>,
}

#[derive(Debug, Default)]
struct Footers {
    by_path: HashMap<String, ArrowReaderMetadata>,
    bytes: usize,
}

/// Bytes of footers kept; beyond it the cache starts over. A page index is about a hundred
/// bytes per page and column (a million-row file of 4,096-row pages: 30 KB a column), and
/// rereading a footer costs a read of the file's end.
const FOOTER_BYTES_MAX: usize = 128 << 20;

impl FooterCache {
    fn get(&self, path: &str) -> Option<ArrowReaderMetadata> {
        self.lock().by_path.get(path).cloned()
    }

    fn put(&self, path: &str, footer: ArrowReaderMetadata) {
        let size = footer.metadata().memory_size();
        let mut footers = self.lock();
        if footers.bytes + size > FOOTER_BYTES_MAX {
            *footers = Footers::default();
        }
        footers.bytes += size;
        footers.by_path.insert(path.to_string(), footer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Footers> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-made.
        self.footers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(
        &self,
        files: &dyn FileStore,
        path: &str,
    ) -> Result<(FileReader, ArrowReaderMetadata), StorageError> {
        let reader = files.open(path)?;
        if let Some(footer) = self.get(path) {
            return Ok((reader, footer));
        }
        let footer = ArrowReaderMetadata::load(
            &reader,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )?;
        // Dictionary-typed string columns are read as plain strings: a lookup's rows span
        // pages and row groups of different dictionaries, which the reader would otherwise
        // merge into one by hashing every value it reads.
        let plain = plain_strings(footer.schema());
        let footer = match plain == *footer.schema() {
            true => footer,
            false => ArrowReaderMetadata::try_new(
                Arc::clone(footer.metadata()),
                ArrowReaderOptions::new().with_schema(plain),
            )?,
        };
        self.put(path, footer.clone());
        Ok((reader, footer))
    }
}

impl Version {
    /// The rows of `table` matching `lookup`, from its files and the rows in memory. Rows of
    /// several files are not merged: a row written twice may come twice. Setting `cancelled`
    /// stops the read at its next batch, with what was read so far.
    pub fn lookup(
        &self,
        table: &str,
        lookup: &KeyLookup,
        cancelled: &AtomicBool,
    ) -> Result<Vec<RecordBatch>, StorageError> {
        let Some(t) = self.table(table) else {
            return Ok(Vec::new());
        };
        let plan = Arc::new(Plan::new(&t.spec, lookup)?);
        let mut out = Vec::new();
        let (from, to) = lookup.time;
        for f in t
            .files
            .iter()
            .filter(|f| f.max_time >= from && f.min_time <= to)
        {
            if cancelled.load(Ordering::Relaxed) {
                return Ok(out);
            }
            out.extend(plan.read(self.files.as_ref(), &self.footers, f, cancelled)?);
        }
        for b in &t.in_memory {
            let all = vec![true; plan.equal.len() + 1];
            let kept = filter_record_batch(b, &plan.mask(b, &all)?)?;
            if kept.num_rows() > 0 {
                out.push(kept.project(&plan.output)?);
            }
        }
        Ok(out)
    }
}

/// A lookup resolved against a table's schema.
struct Plan {
    spec: Arc<TableSpec>,
    equal: Vec<(&'static str, OneOf)>,
    time_column: &'static str,
    /// The time range in the time column's own unit, and in unix ns.
    time: (i64, i64),
    range_nanos: (i64, i64),
    /// Indexes of the returned columns in the table schema.
    output: Vec<usize>,
}

impl Plan {
    fn new(spec: &Arc<TableSpec>, lookup: &KeyLookup) -> Result<Self, StorageError> {
        let unit = match spec.schema.field(spec.time_column_index()?).data_type() {
            DataType::Timestamp(unit, _) => nanos_per(*unit),
            _ => 1,
        };
        let (from, to) = lookup.time;
        // A row at v (in the column's unit) is at v * unit ns: it is in range when
        // from <= v * unit <= to.
        let from = from.div_euclid(unit) + i64::from(from.rem_euclid(unit) != 0);
        let mut output = lookup
            .columns
            .iter()
            .map(|c| spec.schema.index_of(c))
            .collect::<Result<Vec<_>, _>>()?;
        output.sort_unstable();
        output.dedup();
        for (c, _) in &lookup.equal {
            spec.schema.index_of(c)?;
        }
        Ok(Self {
            spec: Arc::clone(spec),
            equal: lookup
                .equal
                .iter()
                .map(|(c, v)| (*c, v.clone().sorted()))
                .collect(),
            time_column: spec.time_column,
            time: (from, to.div_euclid(unit)),
            range_nanos: lookup.time,
            output,
        })
    }

    /// Which rows of `batch` match, testing the constraints marked `needed` (numbered as in
    /// [`Plan::constraints`]; `batch` holds their columns).
    fn mask(&self, batch: &RecordBatch, needed: &[bool]) -> Result<BooleanArray, ArrowError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| ArrowError::SchemaError(format!("column {name} missing")))
        };
        let mut mask: Option<BooleanArray> = None;
        for ((name, values), _) in self.constraints().zip(needed).filter(|(_, n)| **n) {
            let holding = match values {
                None => in_range(column(name)?.as_ref(), self.time)?,
                Some(values) => holds(column(name)?.as_ref(), values, name)?,
            };
            mask = Some(match mask {
                Some(m) => and(&m, &holding)?,
                None => holding,
            });
        }
        Ok(mask.unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])))
    }

    /// The matching rows of one file, in the returned columns.
    fn read(
        self: &Arc<Self>,
        files: &dyn FileStore,
        footers: &FooterCache,
        entry: &FileEntry,
        cancelled: &AtomicBool,
    ) -> Result<Vec<RecordBatch>, StorageError> {
        let (reader, footer) = footers.open(files, &entry.path)?;
        let meta = Arc::clone(footer.metadata());
        let mut groups = Vec::new();
        let mut selection = Vec::new();
        // Which constraints any row group still has to test row by row.
        let mut needed = vec![false; self.equal.len() + 1];
        for g in 0..meta.num_row_groups() {
            let rows = meta.row_group(g).num_rows() as usize;
            let (pages, group_needs) = self.pages(&meta, g, rows);
            if !pages.is_empty() {
                groups.push(g);
                selection.push(RowSelection::from_consecutive_ranges(
                    pages.into_iter(),
                    rows,
                ));
                for (n, g) in needed.iter_mut().zip(group_needs) {
                    *n |= g;
                }
            }
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        // A file wholly in the time range needs no time test, page index or not.
        let (from, to) = self.range_nanos;
        needed[0] &= entry.min_time < from || entry.max_time > to;
        let file_schema = Arc::clone(footer.schema());
        let roots = |names: &mut dyn Iterator<Item = &str>| -> Vec<usize> {
            names.filter_map(|n| file_schema.index_of(n).ok()).collect()
        };
        let parquet_schema = footer.parquet_schema();
        let constrained = roots(
            &mut self
                .constraints()
                .zip(&needed)
                .filter(|(_, n)| **n)
                .map(|((c, _), _)| c),
        );
        let wanted: Vec<&str> = self
            .output
            .iter()
            .map(|&i| self.spec.schema.field(i).name().as_str())
            .collect();
        let returned = roots(&mut wanted.iter().copied());
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(reader, footer.clone())
                .with_row_groups(groups)
                .with_row_selection(selection.into_iter().collect())
                .with_projection(ProjectionMask::roots(parquet_schema, returned))
                .with_batch_size(8192);
        if !constrained.is_empty() {
            let plan = Arc::clone(self);
            let predicate = ArrowPredicateFn::new(
                ProjectionMask::roots(parquet_schema, constrained),
                move |batch: RecordBatch| plan.mask(&batch, &needed),
            );
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        let reader = builder.build()?;
        let projected = Arc::new(self.spec.schema.project(&self.output)?);
        let mut out = Vec::new();
        for b in reader {
            if cancelled.load(Ordering::Relaxed) {
                break;
            }
            let b = b?;
            if b.num_rows() > 0 {
                out.push(schema::conform(as_table_types(b, &projected)?, &projected)?);
            }
        }
        Ok(out)
    }

    /// The constraints in the order [`Plan::mask`] and [`Plan::pages`] number them: the time
    /// range first (no values), then each column's values.
    fn constraints(&self) -> impl Iterator<Item = (&'static str, Option<&OneOf>)> {
        std::iter::once((self.time_column, None))
            .chain(self.equal.iter().map(|(c, v)| (*c, Some(v))))
    }

    /// The row ranges of row group `g` whose pages may hold matching rows, by the page index
    /// (the whole group when the file has none); and, per constraint, whether rows of those
    /// ranges must still be tested — false when the statistics of every page they fall in
    /// already prove it (a page of one metric, a page wholly inside the time range).
    fn pages(
        &self,
        meta: &ParquetMetaData,
        g: usize,
        rows: usize,
    ) -> (Vec<Range<usize>>, Vec<bool>) {
        let constraints = self.equal.len() + 1;
        let (Some(columns), Some(offsets)) = (meta.column_index(), meta.offset_index()) else {
            return (std::iter::once(0..rows).collect(), vec![true; constraints]);
        };
        let schema = meta.file_metadata().schema_descr();
        let leaf = |name: &str| {
            (0..schema.num_columns()).find(|&i| schema.column(i).path().parts() == [name])
        };
        let mut kept: Vec<Range<usize>> = std::iter::once(0..rows).collect();
        // Per constraint: the rows of the pages that may hold matches but not surely all
        // (`None`: the column has no index here, so every row is tested).
        let mut unsure: Vec<Option<Rows>> = Vec::new();
        for (name, values) in self.constraints() {
            let found = leaf(name).and_then(|i| Some((columns[g].get(i)?, offsets[g].get(i)?)));
            let Some((index, offsets)) = found else {
                unsure.push(None);
                continue;
            };
            let locations = offsets.page_locations();
            let page_rows = |p: usize| {
                let start = locations[p].first_row_index as usize;
                let end = locations
                    .get(p + 1)
                    .map_or(rows, |next| next.first_row_index as usize);
                start..end
            };
            let pages: Vec<(Range<usize>, bool)> = (0..locations.len())
                .filter_map(|p| {
                    let held = self.page_holds(index, p, values);
                    (held != Held::No).then(|| (page_rows(p), held == Held::All))
                })
                .collect();
            let ranges: Rows = pages.iter().map(|(r, _)| r.clone()).collect();
            kept = intersect(&kept, &ranges);
            unsure.push(Some(
                pages
                    .into_iter()
                    .filter(|(_, all)| !all)
                    .map(|(r, _)| r)
                    .collect(),
            ));
            if kept.is_empty() {
                return (kept, vec![false; constraints]);
            }
        }
        let needed = unsure
            .iter()
            .map(|rows| {
                rows.as_ref()
                    .is_none_or(|r| !intersect(&kept, r).is_empty())
            })
            .collect();
        (kept, needed)
    }

    /// What page `p`'s statistics say of the rows matching a constraint.
    fn page_holds(&self, index: &ColumnIndexMetaData, p: usize, values: Option<&OneOf>) -> Held {
        match (index, values) {
            (ColumnIndexMetaData::INT64(ix), None) => match (ix.min_value(p), ix.max_value(p)) {
                (Some(&min), Some(&max)) if max < self.time.0 || min > self.time.1 => Held::No,
                (Some(&min), Some(&max)) if min >= self.time.0 && max <= self.time.1 => Held::All,
                _ => Held::Some,
            },
            (ColumnIndexMetaData::INT64(ix), Some(OneOf::Ids(ids))) => {
                // Unsigned values keep their bits in the signed statistics.
                match (ix.min_value(p), ix.max_value(p)) {
                    (Some(&min), Some(&max)) => {
                        let (min, max) = (min as u64, max as u64);
                        match any_within(ids, &min, &max) {
                            false => Held::No,
                            true if min == max => Held::All,
                            true => Held::Some,
                        }
                    }
                    _ => Held::Some,
                }
            }
            (ColumnIndexMetaData::BYTE_ARRAY(ix), Some(OneOf::Strings(strings))) => {
                match (ix.min_value(p), ix.max_value(p)) {
                    (Some(min), Some(max)) => {
                        let first = strings.partition_point(|s| s.as_bytes() < min);
                        match strings.get(first) {
                            Some(s) if s.as_bytes() <= max => {
                                // Equal bounds are exact: a truncated maximum is rounded up,
                                // so it never equals a minimum.
                                if min == max && s.as_bytes() == min {
                                    Held::All
                                } else {
                                    Held::Some
                                }
                            }
                            _ => Held::No,
                        }
                    }
                    _ => Held::Some,
                }
            }
            _ => Held::Some,
        }
    }
}

/// Row ranges of a row group, in order.
type Rows = Vec<Range<usize>>;

/// What a page's statistics say of the rows matching a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// None of its rows can match.
    No,
    /// Some may.
    Some,
    /// Every one does.
    All,
}

/// A schema with every dictionary-encoded string column as a plain one.
fn plain_strings(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) if **value == DataType::Utf8 => {
                f.as_ref().clone().with_data_type(DataType::Utf8)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch read with [`plain_strings`], its columns cast back to the table's types.
fn as_table_types(batch: RecordBatch, table: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields().iter().all(|f| {
        table
            .field_with_name(f.name())
            .is_ok_and(|t| t.data_type() == f.data_type())
    }) {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match table.field_with_name(f.name()) {
            Ok(t) if t.data_type() != f.data_type() => {
                columns.push(arrow::compute::cast(c, t.data_type())?);
                fields.push(t.clone());
            }
            _ => {
                columns.push(Arc::clone(c));
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn nanos_per(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Whether a sorted list holds a value in `[min, max]`.
fn any_within<T: Ord>(sorted: &[T], min: &T, max: &T) -> bool {
    let first = sorted.partition_point(|v| v < min);
    sorted.get(first).is_some_and(|v| v <= max)
}

/// The overlap of two sorted lists of disjoint ranges.
fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<Range<usize>> = Vec::new();
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
        if start < end {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Which values of a timestamp column lie in `[from, to]` (in the column's unit).
fn in_range(column: &dyn Array, (from, to): (i64, i64)) -> Result<BooleanArray, ArrowError> {
    let values: &[i64] = match column.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            column.as_primitive::<TimestampSecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            column.as_primitive::<TimestampMillisecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            column.as_primitive::<TimestampMicrosecondType>().values()
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            column.as_primitive::<TimestampNanosecondType>().values()
        }
        other => {
            return Err(ArrowError::SchemaError(format!(
                "time column is {other}, not a timestamp"
            )))
        }
    };
    Ok(mask_of(column, |r| from <= values[r] && values[r] <= to))
}

/// Which rows of a column hold one of `values` (sorted); nulls hold none.
fn holds(column: &dyn Array, values: &OneOf, name: &str) -> Result<BooleanArray, ArrowError> {
    match (values, column.data_type()) {
        (OneOf::Ids(ids), DataType::UInt64) => {
            let a = column.as_primitive::<UInt64Type>().values();
            Ok(match ids.as_slice() {
                [one] => mask_of(column, |r| a[r] == *one),
                ids => mask_of(column, |r| ids.binary_search(&a[r]).is_ok()),
            })
        }
        (OneOf::Strings(strings), DataType::Utf8) => {
            let a = column.as_string::<i32>();
            Ok(mask_of(column, |r| {
                strings
                    .binary_search_by(|s| s.as_str().cmp(a.value(r)))
                    .is_ok()
            }))
        }
        (OneOf::Strings(strings), DataType::Dictionary(key, value))
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            // Each distinct value is looked up once; rows then take their key's answer.
            let a = column.as_dictionary::<Int32Type>();
            let words = a.values().as_string::<i32>();
            let wanted: Vec<bool> = (0..words.len())
                .map(|w| {
                    strings
                        .binary_search_by(|s| s.as_str().cmp(words.value(w)))
                        .is_ok()
                })
                .collect();
            let keys = a.keys().values();
            Ok(mask_of(column, |r| {
                wanted.get(keys[r] as usize).copied().unwrap_or(false)
            }))
        }
        (_, other) => Err(ArrowError::SchemaError(format!(
            "column {name} ({other}) cannot be looked up by {values:?}"
        ))),
    }
}

/// A mask over `column`'s rows: `wanted(row)`, and false where the column is null.
fn mask_of(column: &dyn Array, wanted: impl Fn(usize) -> bool) -> BooleanArray {
    let values = BooleanBuffer::collect_bool(column.len(), wanted);
    match column.logical_nulls() {
        Some(nulls) => BooleanArray::new(&values & nulls.inner(), None),
        None => BooleanArray::new(values, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn ranges_intersect_and_merge() {
        assert_eq!(intersect(&[0..10], &[2..4, 6..12]), vec![2..4, 6..10]);
        assert_eq!(intersect(&[0..5, 5..9], &[3..7]), vec![3..7]);
        assert!(intersect(&[0..3], &[3..6]).is_empty());
        assert!(intersect(&[], &[0..1]).is_empty());
    }

    #[test]
    fn sorted_lists_find_values_within_bounds() {
        assert!(any_within(&[1u64, 5, 9], &4, &6));
        assert!(!any_within(&[1u64, 5, 9], &6, &8));
        assert!(any_within(&[1u64], &1, &1));
        assert!(!any_within::<u64>(&[], &0, &9));
    }
}

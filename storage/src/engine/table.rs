//! A table is a spec: what the engine needs to know to buffer, write, merge and expire it. Spans,
//! the rollups and the metric tables are all tables; none of them has code paths of its own in
//! the engine.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::file::properties::WriterProperties;

use crate::error::StorageError;

/// How hard to compress: fresh flushes favour speed, compaction favours size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Flush,
    Compaction,
}

/// Combines the rows of several files (or of a flush) into one batch, or none.
pub type CombineFn = fn(&[RecordBatch]) -> Result<Option<RecordBatch>, StorageError>;

/// How rows of two files of a table become one file.
#[derive(Clone, Copy)]
pub enum Merge {
    /// Every row kept, in sort-key order (spans).
    Sorted,
    /// Rows equal in the first `unique` sort-key columns are one row; the newest file's wins
    /// (a sample resent after a lost acknowledgement is stored once).
    Dedup { unique: usize },
    /// The table's own rule over all rows of the inputs (the rollups sum theirs); for tables
    /// whose files are small.
    Combine(CombineFn),
}

impl std::fmt::Debug for Merge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Merge::Sorted => f.write_str("Sorted"),
            Merge::Dedup { unique } => write!(f, "Dedup({unique})"),
            Merge::Combine(_) => f.write_str("Combine"),
        }
    }
}

/// Where a table's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Written by clients, through the write-ahead log.
    Logged,
    /// Computed from other tables as they are written (see [`super::Derive`]): not logged,
    /// rebuilt from the sources' logs on replay, and made durable in the same manifest commit as
    /// the source rows it came from.
    Derived { from: &'static [&'static str] },
}

/// Everything the engine knows of a table.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Also the table's directory and its SQL name.
    pub name: &'static str,
    pub schema: SchemaRef,
    /// A timestamp column (any unit): files are partitioned by its hour and the manifest records
    /// its range per file, which is what lets a scan skip files.
    pub time_column: &'static str,
    /// Rows of a file are in this order; empty for a table that keeps its rows as written.
    pub sort_key: Vec<&'static str>,
    /// When set, rows sort first by the window of this many nanoseconds their time column falls
    /// in, then by `sort_key`: the pages of one window hold only its times, so a scan of a short
    /// range (an instant query's last five minutes) reads that window's pages, not the hour's.
    pub sort_window_nanos: Option<i64>,
    pub merge: Merge,
    pub source: Source,
    /// Parquet settings for a file of `rows` rows.
    pub properties: fn(rows: usize, effort: Effort) -> Result<WriterProperties, StorageError>,
    /// Rows per file that compaction aims for; `None` takes the store's setting.
    pub compaction_target_rows: Option<u64>,
}

impl TableSpec {
    pub fn time_column_index(&self) -> Result<usize, StorageError> {
        let i = self.schema.index_of(self.time_column)?;
        match self.schema.field(i).data_type() {
            DataType::Timestamp(..) => Ok(i),
            other => Err(StorageError::Schema(format!(
                "time column {} of table {} is {other}, not a timestamp",
                self.time_column, self.name
            ))),
        }
    }

    pub fn is_logged(&self) -> bool {
        self.source == Source::Logged
    }
}

/// The tables of a store, and what derives some of them from others.
#[derive(Default)]
pub struct Catalog {
    pub tables: Vec<Arc<TableSpec>>,
    pub derives: Vec<super::DeriveFactory>,
}

impl Catalog {
    pub fn table(&self, name: &str) -> Option<&Arc<TableSpec>> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// Checks that names are unique, derived tables name a logged source, and time columns are
    /// timestamps.
    pub fn validate(&self) -> Result<(), StorageError> {
        for (i, t) in self.tables.iter().enumerate() {
            if self.tables[..i].iter().any(|o| o.name == t.name) {
                return Err(StorageError::Schema(format!(
                    "table {} defined twice",
                    t.name
                )));
            }
            t.time_column_index()?;
            if let Source::Derived { from } = t.source {
                for &from in from {
                    if !self.table(from).is_some_and(|s| s.is_logged()) {
                        return Err(StorageError::Schema(format!(
                            "table {} is derived from {from}, which is not a logged table",
                            t.name
                        )));
                    }
                }
            }
            for k in &t.sort_key {
                t.schema.index_of(k)?;
            }
        }
        Ok(())
    }
}

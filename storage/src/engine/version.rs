//! What a reader sees: one tenant's tables at one instant — their files, the sealed chunks not
//! yet in files, and the buffers — taken under the one lock every change takes. A version never
//! changes once taken; a query takes one per statement.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::lookup::FooterCache;
use super::manifest::FileEntry;
use super::sorted::read_file;
use super::table::TableSpec;
use super::Shared;
use crate::error::StorageError;
use crate::files::FileStore;

/// One table in a version.
#[derive(Debug, Clone)]
pub struct TableVersion {
    pub spec: Arc<TableSpec>,
    pub files: Arc<[FileEntry]>,
    /// Acknowledged rows not yet in `files`.
    pub in_memory: Vec<RecordBatch>,
}

impl TableVersion {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum::<u64>()
            + self
                .in_memory
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }

    /// The earliest value of the table's time column (unix ns), from the files' ranges and the
    /// rows in memory: where the table's data begins.
    pub fn min_time(&self) -> Option<i64> {
        use arrow::array::AsArray;
        use arrow::datatypes::{
            DataType, TimeUnit, TimestampMillisecondType, TimestampNanosecondType,
        };
        let in_files = self.files.iter().map(|f| f.min_time).min();
        let index = self.spec.time_column_index().ok()?;
        let in_memory = self
            .in_memory
            .iter()
            .filter_map(|b| {
                let c = b.column(index);
                match c.data_type() {
                    DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                        arrow::compute::min(c.as_primitive::<TimestampNanosecondType>())
                    }
                    DataType::Timestamp(TimeUnit::Millisecond, _) => {
                        arrow::compute::min(c.as_primitive::<TimestampMillisecondType>())
                            .map(|ms| ms.saturating_mul(1_000_000))
                    }
                    _ => None,
                }
            })
            .min();
        in_files.into_iter().chain(in_memory).min()
    }
}

/// Every table of one tenant at one instant.
#[derive(Debug, Clone)]
pub struct Version {
    pub tenant: String,
    pub files: Arc<dyn FileStore>,
    pub tables: Vec<TableVersion>,
    /// Footers of the files, for [`Version::lookup`]; shared by every version of a store.
    pub footers: Arc<FooterCache>,
}

impl Version {
    pub fn table(&self, name: &str) -> Option<&TableVersion> {
        self.tables.iter().find(|t| t.spec.name == name)
    }

    /// Every row of a table: its files first, then the rows in memory. For tests and tools; the
    /// query side scans files itself.
    pub fn read_all(&self, name: &str) -> Result<Vec<RecordBatch>, StorageError> {
        let Some(table) = self.table(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for f in table.files.iter() {
            out.extend(read_file(self.files.as_ref(), f, &table.spec.schema)?);
        }
        out.extend(table.in_memory.iter().cloned());
        Ok(out)
    }

    pub fn rows(&self, name: &str) -> u64 {
        self.table(name).map_or(0, TableVersion::rows)
    }
}

pub(super) fn build(shared: &Shared, tenant: &str) -> Version {
    let catalog = &shared.catalog;
    let mut tables: Vec<TableVersion> = catalog
        .tables
        .iter()
        .map(|spec| TableVersion {
            spec: Arc::clone(spec),
            files: Arc::from(Vec::new()),
            in_memory: Vec::new(),
        })
        .collect();
    let state = shared.state();
    if let Some(files) = state.files.get(tenant) {
        for (t, f) in tables.iter_mut().zip(files) {
            t.files = Arc::clone(f);
        }
    }
    for part in state.sealed.iter().filter(|p| p.tenant == tenant) {
        for (i, batches) in &part.rows {
            tables[*i].in_memory.extend(batches.iter().cloned());
        }
    }
    if let Some(buffers) = state.tenants.get(tenant) {
        for (t, batches) in tables.iter_mut().zip(&buffers.active) {
            t.in_memory.extend(batches.iter().cloned());
        }
        for derive in &buffers.derives {
            match derive.current() {
                Ok(rows) => {
                    for (name, batch) in rows {
                        if let Some(i) = catalog.index_of(name) {
                            tables[i].in_memory.push(batch);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read a derived table"),
            }
        }
    }
    drop(state);
    Version {
        tenant: tenant.to_string(),
        files: Arc::clone(&shared.files),
        tables,
        footers: Arc::clone(&shared.footers),
    }
}

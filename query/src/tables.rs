//! Sightline's tables — `spans`, `span_red` and `service_edges` — as DataFusion
//! `TableProvider`s over one storage snapshot each: the Parquet files and the rows not yet
//! flushed, so a query sees a span (and its rollups) as soon as it is acknowledged.
//!
//! Files whose time range (from the manifest) cannot match a filter on the table's time column
//! are skipped without being opened; the remaining filters are pushed into the Parquet scan
//! (row-group statistics, page index, the bloom filter on `trace_id`, late materialization).
//! DataFusion re-applies every filter above the scan, so pruning is only ever an optimisation.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use sightline_storage::manifest::FileEntry;
use sightline_storage::rollup::{self, service_edges_schema, span_red_schema};
use sightline_storage::schema::col;
use sightline_storage::{span_schema, Snapshot, SpanStore};

/// Where a table gets the current snapshot from: the live store, or a fixed snapshot in tests.
pub trait SnapshotSource: Send + Sync + std::fmt::Debug + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The live store.
#[derive(Clone)]
pub struct LiveStore(pub SpanStore);

impl std::fmt::Debug for LiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveStore")
    }
}

impl SnapshotSource for LiveStore {
    fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
}

/// The tables of the query engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Spans,
    SpanRed,
    ServiceEdges,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Spans, Table::SpanRed, Table::ServiceEdges];

    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::SpanRed => rollup::SPAN_RED_DIR,
            Table::ServiceEdges => rollup::SERVICE_EDGES_DIR,
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => span_schema(),
            Table::SpanRed => span_red_schema(),
            Table::ServiceEdges => service_edges_schema(),
        }
    }

    /// The column whose range the manifest records for each file.
    fn time_column(self) -> &'static str {
        match self {
            Table::Spans => col::START_TIME,
            Table::SpanRed | Table::ServiceEdges => rollup::table::col::TIME,
        }
    }

    /// This table's files and unflushed rows in a snapshot.
    fn parts(self, snapshot: Snapshot) -> (Vec<FileEntry>, Vec<RecordBatch>) {
        match self {
            Table::Spans => (snapshot.files, snapshot.in_memory),
            Table::SpanRed => (snapshot.span_red.files, snapshot.span_red.in_memory),
            Table::ServiceEdges => (
                snapshot.service_edges.files,
                snapshot.service_edges.in_memory,
            ),
        }
    }
}

#[derive(Debug)]
pub struct StoredTable {
    source: Arc<dyn SnapshotSource>,
    table: Table,
}

impl StoredTable {
    pub fn new(source: Arc<dyn SnapshotSource>, table: Table) -> Self {
        Self { source, table }
    }
}

/// The inclusive range of `column` (a timestamp, unix nanoseconds) that the filters allow, from
/// simple comparisons of the column with a timestamp literal; anything else leaves the range
/// open.
pub fn time_range(filters: &[Expr], column: &str) -> (i64, i64) {
    let mut range = (i64::MIN, i64::MAX);
    for f in filters {
        let Expr::BinaryExpr(b) = f else { continue };
        let (op, value) = match (b.left.as_ref(), b.right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) if c.name == column => (b.op, v),
            (Expr::Literal(v, _), Expr::Column(c)) if c.name == column => match b.op.swap() {
                Some(op) => (op, v),
                None => continue,
            },
            _ => continue,
        };
        let ScalarValue::TimestampNanosecond(Some(t), _) = value else {
            continue;
        };
        match op {
            Operator::Gt => range.0 = range.0.max(t.saturating_add(1)),
            Operator::GtEq => range.0 = range.0.max(*t),
            Operator::Lt => range.1 = range.1.min(t.saturating_sub(1)),
            Operator::LtEq => range.1 = range.1.min(*t),
            Operator::Eq => {
                range.0 = range.0.max(*t);
                range.1 = range.1.min(*t);
            }
            _ => {}
        }
    }
    range
}

/// Object-store path of a local file: absolute, without the leading slash.
fn object_path(data_dir: &Path, relative: &str) -> String {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    dir.join(relative)
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string()
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let snapshot = self.source.snapshot();
        let data_dir = snapshot.data_dir.clone();
        let (mut files, in_memory) = self.table.parts(snapshot);
        let range = time_range(filters, self.table.time_column());
        files.retain(|f| f.max_start_unix_nano >= range.0 && f.min_start_unix_nano <= range.1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        if !files.is_empty() {
            let mut source = ParquetSource::new(Arc::clone(&schema))
                .with_pushdown_filters(true)
                .with_reorder_filters(true)
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true);
            // Footers and page indexes are cached between queries (files never change once
            // written), so a lookup reads only the pages it needs.
            let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
            let store = state
                .runtime_env()
                .object_store(ObjectStoreUrl::local_filesystem())?;
            source = source.with_parquet_file_reader_factory(Arc::new(
                CachedParquetFileReaderFactory::new(store, metadata_cache),
            ));
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let mut config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_limit(limit);
            for f in &files {
                config = config.with_file(PartitionedFile::new(
                    object_path(&data_dir, &f.path),
                    f.bytes,
                ));
            }
            let config = config.with_projection_indices(projection.cloned())?.build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !in_memory.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[in_memory],
                Arc::clone(&schema),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col as column, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn start_time_filters_bound_the_range() {
        let filters = vec![
            column("start_time").gt_eq(ts(100)),
            ts(200).gt(column("start_time")),
            column("service_name").eq(lit("x")),
        ];
        assert_eq!(time_range(&filters, "start_time"), (100, 199));
        assert_eq!(time_range(&[], "start_time"), (i64::MIN, i64::MAX));
        assert_eq!(
            time_range(&[column("start_time").eq(ts(5))], "start_time"),
            (5, 5)
        );
    }
}

//! The `spans` table: a DataFusion `TableProvider` over one storage snapshot — the Parquet files
//! and the acknowledged spans not yet flushed — so a query sees a span as soon as it is
//! acknowledged.
//!
//! Filters are pushed into the Parquet scan (row-group statistics, page index, the bloom filter
//! on `trace_id`, late materialization); DataFusion re-applies every filter above the scan, so
//! pruning is only ever an optimisation.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
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

#[derive(Debug)]
pub struct SpansTable {
    source: Arc<dyn SnapshotSource>,
}

impl SpansTable {
    pub fn new(source: Arc<dyn SnapshotSource>) -> Self {
        Self { source }
    }
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
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        span_schema()
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
        let schema = span_schema();
        let snapshot = self.source.snapshot();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        if !snapshot.files.is_empty() {
            let mut source = ParquetSource::new(Arc::clone(&schema))
                .with_pushdown_filters(true)
                .with_reorder_filters(true)
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true);
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let mut config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_limit(limit);
            for f in &snapshot.files {
                config = config.with_file(PartitionedFile::new(
                    object_path(&snapshot.data_dir, &f.path),
                    f.bytes,
                ));
            }
            let config = config.with_projection_indices(projection.cloned())?.build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.in_memory.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.in_memory],
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

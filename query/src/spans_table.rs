//! The `spans` table: a DataFusion `TableProvider` over one storage snapshot — the Parquet files
//! and the acknowledged spans not yet flushed — so a query sees a span as soon as it is
//! acknowledged.
//!
//! Files whose start-time range (from the manifest) cannot match a `start_time` filter are
//! skipped without being opened; the remaining filters are pushed into the Parquet scan
//! (row-group statistics, page index, the bloom filter on `trace_id`, late materialization).
//! DataFusion re-applies every filter above the scan, so pruning is only ever an optimisation.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
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

#[derive(Debug)]
pub struct SpansTable {
    source: Arc<dyn SnapshotSource>,
}

impl SpansTable {
    pub fn new(source: Arc<dyn SnapshotSource>) -> Self {
        Self { source }
    }
}

/// The inclusive range of `start_time` (unix nanoseconds) that the filters allow, from simple
/// comparisons of the column with a timestamp literal; anything else leaves the range open.
pub fn start_time_range(filters: &[Expr]) -> (i64, i64) {
    let mut range = (i64::MIN, i64::MAX);
    for f in filters {
        let Expr::BinaryExpr(b) = f else { continue };
        let (op, value) = match (b.left.as_ref(), b.right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) if c.name == col::START_TIME => (b.op, v),
            (Expr::Literal(v, _), Expr::Column(c)) if c.name == col::START_TIME => {
                match b.op.swap() {
                    Some(op) => (op, v),
                    None => continue,
                }
            }
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
        let mut snapshot = self.source.snapshot();
        let range = start_time_range(filters);
        snapshot
            .files
            .retain(|f| f.max_start_unix_nano >= range.0 && f.min_start_unix_nano <= range.1);
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
        assert_eq!(start_time_range(&filters), (100, 199));
        assert_eq!(start_time_range(&[]), (i64::MIN, i64::MAX));
        assert_eq!(start_time_range(&[column("start_time").eq(ts(5))]), (5, 5));
    }
}

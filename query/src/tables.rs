//! Sightline's tables — every table of the store's catalog: `spans`, `span_red`,
//! `service_edges` and the metric tables — as DataFusion `TableProvider`s over a storage
//! [`Version`]: the Parquet files and the rows not yet flushed, so a query sees a row as soon as
//! it is acknowledged.
//!
//! A statement reads one version: [`crate::QueryEngine::statement`] pins it in the session
//! config, and every scan of that statement reads the pinned one, so two tables of one answer
//! (topology reads two) are of the same instant.
//!
//! Files whose time range (from the manifest) cannot match a filter on the table's time column
//! are skipped without being opened; the remaining filters are pushed into the Parquet scan
//! (row-group statistics, page index, the bloom filter on `trace_id`, late materialization).
//! DataFusion re-applies every filter above the scan, so pruning is only ever an optimisation.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
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
use sightline_storage::{Store, TableSpec, Version};

/// Where tables get their version from: the live store, or a fixed version in tests.
pub trait VersionSource: Send + Sync + std::fmt::Debug + 'static {
    /// Everything acknowledged, as of now.
    fn version(&self) -> Version;
    /// The tables there are.
    fn tables(&self) -> Vec<Arc<TableSpec>>;
}

/// The live store (its default tenant).
#[derive(Clone)]
pub struct LiveStore(pub Store);

impl std::fmt::Debug for LiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveStore")
    }
}

impl VersionSource for LiveStore {
    fn version(&self) -> Version {
        self.0.version()
    }

    fn tables(&self) -> Vec<Arc<TableSpec>> {
        self.0.engine().catalog().tables.clone()
    }
}

/// The version every scan of a statement reads, kept in the statement's session config.
#[derive(Debug)]
pub struct PinnedVersion(pub Version);

#[derive(Debug)]
pub struct StoredTable {
    source: Arc<dyn VersionSource>,
    spec: Arc<TableSpec>,
}

impl StoredTable {
    pub fn new(source: Arc<dyn VersionSource>, spec: Arc<TableSpec>) -> Self {
        Self { source, spec }
    }
}

/// A timestamp literal as unix nanoseconds, whatever its unit.
fn timestamp_nanos(v: &ScalarValue) -> Option<i64> {
    Some(match v {
        ScalarValue::TimestampNanosecond(Some(t), _) => *t,
        ScalarValue::TimestampMicrosecond(Some(t), _) => t.saturating_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => t.saturating_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(t), _) => t.saturating_mul(1_000_000_000),
        _ => return None,
    })
}

/// The inclusive range of `column` (a timestamp) in unix nanoseconds that the filters allow,
/// from simple comparisons of the column with a timestamp literal; anything else leaves the
/// range open.
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
        let Some(t) = timestamp_nanos(value) else {
            continue;
        };
        // A coarser unit's literal stands for a range of nanoseconds: `> 5 ms` admits 5.0001 ms.
        // Widening by a unit either way keeps the pruning safe.
        let slack = match value {
            ScalarValue::TimestampNanosecond(..) => 0,
            ScalarValue::TimestampMicrosecond(..) => 1_000,
            ScalarValue::TimestampMillisecond(..) => 1_000_000,
            _ => 1_000_000_000,
        };
        match op {
            Operator::Gt => range.0 = range.0.max(t.saturating_add(1).saturating_sub(slack)),
            Operator::GtEq => range.0 = range.0.max(t.saturating_sub(slack)),
            Operator::Lt => range.1 = range.1.min(t.saturating_sub(1).saturating_add(slack)),
            Operator::LtEq => range.1 = range.1.min(t.saturating_add(slack)),
            Operator::Eq => {
                range.0 = range.0.max(t.saturating_sub(slack));
                range.1 = range.1.min(t.saturating_add(slack));
            }
            _ => {}
        }
    }
    range
}

/// Where a store's file is for DataFusion: the object store of the root URL's scheme and
/// authority, and the path under it.
fn object_location(root_url: &str, relative: &str) -> DfResult<(ObjectStoreUrl, String)> {
    let (scheme, rest) = root_url.split_once("://").ok_or_else(|| {
        DataFusionError::Internal(format!("store root {root_url:?} is not a URL"))
    })?;
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let url = ObjectStoreUrl::parse(format!("{scheme}://{authority}"))?;
    Ok((url, format!("{prefix}{relative}")))
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.schema)
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
        let schema = Arc::clone(&self.spec.schema);
        let version = match state.config().get_extension::<PinnedVersion>() {
            Some(pinned) => pinned.0.clone(),
            None => self.source.version(),
        };
        let root = version.files.root_url();
        let (files, in_memory) = match version.table(self.spec.name) {
            Some(t) => (t.files.to_vec(), t.in_memory.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let range = time_range(filters, self.spec.time_column);
        let files: Vec<_> = files
            .into_iter()
            .filter(|f| f.max_time >= range.0 && f.min_time <= range.1)
            .collect();
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
            let (store_url, _) = object_location(&root, "")?;
            let store = state.runtime_env().object_store(&store_url)?;
            source = source.with_parquet_file_reader_factory(Arc::new(
                CachedParquetFileReaderFactory::new(store, metadata_cache),
            ));
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let mut config =
                FileScanConfigBuilder::new(store_url, Arc::new(source)).with_limit(limit);
            for f in &files {
                let (_, path) = object_location(&root, &f.path)?;
                config = config.with_file(PartitionedFile::new(path, f.bytes));
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
        let ms = lit(ScalarValue::TimestampMillisecond(Some(7), None));
        assert_eq!(
            time_range(&[column("t").gt_eq(ms)], "t"),
            (6_000_000, i64::MAX),
            "a millisecond literal is widened by a millisecond"
        );
    }

    #[test]
    fn local_and_object_store_roots_resolve() {
        let (url, path) = object_location("file:///var/lib/s/", "tenants/a/x.parquet").unwrap();
        assert_eq!(url.as_str(), "file:///");
        assert_eq!(path, "var/lib/s/tenants/a/x.parquet");
        let (url, path) = object_location("s3://bucket/prefix/", "x.parquet").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/");
        assert_eq!(path, "prefix/x.parquet");
    }
}

//! One DataFusion `SessionContext` with Sightline's tables, and read-only SQL over it.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::logical_expr::ScalarUDF;
use futures::StreamExt;

use sightline_storage::Version;

use crate::error::QueryError;
use crate::tables::{PinnedVersion, StoredTable, VersionSource};

/// Limits on one SQL query.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    pub max_rows: usize,
    pub timeout: Duration,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The answer to a query: its schema, its rows up to the cap, and whether it was cut.
#[derive(Debug)]
pub struct SqlResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
}

#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    source: Arc<dyn VersionSource>,
    /// The one version `ctx` reads, when pinned (see [`QueryEngine::pinned`]).
    pinned: Option<Version>,
}

impl QueryEngine {
    pub fn new(source: Arc<dyn VersionSource>) -> Result<Self, QueryError> {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::from(crate::attr_match::AttrMatch::default()));
        for spec in source.tables() {
            ctx.register_table(
                spec.name,
                Arc::new(StoredTable::new(Arc::clone(&source), spec)),
            )?;
        }
        Ok(Self {
            ctx,
            source,
            pinned: None,
        })
    }

    /// This engine with one version of the store for every statement it runs: for the
    /// statements of one API answer, so that they agree.
    pub fn pinned(&self) -> QueryEngine {
        let version = self.version();
        QueryEngine {
            ctx: self.session_reading(version.clone()),
            source: Arc::clone(&self.source),
            pinned: Some(version),
        }
    }

    /// The version this engine reads: the pinned one, or the store's as of now.
    pub fn version(&self) -> Version {
        match &self.pinned {
            Some(v) => v.clone(),
            None => self.source.version(),
        }
    }

    /// Where a table's data begins (unix ns) in the version this engine reads.
    pub fn data_since(&self, table: &str) -> Option<i64> {
        self.version().table(table)?.min_time()
    }

    /// The session for one statement: the pinned one, or one reading the store as of now.
    pub fn context(&self) -> SessionContext {
        self.statement()
    }

    /// A session whose every scan reads the same version of the store, taken now (or the pinned
    /// one).
    pub fn statement(&self) -> SessionContext {
        match &self.pinned {
            Some(_) => self.ctx.clone(),
            None => self.session_reading(self.source.version()),
        }
    }

    fn session_reading(&self, version: Version) -> SessionContext {
        let mut state = self.ctx.state();
        state
            .config_mut()
            .set_extension(Arc::new(PinnedVersion(version)));
        SessionContext::new_with_state(state)
    }

    /// Runs one read-only statement: DDL, DML and `SET`-like statements are refused.
    pub async fn sql(&self, query: &str, limits: SqlLimits) -> Result<SqlResult, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            let df = self.statement().sql_with_options(query, options).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let room = limits.max_rows - rows;
                if batch.num_rows() > room {
                    batches.push(batch.slice(0, room));
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
                if rows == limits.max_rows {
                    truncated = stream.next().await.is_some();
                    break;
                }
            }
            Ok::<_, QueryError>(SqlResult {
                schema,
                batches,
                truncated,
            })
        };
        tokio::time::timeout(limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(limits.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_storage::{TableSpec, TableVersion, Version};

    #[derive(Debug)]
    struct Empty;

    impl VersionSource for Empty {
        fn version(&self) -> Version {
            let files: Arc<dyn sightline_storage::FileStore> =
                Arc::new(sightline_storage::files::LocalDir::new(std::env::temp_dir()).unwrap());
            Version {
                tenant: "default".into(),
                files,
                footers: Default::default(),
                tables: self
                    .tables()
                    .into_iter()
                    .map(|spec| TableVersion {
                        spec,
                        files: Arc::from(Vec::new()),
                        in_memory: Vec::new(),
                    })
                    .collect(),
            }
        }

        fn tables(&self) -> Vec<Arc<TableSpec>> {
            sightline_storage::store::catalog(&Default::default()).tables
        }
    }

    fn engine() -> QueryEngine {
        QueryEngine::new(Arc::new(Empty)).unwrap()
    }

    #[tokio::test]
    async fn rows_past_the_cap_are_cut_and_said_so() {
        let limits = SqlLimits {
            max_rows: 10,
            timeout: Duration::from_secs(10),
        };
        let r = engine()
            .sql("SELECT * FROM generate_series(1, 100)", limits)
            .await
            .unwrap();
        assert_eq!(r.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        assert!(r.truncated);
        let r = engine()
            .sql("SELECT * FROM generate_series(1, 10)", limits)
            .await
            .unwrap();
        assert!(!r.truncated);
    }

    #[tokio::test]
    async fn a_query_over_its_budget_times_out() {
        let limits = SqlLimits {
            max_rows: 10,
            timeout: Duration::from_millis(1),
        };
        let err = engine()
            .sql(
                "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 1000) b",
                limits,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn the_empty_store_has_an_empty_spans_table() {
        let r = engine()
            .sql("SELECT count(*) AS n FROM spans", SqlLimits::default())
            .await
            .unwrap();
        assert_eq!(r.batches[0].num_rows(), 1);
    }
}

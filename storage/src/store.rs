//! The store: Sightline's tables on one [`Engine`] — spans, the rollups derived from them, and
//! the metric tables — opened together in one data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use tokio::sync::oneshot;

use crate::engine::manifest::DEFAULT_TENANT;
use crate::engine::{self, Catalog, Engine, EngineConfig, MemoryBudget, Version, Write};
use crate::error::StorageError;
use crate::rollup::{self, RollupConfig, Rollups};
use crate::span_table::{spans_table, SPANS_TABLE};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Buffered rows are written to Parquet at the latest this long after they arrived.
    pub seal_max_age: Duration,
    /// ... or as soon as the buffers hold this many bytes of Arrow data.
    pub seal_max_bytes: usize,
    /// Bytes that buffered, flushing and in-flight rows may take; past it, writes are refused.
    pub memory_budget: usize,
    /// Writes that may wait for the WAL; past it, writes are refused.
    pub wal_queue_requests: usize,
    /// Partitions older than this are deleted.
    pub retention: Duration,
    /// A partition with this many files below the target size gets them merged.
    pub compaction_min_files: usize,
    pub compaction_target_rows: u64,
    /// How often retention and compaction run.
    pub maintenance_interval: Duration,
    pub rollups: RollupConfig,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let e = EngineConfig::new(data_dir);
        Self {
            data_dir: e.data_dir,
            seal_max_age: e.seal_max_age,
            seal_max_bytes: e.seal_max_bytes,
            memory_budget: e.memory_budget,
            wal_queue_requests: e.wal_queue_requests,
            retention: e.retention,
            compaction_min_files: e.compaction_min_files,
            compaction_target_rows: e.compaction_target_rows,
            maintenance_interval: e.maintenance_interval,
            rollups: RollupConfig::default(),
        }
    }

    fn engine(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone(),
            seal_max_age: self.seal_max_age,
            seal_max_bytes: self.seal_max_bytes,
            memory_budget: self.memory_budget,
            wal_queue_requests: self.wal_queue_requests,
            retention: self.retention,
            compaction_min_files: self.compaction_min_files,
            compaction_target_rows: self.compaction_target_rows,
            maintenance_interval: self.maintenance_interval,
        }
    }
}

/// Every table of Sightline, and what derives the rollups from spans.
pub fn catalog(rollups: &RollupConfig) -> Catalog {
    let rollups = rollups.clone();
    Catalog {
        tables: vec![
            Arc::new(spans_table()),
            Arc::new(rollup::span_red_table()),
            Arc::new(rollup::service_edges_table()),
        ],
        derives: vec![Box::new(move || Box::new(Rollups::new(&rollups)))],
    }
}

/// Rows a write's admission refused, by reason: the store stores the rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    refusals: Vec<Refusal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short stable name, also the label of the refusal counters (`sample_too_old`).
    pub reason: &'static str,
    pub count: u64,
    /// The first refused row of this reason, described for the client.
    pub example: String,
}

impl WriteReport {
    /// Counts one refused row; `example` is asked for only for the first of its reason.
    pub fn refuse(&mut self, reason: &'static str, example: impl FnOnce() -> String) {
        match self.refusals.iter_mut().find(|r| r.reason == reason) {
            Some(r) => r.count += 1,
            None => self.refusals.push(Refusal {
                reason,
                count: 1,
                example: example(),
            }),
        }
    }

    pub fn refusals(&self) -> &[Refusal] {
        &self.refusals
    }

    pub fn total(&self) -> u64 {
        self.refusals.iter().map(|r| r.count).sum()
    }

    /// `2 samples refused: sample_too_old (2): …` for the client, or `None` if nothing was.
    pub fn message(&self, what: &str) -> Option<String> {
        if self.refusals.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .refusals
            .iter()
            .map(|r| format!("{} ({}): {}", r.reason, r.count, r.example))
            .collect();
        Some(format!(
            "{} {what} refused: {}",
            self.total(),
            parts.join("; ")
        ))
    }
}

/// The embedded store. Cheap to clone; call [`Store::shutdown`] for a clean stop that flushes the
/// buffers.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, replaying whatever the WAL holds that
    /// the manifest does not yet cover.
    pub fn open(config: StoreConfig) -> Result<Self, StorageError> {
        let catalog = catalog(&config.rollups);
        Ok(Self {
            engine: Engine::open(config.engine(), catalog)?,
        })
    }

    /// Reads a data directory without a running store (and without changing it): the default
    /// tenant's files plus whatever the WAL holds beyond the checkpoints.
    pub fn load_readonly(data_dir: &Path) -> Result<Version, StorageError> {
        engine::load_readonly(data_dir, catalog(&RollupConfig::default()), DEFAULT_TENANT)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn memory(&self) -> &Arc<MemoryBudget> {
        self.engine.memory()
    }

    pub fn is_healthy(&self) -> bool {
        self.engine.is_healthy()
    }

    /// Admits a write and queues what is admitted for the WAL (see [`Engine::submit`]): the
    /// report says at once what was refused; the receiver answers once the rest is durable.
    pub fn submit(
        &self,
        write: Write,
    ) -> Result<(WriteReport, oneshot::Receiver<Result<(), StorageError>>), StorageError> {
        let report = WriteReport::default();
        if write.batches.iter().all(|(_, b)| b.num_rows() == 0) {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Ok(()));
            return Ok((report, rx));
        }
        Ok((report, self.engine.submit(write)?))
    }

    /// Queues a batch of spans of the default tenant.
    pub fn submit_spans(
        &self,
        batch: RecordBatch,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        let (_, rx) = self.submit(Write {
            tenant: DEFAULT_TENANT.into(),
            batches: vec![(SPANS_TABLE, batch)],
        })?;
        Ok(rx)
    }

    /// Appends a batch of spans and waits until it is durable.
    pub async fn append_spans(&self, batch: RecordBatch) -> Result<(), StorageError> {
        let rx = self.submit_spans(batch)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// The default tenant's tables as of now.
    pub fn version(&self) -> Version {
        self.engine.version(DEFAULT_TENANT)
    }

    pub async fn flush(&self) -> Result<(), StorageError> {
        self.engine.flush().await
    }

    pub async fn compact_now(&self) -> Result<(), StorageError> {
        self.engine.compact_now().await
    }

    pub fn shutdown(&self) {
        self.engine.shutdown()
    }

    /// Stops as a crash would, leaving the WAL unflushed (tests of recovery).
    pub fn abandon(&self) {
        self.engine.abandon()
    }
}

//! The store: Sightline's tables on one [`Engine`] — spans, the rollups derived from them, and
//! the metric tables — opened together in one data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use tokio::sync::oneshot;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::engine::manifest::DEFAULT_TENANT;
use crate::engine::partition::hour_of;
use crate::engine::{self, Catalog, Engine, EngineConfig, MemoryBudget, Version, Write};
use crate::error::StorageError;
use crate::metrics::{self, MetricWrite, MetricsConfig, SeriesRegistry};
use crate::rollup::{self, RollupConfig, Rollups, StatRollups, SPAN_STATS_TABLE};
use crate::span_table::{spans_table, SPANS_TABLE};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The table engine's: data directory, sealing, memory, retention, compaction.
    pub engine: EngineConfig,
    pub rollups: RollupConfig,
    pub metrics: MetricsConfig,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            engine: EngineConfig::new(data_dir),
            rollups: RollupConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Every table of Sightline, and what derives the rollups from spans and span statistics.
pub fn catalog(rollups: &RollupConfig) -> Catalog {
    let rollups = rollups.clone();
    let mut tables = vec![
        Arc::new(spans_table()),
        Arc::new(rollup::span_red_table()),
        Arc::new(rollup::service_edges_table()),
        Arc::new(rollup::span_stats_table()),
    ];
    tables.extend(metrics::tables::metric_tables().into_iter().map(Arc::new));
    Catalog {
        tables,
        derives: vec![
            Box::new({
                let rollups = rollups.clone();
                move || Box::new(Rollups::new(&rollups))
            }),
            Box::new(move || Box::new(StatRollups::new(&rollups))),
        ],
    }
}

/// Rows a write's admission refused, by reason: the store stores the rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    refusals: Vec<Refusal>,
    /// Rows admitted, per table.
    rows: Vec<(&'static str, u64)>,
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
        self.refuse_n(reason, 1, example)
    }

    /// Counts `count` refused rows of one reason.
    pub fn refuse_n(&mut self, reason: &'static str, count: u64, example: impl FnOnce() -> String) {
        match self.refusals.iter_mut().find(|r| r.reason == reason) {
            Some(r) => r.count += count,
            None => self.refusals.push(Refusal {
                reason,
                count,
                example: example(),
            }),
        }
    }

    pub fn refusals(&self) -> &[Refusal] {
        &self.refusals
    }

    /// Rows of `table` admitted (and, once the write is acknowledged, stored).
    pub fn rows(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn count_rows(&mut self, write: &Write) {
        for (table, batch) in &write.batches {
            self.rows.push((table, batch.num_rows() as u64));
        }
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

/// What a receiver hands the store: rows of one signal, which the store admits by that signal's
/// rules before they become batches of its tables.
#[derive(Debug)]
pub enum Ingest {
    Spans(RecordBatch),
    Metrics(Box<MetricWrite>),
    /// Spans counted before they arrived (SOFATracer's stat logs), as `span_stats` rows.
    SpanStats(RecordBatch),
}

impl Ingest {
    /// About what the write will hold in memory once admitted: its batches and their WAL
    /// records (for a writer to wait for that much room).
    pub fn estimated_bytes(&self) -> usize {
        match self {
            Ingest::Spans(b) | Ingest::SpanStats(b) => b.get_array_memory_size() * 2,
            Ingest::Metrics(m) => m.estimated_bytes(),
        }
    }
}

/// The embedded store. Cheap to clone; call [`Store::shutdown`] for a clean stop that flushes the
/// buffers.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
    metrics: Arc<MetricsState>,
}

/// The metrics side of the store: each tenant's active series, and refusals by reason.
struct MetricsState {
    config: MetricsConfig,
    registries: Mutex<HashMap<String, Arc<SeriesRegistry>>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, replaying whatever the WAL holds that
    /// the manifest does not yet cover.
    pub fn open(config: StoreConfig) -> Result<Self, StorageError> {
        let catalog = catalog(&config.rollups);
        let store = Self {
            engine: Engine::open(config.engine.clone(), catalog)?,
            metrics: Arc::new(MetricsState {
                config: config.metrics.clone(),
                registries: Mutex::new(HashMap::new()),
                refusals: Mutex::new(BTreeMap::new()),
            }),
        };
        for tenant in store.engine.tenants() {
            store.load_registry(&tenant)?;
        }
        Ok(store)
    }

    /// Rebuilds a tenant's active series from the series rows of the recent hours.
    fn load_registry(&self, tenant: &str) -> Result<(), StorageError> {
        let registry = self.registry(tenant);
        let version = self.engine.version(tenant);
        let since = hour_of(now_millis().saturating_mul(1_000_000)) - 1;
        let Some(table) = version.table(metrics::tables::SERIES_TABLE) else {
            return Ok(());
        };
        let mut batches = table.in_memory.clone();
        for f in table.files.iter().filter(|f| f.hour >= since) {
            batches.extend(engine::sorted::read_columns(
                version.files.as_ref(),
                f,
                &[
                    metrics::tables::col::TIME,
                    metrics::tables::col::METRIC,
                    metrics::tables::col::SERIES_ID,
                    metrics::tables::col::CHECK,
                ],
            )?);
        }
        let mut loaded = 0usize;
        for b in &batches {
            loaded += metrics::registry::load_batch(&registry, b, since)?;
        }
        if loaded > 0 {
            tracing::info!(
                tenant,
                series = registry.active_series(),
                "active series loaded"
            );
        }
        Ok(())
    }

    fn registry(&self, tenant: &str) -> Arc<SeriesRegistry> {
        let mut registries = self
            .metrics
            .registries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            registries
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(SeriesRegistry::new(self.metrics.config.clone()))),
        )
    }

    pub fn metrics_config(&self) -> &MetricsConfig {
        &self.metrics.config
    }

    /// Active series of every tenant.
    pub fn active_series(&self) -> u64 {
        let registries = self
            .metrics
            .registries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        registries.values().map(|r| r.active_series()).sum()
    }

    /// Rows refused at admission since start, by reason.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.metrics
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn count(&self, report: &WriteReport) {
        if report.refusals.is_empty() {
            return;
        }
        let mut counts = self
            .metrics
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for r in &report.refusals {
            *counts.entry(r.reason).or_insert(0) += r.count;
        }
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
        tenant: &str,
        ingest: Ingest,
    ) -> Result<(WriteReport, oneshot::Receiver<Result<(), StorageError>>), StorageError> {
        let submit = |write: Write| {
            if write.batches.iter().all(|(_, b)| b.num_rows() == 0) {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Ok(()));
                return Ok(rx);
            }
            self.engine.submit(write)
        };
        let (table, batch) = match ingest {
            Ingest::Spans(batch) => (SPANS_TABLE, batch),
            Ingest::SpanStats(batch) => (SPAN_STATS_TABLE, batch),
            Ingest::Metrics(write) => {
                let registry = self.registry(tenant);
                let result = metrics::admit(&registry, *write, tenant, now_millis(), submit);
                if let Ok((report, _)) = &result {
                    self.count(report);
                }
                return result;
            }
        };
        let write = Write {
            tenant: tenant.to_string(),
            batches: vec![(table, batch)],
        };
        let mut report = WriteReport::default();
        report.count_rows(&write);
        Ok((report, submit(write)?))
    }

    /// Queues a batch of spans of the default tenant.
    pub fn submit_spans(
        &self,
        batch: RecordBatch,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        let (_, rx) = self.submit(DEFAULT_TENANT, Ingest::Spans(batch))?;
        Ok(rx)
    }

    /// Admits metrics of the default tenant and waits until what was admitted is durable.
    pub async fn write_metrics(&self, write: MetricWrite) -> Result<WriteReport, StorageError> {
        let (report, rx) = self.submit(DEFAULT_TENANT, Ingest::Metrics(Box::new(write)))?;
        rx.await.map_err(|_| StorageError::Closed)??;
        Ok(report)
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

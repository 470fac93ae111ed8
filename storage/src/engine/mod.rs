//! The table engine: one write-ahead log with group commit, in-memory buffers, sealing, Parquet
//! flushes, a versioned manifest, retention and compaction — for every table alike. A table is a
//! [`TableSpec`]; tables computed from another as it is written (the rollups from spans) plug in
//! as a [`Derive`].
//!
//! Three threads own all writes. The *WAL thread* takes writes from a bounded queue, writes a
//! whole group of them, fsyncs once and only then acknowledges them and adds their batches to the
//! buffers (and to whatever derives from them); it seals the buffers by age, size or memory
//! pressure, switching to a new WAL segment first, so that a sealed chunk is exactly the segments
//! before the switch. The *flush thread* writes each tenant's tables of a chunk to Parquet and
//! commits them to the manifest with their WAL checkpoint; a table whose flush fails is retried
//! without holding up the others. The *maintenance thread* runs retention and compaction.
//!
//! What a reader sees is a [`Version`]: the files, the sealed chunks not yet in files and the
//! buffers, taken together under the one lock that every change to any of them takes — a flush
//! commit adds a chunk's files and drops the chunk in the same step, so no row is ever seen twice
//! or missed.

pub mod budget;
mod flush;
mod lookup;
mod maintenance;
pub mod manifest;
pub mod partition;
mod recovery;
pub mod sorted;
pub mod table;
mod version;
pub mod wal;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tokio::sync::oneshot;

use crate::error::StorageError;
use crate::files::{FileStore, LocalDir};
use crate::telemetry::DurationHistogram;
pub use budget::{tracked_limit, MemoryBudget, Reservation};
pub use lookup::{FooterCache, KeyLookup, OneOf};
use manifest::{FileEntry, Manifest};
pub use table::{Catalog, Effort, Merge, Source, TableSpec};
pub use version::{TableVersion, Version};

#[derive(Debug, Clone)]
pub struct EngineConfig {
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
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            seal_max_age: Duration::from_secs(5),
            seal_max_bytes: 128 << 20,
            memory_budget: 1 << 30,
            wal_queue_requests: 4096,
            retention: Duration::from_secs(7 * 24 * 3600),
            compaction_min_files: 4,
            compaction_target_rows: 1_000_000,
            maintenance_interval: Duration::from_secs(30),
        }
    }
}

/// Rows of derived tables, by table name.
pub type DerivedRows = Vec<(&'static str, RecordBatch)>;

/// A table computed from another as it is written: it sees every batch of its source table once
/// it is durable (and again on replay), and hands its rows over when the buffers are sealed, so
/// that they are written in the same manifest commit as the source rows they came from.
pub trait Derive: Send {
    /// The logged table it reads.
    fn source(&self) -> &'static str;
    fn observe(&mut self, batch: &RecordBatch, now: Instant) -> Result<(), StorageError>;
    /// Called about every second, whether or not rows arrived.
    fn tick(&mut self, now: Instant);
    /// Called once at shutdown, before the last seal.
    fn finish(&mut self);
    fn is_empty(&self) -> bool;
    /// Its rows so far, without taking them (for readers).
    fn current(&self) -> Result<DerivedRows, StorageError>;
    /// Takes its rows so far, to be written with the source rows they came from.
    fn seal(&mut self) -> Result<DerivedRows, StorageError>;
    /// Counters for the status endpoint, by name.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// Makes a tenant's instance of a derive.
pub type DeriveFactory = Box<dyn Fn() -> Box<dyn Derive> + Send + Sync>;

/// One write: batches of logged tables of one tenant, durable together.
#[derive(Debug, Clone)]
pub struct Write {
    pub tenant: String,
    pub batches: Vec<(&'static str, RecordBatch)>,
}

/// Counters for the self-metrics and the benchmark.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Acknowledged rows per table, in catalog order.
    pub rows_acknowledged: Vec<AtomicU64>,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub files_flushed: AtomicU64,
    pub files_compacted: AtomicU64,
    pub partitions_expired: AtomicU64,
    pub seals_by_age: AtomicU64,
    pub seals_by_size: AtomicU64,
    pub seals_by_memory: AtomicU64,
    pub flush_failures: AtomicU64,
    pub wal_rotation_failures: AtomicU64,
    /// Writing and fsyncing one group commit of the WAL.
    pub wal_commit_seconds: DurationHistogram,
    /// Writing one sealed part to Parquet and committing it.
    pub flush_seconds: DurationHistogram,
    /// Merging one set of files.
    pub compaction_seconds: DurationHistogram,
}

type Ack = oneshot::Sender<Result<(), StorageError>>;

/// A batch on its way to the WAL, with the memory it holds.
struct PendingRecord {
    table: usize,
    payload: Vec<u8>,
    batch: RecordBatch,
    reservation: Reservation,
}

enum WalCommand {
    Append {
        tenant: String,
        records: Vec<PendingRecord>,
        ack: Ack,
    },
    /// Seal the buffers now and answer once they are in Parquet.
    Flush(Ack),
    Shutdown,
    /// Stop without sealing or flushing, as a crash would (tests).
    Abandon,
}

/// What one tenant has in memory and not yet sealed.
struct TenantBuffers {
    /// Per catalog table: acknowledged batches and the memory they hold.
    active: Vec<Vec<RecordBatch>>,
    reservations: Vec<Vec<Reservation>>,
    derives: Vec<Box<dyn Derive>>,
}

/// One tenant's logged table, and what derives from it, of one sealed chunk: the unit that is
/// flushed and committed.
struct Part {
    chunk: u64,
    wal_through: Option<u64>,
    tenant: String,
    /// The logged table (catalog index).
    table: usize,
    /// Its batches and its derived tables' rows, by catalog index.
    rows: Vec<(usize, Vec<RecordBatch>)>,
    /// The memory its batches hold, given back when the part is committed and dropped.
    _memory: Vec<Reservation>,
}

struct State {
    manifest: Manifest,
    /// Files per tenant and catalog table, shared with readers; rebuilt on each commit.
    files: BTreeMap<String, Vec<Arc<[FileEntry]>>>,
    tenants: BTreeMap<String, TenantBuffers>,
    /// Sealed parts on their way to Parquet; still visible to readers.
    sealed: Vec<Arc<Part>>,
    buffer_bytes: usize,
    buffer_since: Option<Instant>,
    /// When derived rows alone (no logged rows) started to wait for a seal.
    derived_since: Option<Instant>,
    derive_counters: BTreeMap<&'static str, u64>,
}

struct Shared {
    config: EngineConfig,
    catalog: Catalog,
    files: Arc<dyn FileStore>,
    state: Mutex<State>,
    memory: Arc<MemoryBudget>,
    stats: EngineStats,
    wal_failed: AtomicBool,
    /// Serializes manifest changes (see [`flush::commit`]).
    manifest_writer: Mutex<()>,
    footers: Arc<lookup::FooterCache>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays consistent
        // because every critical section only swaps whole values.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_tenant(&self) -> TenantBuffers {
        let n = self.catalog.tables.len();
        TenantBuffers {
            active: vec![Vec::new(); n],
            reservations: (0..n).map(|_| Vec::new()).collect(),
            derives: self.catalog.derives.iter().map(|f| f()).collect(),
        }
    }
}

impl State {
    /// Rebuilds the readers' file lists from the manifest.
    fn index_files(&mut self, catalog: &Catalog) {
        self.files = self
            .manifest
            .tenants
            .iter()
            .map(|(tenant, tables)| {
                let lists = catalog
                    .tables
                    .iter()
                    .map(|t| {
                        tables
                            .get(t.name)
                            .map(|f| Arc::from(f.files.as_slice()))
                            .unwrap_or_else(|| Arc::from(Vec::new()))
                    })
                    .collect();
                (tenant.clone(), lists)
            })
            .collect();
    }
}

/// The embedded table engine. Cheap to clone; the last clone dropped does not stop the threads —
/// call [`Engine::shutdown`] for a clean stop that flushes the buffers.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    commands: SyncSender<WalCommand>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    maintenance: SyncSender<maintenance::Command>,
}

impl Engine {
    /// Opens (or creates) the store in `config.data_dir`: removes files no manifest lists,
    /// replays whatever the WAL holds beyond the checkpoints into Parquet, then starts the
    /// threads.
    pub fn open(config: EngineConfig, catalog: Catalog) -> Result<Self, StorageError> {
        catalog.validate()?;
        let files: Arc<dyn FileStore> = Arc::new(LocalDir::new(&config.data_dir)?);
        let lock = recovery::lock_directory(&config.data_dir)?;
        let wal_dir = config.data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| StorageError::io("create dir", &wal_dir, e))?;
        let mut manifest = Manifest::load(files.as_ref())?;
        recovery::remove_orphans(files.as_ref(), &mut manifest)?;
        let stats = EngineStats {
            rows_acknowledged: catalog.tables.iter().map(|_| AtomicU64::new(0)).collect(),
            ..EngineStats::default()
        };
        let shared = Arc::new(Shared {
            memory: MemoryBudget::new(tracked_limit(config.memory_budget)),
            config,
            catalog,
            files,
            state: Mutex::new(State {
                manifest,
                files: BTreeMap::new(),
                tenants: BTreeMap::new(),
                sealed: Vec::new(),
                buffer_bytes: 0,
                buffer_since: None,
                derived_since: None,
                derive_counters: BTreeMap::new(),
            }),
            stats,
            footers: Arc::default(),
            wal_failed: AtomicBool::new(false),
            manifest_writer: Mutex::new(()),
        });
        shared.state().index_files(&shared.catalog);
        let next_segment = recovery::replay_wal(&shared, &wal_dir)?;
        let segment = wal::SegmentWriter::create(&wal_dir, next_segment)?;

        let (commands, wal_rx) = mpsc::sync_channel(shared.config.wal_queue_requests);
        let (flush_tx, flush_rx) = mpsc::sync_channel(64);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StorageError::io("spawn thread", &shared.config.data_dir, e))
        };
        let wal_thread = {
            let shared = Arc::clone(&shared);
            spawn(
                "sightline-wal",
                Box::new(move || {
                    writer::WalWriter::new(shared, segment, wal_dir, flush_tx, lock).run(wal_rx)
                }),
            )?
        };
        let flush_thread = {
            let shared = Arc::clone(&shared);
            spawn(
                "sightline-flush",
                Box::new(move || flush::Flusher::new(shared).run(flush_rx)),
            )?
        };
        let (maintenance, maintenance_rx) = mpsc::sync_channel(16);
        let maintenance_thread = {
            let shared = Arc::clone(&shared);
            spawn(
                "sightline-maintenance",
                Box::new(move || maintenance::Maintenance::new(shared).run(maintenance_rx)),
            )?
        };
        Ok(Self {
            shared,
            commands,
            threads: Arc::new(Mutex::new(vec![
                wal_thread,
                flush_thread,
                maintenance_thread,
            ])),
            maintenance,
        })
    }

    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.shared.memory
    }

    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    pub fn file_store(&self) -> &Arc<dyn FileStore> {
        &self.shared.files
    }

    /// Acknowledged rows of a table since start.
    pub fn rows_acknowledged(&self, table: &str) -> u64 {
        self.shared.catalog.index_of(table).map_or(0, |i| {
            self.shared.stats.rows_acknowledged[i].load(Ordering::Relaxed)
        })
    }

    /// The derives' counters, summed over tenants.
    pub fn derive_counters(&self) -> BTreeMap<&'static str, u64> {
        self.shared.state().derive_counters.clone()
    }

    /// Whether the write path takes writes: false once an fsync has failed.
    pub fn is_healthy(&self) -> bool {
        !self.shared.wal_failed.load(Ordering::Relaxed)
    }

    /// Queues a write for the WAL without waiting. The returned receiver answers once it is
    /// durable. Refuses at once (no waiting, no unbounded growth) when the memory budget or the
    /// WAL queue is full.
    pub fn submit(
        &self,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        if !self.is_healthy() {
            return Err(StorageError::WalFailed("an earlier fsync failed".into()));
        }
        if write.tenant.is_empty() || write.tenant.contains(['/', '\\', '.']) {
            return Err(StorageError::Schema(format!(
                "tenant {:?} is not a valid name",
                write.tenant
            )));
        }
        let mut records = Vec::with_capacity(write.batches.len());
        for (name, batch) in write.batches {
            let table = self
                .shared
                .catalog
                .index_of(name)
                .filter(|&i| self.shared.catalog.tables[i].is_logged())
                .ok_or_else(|| StorageError::Schema(format!("no logged table {name}")))?;
            let spec = &self.shared.catalog.tables[table];
            if !Arc::ptr_eq(&batch.schema(), &spec.schema) && batch.schema() != spec.schema {
                return Err(StorageError::Schema(format!(
                    "batch for table {name} does not have the table's schema"
                )));
            }
            let mut reservation = self
                .shared
                .memory
                .try_reserve(batch.get_array_memory_size())
                .ok_or(StorageError::Saturated("memory budget"))?;
            let payload = wal::encode_record(&write.tenant, name, &batch)?;
            // The encoded copy lives until the WAL thread has written it.
            if !reservation.try_grow(payload.len()) {
                return Err(StorageError::Saturated("memory budget"));
            }
            records.push(PendingRecord {
                table,
                payload,
                batch,
                reservation,
            });
        }
        let (ack, rx) = oneshot::channel();
        match self.commands.try_send(WalCommand::Append {
            tenant: write.tenant,
            records,
            ack,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(StorageError::Saturated("wal backlog")),
            Err(TrySendError::Disconnected(_)) => Err(StorageError::Closed),
        }
    }

    /// Writes and waits until the write is durable.
    pub async fn write(&self, write: Write) -> Result<(), StorageError> {
        let rx = self.submit(write)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Writes everything buffered to Parquet and waits for it.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        // The queue is bounded, and an async caller must not block on it: a full queue is a
        // refusal like any write's.
        match self.commands.try_send(WalCommand::Flush(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StorageError::Saturated("wal backlog")),
            Err(TrySendError::Disconnected(_)) => return Err(StorageError::Closed),
        }
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Merges every partition's small files now (the benchmark's "after compaction").
    pub async fn compact_now(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        match self
            .maintenance
            .try_send(maintenance::Command::CompactNow(tx))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StorageError::Saturated("maintenance queue")),
            Err(TrySendError::Disconnected(_)) => return Err(StorageError::Closed),
        }
        rx.await.map_err(|_| StorageError::Closed)
    }

    /// Everything a tenant has acknowledged, as of now, in one consistent view.
    pub fn version(&self, tenant: &str) -> Version {
        version::build(&self.shared, tenant)
    }

    /// Tenants with data, in files or in memory.
    pub fn tenants(&self) -> Vec<String> {
        let state = self.shared.state();
        let mut t: Vec<String> = state.files.keys().cloned().collect();
        t.extend(state.tenants.keys().cloned());
        t.sort();
        t.dedup();
        t
    }

    /// Flushes the buffers to Parquet and stops the threads. Blocking; call it off the async
    /// runtime or at the very end.
    pub fn shutdown(&self) {
        self.stop(WalCommand::Shutdown);
    }

    /// Stops the threads without sealing or flushing, leaving the directory as a `kill -9`
    /// would: what is acknowledged is in the WAL only. For tests of recovery.
    pub fn abandon(&self) {
        self.stop(WalCommand::Abandon);
    }

    fn stop(&self, command: WalCommand) {
        let _ = self.commands.send(command);
        let _ = self.maintenance.send(maintenance::Command::Shutdown);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Reads a data directory without a running engine (and without changing it): the manifest's
/// files plus whatever the WAL holds beyond the checkpoints, with derived tables rebuilt.
pub fn load_readonly(
    data_dir: &std::path::Path,
    catalog: Catalog,
    tenant: &str,
) -> Result<Version, StorageError> {
    recovery::load_readonly(data_dir, catalog, tenant)
}

/// Seconds since the epoch, for retention.
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

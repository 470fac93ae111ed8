//! The span store: group-committed WAL, in-memory buffers, Parquet flushes, compaction and
//! retention.
//!
//! Two threads own all writes. The *WAL thread* takes appends from a bounded queue, writes a
//! whole group of them, fsyncs once and only then acknowledges them and adds their batches to the
//! buffer; it seals the buffer by size or age, switching to a new WAL segment in the same step so
//! that a sealed chunk is exactly the segments before the switch. The *flush thread* writes
//! sealed chunks to Parquet, records them in the manifest together with the WAL checkpoint, then
//! deletes the covered segments; between chunks it runs retention and compaction. Only the flush
//! thread changes the manifest, so manifest updates never race.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use tokio::sync::oneshot;

use crate::error::StorageError;
use crate::manifest::{FileEntry, Manifest};
use crate::rollup::{
    self, EdgeKey, RedKey, RollupBatches, RollupConfig, RollupCounters, RollupKey, Rollups,
};
use crate::span_files::{self, Effort};
use crate::wal::{self, SegmentWriter};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Buffered spans are written to Parquet at the latest this long after they arrived.
    pub seal_max_age: Duration,
    /// ... or as soon as the buffer holds this many bytes of Arrow data.
    pub seal_max_bytes: usize,
    /// Bytes that buffered, flushing and in-flight spans may take; past it, appends are refused.
    pub memory_budget: usize,
    /// Requests that may wait for the WAL; past it, appends are refused.
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
            rollups: RollupConfig::default(),
        }
    }
}

/// Memory not tracked by the budget: Parquet encoders and decoders, request decoders, the
/// allocator's retained free memory. Measured at about 300 MiB under the ingest benchmark
/// (docs/benchmarks.md), so that much is set aside before spans are admitted.
const UNTRACKED_HEADROOM: usize = 384 << 20;

/// The part of the process's memory budget that buffered and in-flight spans may take: the
/// budget less the larger of a quarter of it and [`UNTRACKED_HEADROOM`], and never less than a
/// quarter of the budget.
pub fn tracked_limit(budget: usize) -> usize {
    budget
        .saturating_sub((budget / 4).max(UNTRACKED_HEADROOM))
        .max(budget / 4)
}

/// A byte budget shared by everything that holds spans in memory.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

/// Bytes held against the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Reserves `bytes`, or `None` when that would go over the limit.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: Arc::clone(self),
                        bytes,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Reservation {
    /// Holds `bytes` more, or returns false (holding what it held) when the budget is full.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        match self.budget.try_reserve(bytes) {
            Some(more) => {
                self.bytes += more.bytes;
                // `more` is now part of `self`; it must not give its bytes back on drop.
                let mut more = more;
                more.bytes = 0;
                true
            }
            None => false,
        }
    }

    /// Gives back what is no longer held (a request's body once decoded, say).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Counters for the self-metrics and the benchmark.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub spans_acknowledged: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub files_flushed: AtomicU64,
    pub files_compacted: AtomicU64,
    pub partitions_expired: AtomicU64,
    /// See [`RollupCounters`].
    pub rollup_spans_folded: AtomicU64,
    pub rollup_calls_folded: AtomicU64,
    pub call_halves_unpaired: AtomicU64,
    pub call_halves_pending: AtomicU64,
}

impl StoreStats {
    fn record_rollups(&self, c: RollupCounters) {
        self.rollup_spans_folded
            .store(c.spans_folded, Ordering::Relaxed);
        self.rollup_calls_folded
            .store(c.calls_folded, Ordering::Relaxed);
        self.call_halves_unpaired
            .store(c.halves_unpaired, Ordering::Relaxed);
        self.call_halves_pending
            .store(c.halves_pending, Ordering::Relaxed);
    }
}

type Ack = oneshot::Sender<Result<(), StorageError>>;

enum WalCommand {
    Append {
        payload: Vec<u8>,
        batch: RecordBatch,
        reservation: Reservation,
        ack: Ack,
    },
    /// Seal the buffer now and answer once it is in Parquet.
    Flush(oneshot::Sender<()>),
    Shutdown,
}

enum FlushCommand {
    Chunk(Chunk),
    /// Answer once every chunk sent before is written.
    Barrier(Vec<oneshot::Sender<()>>),
    Shutdown,
}

struct Chunk {
    /// The last WAL segment the chunk covers; `None` for a chunk of rollups alone (calls that
    /// gave up waiting for their other half), whose spans are on disk already.
    wal_through: Option<u64>,
    /// Identifies the chunk among those flushing.
    sequence: u64,
    batches: Vec<RecordBatch>,
    rollups: RollupBatches,
    reservations: Vec<Reservation>,
    done: Vec<oneshot::Sender<()>>,
}

struct State {
    buffer: Vec<RecordBatch>,
    buffer_reservations: Vec<Reservation>,
    buffer_bytes: usize,
    buffer_since: Option<Instant>,
    /// The rollups of the buffered spans, and of calls resolved since the last seal.
    rollups: Rollups,
    /// When rollups alone (no spans) started to wait for a seal.
    rollups_since: Option<Instant>,
    /// Sealed chunks on their way to Parquet, by sequence; still visible to readers.
    flushing: Vec<(u64, Vec<RecordBatch>, RollupBatches)>,
    manifest: Manifest,
}

struct Shared {
    config: StoreConfig,
    state: Mutex<State>,
    memory: Arc<MemoryBudget>,
    stats: StoreStats,
    wal_failed: AtomicBool,
    /// Serializes manifest changes (see [`commit`]).
    manifest_writer: Mutex<()>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays consistent
        // because every critical section only swaps whole values.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One rollup table at one instant: its files and its rows not yet in them.
#[derive(Debug, Clone, Default)]
pub struct RollupSnapshot {
    pub files: Vec<FileEntry>,
    pub in_memory: Vec<RecordBatch>,
}

/// Everything a reader needs to see all acknowledged spans, and their rollups, at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub data_dir: PathBuf,
    pub files: Vec<FileEntry>,
    /// Acknowledged spans not yet in Parquet.
    pub in_memory: Vec<RecordBatch>,
    pub span_red: RollupSnapshot,
    pub service_edges: RollupSnapshot,
}

impl Snapshot {
    /// Reads a data directory without a running store (and without changing it): the manifest's
    /// files plus whatever the WAL holds beyond its checkpoint.
    pub fn load_readonly(data_dir: &Path) -> Result<Self, StorageError> {
        let manifest = Manifest::load(data_dir)?;
        let wal_dir = data_dir.join("wal");
        let mut in_memory: Vec<RecordBatch> = Vec::new();
        if wal_dir.exists() {
            for id in wal::list_segments(&wal_dir)? {
                if id <= manifest.wal_checkpoint {
                    continue;
                }
                let contents = wal::read_segment(&wal::segment_path(&wal_dir, id), false)?;
                for p in contents.payloads {
                    in_memory.extend(wal::decode_batches(&p)?);
                }
            }
        }
        let mut rollups = Rollups::new(&RollupConfig::default());
        for b in &in_memory {
            rollups.observe(b, Instant::now())?;
        }
        let current = rollups.seal()?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            files: manifest.files,
            in_memory,
            span_red: RollupSnapshot {
                files: manifest.span_red,
                in_memory: current.span_red.into_iter().collect(),
            },
            service_edges: RollupSnapshot {
                files: manifest.service_edges,
                in_memory: current.service_edges.into_iter().collect(),
            },
        })
    }

    /// Every span of the snapshot: Parquet files first, then the in-memory batches.
    pub fn read_all(&self) -> Result<Vec<RecordBatch>, StorageError> {
        let mut out = Vec::new();
        for f in &self.files {
            out.extend(span_files::read_file(&self.data_dir, f)?);
        }
        out.extend(self.in_memory.iter().cloned());
        Ok(out)
    }

    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum::<u64>()
            + self
                .in_memory
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }
}

/// The embedded span store. Cheap to clone; the last clone dropped does not stop the threads —
/// call [`SpanStore::shutdown`] for a clean stop that flushes the buffers.
#[derive(Clone)]
pub struct SpanStore {
    shared: Arc<Shared>,
    commands: SyncSender<WalCommand>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    maintenance: SyncSender<MaintenanceCommand>,
}

impl SpanStore {
    /// Opens (or creates) the store in `config.data_dir`, replaying whatever the WAL holds that
    /// the manifest does not yet cover.
    pub fn open(config: StoreConfig) -> Result<Self, StorageError> {
        let dir = config.data_dir.clone();
        let wal_dir = dir.join("wal");
        for d in [&dir, &wal_dir] {
            fs::create_dir_all(d).map_err(|e| StorageError::io("create dir", d, e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock = fs::File::create(&lock_path)
            .map_err(|e| StorageError::io("create lock", &lock_path, e))?;
        lock.try_lock().map_err(|_| StorageError::Manifest {
            path: lock_path.clone(),
            message: "data directory is in use by another sightline process".into(),
        })?;

        let mut manifest = Manifest::load(&dir)?;
        remove_orphans(&dir, &mut manifest)?;
        let mut rollups = Rollups::new(&config.rollups);
        let next_segment = recover_wal(&dir, &wal_dir, &mut manifest, &mut rollups)?;
        manifest.save(&dir)?;

        let segment = SegmentWriter::create(&wal_dir, next_segment)?;
        let shared = Arc::new(Shared {
            memory: MemoryBudget::new(tracked_limit(config.memory_budget)),
            config,
            state: Mutex::new(State {
                buffer: Vec::new(),
                buffer_reservations: Vec::new(),
                buffer_bytes: 0,
                buffer_since: None,
                rollups,
                rollups_since: None,
                flushing: Vec::new(),
                manifest,
            }),
            stats: StoreStats::default(),
            wal_failed: AtomicBool::new(false),
            manifest_writer: Mutex::new(()),
        });
        let (commands, wal_rx) = mpsc::sync_channel(shared.config.wal_queue_requests);
        let (flush_tx, flush_rx) = mpsc::sync_channel(64);
        let wal_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sightline-wal".into())
                .spawn(move || {
                    WalWriter {
                        shared,
                        segment,
                        wal_dir,
                        flush_tx,
                        sequence: 0,
                        lock_file: lock,
                    }
                    .run(wal_rx)
                })
                .map_err(|e| StorageError::io("spawn wal thread", &dir, e))?
        };
        let flush_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sightline-flush".into())
                .spawn(move || Flusher { shared }.run(flush_rx))
                .map_err(|e| StorageError::io("spawn flush thread", &dir, e))?
        };
        let (maintenance, maintenance_rx) = mpsc::sync_channel(16);
        let maintenance_thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sightline-maintenance".into())
                .spawn(move || {
                    Maintenance {
                        shared,
                        graveyard: Vec::new(),
                    }
                    .run(maintenance_rx)
                })
                .map_err(|e| StorageError::io("spawn maintenance thread", &dir, e))?
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

    pub fn stats(&self) -> &StoreStats {
        &self.shared.stats
    }

    /// Whether the write path takes appends: false once an fsync has failed.
    pub fn is_healthy(&self) -> bool {
        !self.shared.wal_failed.load(Ordering::Relaxed)
    }

    /// Queues a batch for the WAL without waiting. The returned receiver answers once the batch
    /// is durable. Refuses at once (no waiting, no unbounded growth) when the memory budget or
    /// the WAL queue is full.
    pub fn submit(
        &self,
        batch: RecordBatch,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        if !self.is_healthy() {
            return Err(StorageError::WalFailed("an earlier fsync failed".into()));
        }
        let batch_bytes = batch.get_array_memory_size();
        let mut reservation = self
            .shared
            .memory
            .try_reserve(batch_bytes)
            .ok_or(StorageError::Saturated("memory budget"))?;
        let payload = wal::encode_batch(&batch)?;
        // The encoded copy lives until the WAL thread has written it.
        if !reservation.try_grow(payload.len()) {
            return Err(StorageError::Saturated("memory budget"));
        }
        let (ack, rx) = oneshot::channel();
        match self.commands.try_send(WalCommand::Append {
            payload,
            batch,
            reservation,
            ack,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(StorageError::Saturated("wal backlog")),
            Err(TrySendError::Disconnected(_)) => Err(StorageError::Closed),
        }
    }

    /// Appends a batch and waits until it is durable.
    pub async fn append(&self, batch: RecordBatch) -> Result<(), StorageError> {
        let rx = self.submit(batch)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Writes everything buffered to Parquet and waits for it.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(WalCommand::Flush(tx))
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)
    }

    /// Merges every partition's small files now (the benchmark's "after compaction").
    pub async fn compact_now(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.maintenance
            .send(MaintenanceCommand::CompactNow(tx))
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)
    }

    /// All acknowledged spans, and their rollups, as of now.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.shared.state();
        let mut in_memory: Vec<RecordBatch> = Vec::new();
        let mut span_red = RollupSnapshot {
            files: state.manifest.span_red.clone(),
            in_memory: Vec::new(),
        };
        let mut service_edges = RollupSnapshot {
            files: state.manifest.service_edges.clone(),
            in_memory: Vec::new(),
        };
        let current = state.rollups.current().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the current rollups");
            RollupBatches::default()
        });
        for (_, spans, rollups) in &state.flushing {
            in_memory.extend(spans.iter().cloned());
            span_red.in_memory.extend(rollups.span_red.iter().cloned());
            service_edges
                .in_memory
                .extend(rollups.service_edges.iter().cloned());
        }
        in_memory.extend(state.buffer.iter().cloned());
        span_red.in_memory.extend(current.span_red);
        service_edges.in_memory.extend(current.service_edges);
        Snapshot {
            data_dir: self.shared.config.data_dir.clone(),
            files: state.manifest.files.clone(),
            in_memory,
            span_red,
            service_edges,
        }
    }

    /// Flushes the buffers to Parquet and stops the threads. Blocking; call it off the async
    /// runtime or at the very end.
    pub fn shutdown(&self) {
        let _ = self.commands.send(WalCommand::Shutdown);
        let _ = self.maintenance.send(MaintenanceCommand::Shutdown);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Deletes Parquet and temporary files the manifest does not know (left by a crash between a
/// file write and the manifest update), and forgets manifest entries whose file is gone.
fn remove_orphans(dir: &Path, manifest: &mut Manifest) -> Result<(), StorageError> {
    let known: std::collections::HashSet<&str> =
        manifest.all_files().map(|f| f.path.as_str()).collect();
    let mut removed = 0usize;
    for table in TABLE_DIRS {
        let table = dir.join(table);
        fs::create_dir_all(&table).map_err(|e| StorageError::io("create dir", &table, e))?;
        removed += remove_unknown_files(dir, &table, &known)?;
    }
    if removed > 0 {
        tracing::info!(removed, "removed files not in the manifest");
    }
    let mut missing = 0;
    manifest.for_each_table(|files| {
        let before = files.len();
        files.retain(|f| dir.join(&f.path).exists());
        missing += before - files.len();
    });
    if missing > 0 {
        tracing::error!(missing, "manifest named files that are gone");
    }
    Ok(())
}

/// The directory of every table, each holding hour partitions.
const TABLE_DIRS: [&str; 3] = [
    span_files::SPANS_DIR,
    rollup::SPAN_RED_DIR,
    rollup::SERVICE_EDGES_DIR,
];

fn remove_unknown_files(
    dir: &Path,
    table: &Path,
    known: &std::collections::HashSet<&str>,
) -> Result<usize, StorageError> {
    let mut removed = 0usize;
    for part in fs::read_dir(table).map_err(|e| StorageError::io("list", table, e))? {
        let part = part.map_err(|e| StorageError::io("list", table, e))?.path();
        if !part.is_dir() {
            continue;
        }
        for f in fs::read_dir(&part).map_err(|e| StorageError::io("list", &part, e))? {
            let f = f.map_err(|e| StorageError::io("list", &part, e))?.path();
            let rel = f
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !known.contains(rel.as_str()) {
                fs::remove_file(&f).map_err(|e| StorageError::io("remove orphan", &f, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Replays WAL segments the manifest does not cover into Parquet files, spans and their rollups;
/// returns the id for the next segment. Calls whose other half has not come yet stay waiting in
/// `rollups`.
fn recover_wal(
    dir: &Path,
    wal_dir: &Path,
    manifest: &mut Manifest,
    rollups: &mut Rollups,
) -> Result<u64, StorageError> {
    let ids = wal::list_segments(wal_dir)?;
    let mut batches = Vec::new();
    let mut replayed_through = manifest.wal_checkpoint;
    for &id in &ids {
        if id <= manifest.wal_checkpoint {
            continue;
        }
        let contents = wal::read_segment(&wal::segment_path(wal_dir, id), true)?;
        for p in &contents.payloads {
            batches.extend(wal::decode_batches(p)?);
        }
        replayed_through = id;
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let now = Instant::now();
    for b in &batches {
        rollups.observe(b, now)?;
    }
    ChunkFiles::write(dir, &batches, &rollups.seal()?)?.add_to(manifest);
    manifest.wal_checkpoint = replayed_through;
    if rows > 0 {
        tracing::info!(rows, segments = ids.len(), "replayed write-ahead log");
    }
    manifest.save(dir)?;
    for id in ids {
        wal::remove_segment(wal_dir, id).map_err(|e| StorageError::io("remove wal", wal_dir, e))?;
    }
    Ok(manifest.wal_checkpoint + 1)
}

struct WalWriter {
    shared: Arc<Shared>,
    segment: SegmentWriter,
    wal_dir: PathBuf,
    flush_tx: SyncSender<FlushCommand>,
    /// Chunks sealed so far.
    sequence: u64,
    /// Held for the life of the store: the data directory's exclusive lock.
    #[allow(dead_code)]
    lock_file: fs::File,
}

/// At most this much goes into one group commit, so acknowledgements keep flowing under load.
const GROUP_MAX_REQUESTS: usize = 1024;
const GROUP_MAX_BYTES: usize = 64 << 20;

type PendingAppend = (Vec<u8>, RecordBatch, Reservation, Ack);

/// What one WAL round handles: every append queued by the time it starts (up to the limits),
/// written together and covered by one fsync.
struct Group {
    appends: Vec<PendingAppend>,
    flushes: Vec<oneshot::Sender<()>>,
    shutdown: bool,
}

fn next_group(first: WalCommand, rx: &Receiver<WalCommand>) -> Group {
    let mut group = Group {
        appends: Vec::new(),
        flushes: Vec::new(),
        shutdown: false,
    };
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            WalCommand::Append {
                payload,
                batch,
                reservation,
                ack,
            } => {
                bytes += payload.len();
                group.appends.push((payload, batch, reservation, ack));
            }
            WalCommand::Flush(done) => group.flushes.push(done),
            WalCommand::Shutdown => group.shutdown = true,
        }
        if group.shutdown || group.appends.len() >= GROUP_MAX_REQUESTS || bytes >= GROUP_MAX_BYTES {
            break;
        }
        next = rx.try_recv().ok();
    }
    group
}

impl WalWriter {
    fn run(mut self, rx: Receiver<WalCommand>) {
        loop {
            // Wakes at least every second, so that calls waiting for their other half expire
            // on time even when no span arrives.
            let wait = {
                let state = self.shared.state();
                match state.buffer_since {
                    Some(t) => self.shared.config.seal_max_age.saturating_sub(t.elapsed()),
                    None => Duration::from_secs(1),
                }
                .min(Duration::from_secs(1))
            };
            let first = match rx.recv_timeout(wait) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    self.seal_if_due(Vec::new(), false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let Group {
                appends,
                flushes,
                shutdown,
            } = next_group(first, &rx);
            if !appends.is_empty() {
                self.commit_group(appends);
            }
            let force = !flushes.is_empty() || shutdown;
            if shutdown {
                // No partner can come any more: waiting halves become edges or are counted.
                self.shared.state().rollups.expire_all();
            }
            self.seal_if_due(flushes, force);
            if shutdown {
                break;
            }
        }
        let (tx, rx_done) = oneshot::channel();
        let _ = self.flush_tx.send(FlushCommand::Barrier(vec![tx]));
        let _ = rx_done.blocking_recv();
        let _ = self.flush_tx.send(FlushCommand::Shutdown);
    }

    /// Writes a group of appends, fsyncs once, then acknowledges them all.
    fn commit_group(&mut self, appends: Vec<PendingAppend>) {
        let mut result = Ok(());
        let mut wal_bytes = 0u64;
        for (payload, ..) in &appends {
            if let Err(e) = self.segment.append(payload) {
                result = Err(e);
                break;
            }
            wal_bytes += payload.len() as u64;
        }
        if result.is_ok() {
            result = self.segment.sync();
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "write-ahead log write failed; refusing further writes");
            self.shared.wal_failed.store(true, Ordering::Relaxed);
            let message = e.to_string();
            for (.., ack) in appends {
                let _ = ack.send(Err(StorageError::WalFailed(message.clone())));
            }
            return;
        }
        let stats = &self.shared.stats;
        stats.wal_bytes.fetch_add(wal_bytes, Ordering::Relaxed);
        stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        let mut acks = Vec::with_capacity(appends.len());
        {
            let mut state = self.shared.state();
            let now = Instant::now();
            for (_, batch, ..) in &appends {
                if let Err(e) = state.rollups.observe(batch, now) {
                    // Our own schema: a failure here is a bug, not bad input; the spans stay.
                    tracing::error!(error = %e, "cannot roll up a span batch");
                }
            }
            stats.record_rollups(state.rollups.counters());
            for (payload, batch, mut reservation, ack) in appends {
                reservation.shrink_to(reservation.bytes() - payload.len());
                stats
                    .spans_acknowledged
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                state.buffer_bytes += reservation.bytes();
                state.buffer.push(batch);
                state.buffer_reservations.push(reservation);
                state.buffer_since.get_or_insert_with(Instant::now);
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = ack.send(Ok(()));
        }
    }

    fn seal_if_due(&mut self, done: Vec<oneshot::Sender<()>>, force: bool) {
        let seal_max_age = self.shared.config.seal_max_age;
        let chunk = {
            let mut state = self.shared.state();
            let now = Instant::now();
            state.rollups.expire(now);
            if state.buffer.is_empty() && !state.rollups.is_empty() {
                state.rollups_since.get_or_insert(now);
            }
            self.shared.stats.record_rollups(state.rollups.counters());
            let due = state.buffer_bytes >= self.shared.config.seal_max_bytes
                || state
                    .buffer_since
                    .or(state.rollups_since)
                    .is_some_and(|t| t.elapsed() >= seal_max_age);
            if !(due || force) {
                return;
            }
            let rollups = state.rollups.seal().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot seal the rollups");
                RollupBatches::default()
            });
            state.rollups_since = None;
            if state.buffer.is_empty() && rollups.is_empty() {
                Err(done)
            } else {
                let batches = std::mem::take(&mut state.buffer);
                let reservations = std::mem::take(&mut state.buffer_reservations);
                state.buffer_bytes = 0;
                state.buffer_since = None;
                let wal_through = (!batches.is_empty()).then_some(self.segment.id);
                self.sequence += 1;
                state
                    .flushing
                    .push((self.sequence, batches.clone(), rollups.clone()));
                Ok(Chunk {
                    sequence: self.sequence,
                    wal_through,
                    batches,
                    rollups,
                    reservations,
                    done,
                })
            }
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(done) => {
                if !done.is_empty() {
                    let _ = self.flush_tx.send(FlushCommand::Barrier(done));
                }
                return;
            }
        };
        if let Some(wal_through) = chunk.wal_through {
            match SegmentWriter::create(&self.wal_dir, wal_through + 1) {
                Ok(next) => self.segment = next,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a new wal segment; refusing writes");
                    self.shared.wal_failed.store(true, Ordering::Relaxed);
                }
            }
        }
        let _ = self.flush_tx.send(FlushCommand::Chunk(chunk));
    }
}

/// Applies a change to the manifest: on disk first, then in memory, so a reader never sees a
/// state that a crash could take back. Flushes and maintenance both commit; the lock makes each
/// read-modify-write whole.
fn commit(shared: &Shared, change: impl FnOnce(&mut Manifest)) {
    let _writer = shared
        .manifest_writer
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut next = shared.state().manifest.clone();
    change(&mut next);
    loop {
        match next.save(&shared.config.data_dir) {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "saving the manifest failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    shared.state().manifest = next;
}

/// Writes sealed chunks to Parquet, in order.
struct Flusher {
    shared: Arc<Shared>,
}

impl Flusher {
    fn run(self, rx: Receiver<FlushCommand>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                FlushCommand::Chunk(chunk) => self.flush_chunk(chunk),
                FlushCommand::Barrier(done) => {
                    for d in done {
                        let _ = d.send(());
                    }
                }
                FlushCommand::Shutdown => break,
            }
        }
    }

    fn flush_chunk(&self, chunk: Chunk) {
        let dir = self.shared.config.data_dir.clone();
        let mut attempt = 0u64;
        let files = loop {
            match ChunkFiles::write(&dir, &chunk.batches, &chunk.rollups) {
                Ok(files) => break files,
                Err(e) => {
                    attempt += 1;
                    // The WAL still holds the chunk, so nothing is lost while this retries.
                    tracing::error!(error = %e, attempt, "writing span file failed; retrying");
                    std::thread::sleep(Duration::from_millis(100 * attempt.min(10)));
                }
            }
        };
        // Span files; rollup files are counted by the manifest.
        let flushed = files.spans.len() as u64;
        commit(&self.shared, |m| {
            files.add_to(m);
            if let Some(through) = chunk.wal_through {
                m.wal_checkpoint = m.wal_checkpoint.max(through);
            }
        });
        self.shared
            .state()
            .flushing
            .retain(|(seq, ..)| *seq != chunk.sequence);
        self.shared
            .stats
            .files_flushed
            .fetch_add(flushed, Ordering::Relaxed);
        let wal_dir = dir.join("wal");
        let through = chunk.wal_through.unwrap_or(0);
        if let Ok(ids) = wal::list_segments(&wal_dir) {
            for id in ids.into_iter().filter(|id| *id <= through) {
                if let Err(e) = wal::remove_segment(&wal_dir, id) {
                    tracing::warn!(error = %e, id, "cannot remove wal segment");
                }
            }
        }
        drop(chunk.reservations);
        for d in chunk.done {
            let _ = d.send(());
        }
    }
}

enum MaintenanceCommand {
    /// Merge everything that can be merged, then answer.
    CompactNow(oneshot::Sender<()>),
    Shutdown,
}

/// Retention and compaction, on a thread of their own so that a long merge never holds up
/// flushes.
struct Maintenance {
    shared: Arc<Shared>,
    /// Files dropped from the manifest, deleted one round later so that a reader holding an
    /// older snapshot can finish.
    graveyard: Vec<PathBuf>,
}

/// Files merged at once: a merge holds one small batch per input in memory.
const COMPACTION_FAN_IN: usize = 8;
/// Which files compaction merges.
#[derive(Clone, Copy)]
enum Sweep {
    /// The periodic pass: only small files (under a quarter of the target), as a low ingest
    /// rate leaves them; large flushes are left alone so that compaction costs little CPU when
    /// ingest is heavy.
    Background,
    /// Everything under the target (an operator's or the benchmark's explicit request).
    Full,
}

/// Memory a merge holds against the budget while it runs.
const COMPACTION_MEMORY: usize = 128 << 20;

impl Maintenance {
    fn run(mut self, rx: Receiver<MaintenanceCommand>) {
        loop {
            match rx.recv_timeout(self.shared.config.maintenance_interval) {
                Ok(MaintenanceCommand::CompactNow(done)) => {
                    while self.compact_once(Sweep::Full) {}
                    self.compact_rollups(2);
                    let _ = done.send(());
                }
                Ok(MaintenanceCommand::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.bury();
                    self.expire();
                    while self.compact_once(Sweep::Background) {}
                    self.compact_rollups(self.shared.config.compaction_min_files);
                }
            }
        }
        self.bury();
    }

    fn bury(&mut self) {
        for path in self.graveyard.drain(..) {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path = %path.display(), "cannot remove old file");
                }
            }
        }
        remove_empty_partitions(&self.shared.config.data_dir);
    }

    /// Drops every partition whose hour ended before the retention window.
    fn expire(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(self.shared.config.retention).as_nanos() as i64;
        // Hour h covers [h, h+1) hours; it is expired when its end is at or before the cutoff.
        let cutoff_hour = crate::partition::hour_of(cutoff);
        let expired: Vec<FileEntry> = self
            .shared
            .state()
            .manifest
            .all_files()
            .filter(|f| f.hour < cutoff_hour)
            .cloned()
            .collect();
        if expired.is_empty() {
            return;
        }
        let hours: std::collections::HashSet<i64> = expired.iter().map(|f| f.hour).collect();
        commit(&self.shared, |m| {
            m.for_each_table(|files| files.retain(|f| f.hour >= cutoff_hour))
        });
        let dir = &self.shared.config.data_dir;
        self.graveyard
            .extend(expired.iter().map(|f| dir.join(&f.path)));
        self.shared
            .stats
            .partitions_expired
            .fetch_add(hours.len() as u64, Ordering::Relaxed);
        tracing::info!(
            partitions = hours.len(),
            files = expired.len(),
            "retention removed partitions"
        );
    }

    /// Sums every hour of rollup files that has at least `min_files` files into one file.
    fn compact_rollups(&mut self, min_files: usize) {
        self.compact_rollup_table::<RedKey>(min_files, |m| &mut m.span_red);
        self.compact_rollup_table::<EdgeKey>(min_files, |m| &mut m.service_edges);
    }

    fn compact_rollup_table<K: RollupKey>(
        &mut self,
        min_files: usize,
        files_of: fn(&mut Manifest) -> &mut Vec<FileEntry>,
    ) {
        let hours: Vec<Vec<FileEntry>> = {
            let mut state = self.shared.state();
            let mut by_hour: std::collections::BTreeMap<i64, Vec<FileEntry>> = Default::default();
            for f in files_of(&mut state.manifest).iter() {
                by_hour.entry(f.hour).or_default().push(f.clone());
            }
            by_hour
                .into_values()
                .filter(|v| v.len() >= min_files.max(2))
                .collect()
        };
        let dir = self.shared.config.data_dir.clone();
        for inputs in hours {
            let merged = match rollup::files::merge::<K>(&dir, &inputs) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, table = K::dir(), "rollup compaction failed");
                    continue;
                }
            };
            self.replace_files(files_of, &inputs, merged);
        }
    }

    /// Puts merged files in place of their inputs in one manifest commit; returns whether it did.
    /// Retention may have dropped the inputs meanwhile: then the merge is void and its output is
    /// deleted instead.
    fn replace_files(
        &mut self,
        files_of: fn(&mut Manifest) -> &mut Vec<FileEntry>,
        inputs: &[FileEntry],
        merged: Vec<FileEntry>,
    ) -> bool {
        let dir = self.shared.config.data_dir.clone();
        let gone: std::collections::HashSet<&str> =
            inputs.iter().map(|f| f.path.as_str()).collect();
        let mut applied = false;
        commit(&self.shared, |m| {
            let files = files_of(m);
            if gone.iter().all(|p| files.iter().any(|f| f.path == *p)) {
                files.retain(|f| !gone.contains(f.path.as_str()));
                files.extend(merged.iter().cloned());
                applied = true;
            }
        });
        if applied {
            self.graveyard.extend(gone.iter().map(|p| dir.join(p)));
            self.shared
                .stats
                .files_compacted
                .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        } else {
            self.graveyard
                .extend(merged.iter().map(|f| dir.join(&f.path)));
        }
        applied
    }

    /// Merges up to [`COMPACTION_FAN_IN`] of the smallest files of one partition that has
    /// enough candidates (see [`Sweep`]). Returns whether it merged anything.
    fn compact_once(&mut self, sweep: Sweep) -> bool {
        let target = self.shared.config.compaction_target_rows;
        let (limit, min_files) = match sweep {
            Sweep::Background => (target / 4, self.shared.config.compaction_min_files),
            Sweep::Full => (target, 2),
        };
        let inputs: Vec<FileEntry> = {
            let state = self.shared.state();
            let mut by_hour: std::collections::BTreeMap<i64, Vec<&FileEntry>> = Default::default();
            for f in state.manifest.files.iter().filter(|f| f.rows < limit) {
                by_hour.entry(f.hour).or_default().push(f);
            }
            let Some(mut files) = by_hour.into_values().find(|v| v.len() >= min_files.max(2))
            else {
                return false;
            };
            files.sort_by_key(|f| (f.level, f.rows));
            let mut picked = Vec::new();
            let mut rows = 0;
            for f in files {
                if picked.len() >= COMPACTION_FAN_IN
                    || (picked.len() >= 2 && rows + f.rows > target)
                {
                    break;
                }
                rows += f.rows;
                picked.push(f.clone());
            }
            picked
        };
        if inputs.len() < 2 {
            return false;
        }
        // A merge holds a small batch per input and the output's open row group; it waits for a
        // quieter moment rather than push ingest over the memory budget.
        let need = COMPACTION_MEMORY.min(self.shared.memory.limit() / 4);
        let Some(_reservation) = self.shared.memory.try_reserve(need) else {
            tracing::debug!("compaction deferred: memory budget in use by ingest");
            return false;
        };
        let dir = self.shared.config.data_dir.clone();
        let mut merged = match span_files::merge_files(&dir, &inputs, Effort::Compaction) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "compaction failed");
                return false;
            }
        };
        merged.level = inputs.iter().map(|f| f.level).max().unwrap_or(0) + 1;
        tracing::debug!(inputs = inputs.len(), rows = merged.rows, "compacted");
        self.replace_files(|m| &mut m.files, &inputs, vec![merged])
    }
}

fn write_chunk(dir: &Path, batches: &[RecordBatch]) -> Result<Vec<FileEntry>, StorageError> {
    span_files::split_by_hour(batches)?
        .into_iter()
        .map(|(hour, part)| span_files::write_file(dir, hour, &part, Effort::Flush))
        .collect()
}

/// The files one chunk (or one WAL replay) was written to.
struct ChunkFiles {
    spans: Vec<FileEntry>,
    span_red: Vec<FileEntry>,
    service_edges: Vec<FileEntry>,
}

impl ChunkFiles {
    /// Writes a chunk's spans and rollups to Parquet.
    fn write(
        dir: &Path,
        spans: &[RecordBatch],
        rollups: &RollupBatches,
    ) -> Result<Self, StorageError> {
        let mut files = ChunkFiles {
            spans: write_chunk(dir, spans)?,
            span_red: Vec::new(),
            service_edges: Vec::new(),
        };
        if let Some(b) = &rollups.span_red {
            files.span_red = rollup::files::write::<RedKey>(dir, b)?;
        }
        if let Some(b) = &rollups.service_edges {
            files.service_edges = rollup::files::write::<EdgeKey>(dir, b)?;
        }
        Ok(files)
    }

    fn add_to(&self, m: &mut Manifest) {
        m.files.extend(self.spans.iter().cloned());
        m.span_red.extend(self.span_red.iter().cloned());
        m.service_edges.extend(self.service_edges.iter().cloned());
    }
}

fn remove_empty_partitions(dir: &Path) {
    for table in TABLE_DIRS {
        let Ok(parts) = fs::read_dir(dir.join(table)) else {
            continue;
        };
        for part in parts.flatten() {
            // remove_dir fails on a non-empty directory, which is what we want.
            let _ = fs::remove_dir(part.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(
        budget: &Arc<MemoryBudget>,
    ) -> (WalCommand, oneshot::Receiver<Result<(), StorageError>>) {
        let (ack, rx) = oneshot::channel();
        let batch = RecordBatch::new_empty(crate::schema::span_schema());
        let cmd = WalCommand::Append {
            payload: vec![0; 10],
            batch,
            reservation: budget.try_reserve(10).unwrap(),
            ack,
        };
        (cmd, rx)
    }

    #[test]
    fn appends_queued_during_a_commit_share_the_next_fsync() {
        let budget = MemoryBudget::new(1 << 20);
        let (tx, rx) = mpsc::sync_channel(100);
        let (first, _a) = append(&budget);
        let mut acks = Vec::new();
        for _ in 0..63 {
            let (cmd, ack) = append(&budget);
            tx.send(cmd).unwrap();
            acks.push(ack);
        }
        let (flush, _f) = oneshot::channel();
        tx.send(WalCommand::Flush(flush)).unwrap();
        let group = next_group(first, &rx);
        assert_eq!(
            group.appends.len(),
            64,
            "one group, so one fsync, for all 64"
        );
        assert_eq!(group.flushes.len(), 1);
        assert!(!group.shutdown);
        assert!(rx.try_recv().is_err(), "nothing left behind");
    }

    #[test]
    fn a_group_stops_at_its_request_limit_and_at_shutdown() {
        let budget = MemoryBudget::new(1 << 30);
        let (tx, rx) = mpsc::sync_channel(GROUP_MAX_REQUESTS + 10);
        let (first, _a) = append(&budget);
        let mut acks = Vec::new();
        for _ in 0..GROUP_MAX_REQUESTS + 5 {
            let (cmd, ack) = append(&budget);
            tx.send(cmd).unwrap();
            acks.push(ack);
        }
        assert_eq!(next_group(first, &rx).appends.len(), GROUP_MAX_REQUESTS);
        let (first, _b) = append(&budget);
        tx.send(WalCommand::Shutdown).unwrap();
        let rest = next_group(first, &rx);
        assert!(rest.shutdown);
    }

    #[test]
    fn tracked_limit_leaves_headroom() {
        assert_eq!(tracked_limit(1 << 30), (1 << 30) - (384 << 20));
        assert_eq!(tracked_limit(8 << 30), 6 << 30);
        assert_eq!(tracked_limit(4 << 20), 1 << 20);
    }

    #[test]
    fn memory_budget_refuses_past_its_limit_and_frees_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none());
        let mut b = budget.try_reserve(40).unwrap();
        b.shrink_to(10);
        assert_eq!(budget.used(), 70);
        assert!(!b.try_grow(31));
        assert!(b.try_grow(30));
        assert_eq!((b.bytes(), budget.used()), (40, 100));
        b.shrink_to(10);
        drop(a);
        assert_eq!(budget.used(), 10);
    }
}

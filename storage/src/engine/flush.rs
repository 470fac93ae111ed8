//! The flush thread: writes sealed parts to Parquet and commits them to the manifest, each
//! tenant's table on its own, so that one table whose writes fail does not hold up the others.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manifest::{FileEntry, Manifest};
use super::partition::split_by_hour;
use super::sorted::write_file;
use super::table::Effort;
use super::wal;
use super::{Ack, Part, Shared};
use crate::error::StorageError;

pub(super) enum FlushCommand {
    Chunk {
        sequence: u64,
        wal_through: Option<u64>,
        parts: Vec<Arc<Part>>,
    },
    /// Answer once every part sent before is committed.
    Barrier(Vec<Ack>),
    Shutdown,
}

/// A chunk whose parts are not all committed yet.
struct ChunkProgress {
    wal_through: Option<u64>,
    remaining: usize,
}

struct Pending {
    part: Arc<Part>,
    attempts: u32,
    retry_at: Instant,
}

pub(super) struct Flusher {
    shared: Arc<Shared>,
    queue: VecDeque<Pending>,
    chunks: BTreeMap<u64, ChunkProgress>,
    /// Barriers with the newest chunk they wait for.
    barriers: Vec<(u64, Vec<Ack>)>,
    last_chunk: u64,
}

impl Flusher {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            queue: VecDeque::new(),
            chunks: BTreeMap::new(),
            barriers: Vec::new(),
            last_chunk: 0,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<FlushCommand>) {
        loop {
            self.flush_ready();
            self.answer_barriers();
            let wait = self
                .queue
                .iter()
                .map(|p| p.retry_at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(FlushCommand::Chunk {
                    sequence,
                    wal_through,
                    parts,
                }) => {
                    self.last_chunk = sequence;
                    self.chunks.insert(
                        sequence,
                        ChunkProgress {
                            wal_through,
                            remaining: parts.len(),
                        },
                    );
                    let now = Instant::now();
                    self.queue.extend(parts.into_iter().map(|part| Pending {
                        part,
                        attempts: 0,
                        retry_at: now,
                    }));
                }
                Ok(FlushCommand::Barrier(done)) => self.barriers.push((self.last_chunk, done)),
                Ok(FlushCommand::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Flushes every queued part that is due, oldest first; a part waits while an older part of
    /// the same tenant's table is waiting for a retry, so each table's checkpoint only grows.
    fn flush_ready(&mut self) {
        let mut blocked: Vec<(String, usize)> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let key = (self.queue[i].part.tenant.clone(), self.queue[i].part.table);
            if blocked.contains(&key) || self.queue[i].retry_at > Instant::now() {
                blocked.push(key);
                i += 1;
                continue;
            }
            let part = Arc::clone(&self.queue[i].part);
            match self.flush_part(&part) {
                Ok(()) => {
                    self.queue.remove(i);
                }
                Err(e) => {
                    let p = &mut self.queue[i];
                    p.attempts += 1;
                    p.retry_at =
                        Instant::now() + Duration::from_millis(100 * u64::from(p.attempts.min(50)));
                    self.shared
                        .stats
                        .flush_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // The WAL still holds the part, so nothing is lost while this retries.
                    tracing::error!(
                        error = %e,
                        attempt = p.attempts,
                        tenant = %part.tenant,
                        table = self.shared.catalog.tables[part.table].name,
                        "flush failed; retrying"
                    );
                    blocked.push(key);
                    i += 1;
                }
            }
        }
    }

    fn answer_barriers(&mut self) {
        let oldest_open = self.chunks.keys().next().copied();
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .barriers
            .drain(..)
            .partition(|(chunk, _)| oldest_open.is_none_or(|o| o > *chunk));
        self.barriers = waiting;
        for (_, done) in ready {
            for d in done {
                let _ = d.send(Ok(()));
            }
        }
    }

    fn flush_part(&mut self, part: &Arc<Part>) -> Result<(), StorageError> {
        let began = std::time::Instant::now();
        let written = write_part(&self.shared, part)?;
        let flushed = written.iter().map(|(_, f)| f.len() as u64).sum::<u64>();
        // This part done: does the global checkpoint move?
        let progress = self.chunks.get_mut(&part.chunk);
        if let Some(p) = progress {
            p.remaining = p.remaining.saturating_sub(1);
        }
        let mut global = None;
        while let Some((&seq, p)) = self.chunks.iter().next() {
            if p.remaining > 0 {
                break;
            }
            if let Some(w) = p.wal_through {
                global = Some(w);
            }
            self.chunks.remove(&seq);
        }
        let catalog = &self.shared.catalog;
        commit(&self.shared, Some(part), |m| {
            for (table, files) in &written {
                let entry = m.table_mut(&part.tenant, catalog.tables[*table].name);
                entry.files.extend(files.iter().cloned());
            }
            if let Some(w) = part.wal_through {
                let own = m.table_mut(&part.tenant, catalog.tables[part.table].name);
                own.checkpoint = own.checkpoint.max(w);
            }
            if let Some(g) = global {
                m.wal_checkpoint = m.wal_checkpoint.max(g);
            }
        });
        self.shared
            .stats
            .files_flushed
            .fetch_add(flushed, Ordering::Relaxed);
        self.shared.stats.flush_seconds.observe(began.elapsed());
        if let Some(through) = global {
            remove_segments_through(&self.shared, through);
        }
        Ok(())
    }
}

/// Writes a part's tables to Parquet, one file per table and hour. On failure, what it wrote is
/// deleted again, so a failed attempt leaves no orphan behind.
pub(super) fn write_part(
    shared: &Shared,
    part: &Part,
) -> Result<Vec<(usize, Vec<FileEntry>)>, StorageError> {
    let files = shared.files.as_ref();
    let mut written: Vec<(usize, Vec<FileEntry>)> = Vec::new();
    let result = (|| {
        for (table, batches) in &part.rows {
            let spec = &shared.catalog.tables[*table];
            let mut entries = Vec::new();
            for (hour, rows) in split_by_hour(batches, spec.time_column_index()?)? {
                let file = write_file(files, &part.tenant, spec, hour, &rows, Effort::Flush);
                match file {
                    Ok(Some(f)) => entries.push(f),
                    Ok(None) => {}
                    Err(e) => {
                        written.push((*table, entries));
                        return Err(e);
                    }
                }
            }
            written.push((*table, entries));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for f in written.iter().flat_map(|(_, f)| f) {
            let _ = files.delete(&f.path);
        }
        return Err(e);
    }
    Ok(written)
}

/// Applies a change to the manifest — on disk first, then in memory — and, in the same step
/// readers lock, drops the sealed part it made durable, so a reader sees the part's rows either
/// in memory or in files, never both and never neither. Flushes and maintenance both commit; the
/// writer lock makes each read-modify-write whole.
pub(super) fn commit(
    shared: &Shared,
    flushed: Option<&Arc<Part>>,
    change: impl FnOnce(&mut Manifest),
) {
    let _writer = shared
        .manifest_writer
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut next = shared.state().manifest.clone();
    next.sequence += 1;
    let sequence = next.sequence;
    change(&mut next);
    for f in next
        .tenants
        .values_mut()
        .flat_map(|t| t.values_mut())
        .flat_map(|t| t.files.iter_mut())
    {
        if f.seq == 0 {
            f.seq = sequence;
        }
    }
    loop {
        match next.save(shared.files.as_ref()) {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "saving the manifest failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    let mut state = shared.state();
    state.manifest = next;
    state.index_files(&shared.catalog);
    if let Some(part) = flushed {
        state.sealed.retain(|p| !Arc::ptr_eq(p, part));
    }
}

/// Deletes WAL segments at or below `through`: every table has their rows in files.
pub(super) fn remove_segments_through(shared: &Shared, through: u64) {
    let wal_dir = shared.config.data_dir.join("wal");
    if let Ok(ids) = wal::list_segments(&wal_dir) {
        for id in ids.into_iter().filter(|id| *id <= through) {
            if let Err(e) = wal::remove_segment(&wal_dir, id) {
                tracing::warn!(error = %e, id, "cannot remove wal segment");
            }
        }
    }
}

//! The WAL thread: group commit, buffering, derives, and sealing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use super::flush::FlushCommand;
use super::wal::SegmentWriter;
use super::{Ack, Part, PendingRecord, Shared, State, WalCommand};
use crate::error::StorageError;

pub(super) struct WalWriter {
    shared: Arc<Shared>,
    segment: SegmentWriter,
    wal_dir: PathBuf,
    flush_tx: SyncSender<FlushCommand>,
    /// Chunks sealed so far.
    sequence: u64,
    /// After a failed segment rotation, seals that nobody asked for wait until then.
    retry_rotation_at: Option<Instant>,
    /// Held for the life of the engine: the data directory's exclusive lock.
    _lock: std::fs::File,
}

/// At most this much goes into one group commit, so acknowledgements keep flowing under load.
const GROUP_MAX_REQUESTS: usize = 1024;
const GROUP_MAX_BYTES: usize = 64 << 20;

type PendingWrite = (String, Vec<PendingRecord>, Ack);

/// What one WAL round handles: every write queued by the time it starts (up to the limits),
/// written together and covered by one fsync.
struct Group {
    writes: Vec<PendingWrite>,
    flushes: Vec<Ack>,
    stop: Option<Stop>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Abandon,
}

fn next_group(first: WalCommand, rx: &Receiver<WalCommand>) -> Group {
    let mut group = Group {
        writes: Vec::new(),
        flushes: Vec::new(),
        stop: None,
    };
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            WalCommand::Append {
                tenant,
                records,
                ack,
            } => {
                bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
                group.writes.push((tenant, records, ack));
            }
            WalCommand::Flush(done) => group.flushes.push(done),
            WalCommand::Shutdown => group.stop = Some(Stop::Shutdown),
            WalCommand::Abandon => group.stop = Some(Stop::Abandon),
        }
        if group.stop.is_some()
            || group.writes.len() >= GROUP_MAX_REQUESTS
            || bytes >= GROUP_MAX_BYTES
        {
            break;
        }
        next = rx.try_recv().ok();
    }
    group
}

/// Why the buffers are sealed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SealReason {
    Age,
    Size,
    /// The memory budget is half used and the buffers hold a good part of it: sealing lets the
    /// flush start (and free memory) before writers are refused.
    Memory,
    Forced,
}

impl WalWriter {
    pub(super) fn new(
        shared: Arc<Shared>,
        segment: SegmentWriter,
        wal_dir: PathBuf,
        flush_tx: SyncSender<FlushCommand>,
        lock: std::fs::File,
    ) -> Self {
        Self {
            shared,
            segment,
            wal_dir,
            flush_tx,
            sequence: 0,
            retry_rotation_at: None,
            _lock: lock,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<WalCommand>) {
        let stop = loop {
            // Wakes at least every second, so that derives (calls waiting for their other
            // half) expire on time even when nothing arrives.
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
                    self.tick();
                    self.seal_if_due(Vec::new(), false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break Stop::Shutdown,
            };
            let Group {
                writes,
                flushes,
                stop,
            } = next_group(first, &rx);
            if !writes.is_empty() {
                self.commit_group(writes);
            }
            if stop == Some(Stop::Abandon) {
                break Stop::Abandon;
            }
            self.tick();
            if stop == Some(Stop::Shutdown) {
                // Nothing more can come: derives resolve what they still hold.
                let mut state = self.shared.state();
                for buffers in state.tenants.values_mut() {
                    for d in &mut buffers.derives {
                        d.finish();
                    }
                }
            }
            let force = !flushes.is_empty() || stop.is_some();
            self.seal_if_due(flushes, force);
            if stop.is_some() {
                break Stop::Shutdown;
            }
        };
        if stop == Stop::Shutdown {
            let (tx, rx_done) = tokio::sync::oneshot::channel();
            let _ = self.flush_tx.send(FlushCommand::Barrier(vec![tx]));
            let _ = rx_done.blocking_recv();
        }
        let _ = self.flush_tx.send(FlushCommand::Shutdown);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let mut state = self.shared.state();
        let state = &mut *state;
        for buffers in state.tenants.values_mut() {
            for d in &mut buffers.derives {
                d.tick(now);
            }
        }
        collect_counters(state);
    }

    /// Writes a group of writes, fsyncs once, then acknowledges them all.
    fn commit_group(&mut self, writes: Vec<PendingWrite>) {
        let began = Instant::now();
        let mut result = Ok(());
        let mut wal_bytes = 0u64;
        'write: for (_, records, _) in &writes {
            for r in records {
                if let Err(e) = self.segment.append(&r.payload) {
                    result = Err(e);
                    break 'write;
                }
                wal_bytes += r.payload.len() as u64;
            }
        }
        if result.is_ok() {
            result = self.segment.sync();
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "write-ahead log write failed; refusing further writes");
            self.shared.wal_failed.store(true, Ordering::Relaxed);
            let message = e.to_string();
            for (.., ack) in writes {
                let _ = ack.send(Err(StorageError::WalFailed(message.clone())));
            }
            return;
        }
        let stats = &self.shared.stats;
        stats.wal_bytes.fetch_add(wal_bytes, Ordering::Relaxed);
        stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        stats.wal_commit_seconds.observe(began.elapsed());
        let catalog = &self.shared.catalog;
        let mut acks = Vec::with_capacity(writes.len());
        {
            let mut state = self.shared.state();
            let now = Instant::now();
            for (tenant, records, ack) in writes {
                if !state.tenants.contains_key(&tenant) {
                    let buffers = self.shared.new_tenant();
                    state.tenants.insert(tenant.clone(), buffers);
                }
                let mut added = 0usize;
                let buffers = state
                    .tenants
                    .get_mut(&tenant)
                    .unwrap_or_else(|| unreachable!());
                for PendingRecord {
                    table,
                    payload,
                    batch,
                    mut reservation,
                } in records
                {
                    let name = catalog.tables[table].name;
                    for d in buffers.derives.iter_mut().filter(|d| d.source() == name) {
                        if let Err(e) = d.observe(&batch, now) {
                            // Our own schema: a failure here is a bug, not bad input; the rows
                            // stay.
                            tracing::error!(error = %e, table = name, "cannot derive from a batch");
                        }
                    }
                    reservation.shrink_to(reservation.bytes() - payload.len());
                    stats.rows_acknowledged[table]
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    added += reservation.bytes();
                    buffers.active[table].push(batch);
                    buffers.reservations[table].push(reservation);
                }
                state.buffer_bytes += added;
                state.buffer_since.get_or_insert(now);
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = ack.send(Ok(()));
        }
    }

    fn due(&self, state: &State) -> Option<SealReason> {
        let config = &self.shared.config;
        if state.buffer_bytes >= config.seal_max_bytes {
            return Some(SealReason::Size);
        }
        let memory = &self.shared.memory;
        if memory.used() >= memory.limit() / 2 && state.buffer_bytes >= memory.limit() / 8 {
            return Some(SealReason::Memory);
        }
        state
            .buffer_since
            .or(state.derived_since)
            .filter(|t| t.elapsed() >= config.seal_max_age)
            .map(|_| SealReason::Age)
    }

    fn seal_if_due(&mut self, done: Vec<Ack>, force: bool) {
        let (reason, has_logged_rows) = {
            let mut state = self.shared.state();
            let derived_waiting = state.buffer_since.is_none()
                && state
                    .tenants
                    .values()
                    .any(|b| b.derives.iter().any(|d| !d.is_empty()));
            if derived_waiting {
                state.derived_since.get_or_insert(Instant::now());
            }
            let backing_off = self.retry_rotation_at.is_some_and(|t| Instant::now() < t);
            let reason = if force {
                Some(SealReason::Forced)
            } else if backing_off {
                None
            } else {
                self.due(&state)
            };
            (reason, state.buffer_since.is_some())
        };
        let Some(reason) = reason else {
            return;
        };
        // The next segment first: if it cannot be created, nothing is sealed and writes go on
        // into the current segment, which stays until a later seal covers it.
        let next = if has_logged_rows {
            match SegmentWriter::create(&self.wal_dir, self.segment.id + 1) {
                Ok(next) => Some(next),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a new wal segment; sealing later");
                    self.shared
                        .stats
                        .wal_rotation_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.retry_rotation_at = Some(Instant::now() + Duration::from_secs(1));
                    let message = e.to_string();
                    for d in done {
                        let _ = d.send(Err(StorageError::WalFailed(message.clone())));
                    }
                    return;
                }
            }
        } else {
            None
        };
        let wal_through = next.as_ref().map(|_| self.segment.id);
        self.sequence += 1;
        let parts = {
            let mut state = self.shared.state();
            let parts = take_parts(&self.shared, &mut state, self.sequence, wal_through);
            state.sealed.extend(parts.iter().cloned());
            parts
        };
        if let Some(next) = next {
            self.segment = next;
        }
        let stats = &self.shared.stats;
        match reason {
            SealReason::Age => stats.seals_by_age.fetch_add(1, Ordering::Relaxed),
            SealReason::Size => stats.seals_by_size.fetch_add(1, Ordering::Relaxed),
            SealReason::Memory => stats.seals_by_memory.fetch_add(1, Ordering::Relaxed),
            SealReason::Forced => 0,
        };
        if !parts.is_empty() {
            let _ = self.flush_tx.send(FlushCommand::Chunk {
                sequence: self.sequence,
                wal_through,
                parts,
            });
        }
        if !done.is_empty() {
            let _ = self.flush_tx.send(FlushCommand::Barrier(done));
        }
    }
}

/// Takes every tenant's buffers and derived rows as the parts of one chunk.
pub(super) fn take_parts(
    shared: &Shared,
    state: &mut State,
    chunk: u64,
    wal_through: Option<u64>,
) -> Vec<Arc<Part>> {
    let catalog = &shared.catalog;
    let mut parts = Vec::new();
    for (tenant, buffers) in state.tenants.iter_mut() {
        let mut derived: Vec<(&'static str, Vec<(usize, RecordBatch)>)> = Vec::new();
        for d in &mut buffers.derives {
            let rows = d.seal().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot seal a derived table");
                Vec::new()
            });
            let rows: Vec<(usize, RecordBatch)> = rows
                .into_iter()
                .filter_map(|(name, b)| Some((catalog.index_of(name)?, b)))
                .collect();
            derived.push((d.source(), rows));
        }
        for (i, spec) in catalog.tables.iter().enumerate() {
            if !spec.is_logged() {
                continue;
            }
            let batches = std::mem::take(&mut buffers.active[i]);
            let reservations = std::mem::take(&mut buffers.reservations[i]);
            let mut rows: Vec<(usize, Vec<RecordBatch>)> = Vec::new();
            if !batches.is_empty() {
                rows.push((i, batches));
            }
            for (_, outputs) in derived.iter_mut().filter(|(s, _)| *s == spec.name) {
                for (j, b) in outputs.drain(..) {
                    match rows.iter_mut().find(|(k, _)| *k == j) {
                        Some((_, v)) => v.push(b),
                        None => rows.push((j, vec![b])),
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            parts.push(Arc::new(Part {
                chunk,
                wal_through,
                tenant: tenant.clone(),
                table: i,
                rows,
                _memory: reservations,
            }));
        }
    }
    state.buffer_bytes = 0;
    state.buffer_since = None;
    state.derived_since = None;
    collect_counters(state);
    parts
}

fn collect_counters(state: &mut State) {
    let mut counters = std::collections::BTreeMap::new();
    for buffers in state.tenants.values() {
        for d in &buffers.derives {
            for (name, v) in d.counters() {
                *counters.entry(name).or_insert(0) += v;
            }
        }
    }
    state.derive_counters = counters;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::budget::MemoryBudget;
    use std::sync::mpsc;

    fn append(
        budget: &Arc<MemoryBudget>,
    ) -> (
        WalCommand,
        tokio::sync::oneshot::Receiver<Result<(), StorageError>>,
    ) {
        let (ack, rx) = tokio::sync::oneshot::channel();
        let batch = RecordBatch::new_empty(crate::schema::span_schema());
        let cmd = WalCommand::Append {
            tenant: "default".into(),
            records: vec![PendingRecord {
                table: 0,
                payload: vec![0; 10],
                batch,
                reservation: budget.try_reserve(10).unwrap(),
            }],
            ack,
        };
        (cmd, rx)
    }

    #[test]
    fn writes_queued_during_a_commit_share_the_next_fsync() {
        let budget = MemoryBudget::new(1 << 20);
        let (tx, rx) = mpsc::sync_channel(100);
        let (first, _a) = append(&budget);
        let mut acks = Vec::new();
        for _ in 0..63 {
            let (cmd, ack) = append(&budget);
            tx.send(cmd).unwrap();
            acks.push(ack);
        }
        let (flush, _f) = tokio::sync::oneshot::channel();
        tx.send(WalCommand::Flush(flush)).unwrap();
        let group = next_group(first, &rx);
        assert_eq!(
            group.writes.len(),
            64,
            "one group, so one fsync, for all 64"
        );
        assert_eq!(group.flushes.len(), 1);
        assert!(group.stop.is_none());
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
        assert_eq!(next_group(first, &rx).writes.len(), GROUP_MAX_REQUESTS);
        let (first, _b) = append(&budget);
        tx.send(WalCommand::Shutdown).unwrap();
        let rest = next_group(first, &rx);
        assert!(rest.stop == Some(Stop::Shutdown));
    }
}

//! Retention and compaction, on a thread of their own so that a long merge never holds up
//! flushes. Both go over every table of every tenant by the table's spec.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::flush::commit;
use super::manifest::FileEntry;
use super::partition::hour_of;
use super::sorted::merge_files;
use super::table::{Effort, Merge};
use super::{unix_now, Shared};

pub(super) enum Command {
    /// Merge everything that can be merged, then answer.
    CompactNow(oneshot::Sender<()>),
    Shutdown,
}

/// Files merged at once: a merge holds one small batch per input in memory.
const COMPACTION_FAN_IN: usize = 8;
/// Memory a merge holds against the budget while it runs.
const COMPACTION_MEMORY: usize = 128 << 20;

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

/// One tenant's table's files of one hour that a merge takes.
struct Candidate {
    tenant: String,
    table: usize,
    inputs: Vec<FileEntry>,
}

pub(super) struct Maintenance {
    shared: Arc<Shared>,
    /// Files dropped from the manifest, deleted one round later so that a reader holding an
    /// older version can finish.
    graveyard: Vec<String>,
}

impl Maintenance {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            graveyard: Vec::new(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Command>) {
        loop {
            match rx.recv_timeout(self.shared.config.maintenance_interval) {
                Ok(Command::CompactNow(done)) => {
                    while self.compact_once(Sweep::Full) {}
                    let _ = done.send(());
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.bury();
                    self.expire();
                    while self.compact_once(Sweep::Background) {}
                }
            }
        }
        self.bury();
    }

    fn bury(&mut self) {
        let files = self.shared.files.as_ref();
        for path in self.graveyard.drain(..) {
            if let Err(e) = files.delete(&path) {
                tracing::warn!(error = %e, path, "cannot remove old file");
            }
        }
        for prefix in super::recovery::TABLE_ROOTS {
            files.prune_empty_dirs(prefix);
        }
    }

    /// Drops every partition whose hour ended before the retention window.
    fn expire(&mut self) {
        let cutoff = unix_now()
            .saturating_sub(self.shared.config.retention)
            .as_nanos() as i64;
        // Hour h covers [h, h+1) hours; it is expired when its end is at or before the cutoff.
        let cutoff_hour = hour_of(cutoff);
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
        commit(&self.shared, None, |m| {
            m.for_each_table(|_, _, files| files.retain(|f| f.hour >= cutoff_hour))
        });
        self.graveyard
            .extend(expired.iter().map(|f| f.path.clone()));
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

    /// The first partition of any table with enough files to merge, and which of them.
    fn pick(&self, sweep: Sweep) -> Option<Candidate> {
        let config = &self.shared.config;
        let state = self.shared.state();
        for (i, spec) in self.shared.catalog.tables.iter().enumerate() {
            let target = spec
                .compaction_target_rows
                .unwrap_or(config.compaction_target_rows);
            let (limit, min_files) = match (sweep, spec.merge) {
                // Combined tables are small: an hour's files all become one.
                (Sweep::Background, Merge::Combine(_)) => (u64::MAX, config.compaction_min_files),
                (Sweep::Full, Merge::Combine(_)) => (u64::MAX, 2),
                (Sweep::Background, _) => (target / 4, config.compaction_min_files),
                (Sweep::Full, _) => (target, 2),
            };
            for (tenant, tables) in &state.manifest.tenants {
                let Some(table) = tables.get(spec.name) else {
                    continue;
                };
                let mut by_hour: BTreeMap<i64, Vec<&FileEntry>> = BTreeMap::new();
                for f in table.files.iter().filter(|f| f.rows < limit) {
                    by_hour.entry(f.hour).or_default().push(f);
                }
                let Some(mut files) = by_hour.into_values().find(|v| v.len() >= min_files.max(2))
                else {
                    continue;
                };
                let inputs: Vec<FileEntry> = if matches!(spec.merge, Merge::Combine(_)) {
                    files.into_iter().cloned().collect()
                } else {
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
                if inputs.len() >= 2 {
                    return Some(Candidate {
                        tenant: tenant.clone(),
                        table: i,
                        inputs,
                    });
                }
            }
        }
        None
    }

    /// Merges one partition's files (see [`Sweep`]). Returns whether it merged anything.
    fn compact_once(&mut self, sweep: Sweep) -> bool {
        let Some(Candidate {
            tenant,
            table,
            mut inputs,
        }) = self.pick(sweep)
        else {
            return false;
        };
        // A merge holds a small batch per input and the output's open row group; it waits for a
        // quieter moment rather than push ingest over the memory budget.
        let need = COMPACTION_MEMORY.min(self.shared.memory.limit() / 4);
        let Some(_reservation) = self.shared.memory.try_reserve(need) else {
            tracing::debug!("compaction deferred: memory budget in use by ingest");
            return false;
        };
        let spec = Arc::clone(&self.shared.catalog.tables[table]);
        let began = std::time::Instant::now();
        // Newest first: its rows win a deduplication.
        inputs.sort_by_key(|f| std::cmp::Reverse(f.seq));
        let merged = match merge_files(
            self.shared.files.as_ref(),
            &tenant,
            &spec,
            &inputs,
            Effort::Compaction,
        ) {
            Ok(m) => m.map(|mut m| {
                m.level = inputs.iter().map(|f| f.level).max().unwrap_or(0) + 1;
                m.seq = inputs.iter().map(|f| f.seq).max().unwrap_or(0);
                m
            }),
            Err(e) => {
                tracing::error!(error = %e, table = spec.name, "compaction failed");
                return false;
            }
        };
        tracing::debug!(table = spec.name, inputs = inputs.len(), "compacted");
        self.shared
            .stats
            .compaction_seconds
            .observe(began.elapsed());
        self.replace_files(&tenant, spec.name, &inputs, merged)
    }

    /// Puts a merged file in place of its inputs in one manifest commit; returns whether it did.
    /// Retention may have dropped the inputs meanwhile: then the merge is void and its output is
    /// deleted instead.
    fn replace_files(
        &mut self,
        tenant: &str,
        table: &str,
        inputs: &[FileEntry],
        merged: Option<FileEntry>,
    ) -> bool {
        let gone: std::collections::HashSet<&str> =
            inputs.iter().map(|f| f.path.as_str()).collect();
        let mut applied = false;
        commit(&self.shared, None, |m| {
            let files = &mut m.table_mut(tenant, table).files;
            if gone.iter().all(|p| files.iter().any(|f| f.path == *p)) {
                files.retain(|f| !gone.contains(f.path.as_str()));
                files.extend(merged.iter().cloned());
                applied = true;
            }
        });
        if applied {
            self.graveyard.extend(gone.iter().map(|p| p.to_string()));
            self.shared
                .stats
                .files_compacted
                .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        } else {
            self.graveyard.extend(merged.iter().map(|f| f.path.clone()));
        }
        applied
    }
}

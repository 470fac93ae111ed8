//! Start-up: the directory lock, removing files no manifest lists, and replaying the WAL beyond
//! the checkpoints into Parquet before any write is taken.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::flush::{commit, remove_segments_through, write_part};
use super::manifest::{Manifest, MANIFEST_DIR};
use super::version::{TableVersion, Version};
use super::wal;
use super::writer::take_parts;
use super::{Catalog, Shared};
use crate::error::StorageError;
use crate::files::{FileStore, LocalDir, TMP_SUFFIX};

/// Directories that hold table files: every tenant's, and those of a version-1 store.
pub(super) const TABLE_ROOTS: [&str; 4] = ["tenants", "spans", "span_red", "service_edges"];

/// Takes the data directory's exclusive lock, held for the life of the returned file.
pub(super) fn lock_directory(dir: &Path) -> Result<std::fs::File, StorageError> {
    let lock_path = dir.join("LOCK");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| StorageError::io("create lock", &lock_path, e))?;
    lock.try_lock().map_err(|_| StorageError::Manifest {
        path: lock_path.clone(),
        message: "data directory is in use by another sightline process".into(),
    })?;
    Ok(lock)
}

fn is_table_file(path: &str) -> bool {
    TABLE_ROOTS
        .iter()
        .any(|r| path.starts_with(r) && path[r.len()..].starts_with('/'))
        && (path.ends_with(".parquet") || path.ends_with(TMP_SUFFIX))
}

/// Deletes table files and temporary files the manifest does not know (left by a crash between
/// a file write and the manifest update), and forgets manifest entries whose file is gone.
pub(super) fn remove_orphans(
    files: &dyn FileStore,
    manifest: &mut Manifest,
) -> Result<(), StorageError> {
    let known: HashSet<&str> = manifest.all_files().map(|f| f.path.as_str()).collect();
    let mut present = HashSet::new();
    let mut removed = 0usize;
    for root in TABLE_ROOTS {
        for path in files.list(root)? {
            if !is_table_file(&path) {
                continue;
            }
            if known.contains(path.as_str()) {
                present.insert(path);
            } else {
                files.delete(&path)?;
                removed += 1;
            }
        }
    }
    for path in files.list(MANIFEST_DIR)? {
        if path.ends_with(TMP_SUFFIX) {
            files.delete(&path)?;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed files not in the manifest");
    }
    let mut missing = 0;
    manifest.for_each_table(|_, _, list| {
        let before = list.len();
        list.retain(|f| present.contains(&f.path));
        missing += before - list.len();
    });
    if missing > 0 {
        tracing::error!(missing, "manifest named files that are gone");
    }
    Ok(())
}

/// Every record beyond the checkpoints, in log order, with the segments read.
struct Replay {
    records: Vec<(String, usize, Vec<arrow::array::RecordBatch>)>,
    through: Option<u64>,
    segments: Vec<u64>,
}

fn read_wal(
    wal_dir: &Path,
    catalog: &Catalog,
    manifest: &Manifest,
    repair: bool,
) -> Result<Replay, StorageError> {
    let segments = if wal_dir.exists() {
        wal::list_segments(wal_dir)?
    } else {
        Vec::new()
    };
    let mut records = Vec::new();
    let mut through = None;
    for &id in &segments {
        if id <= manifest.wal_checkpoint {
            continue;
        }
        let contents = wal::read_segment(&wal::segment_path(wal_dir, id), repair)?;
        for payload in &contents.payloads {
            let record = wal::decode_record(payload, contents.legacy)?;
            let table = catalog
                .index_of(&record.table)
                .filter(|&i| catalog.tables[i].is_logged())
                .ok_or_else(|| StorageError::Manifest {
                    path: wal::segment_path(wal_dir, id),
                    message: format!("holds rows of unknown table {:?}", record.table),
                })?;
            if id <= manifest.checkpoint_of(&record.tenant, &record.table) {
                continue;
            }
            // Records written before a column was added get it, null.
            let schema = &catalog.tables[table].schema;
            let batches = record
                .batches
                .into_iter()
                .map(|b| crate::schema::conform(b, schema))
                .collect::<Result<Vec<_>, _>>()?;
            records.push((record.tenant, table, batches));
        }
        through = Some(id);
    }
    Ok(Replay {
        records,
        through,
        segments,
    })
}

/// Replays WAL segments the manifest does not cover into Parquet files, with what derives from
/// them; returns the id for the next segment. Derives keep whatever they still wait for.
pub(super) fn replay_wal(shared: &Arc<Shared>, wal_dir: &Path) -> Result<u64, StorageError> {
    let manifest = shared.state().manifest.clone();
    let replay = read_wal(wal_dir, &shared.catalog, &manifest, true)?;
    let rows: usize = replay
        .records
        .iter()
        .flat_map(|(_, _, b)| b)
        .map(|b| b.num_rows())
        .sum();
    let now = Instant::now();
    let parts = {
        let mut state = shared.state();
        for (tenant, table, batches) in replay.records {
            if !state.tenants.contains_key(&tenant) {
                let buffers = shared.new_tenant();
                state.tenants.insert(tenant.clone(), buffers);
            }
            let buffers = state
                .tenants
                .get_mut(&tenant)
                .unwrap_or_else(|| unreachable!());
            let name = shared.catalog.tables[table].name;
            for batch in batches {
                for d in buffers.derives.iter_mut().filter(|d| d.source() == name) {
                    d.observe(&batch, now)?;
                }
                buffers.active[table].push(batch);
            }
        }
        take_parts(shared, &mut state, 0, replay.through)
    };
    for part in &parts {
        let written = write_part(shared, part)?;
        commit(shared, None, |m| {
            for (table, files) in &written {
                m.table_mut(&part.tenant, shared.catalog.tables[*table].name)
                    .files
                    .extend(files.iter().cloned());
            }
        });
    }
    let checkpoint = replay.through.unwrap_or(manifest.wal_checkpoint);
    commit(shared, None, |m| {
        m.wal_checkpoint = m.wal_checkpoint.max(checkpoint)
    });
    if rows > 0 {
        tracing::info!(
            rows,
            segments = replay.segments.len(),
            "replayed write-ahead log"
        );
    }
    let last = replay.segments.last().copied().unwrap_or(0);
    remove_segments_through(shared, last.max(checkpoint));
    Ok(last.max(checkpoint) + 1)
}

/// A tenant's version of a data directory read without a running engine and without changing
/// it: the manifest's files plus the WAL beyond the checkpoints, with derived tables rebuilt.
pub(super) fn load_readonly(
    data_dir: &Path,
    catalog: Catalog,
    tenant: &str,
) -> Result<Version, StorageError> {
    let files: Arc<dyn FileStore> = Arc::new(LocalDir::new(data_dir)?);
    let manifest = Manifest::load(files.as_ref())?;
    let replay = read_wal(&data_dir.join("wal"), &catalog, &manifest, false)?;
    let mut tables: Vec<TableVersion> = catalog
        .tables
        .iter()
        .map(|spec| TableVersion {
            spec: Arc::clone(spec),
            files: manifest
                .table(tenant, spec.name)
                .map(|t| Arc::from(t.files.as_slice()))
                .unwrap_or_else(|| Arc::from(Vec::new())),
            in_memory: Vec::new(),
        })
        .collect();
    let mut derives: Vec<_> = catalog.derives.iter().map(|f| f()).collect();
    let now = Instant::now();
    for (t, table, batches) in replay.records {
        if t != tenant {
            continue;
        }
        let name = catalog.tables[table].name;
        for batch in batches {
            for d in derives.iter_mut().filter(|d| d.source() == name) {
                d.observe(&batch, now)?;
            }
            tables[table].in_memory.push(batch);
        }
    }
    for d in &mut derives {
        for (name, batch) in d.seal()? {
            if let Some(i) = catalog.index_of(name) {
                tables[i].in_memory.push(batch);
            }
        }
    }
    Ok(Version {
        tenant: tenant.to_string(),
        files,
        tables,
        footers: Default::default(),
    })
}

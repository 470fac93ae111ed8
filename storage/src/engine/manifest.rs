//! The manifest: every live Parquet file of every tenant's tables, and how far the write-ahead
//! log is covered by them.
//!
//! Each change is a new version, `manifest/{sequence:020}.json`, written put-if-absent through
//! the [`FileStore`]: a crash leaves the old version or the new one, never a mix, and no version
//! is ever overwritten (which an object store needs, having no atomic rename). The newest
//! version that reads whole is the manifest; older ones are deleted once a newer one is durable.
//! A Parquet file that no version lists is an orphan of an interrupted flush or compaction and is
//! removed at start.
//!
//! Version 1 (`manifest.json`, spans and rollups of one tenant in `spans/`, `span_red/`,
//! `service_edges/`) is read and rewritten as version 2 on first start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::files::FileStore;

pub const MANIFEST_DIR: &str = "manifest";
const LEGACY_MANIFEST: &str = "manifest.json";
const FORMAT_VERSION: u32 = 2;
/// The tenant of a store without tenants, and of data written before tenants existed.
pub const DEFAULT_TENANT: &str = "default";
/// Versions kept besides the newest, for a reader that listed the directory just before a commit.
const VERSIONS_KEPT: u64 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the store's root.
    pub path: String,
    /// Hour partition, as hours since the unix epoch.
    pub hour: i64,
    pub rows: u64,
    pub bytes: u64,
    /// Range of the table's time column in this file, unix nanoseconds.
    #[serde(alias = "min_start_unix_nano")]
    pub min_time: i64,
    #[serde(alias = "max_start_unix_nano")]
    pub max_time: i64,
    /// How many times the rows of this file went through compaction.
    #[serde(default)]
    pub level: u32,
    /// The manifest sequence that added the file: a newer file's row wins a deduplication.
    #[serde(default)]
    pub seq: u64,
}

/// One table of one tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableFiles {
    pub files: Vec<FileEntry>,
    /// Every WAL segment at or below this is in `files` for this table (a logged table whose
    /// flush got ahead of others'); never below the manifest's `wal_checkpoint`.
    #[serde(default)]
    pub checkpoint: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// This version's number; the next commit writes `sequence + 1`.
    pub sequence: u64,
    /// Every WAL segment with an id at or below this is in the files of every table.
    pub wal_checkpoint: u64,
    /// Tenant → table name → files.
    pub tenants: BTreeMap<String, BTreeMap<String, TableFiles>>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            sequence: 0,
            wal_checkpoint: 0,
            tenants: BTreeMap::new(),
        }
    }
}

/// Version 1, as written before the table engine.
#[derive(Deserialize)]
struct LegacyManifest {
    version: u32,
    wal_checkpoint: u64,
    files: Vec<FileEntry>,
    #[serde(default)]
    span_red: Vec<FileEntry>,
    #[serde(default)]
    service_edges: Vec<FileEntry>,
}

fn version_path(sequence: u64) -> String {
    format!("{MANIFEST_DIR}/{sequence:020}.json")
}

fn parse_version_path(path: &str) -> Option<u64> {
    path.strip_prefix(MANIFEST_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn corrupt(path: &str, message: impl std::fmt::Display) -> StorageError {
    StorageError::Manifest {
        path: path.into(),
        message: message.to_string(),
    }
}

impl Manifest {
    /// The newest version, or an empty manifest in a new store.
    pub fn load(files: &dyn FileStore) -> Result<Self, StorageError> {
        let mut versions: Vec<u64> = files
            .list(MANIFEST_DIR)?
            .iter()
            .filter_map(|p| parse_version_path(p))
            .collect();
        versions.sort_unstable();
        if let Some(&newest) = versions.last() {
            let path = version_path(newest);
            let bytes = files
                .read(&path)?
                .ok_or_else(|| corrupt(&path, "listed but gone"))?;
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
            if manifest.version != FORMAT_VERSION {
                return Err(corrupt(
                    &path,
                    format!("unsupported manifest version {}", manifest.version),
                ));
            }
            if manifest.sequence != newest {
                return Err(corrupt(
                    &path,
                    format!("holds sequence {}", manifest.sequence),
                ));
            }
            return Ok(manifest);
        }
        match files.read(LEGACY_MANIFEST)? {
            Some(bytes) => Self::from_legacy(&bytes),
            None => Ok(Self::default()),
        }
    }

    fn from_legacy(bytes: &[u8]) -> Result<Self, StorageError> {
        let legacy: LegacyManifest =
            serde_json::from_slice(bytes).map_err(|e| corrupt(LEGACY_MANIFEST, e))?;
        if legacy.version != 1 {
            return Err(corrupt(
                LEGACY_MANIFEST,
                format!("unsupported manifest version {}", legacy.version),
            ));
        }
        let mut tables = BTreeMap::new();
        for (name, files) in [
            ("spans", legacy.files),
            ("span_red", legacy.span_red),
            ("service_edges", legacy.service_edges),
        ] {
            tables.insert(
                name.to_string(),
                TableFiles {
                    files,
                    checkpoint: legacy.wal_checkpoint,
                },
            );
        }
        Ok(Self {
            version: FORMAT_VERSION,
            sequence: 0,
            wal_checkpoint: legacy.wal_checkpoint,
            tenants: BTreeMap::from([(DEFAULT_TENANT.to_string(), tables)]),
        })
    }

    /// Writes this manifest as version `self.sequence`, which must not exist yet, then deletes
    /// versions older than the few kept (and the version-1 file).
    pub fn save(&self, files: &dyn FileStore) -> Result<(), StorageError> {
        let path = version_path(self.sequence);
        let bytes = serde_json::to_vec(self).map_err(|e| corrupt(&path, e))?;
        if !files.put_if_absent(&path, &bytes)? {
            return Err(corrupt(
                &path,
                "exists already: another writer is committing to this store",
            ));
        }
        for old in files.list(MANIFEST_DIR)? {
            match parse_version_path(&old) {
                Some(s) if s + VERSIONS_KEPT < self.sequence => files.delete(&old)?,
                // Staged writes a crash left behind.
                None if old.ends_with(crate::files::TMP_SUFFIX) => files.delete(&old)?,
                _ => {}
            }
        }
        files.delete(LEGACY_MANIFEST)?;
        Ok(())
    }

    pub fn table(&self, tenant: &str, table: &str) -> Option<&TableFiles> {
        self.tenants.get(tenant)?.get(table)
    }

    pub fn table_mut(&mut self, tenant: &str, table: &str) -> &mut TableFiles {
        let checkpoint = self.wal_checkpoint;
        self.tenants
            .entry(tenant.to_string())
            .or_default()
            .entry(table.to_string())
            .or_insert_with(|| TableFiles {
                files: Vec::new(),
                checkpoint,
            })
    }

    /// Every file of every table of every tenant.
    pub fn all_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.tenants
            .values()
            .flat_map(|t| t.values())
            .flat_map(|t| t.files.iter())
    }

    /// Applies `f` to the file list of every table of every tenant.
    pub fn for_each_table(&mut self, mut f: impl FnMut(&str, &str, &mut Vec<FileEntry>)) {
        for (tenant, tables) in &mut self.tenants {
            for (name, table) in tables {
                f(tenant, name, &mut table.files);
            }
        }
    }

    /// The checkpoint of a logged table: the WAL segment through which its rows are in files.
    pub fn checkpoint_of(&self, tenant: &str, table: &str) -> u64 {
        self.table(tenant, table).map_or(self.wal_checkpoint, |t| {
            t.checkpoint.max(self.wal_checkpoint)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::LocalDir;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            hour: 10,
            rows: 5,
            bytes: 100,
            min_time: 1,
            max_time: 2,
            level: 0,
            seq: 1,
        }
    }

    #[test]
    fn versions_are_written_once_and_the_newest_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalDir::new(dir.path()).unwrap();
        assert_eq!(Manifest::load(&files).unwrap(), Manifest::default());
        let mut m = Manifest {
            sequence: 1,
            wal_checkpoint: 42,
            ..Manifest::default()
        };
        m.table_mut("default", "spans")
            .files
            .push(entry("tenants/default/spans/hour=x/a.parquet"));
        m.save(&files).unwrap();
        assert_eq!(Manifest::load(&files).unwrap(), m);
        assert!(m.save(&files).is_err(), "a version is never overwritten");
        for s in 2..=6 {
            m.sequence = s;
            m.save(&files).unwrap();
        }
        assert_eq!(Manifest::load(&files).unwrap().sequence, 6);
        let kept = files.list(MANIFEST_DIR).unwrap();
        assert_eq!(kept.len(), 3, "{kept:?}");
    }

    #[test]
    fn version_one_becomes_the_default_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalDir::new(dir.path()).unwrap();
        let legacy = serde_json::json!({
            "version": 1,
            "wal_checkpoint": 7,
            "files": [{"path": "spans/hour=2026-11-21T19/a.parquet", "hour": 10, "rows": 5,
                       "bytes": 100, "min_start_unix_nano": 1, "max_start_unix_nano": 2}],
            "span_red": [],
            "service_edges": []
        });
        std::fs::write(
            dir.path().join(LEGACY_MANIFEST),
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();
        let m = Manifest::load(&files).unwrap();
        assert_eq!(m.wal_checkpoint, 7);
        let spans = m.table(DEFAULT_TENANT, "spans").unwrap();
        assert_eq!(spans.files[0].min_time, 1);
        assert_eq!(spans.files[0].path, "spans/hour=2026-11-21T19/a.parquet");
        let mut next = m.clone();
        next.sequence = 1;
        next.save(&files).unwrap();
        assert!(!dir.path().join(LEGACY_MANIFEST).exists());
        assert_eq!(Manifest::load(&files).unwrap(), next);
    }
}

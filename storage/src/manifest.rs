//! The manifest: the list of live Parquet files and how far the WAL is covered by them.
//!
//! It is replaced atomically (write a new file, fsync, rename over the old one, fsync the
//! directory), so a crash leaves either the old or the new manifest, never a mix. A Parquet file
//! that is on disk but not in the manifest is an orphan of an interrupted flush or compaction and
//! is removed at start.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StorageError;

pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the data directory.
    pub path: String,
    /// Hour partition, as hours since the unix epoch.
    pub hour: i64,
    pub rows: u64,
    pub bytes: u64,
    pub min_start_unix_nano: i64,
    pub max_start_unix_nano: i64,
    /// How many times the rows of this file went through compaction.
    #[serde(default)]
    pub level: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// Every WAL segment with an id at or below this is fully in `files`.
    pub wal_checkpoint: u64,
    /// Span files.
    pub files: Vec<FileEntry>,
    /// Rollup files of the `span_red` table.
    #[serde(default)]
    pub span_red: Vec<FileEntry>,
    /// Rollup files of the `service_edges` table.
    #[serde(default)]
    pub service_edges: Vec<FileEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            wal_checkpoint: 0,
            files: Vec::new(),
            span_red: Vec::new(),
            service_edges: Vec::new(),
        }
    }
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(StorageError::io("read manifest", &path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StorageError::Manifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if manifest.version != FORMAT_VERSION {
            return Err(StorageError::Manifest {
                path,
                message: format!("unsupported manifest version {}", manifest.version),
            });
        }
        Ok(manifest)
    }

    pub fn save(&self, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StorageError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_durably(&tmp, &bytes)?;
        rename_durably(&tmp, &path)
    }

    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The files of every table, spans first.
    pub fn all_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files
            .iter()
            .chain(&self.span_red)
            .chain(&self.service_edges)
    }

    /// Applies `f` to the file list of every table.
    pub fn for_each_table(&mut self, mut f: impl FnMut(&mut Vec<FileEntry>)) {
        f(&mut self.files);
        f(&mut self.span_red);
        f(&mut self.service_edges);
    }
}

pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut f = File::create(path).map_err(|e| StorageError::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StorageError::io("write", path, e))
}

/// Renames and fsyncs the parent directory so the rename itself survives a crash.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(|e| StorageError::io("rename", from, e))?;
    let parent: PathBuf = to.parent().map(Path::to_path_buf).unwrap_or_default();
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("sync dir", &parent, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let m = Manifest {
            version: FORMAT_VERSION,
            wal_checkpoint: 42,
            files: vec![FileEntry {
                path: "spans/hour=2026-11-21T19/a.parquet".into(),
                hour: 10,
                rows: 5,
                bytes: 100,
                min_start_unix_nano: 1,
                max_start_unix_nano: 2,
                level: 0,
            }],
            ..Manifest::default()
        };
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert!(!dir.path().join("manifest.json.tmp").exists());
    }
}

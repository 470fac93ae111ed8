//! The one seam between the table engine and where its files live.
//!
//! Parquet files and manifest versions are read and written only through [`FileStore`], by
//! paths relative to its root (`tenants/default/spans/hour=…/x.parquet`,
//! `manifest/00000000000000000042.json`). Today that is a local directory ([`LocalDir`]); an
//! object store can take its place behind the same trait, because nothing here relies on a
//! rename: a new file becomes visible whole when [`NewFile::publish`] returns, and manifest
//! versions are written put-if-absent. The write-ahead log and the directory lock stay on local
//! disk (`engine::wal`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

use crate::error::StorageError;

/// Where the engine's files live. Paths are relative, `/`-separated, and never leave the root.
pub trait FileStore: Send + Sync + std::fmt::Debug + 'static {
    /// The URL readers resolve relative paths against, ending in `/` (`file:///var/lib/x/`).
    fn root_url(&self) -> String;
    /// A file to be written; nobody sees it until [`NewFile::publish`].
    fn create(&self, path: &str) -> Result<Box<dyn NewFile>, StorageError>;
    /// A published file, for reading parts of it.
    fn open(&self, path: &str) -> Result<FileReader, StorageError>;
    /// A whole small file, or `None` when there is none.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Writes a small file only if nothing is at `path` yet; false when something was.
    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool, StorageError>;
    /// Deletes a file; deleting a file that is not there is not an error.
    fn delete(&self, path: &str) -> Result<(), StorageError>;
    /// Every file under `prefix` (a directory path, `""` for all), as relative paths.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Removes directories left empty under `prefix` (object stores have none).
    fn prune_empty_dirs(&self, prefix: &str);
}

/// A file being written. Dropping it without publishing leaves nothing behind.
pub trait NewFile: Write + Send {
    /// Makes the file durable and visible under its path; returns its size in bytes.
    fn publish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// A readable file, for Parquet readers.
#[derive(Debug)]
pub struct FileReader {
    file: File,
    len: u64,
}

impl Length for FileReader {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for FileReader {
    type T = <File as ChunkReader>::T;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.file.get_read(start)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.file.get_bytes(start, length)
    }
}

/// A local directory: files are written to a temporary name, fsynced, renamed into place and the
/// directory fsynced, so a crash never leaves a half file under a real name.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The suffix of files being written; one left behind is a crash's orphan.
pub const TMP_SUFFIX: &str = ".tmp";

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| StorageError::io("create dir", &root, e))?;
        Ok(Self { root })
    }

    fn path(&self, rel: &str) -> Result<PathBuf, StorageError> {
        if rel.split('/').any(|part| part == ".." || part.is_empty()) || rel.starts_with('/') {
            return Err(StorageError::Manifest {
                path: self.root.clone(),
                message: format!("file path {rel:?} is not a relative path inside the store"),
            });
        }
        Ok(self.root.join(rel))
    }

    fn list_into(&self, dir: &Path, out: &mut Vec<String>) -> Result<(), StorageError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| StorageError::io("list", &path, e))?;
            if kind.is_dir() {
                self.list_into(&path, out)?;
            } else if let Ok(rel) = path.strip_prefix(&self.root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
}

/// A name beside `path` that no other writer uses.
fn temporary_name(path: &Path) -> PathBuf {
    PathBuf::from(format!(
        "{}.{}-{}{TMP_SUFFIX}",
        path.display(),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("sync dir", dir, e))
}

struct LocalNewFile {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    published: bool,
}

impl Write for LocalNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl NewFile for LocalNewFile {
    fn publish(mut self: Box<Self>) -> Result<u64, StorageError> {
        self.file
            .flush()
            .map_err(|e| StorageError::io("write", &self.tmp, e))?;
        let file = self.file.get_ref();
        file.sync_all()
            .map_err(|e| StorageError::io("sync", &self.tmp, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &self.tmp, e))?
            .len();
        fs::rename(&self.tmp, &self.path).map_err(|e| StorageError::io("rename", &self.tmp, e))?;
        self.published = true;
        if let Some(parent) = self.path.parent() {
            sync_dir(parent)?;
        }
        Ok(bytes)
    }
}

impl Drop for LocalNewFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl FileStore for LocalDir {
    fn root_url(&self) -> String {
        let abs = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let mut url = format!("file://{}", abs.to_string_lossy());
        if !url.ends_with('/') {
            url.push('/');
        }
        url
    }

    fn create(&self, rel: &str) -> Result<Box<dyn NewFile>, StorageError> {
        let path = self.path(rel)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| StorageError::io("create dir", parent, e))?;
        }
        let tmp = temporary_name(&path);
        let file = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        Ok(Box::new(LocalNewFile {
            file: io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            path,
            published: false,
        }))
    }

    fn open(&self, rel: &str) -> Result<FileReader, StorageError> {
        let path = self.path(rel)?;
        let file = File::open(&path).map_err(|e| StorageError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &path, e))?
            .len();
        Ok(FileReader { file, len })
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path(rel)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("open", &path, e)),
        };
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .map_err(|e| StorageError::io("read", &path, e))?;
        Ok(Some(out))
    }

    fn put_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<bool, StorageError> {
        let path = self.path(rel)?;
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&parent).map_err(|e| StorageError::io("create dir", &parent, e))?;
        // Written whole and synced under a temporary name, then linked to the real one: `link`
        // fails if the name exists, so a version is never overwritten nor seen half-written.
        let tmp = temporary_name(&path);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| StorageError::io("create", &tmp, e))?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| StorageError::io("write", &tmp, e))?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(StorageError::io("link", &path, e)),
            }
        })();
        let _ = fs::remove_file(&tmp);
        let linked = result?;
        sync_dir(&parent)?;
        Ok(linked)
    }

    fn delete(&self, rel: &str) -> Result<(), StorageError> {
        let path = self.path(rel)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StorageError::io("remove", &path, e))
            }
            _ => Ok(()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        let mut out = Vec::new();
        self.list_into(&dir, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn prune_empty_dirs(&self, prefix: &str) {
        fn prune(dir: &Path, keep: &Path) -> bool {
            let Ok(entries) = fs::read_dir(dir) else {
                return false;
            };
            let mut empty = true;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !prune(&path, keep) {
                        empty = false;
                    }
                } else {
                    empty = false;
                }
            }
            // remove_dir fails on a directory that is not empty, which is what we want.
            empty && dir != keep && fs::remove_dir(dir).is_ok()
        }
        let Ok(dir) = self.path(prefix.trim_end_matches('/')) else {
            return;
        };
        prune(&dir, &dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_invisible_until_published_and_gone_if_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path()).unwrap();
        let mut f = store.create("t/hour=1/a.parquet").unwrap();
        f.write_all(b"abc").unwrap();
        assert!(store.read("t/hour=1/a.parquet").unwrap().is_none());
        assert_eq!(f.publish().unwrap(), 3);
        assert_eq!(store.read("t/hour=1/a.parquet").unwrap().unwrap(), b"abc");
        let mut g = store.create("t/hour=1/b.parquet").unwrap();
        g.write_all(b"half").unwrap();
        drop(g);
        assert_eq!(store.list("").unwrap(), vec!["t/hour=1/a.parquet"]);
        store.delete("t/hour=1/a.parquet").unwrap();
        store.delete("t/hour=1/a.parquet").unwrap();
        store.prune_empty_dirs("t");
        assert!(!dir.path().join("t/hour=1").exists());
        assert!(dir.path().join("t").exists(), "the prefix itself stays");
    }

    #[test]
    fn put_if_absent_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path()).unwrap();
        assert!(store.put_if_absent("m/1.json", b"one").unwrap());
        assert!(!store.put_if_absent("m/1.json", b"two").unwrap());
        assert_eq!(store.read("m/1.json").unwrap().unwrap(), b"one");
        assert_eq!(store.list("m").unwrap(), vec!["m/1.json"]);
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path()).unwrap();
        assert!(store.read("../x").is_err());
        assert!(store.read("/etc/passwd").is_err());
    }
}

//! Write-ahead log: numbered segment files of length-prefixed, CRC-checked records, each record one
//! batch of one table of one tenant, in Arrow IPC stream format.
//!
//! A record is `len: u32 LE | crc32: u32 LE | payload`, and a payload is
//! `tenant_len: u8 | tenant | table_len: u8 | table | Arrow IPC stream`. A torn tail (a crash in
//! the middle of a write) shows up as a short or mismatching record; replay stops there and cuts
//! the segment back to its last whole record, which is safe because a record is acknowledged
//! only after the fsync that covers it.
//!
//! Segments of format 1 (`SLWAL001`, before the table engine) hold span batches of the default
//! tenant with no header; they are still replayed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::StorageError;

const MAGIC: &[u8; 8] = b"SLWAL002";
const LEGACY_MAGIC: &[u8; 8] = b"SLWAL001";
const RECORD_HEADER: usize = 8;
/// A record larger than this is corruption, not data: the receivers cap requests far below it.
const MAX_RECORD: u32 = 1 << 30;

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Segment ids present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io("list wal", dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list wal", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Encodes one batch of one tenant's table as a record payload: a header naming both, then a
/// self-contained Arrow IPC stream.
pub fn encode_record(
    tenant: &str,
    table: &str,
    batch: &RecordBatch,
) -> Result<Vec<u8>, StorageError> {
    let mut out =
        Vec::with_capacity(batch.get_array_memory_size() / 2 + 4096 + tenant.len() + table.len());
    for name in [tenant, table] {
        let len = u8::try_from(name.len())
            .map_err(|_| StorageError::Schema(format!("name {name:?} is over 255 bytes")))?;
        out.push(len);
        out.extend_from_slice(name.as_bytes());
    }
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// One decoded record.
pub struct Record {
    pub tenant: String,
    pub table: String,
    pub batches: Vec<RecordBatch>,
}

fn decode_batches(payload: &[u8]) -> Result<Vec<RecordBatch>, StorageError> {
    let reader = StreamReader::try_new(payload, None)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::from)
}

/// Decodes a record payload of a segment of `format` (see [`SegmentContents::legacy`]).
pub fn decode_record(payload: &[u8], legacy: bool) -> Result<Record, StorageError> {
    if legacy {
        return Ok(Record {
            tenant: crate::engine::manifest::DEFAULT_TENANT.into(),
            table: "spans".into(),
            batches: decode_batches(payload)?,
        });
    }
    let mut rest = payload;
    let mut names = [String::new(), String::new()];
    for name in &mut names {
        let (&len, tail) = rest
            .split_first()
            .ok_or_else(|| StorageError::Schema("wal record header is cut short".into()))?;
        if tail.len() < len as usize {
            return Err(StorageError::Schema(
                "wal record header is cut short".into(),
            ));
        }
        *name = String::from_utf8_lossy(&tail[..len as usize]).into_owned();
        rest = &tail[len as usize..];
    }
    let [tenant, table] = names;
    Ok(Record {
        tenant,
        table,
        batches: decode_batches(rest)?,
    })
}

/// The segment being appended to.
pub struct SegmentWriter {
    pub id: u64,
    path: PathBuf,
    out: BufWriter<File>,
}

impl SegmentWriter {
    pub fn create(dir: &Path, id: u64) -> Result<Self, StorageError> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("create wal segment", &path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)
            .map_err(|e| StorageError::io("write wal", &path, e))?;
        let w = Self { id, path, out };
        w.sync_dir(dir)?;
        Ok(w)
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("sync wal dir", dir, e))
    }

    /// Buffers one record; it is durable only after [`sync`](Self::sync).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l < MAX_RECORD)
            .ok_or(StorageError::RecordTooLarge(payload.len()))?;
        let crc = crc32fast::hash(payload);
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&header)
            .and_then(|_| self.out.write_all(payload))
            .map_err(|e| StorageError::io("write wal", &self.path, e))
    }

    /// Flushes and fsyncs everything appended so far: one fsync for a whole group of requests.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.out
            .flush()
            .and_then(|_| self.out.get_ref().sync_data())
            .map_err(|e| StorageError::io("sync wal", &self.path, e))
    }
}

/// What replaying one segment found.
pub struct SegmentContents {
    pub payloads: Vec<Vec<u8>>,
    /// Bytes after the last whole record (a torn write), cut off if replay was asked to repair.
    pub torn_bytes: u64,
    /// A segment of format 1: span batches without a header.
    pub legacy: bool,
}

/// Reads every whole record of a segment. With `repair`, a torn tail is truncated away so the
/// next writer never appends behind garbage.
pub fn read_segment(path: &Path, repair: bool) -> Result<SegmentContents, StorageError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|e| StorageError::io("open wal segment", path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| StorageError::io("read wal segment", path, e))?;
    let mut payloads = Vec::new();
    let magic = data.get(..MAGIC.len());
    let legacy = magic == Some(&LEGACY_MAGIC[..]);
    if magic != Some(&MAGIC[..]) && !legacy {
        // A segment created but never written to before a crash has no valid header: empty.
        return Ok(SegmentContents {
            payloads,
            torn_bytes: data.len() as u64,
            legacy,
        });
    }
    let mut pos = MAGIC.len();
    while data.len() - pos >= RECORD_HEADER {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let start = pos + RECORD_HEADER;
        if len >= MAX_RECORD || data.len() - start < len as usize {
            break;
        }
        let payload = &data[start..start + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        payloads.push(payload.to_vec());
        pos = start + len as usize;
    }
    let torn_bytes = (data.len() - pos) as u64;
    if torn_bytes > 0 {
        tracing::warn!(segment = %path.display(), torn_bytes, "wal segment has a torn tail");
        if repair {
            file.set_len(pos as u64)
                .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
                .and_then(|_| file.sync_all())
                .map_err(|e| StorageError::io("truncate wal segment", path, e))?;
        }
    }
    Ok(SegmentContents {
        payloads,
        torn_bytes,
        legacy,
    })
}

pub fn remove_segment(dir: &Path, id: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut_and_whole_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 7).unwrap();
        w.append(b"first").unwrap();
        w.append(b"second").unwrap();
        w.sync().unwrap();
        drop(w);
        let path = segment_path(dir.path(), 7);
        // A crash in the middle of the third record: header and half its payload.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&20u32.to_le_bytes()).unwrap();
        f.write_all(&0u32.to_le_bytes()).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);

        let got = read_segment(&path, true).unwrap();
        assert_eq!(got.payloads, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(got.torn_bytes, 12);
        let again = read_segment(&path, false).unwrap();
        assert_eq!(again.payloads.len(), 2);
        assert_eq!(again.torn_bytes, 0);
    }

    #[test]
    fn records_name_their_tenant_and_table() {
        use arrow::array::{Int64Array, RecordBatch};
        let batch = RecordBatch::try_from_iter([(
            "v",
            std::sync::Arc::new(Int64Array::from(vec![1, 2])) as _,
        )])
        .unwrap();
        let payload = encode_record("acme", "samples", &batch).unwrap();
        let r = decode_record(&payload, false).unwrap();
        assert_eq!((r.tenant.as_str(), r.table.as_str()), ("acme", "samples"));
        assert_eq!(r.batches, vec![batch]);
        assert!(decode_record(&payload[..3], false).is_err());
    }

    #[test]
    fn corrupted_record_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 1).unwrap();
        w.append(b"good").unwrap();
        w.append(b"flipped").unwrap();
        w.sync().unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&path, data).unwrap();
        let got = read_segment(&path, false).unwrap();
        assert_eq!(got.payloads, vec![b"good".to_vec()]);
        assert_eq!(got.torn_bytes, 8 + 7);
    }
}

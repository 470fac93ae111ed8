//! Hour partitions: every table keeps its Parquet files in `{table}/hour=YYYY-MM-DDTHH`
//! directories, written through one writer that never leaves a half file under a real name.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::StorageError;
use crate::manifest::{rename_durably, FileEntry};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

pub fn hour_of(unix_nano: i64) -> i64 {
    unix_nano.div_euclid(NANOS_PER_HOUR)
}

/// Splits a batch into its hour partitions by a timestamp column (nanoseconds), keeping row
/// order within each part.
pub fn split_batch_by_hour(
    batch: &RecordBatch,
    time_column: usize,
) -> Result<Vec<(i64, RecordBatch)>, StorageError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let times = batch
        .column(time_column)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| ArrowError::SchemaError("time column is not a timestamp".into()))?;
    let per_row: Vec<i64> = times.values().iter().map(|t| hour_of(*t)).collect();
    let mut hours = per_row.clone();
    hours.sort_unstable();
    hours.dedup();
    if hours.len() == 1 {
        return Ok(vec![(hours[0], batch.clone())]);
    }
    hours
        .into_iter()
        .map(|hour| {
            let rows: UInt32Array = per_row
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == hour)
                .map(|(i, _)| i as u32)
                .collect();
            Ok((hour, take_record_batch(batch, &rows)?))
        })
        .collect()
}

/// `spans/hour=2026-11-21T19` for `table_dir` "spans", relative to the data directory.
pub fn partition_dir(table_dir: &str, hour: i64) -> String {
    let days = hour.div_euclid(24);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{table_dir}/hour={y:04}-{m:02}-{d:02}T{:02}",
        hour.rem_euclid(24)
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A Parquet file of one hour partition being written: to a temporary name, renamed into place by
/// [`finish`](Self::finish) after an fsync, so a crash never leaves a half file under a real name.
pub struct PartitionFileWriter {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    rel_path: String,
    hour: i64,
    time_column: usize,
    rows: u64,
    min: i64,
    max: i64,
}

impl PartitionFileWriter {
    /// `time_column` is the timestamp column whose range the manifest records.
    pub fn create(
        data_dir: &Path,
        table_dir: &str,
        hour: i64,
        schema: SchemaRef,
        time_column: usize,
        props: WriterProperties,
    ) -> Result<Self, StorageError> {
        let rel_dir = partition_dir(table_dir, hour);
        let dir = data_dir.join(&rel_dir);
        fs::create_dir_all(&dir).map_err(|e| StorageError::io("create partition", &dir, e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{now:x}-{:x}-{}.parquet",
            FILE_SEQ.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let tmp = dir.join(format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| StorageError::io("create parquet", &tmp, e))?;
        Ok(Self {
            writer: ArrowWriter::try_new(file, schema, Some(props))?,
            tmp,
            final_path: dir.join(&name),
            rel_path: format!("{rel_dir}/{name}"),
            hour,
            time_column,
            rows: 0,
            min: i64::MAX,
            max: i64::MIN,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        let times = batch
            .column(self.time_column)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(|| ArrowError::SchemaError("time column is not a timestamp".into()))?;
        for t in times.values() {
            self.min = self.min.min(*t);
            self.max = self.max.max(*t);
        }
        self.rows += batch.num_rows() as u64;
        Ok(self.writer.write(batch)?)
    }

    pub fn finish(self) -> Result<FileEntry, StorageError> {
        let file = self.writer.into_inner()?;
        file.sync_all()
            .map_err(|e| StorageError::io("sync parquet", &self.tmp, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| StorageError::io("stat parquet", &self.tmp, e))?
            .len();
        rename_durably(&self.tmp, &self.final_path)?;
        Ok(FileEntry {
            path: self.rel_path,
            hour: self.hour,
            rows: self.rows,
            bytes,
            min_start_unix_nano: self.min,
            max_start_unix_nano: self.max,
            level: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_calendar_hours() {
        // 2026-11-21T19:20:00Z
        let ns = 1_795_288_800_000_000_000i64;
        assert_eq!(
            partition_dir("spans", hour_of(ns)),
            "spans/hour=2026-11-21T19"
        );
        assert_eq!(partition_dir("spans", 0), "spans/hour=1970-01-01T00");
        assert_eq!(
            partition_dir("spans", hour_of(951_782_400 * 1_000_000_000)),
            "spans/hour=2000-02-29T00"
        );
    }
}

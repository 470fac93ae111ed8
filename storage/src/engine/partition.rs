//! Hour partitions: every table keeps its Parquet files in
//! `tenants/{tenant}/{table}/hour=YYYY-MM-DDTHH/` directories, written through one writer that
//! goes through the [`FileStore`] and never leaves a half file under a real name.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::manifest::FileEntry;
use super::table::{Effort, TableSpec};
use crate::error::StorageError;
use crate::files::{FileStore, NewFile};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

pub fn hour_of(unix_nano: i64) -> i64 {
    unix_nano.div_euclid(NANOS_PER_HOUR)
}

/// A timestamp column's values as unix nanoseconds, whatever its unit.
pub fn timestamps_nanos(column: &ArrayRef) -> Result<Vec<i64>, StorageError> {
    let scale = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    let DataType::Timestamp(unit, _) = column.data_type() else {
        return Err(StorageError::Schema(format!(
            "time column is {}, not a timestamp",
            column.data_type()
        )));
    };
    let k: i64 = scale(unit);
    let values: &[i64] = match unit {
        TimeUnit::Second => column.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().values(),
    };
    Ok(values.iter().map(|v| v.saturating_mul(k)).collect())
}

/// Splits a batch into its hour partitions by a timestamp column, keeping row order within each
/// part.
pub fn split_batch_by_hour(
    batch: &RecordBatch,
    time_column: usize,
) -> Result<Vec<(i64, RecordBatch)>, StorageError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let per_row: Vec<i64> = timestamps_nanos(batch.column(time_column))?
        .into_iter()
        .map(hour_of)
        .collect();
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

/// Splits batches into their hour partitions, in order of first appearance.
pub fn split_by_hour(
    batches: &[RecordBatch],
    time_column: usize,
) -> Result<Vec<(i64, Vec<RecordBatch>)>, StorageError> {
    let mut out: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    for batch in batches {
        for (hour, part) in split_batch_by_hour(batch, time_column)? {
            match out.iter_mut().find(|(h, _)| *h == hour) {
                Some((_, v)) => v.push(part),
                None => out.push((hour, vec![part])),
            }
        }
    }
    Ok(out)
}

/// Where a tenant's tables live, relative to the store's root.
pub fn tenant_dir(tenant: &str) -> String {
    format!("tenants/{tenant}")
}

/// `tenants/default/spans/hour=2026-11-21T19`, relative to the store's root.
pub fn partition_dir(tenant: &str, table: &str, hour: i64) -> String {
    let days = hour.div_euclid(24);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}/{table}/hour={y:04}-{m:02}-{d:02}T{:02}",
        tenant_dir(tenant),
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

/// A Parquet file of one table's hour partition being written. Nothing is visible until
/// [`finish`](Self::finish); dropped unfinished, it leaves nothing behind.
pub struct PartitionFileWriter {
    writer: ArrowWriter<Box<dyn NewFile>>,
    path: String,
    hour: i64,
    time_column: usize,
    rows: u64,
    min: i64,
    max: i64,
}

impl PartitionFileWriter {
    pub fn create(
        files: &dyn FileStore,
        tenant: &str,
        spec: &TableSpec,
        hour: i64,
        rows: usize,
        effort: Effort,
    ) -> Result<Self, StorageError> {
        let props: WriterProperties = (spec.properties)(rows, effort)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = format!(
            "{}/{now:x}-{:x}-{}.parquet",
            partition_dir(tenant, spec.name, hour),
            FILE_SEQ.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let out = files.create(&path)?;
        Ok(Self {
            writer: ArrowWriter::try_new(out, spec.schema.clone(), Some(props))?,
            path,
            hour,
            time_column: spec.time_column_index()?,
            rows: 0,
            min: i64::MAX,
            max: i64::MIN,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        let column = batch.column(self.time_column);
        if column.null_count() == 0 {
            for t in timestamps_nanos(column)? {
                self.min = self.min.min(t);
                self.max = self.max.max(t);
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(self.writer.write(batch)?)
    }

    pub fn finish(self) -> Result<FileEntry, StorageError> {
        let out = self.writer.into_inner()?;
        let bytes = out.publish()?;
        Ok(FileEntry {
            path: self.path,
            hour: self.hour,
            rows: self.rows,
            bytes,
            min_time: self.min,
            max_time: self.max,
            level: 0,
            seq: 0,
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
            partition_dir("default", "spans", hour_of(ns)),
            "tenants/default/spans/hour=2026-11-21T19"
        );
        assert_eq!(
            partition_dir("t", "spans", 0),
            "tenants/t/spans/hour=1970-01-01T00"
        );
        assert_eq!(
            partition_dir("t", "x", hour_of(951_782_400 * 1_000_000_000)),
            "tenants/t/x/hour=2000-02-29T00"
        );
    }

    #[test]
    fn timestamps_of_any_unit_become_nanoseconds() {
        use arrow::array::TimestampMillisecondArray;
        let a: ArrayRef = std::sync::Arc::new(TimestampMillisecondArray::from(vec![1, -1]));
        assert_eq!(timestamps_nanos(&a).unwrap(), vec![1_000_000, -1_000_000]);
    }
}

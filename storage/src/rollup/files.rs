//! Rollup Parquet files, hour-partitioned like spans (`span_red/hour=…`,
//! `service_edges/hour=…`). They are small — a row per key and minute — so compaction simply
//! reads every file of an hour, sums rows with equal keys, and writes one file.

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::table::{col, Aggregate, RollupKey};
use crate::error::StorageError;
use crate::manifest::FileEntry;
use crate::partition::{split_batch_by_hour, PartitionFileWriter};

const ROW_GROUP_ROWS: usize = 64 * 1024;

fn writer_properties() -> Result<WriterProperties, StorageError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

fn time_column<K: RollupKey>() -> Result<usize, StorageError> {
    Ok(K::schema().index_of(col::TIME)?)
}

/// Writes a rollup batch (rows in key order) as one file per hour it touches.
pub fn write<K: RollupKey>(
    data_dir: &Path,
    batch: &RecordBatch,
) -> Result<Vec<FileEntry>, StorageError> {
    let mut out = Vec::new();
    for (hour, part) in split_batch_by_hour(batch, time_column::<K>()?)? {
        let mut writer = PartitionFileWriter::create(
            data_dir,
            K::dir(),
            hour,
            K::schema(),
            time_column::<K>()?,
            writer_properties()?,
        )?;
        writer.write(&part)?;
        out.push(writer.finish()?);
    }
    Ok(out)
}

pub fn read(data_dir: &Path, entry: &FileEntry) -> Result<Vec<RecordBatch>, StorageError> {
    let path = data_dir.join(&entry.path);
    let file = File::open(&path).map_err(|e| StorageError::io("open parquet", &path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(64 * 1024)
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StorageError::from)
}

/// Sums the rows of several files of one hour into one file (none if they were all empty).
pub fn merge<K: RollupKey>(
    data_dir: &Path,
    inputs: &[FileEntry],
) -> Result<Vec<FileEntry>, StorageError> {
    let mut sum = Aggregate::<K>::default();
    for entry in inputs {
        for batch in read(data_dir, entry)? {
            sum.add_batch(&batch)?;
        }
    }
    match sum.to_batch()? {
        Some(batch) => write::<K>(data_dir, &batch),
        None => Ok(Vec::new()),
    }
}

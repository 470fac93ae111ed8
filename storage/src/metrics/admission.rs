//! Admission of a metrics write: the registry decides which series are new and which pass the
//! limits, then the write becomes batches of the metric tables — series rows only for series the
//! hour has not seen yet — and is queued for the WAL while the registry is still held, so that
//! no later write can be queued ahead of the series rows its samples rely on.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int8Array, ListBuilder, RecordBatch, StringArray, StringBuilder, StructBuilder,
    TimestampMillisecondArray, UInt32Array, UInt32Builder, UInt64Array,
};
use arrow::datatypes::Int32Type;
use twox_hash::XxHash3_64;

use super::builder::{MetadataRecord, MetricWrite};
use super::histogram::BucketSpan;
use super::registry::SeriesRegistry;
use super::tables::{self, label_fields, span_fields};
use crate::engine::Write;
use crate::error::StorageError;
use crate::store::WriteReport;

fn metadata_hash(m: &MetadataRecord) -> u64 {
    let text = format!("{}\u{ff}{}\u{ff}{}", m.kind.as_str(), m.unit, m.help);
    XxHash3_64::oneshot(text.as_bytes())
}

/// Admits `write` for `tenant` and hands the admitted batches to `submit` (the engine's queue);
/// if `submit` refuses them, the registry forgets what it admitted. Returns what was refused
/// (by the builder and by the limits) and what `submit` returned.
pub fn admit<R>(
    registry: &SeriesRegistry,
    write: MetricWrite,
    tenant: &str,
    now_ms: i64,
    submit: impl FnOnce(Write) -> Result<R, StorageError>,
) -> Result<(WriteReport, R), StorageError> {
    let mut report = write.report.clone();
    let mut state = registry.lock();
    let decision = state.decide(
        registry.config(),
        &write,
        now_ms.div_euclid(3_600_000),
        &mut report,
        metadata_hash,
    );
    let batches = match build(
        &write,
        &decision.rows,
        &decision.refused,
        &decision.metadata,
        now_ms,
    ) {
        Ok(b) => b,
        Err(e) => {
            state.undo(decision.admitted);
            return Err(e);
        }
    };
    let write = Write {
        tenant: tenant.to_string(),
        batches,
    };
    report.count_rows(&write);
    match submit(write) {
        Ok(r) => Ok((report, r)),
        Err(e) => {
            state.undo(decision.admitted);
            Err(e)
        }
    }
}

fn millis(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
}

fn dictionary<S: AsRef<str>>(
    keys: Vec<i32>,
    values: impl IntoIterator<Item = S>,
) -> Result<ArrayRef, StorageError> {
    let values = StringArray::from_iter_values(values);
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(keys),
        Arc::new(values),
    )?))
}

fn labels_builder() -> ListBuilder<StructBuilder> {
    ListBuilder::new(StructBuilder::from_fields(label_fields(), 0))
        .with_field(tables::labels_item_field())
}

fn append_labels(
    out: &mut ListBuilder<StructBuilder>,
    write: &MetricWrite,
    pairs: &std::ops::Range<u32>,
) {
    let s = out.values();
    for (n, v) in &write.label_pairs[pairs.start as usize..pairs.end as usize] {
        s.field_builder::<StringBuilder>(0)
            .unwrap_or_else(|| unreachable!("label name column"))
            .append_value(write.str(n));
        s.field_builder::<StringBuilder>(1)
            .unwrap_or_else(|| unreachable!("label value column"))
            .append_value(write.str(v));
        s.append(true);
    }
    out.append(true);
}

fn spans_builder() -> ListBuilder<StructBuilder> {
    ListBuilder::new(StructBuilder::from_fields(span_fields(), 0))
        .with_field(tables::spans_item_field())
}

fn append_spans(out: &mut ListBuilder<StructBuilder>, spans: &[BucketSpan]) {
    let s = out.values();
    for span in spans {
        s.field_builder::<Int32Builder>(0)
            .unwrap_or_else(|| unreachable!("span offset column"))
            .append_value(span.offset);
        s.field_builder::<UInt32Builder>(1)
            .unwrap_or_else(|| unreachable!("span length column"))
            .append_value(span.length);
        s.append(true);
    }
    out.append(true);
}

fn floats_builder() -> ListBuilder<Float64Builder> {
    ListBuilder::new(Float64Builder::new()).with_field(tables::f64_item_field())
}

fn append_floats(out: &mut ListBuilder<Float64Builder>, values: &[f64]) {
    out.values().append_slice(values);
    out.append(true);
}

/// The postings of the new series rows: one per label, and one for the metric name, so that
/// every series has at least one and a store's postings begin where its series do.
fn postings(write: &MetricWrite, rows: &[(u32, i64, i64)]) -> Result<RecordBatch, StorageError> {
    let mut labels: Vec<&str> = vec![super::builder::METRIC_NAME_LABEL];
    let mut label_keys = Vec::new();
    let mut values = StringBuilder::new();
    let (mut times, mut metrics, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut push = |label: i32, value: &str, row: &(u32, i64, i64)| {
        let series = &write.series[row.0 as usize];
        label_keys.push(label);
        values.append_value(value);
        times.push(row.2);
        metrics.push(series.metric as i32);
        ids.push(series.id);
    };
    let mut key_of = std::collections::HashMap::new();
    for row in rows {
        let series = &write.series[row.0 as usize];
        push(0, &write.metrics[series.metric as usize], row);
        for (n, v) in &write.label_pairs[series.labels.start as usize..series.labels.end as usize] {
            let name = write.str(n);
            let key = *key_of.entry(name).or_insert_with(|| {
                labels.push(name);
                labels.len() as i32 - 1
            });
            push(key, write.str(v), row);
        }
    }
    Ok(RecordBatch::try_new(
        tables::postings_schema(),
        vec![
            millis(times),
            dictionary(metrics, &write.metrics)?,
            dictionary(label_keys, labels)?,
            Arc::new(values.finish()),
            Arc::new(UInt64Array::from(ids)),
        ],
    )?)
}

/// The admitted rows of a write as batches of the metric tables (empty tables left out).
fn build(
    write: &MetricWrite,
    rows: &[(u32, i64, i64)],
    refused: &[bool],
    metadata: &[usize],
    now_ms: i64,
) -> Result<Vec<(&'static str, RecordBatch)>, StorageError> {
    let mut out = Vec::new();
    let series = |i: u32| &write.series[i as usize];
    if !rows.is_empty() {
        let mut labels = labels_builder();
        for &(i, _, _) in rows {
            append_labels(&mut labels, write, &series(i).labels);
        }
        let batch = RecordBatch::try_new(
            tables::series_schema(),
            vec![
                millis(rows.iter().map(|r| r.2).collect()),
                dictionary(
                    rows.iter().map(|r| series(r.0).metric as i32).collect(),
                    &write.metrics,
                )?,
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| series(r.0).id),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| series(r.0).check),
                )),
                Arc::new(labels.finish()),
            ],
        )?;
        out.push((tables::SERIES_TABLE, batch));
        out.push((tables::POSTINGS_TABLE, postings(write, rows)?));
    }
    let kept: Vec<usize> = (0..write.sample_ts.len())
        .filter(|&j| !refused[write.sample_series[j] as usize])
        .collect();
    if !kept.is_empty() {
        let batch = RecordBatch::try_new(
            tables::samples_schema(),
            vec![
                dictionary(
                    kept.iter()
                        .map(|&j| series(write.sample_series[j]).metric as i32)
                        .collect(),
                    &write.metrics,
                )?,
                Arc::new(UInt64Array::from_iter_values(
                    kept.iter().map(|&j| series(write.sample_series[j]).id),
                )),
                millis(kept.iter().map(|&j| write.sample_ts[j]).collect()),
                Arc::new(Float64Array::from_iter_values(
                    kept.iter().map(|&j| write.sample_values[j]),
                )),
                Arc::new(
                    TimestampMillisecondArray::from(
                        kept.iter()
                            .map(|&j| write.sample_starts[j])
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )?;
        out.push((tables::SAMPLES_TABLE, batch));
    }
    let histograms: Vec<_> = write
        .histograms
        .iter()
        .filter(|h| !refused[h.0 as usize])
        .collect();
    if !histograms.is_empty() {
        let (mut neg_spans, mut pos_spans) = (spans_builder(), spans_builder());
        let (mut neg, mut pos, mut custom) = (floats_builder(), floats_builder(), floats_builder());
        for (_, _, _, h) in &histograms {
            append_spans(&mut neg_spans, &h.negative_spans);
            append_spans(&mut pos_spans, &h.positive_spans);
            append_floats(&mut neg, &h.negative_buckets);
            append_floats(&mut pos, &h.positive_buckets);
            append_floats(&mut custom, &h.custom_values);
        }
        let f = |get: fn(&super::NativeHistogram) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                histograms.iter().map(|h| get(&h.3)),
            ))
        };
        let batch = RecordBatch::try_new(
            tables::histograms_schema(),
            vec![
                dictionary(
                    histograms
                        .iter()
                        .map(|h| series(h.0).metric as i32)
                        .collect(),
                    &write.metrics,
                )?,
                Arc::new(UInt64Array::from_iter_values(
                    histograms.iter().map(|h| series(h.0).id),
                )),
                millis(histograms.iter().map(|h| h.1).collect()),
                Arc::new(
                    TimestampMillisecondArray::from(
                        histograms.iter().map(|h| h.2).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                f(|h| h.count),
                f(|h| h.sum),
                Arc::new(Int32Array::from_iter_values(
                    histograms.iter().map(|h| h.3.schema),
                )),
                f(|h| h.zero_threshold),
                f(|h| h.zero_count),
                Arc::new(neg_spans.finish()),
                Arc::new(neg.finish()),
                Arc::new(pos_spans.finish()),
                Arc::new(pos.finish()),
                Arc::new(custom.finish()),
                Arc::new(Int8Array::from_iter_values(
                    histograms.iter().map(|h| h.3.reset_hint),
                )),
                Arc::new(BooleanArray::from(
                    histograms.iter().map(|h| h.3.float).collect::<Vec<_>>(),
                )),
            ],
        )?;
        out.push((tables::HISTOGRAMS_TABLE, batch));
    }
    let exemplars: Vec<_> = write
        .exemplars
        .iter()
        .filter(|e| !refused[e.0 as usize])
        .collect();
    if !exemplars.is_empty() {
        let mut labels = labels_builder();
        for e in &exemplars {
            append_labels(&mut labels, write, &e.3);
        }
        let batch = RecordBatch::try_new(
            tables::exemplars_schema(),
            vec![
                dictionary(
                    exemplars
                        .iter()
                        .map(|e| series(e.0).metric as i32)
                        .collect(),
                    &write.metrics,
                )?,
                Arc::new(UInt64Array::from_iter_values(
                    exemplars.iter().map(|e| series(e.0).id),
                )),
                millis(exemplars.iter().map(|e| e.1).collect()),
                Arc::new(Float64Array::from_iter_values(
                    exemplars.iter().map(|e| e.2),
                )),
                Arc::new(labels.finish()),
            ],
        )?;
        out.push((tables::EXEMPLARS_TABLE, batch));
    }
    if !metadata.is_empty() {
        let records: Vec<&MetadataRecord> = metadata.iter().map(|&i| &write.metadata[i]).collect();
        let families: Vec<String> = records.iter().map(|m| m.family.clone()).collect();
        let kinds: Vec<String> = records
            .iter()
            .map(|m| m.kind.as_str().to_string())
            .collect();
        let batch = RecordBatch::try_new(
            tables::metadata_schema(),
            vec![
                millis(vec![now_ms; records.len()]),
                dictionary((0..records.len() as i32).collect(), &families)?,
                dictionary((0..records.len() as i32).collect(), &kinds)?,
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|m| m.unit.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|m| m.help.as_str()),
                )),
            ],
        )?;
        out.push((tables::METADATA_TABLE, batch));
    }
    Ok(out)
}

//! Remote write 1.0 (`prometheus.WriteRequest`) and 2.0 (`io.prometheus.write.v2.Request`),
//! decoded in place into the store's [`MetricBatchBuilder`]: label strings are borrowed from the
//! request until a series is seen for the first time, samples go straight into columns.
//!
//! Each series is read twice: once for its labels and the number of its points (so that a
//! refusal counts them), once for its points.

use sightline_storage::metrics::MetricWrite;
use sightline_storage::metrics::{
    BucketSpan, MetricBatchBuilder, MetricType, MetricsConfig, NativeHistogram, SeriesRef,
    METRIC_NAME_LABEL,
};

use crate::wire::{Reader, WireError};

/// A remote-write protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub fn decode(
    body: &[u8],
    version: Version,
    config: &MetricsConfig,
    now_ms: i64,
) -> Result<MetricWrite, WireError> {
    let mut out = MetricBatchBuilder::new(config, now_ms);
    match version {
        Version::V1 => decode_v1(body, &mut out)?,
        Version::V2 => decode_v2(body, &mut out)?,
    }
    Ok(out.finish())
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    simdutf8::basic::from_utf8(b).map_err(|_| WireError(format!("{what} is not valid UTF-8")))
}

fn decode_v1(body: &[u8], out: &mut MetricBatchBuilder) -> Result<(), WireError> {
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut exemplar_labels: Vec<(&str, &str)> = Vec::new();
    let mut r = Reader::new(body);
    while let Some((field, v)) = r.next()? {
        match field {
            1 => series_v1(
                v.bytes("timeseries")?,
                out,
                &mut labels,
                &mut exemplar_labels,
            )?,
            3 => metadata_v1(v.bytes("metadata")?, out)?,
            _ => {}
        }
    }
    Ok(())
}

fn label_v1(buf: &[u8]) -> Result<(&str, &str), WireError> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => name = utf8(v.bytes("label name")?, "label name")?,
            2 => value = utf8(v.bytes("label value")?, "label value")?,
            _ => {}
        }
    }
    Ok((name, value))
}

fn series_v1<'a>(
    buf: &'a [u8],
    out: &mut MetricBatchBuilder,
    labels: &mut Vec<(&'a str, &'a str)>,
    exemplar_labels: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), WireError> {
    labels.clear();
    let mut points = 0u64;
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => labels.push(label_v1(v.bytes("label")?)?),
            2 | 4 => points += 1,
            _ => {}
        }
    }
    let Some(series) = out.series(labels, points) else {
        return Ok(());
    };
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            2 => {
                let (value, ts) = sample(v.bytes("sample")?)?;
                out.sample(series, ts, value, None);
            }
            3 => {
                exemplar_labels.clear();
                let (mut value, mut ts) = (0.0, 0);
                let mut e = Reader::new(v.bytes("exemplar")?);
                while let Some((f, v)) = e.next()? {
                    match f {
                        1 => exemplar_labels.push(label_v1(v.bytes("exemplar label")?)?),
                        2 => value = v.double("exemplar value")?,
                        3 => ts = v.int64("exemplar timestamp")?,
                        _ => {}
                    }
                }
                out.exemplar(series, ts, value, exemplar_labels);
            }
            4 => {
                let (ts, start, h) = histogram(v.bytes("histogram")?)?;
                out.histogram(series, ts, start, h);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A `Sample`: value, timestamp (and, in 2.0, start timestamp, read separately).
fn sample(buf: &[u8]) -> Result<(f64, i64), WireError> {
    let (mut value, mut ts) = (0.0, 0);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => value = v.double("sample value")?,
            2 => ts = v.int64("sample timestamp")?,
            _ => {}
        }
    }
    Ok((value, ts))
}

fn metadata_v1(buf: &[u8], out: &mut MetricBatchBuilder) -> Result<(), WireError> {
    let (mut kind, mut family, mut help, mut unit) = (0, "", "", "");
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => kind = v.varint("metadata type")?,
            2 => family = utf8(v.bytes("metric family name")?, "metric family name")?,
            4 => help = utf8(v.bytes("help")?, "help")?,
            5 => unit = utf8(v.bytes("unit")?, "unit")?,
            _ => {}
        }
    }
    out.metadata(family, MetricType::from_remote_write(kind), unit, help);
    Ok(())
}

fn spans(buf: &[u8]) -> Result<BucketSpan, WireError> {
    let mut span = BucketSpan {
        offset: 0,
        length: 0,
    };
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => span.offset = v.sint("span offset")? as i32,
            2 => span.length = v.varint("span length")? as u32,
            _ => {}
        }
    }
    Ok(span)
}

/// A native histogram (the same message in 1.0 and 2.0): its timestamp, start timestamp and
/// contents. Integer histograms' delta-encoded counts become absolute counts.
fn histogram(buf: &[u8]) -> Result<(i64, Option<i64>, NativeHistogram), WireError> {
    let mut h = NativeHistogram::default();
    let (mut ts, mut start) = (0, None);
    let (mut neg_deltas, mut pos_deltas) = (Vec::new(), Vec::new());
    let (mut count_int, mut zero_int) = (None, None);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => count_int = Some(v.varint("histogram count")?),
            2 => {
                h.count = v.double("histogram count")?;
                h.float = true;
            }
            3 => h.sum = v.double("histogram sum")?,
            4 => h.schema = v.sint("histogram schema")? as i32,
            5 => h.zero_threshold = v.double("zero threshold")?,
            6 => zero_int = Some(v.varint("zero count")?),
            7 => h.zero_count = v.double("zero count")?,
            8 => h.negative_spans.push(spans(v.bytes("negative span")?)?),
            9 => v.varints("negative deltas", &mut neg_deltas)?,
            10 => v.doubles("negative counts", &mut h.negative_buckets)?,
            11 => h.positive_spans.push(spans(v.bytes("positive span")?)?),
            12 => v.varints("positive deltas", &mut pos_deltas)?,
            13 => v.doubles("positive counts", &mut h.positive_buckets)?,
            14 => h.reset_hint = v.varint("reset hint")? as i8,
            15 => ts = v.int64("histogram timestamp")?,
            16 => v.doubles("custom values", &mut h.custom_values)?,
            17 => start = Some(v.int64("histogram start timestamp")?),
            _ => {}
        }
    }
    if !h.float {
        h.count = count_int.unwrap_or(0) as f64;
        h.zero_count = zero_int.unwrap_or(0) as f64;
        let zig = |d: Vec<u64>| d.into_iter().map(crate::wire::zigzag);
        h.negative_buckets = NativeHistogram::counts_from_deltas(zig(neg_deltas));
        h.positive_buckets = NativeHistogram::counts_from_deltas(zig(pos_deltas));
    }
    Ok((ts, start, h))
}

fn decode_v2(body: &[u8], out: &mut MetricBatchBuilder) -> Result<(), WireError> {
    // Symbols first, wherever they are in the message.
    let mut symbols: Vec<&str> = Vec::new();
    let mut r = Reader::new(body);
    while let Some((field, v)) = r.next()? {
        if field == 4 {
            symbols.push(utf8(v.bytes("symbol")?, "symbol")?);
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(WireError(
            "the first symbol of a remote write 2.0 request must be the empty string".into(),
        ));
    }
    let mut refs = Vec::new();
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut exemplar_labels: Vec<(&str, &str)> = Vec::new();
    let mut r = Reader::new(body);
    while let Some((field, v)) = r.next()? {
        if field == 5 {
            series_v2(
                v.bytes("timeseries")?,
                &symbols,
                out,
                &mut refs,
                &mut labels,
                &mut exemplar_labels,
            )?;
        }
    }
    Ok(())
}

/// Label pairs from symbol references; `Err` names what is wrong with them.
fn resolve<'a>(
    refs: &[u64],
    symbols: &[&'a str],
    out: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), String> {
    out.clear();
    if !refs.len().is_multiple_of(2) {
        return Err(format!(
            "{} label references, not name/value pairs",
            refs.len()
        ));
    }
    for pair in refs.chunks_exact(2) {
        let get = |i: u64| {
            symbols.get(i as usize).copied().ok_or_else(|| {
                format!(
                    "label reference {i} is outside the {} symbols",
                    symbols.len()
                )
            })
        };
        out.push((get(pair[0])?, get(pair[1])?));
    }
    Ok(())
}

fn series_v2<'a>(
    buf: &'a [u8],
    symbols: &[&'a str],
    out: &mut MetricBatchBuilder,
    refs: &mut Vec<u64>,
    labels: &mut Vec<(&'a str, &'a str)>,
    exemplar_labels: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), WireError> {
    refs.clear();
    let mut points = 0u64;
    let mut metadata: Option<&[u8]> = None;
    // The start timestamp of the series, from drafts of 2.0 before it moved into each sample.
    let mut created: Option<i64> = None;
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => v.varints("labels_refs", refs)?,
            2 | 3 => points += 1,
            5 => metadata = Some(v.bytes("metadata")?),
            6 => created = Some(v.int64("created timestamp")?),
            _ => {}
        }
    }
    if let Err(problem) = resolve(refs, symbols, labels) {
        out.refuse(
            sightline_storage::metrics::builder::reason::INVALID_LABELS,
            points,
            || format!("series with labels_refs {refs:?}: {problem}"),
        );
        return Ok(());
    }
    let Some(series) = out.series(labels, points) else {
        return Ok(());
    };
    if let Some(m) = metadata {
        metadata_v2(m, symbols, series, labels, out)?;
    }
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            2 => {
                let b = v.bytes("sample")?;
                let (value, ts) = sample(b)?;
                out.sample(series, ts, value, start_of(b)?.or(created));
            }
            3 => {
                let (ts, start, h) = histogram(v.bytes("histogram")?)?;
                out.histogram(series, ts, start.or(created), h);
            }
            4 => {
                refs.clear();
                let (mut value, mut ts) = (0.0, 0);
                let mut e = Reader::new(v.bytes("exemplar")?);
                while let Some((f, v)) = e.next()? {
                    match f {
                        1 => v.varints("exemplar labels_refs", refs)?,
                        2 => value = v.double("exemplar value")?,
                        3 => ts = v.int64("exemplar timestamp")?,
                        _ => {}
                    }
                }
                if resolve(refs, symbols, exemplar_labels).is_ok() {
                    out.exemplar(series, ts, value, exemplar_labels);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A 2.0 sample's start timestamp, if it has one.
fn start_of(buf: &[u8]) -> Result<Option<i64>, WireError> {
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        if f == 3 {
            return Ok(Some(v.int64("sample start timestamp")?));
        }
    }
    Ok(None)
}

fn metadata_v2(
    buf: &[u8],
    symbols: &[&str],
    _series: SeriesRef,
    labels: &[(&str, &str)],
    out: &mut MetricBatchBuilder,
) -> Result<(), WireError> {
    let (mut kind, mut help, mut unit) = (0, 0u64, 0u64);
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next()? {
        match f {
            1 => kind = v.varint("metadata type")?,
            3 => help = v.varint("help_ref")?,
            4 => unit = v.varint("unit_ref")?,
            _ => {}
        }
    }
    let symbol = |i: u64| symbols.get(i as usize).copied().unwrap_or("");
    let kind = MetricType::from_remote_write(kind);
    if kind == MetricType::Unknown && help == 0 && unit == 0 {
        return Ok(());
    }
    let name = labels
        .iter()
        .find(|(n, _)| *n == METRIC_NAME_LABEL)
        .map_or("", |(_, v)| *v);
    out.metadata(name, kind, symbol(unit), symbol(help));
    Ok(())
}

/// Remote write's messages, encoded: for tests and the benchmark.
pub mod encode {
    use crate::wire::Writer;

    /// A series' labels and its (value, timestamp) samples.
    pub type Series<'a> = (Vec<(&'a str, &'a str)>, Vec<(f64, i64)>);

    /// `prometheus.WriteRequest` with float samples.
    pub fn write_request_v1(series: &[Series<'_>]) -> Vec<u8> {
        let mut req = Writer::default();
        for (labels, samples) in series {
            let mut ts = Writer::default();
            for (n, v) in labels {
                let mut l = Writer::default();
                l.bytes_field(1, n.as_bytes());
                l.bytes_field(2, v.as_bytes());
                ts.bytes_field(1, &l.buf);
            }
            for (value, t) in samples {
                let mut s = Writer::default();
                s.double_field(1, *value);
                s.varint_field(2, *t as u64);
                ts.bytes_field(2, &s.buf);
            }
            req.bytes_field(1, &ts.buf);
        }
        req.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_samples_and_labels_come_through() {
        let now = 1_800_000_000_000;
        let body = encode::write_request_v1(&[(
            vec![("__name__", "up"), ("job", "a")],
            vec![
                (1.0, now - 1000),
                (f64::from_bits(0x7ff0_0000_0000_0002), now),
            ],
        )]);
        let w = decode(&body, Version::V1, &MetricsConfig::default(), now).unwrap();
        assert_eq!(w.samples(), 2);
        assert!(w.report().refusals().is_empty());
        let err = decode(
            &body[..body.len() - 3],
            Version::V1,
            &MetricsConfig::default(),
            now,
        )
        .unwrap_err();
        assert!(err.0.contains("truncated"), "{err}");
    }
}

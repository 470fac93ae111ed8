//! Prometheus remote read (`POST /prometheus/api/v1/read`): a snappy-compressed `ReadRequest`
//! of queries (a time range and label matchers each), answered in the first response type the
//! client accepts — `SAMPLES` (one snappy-compressed `ReadResponse`) or `STREAMED_XOR_CHUNKS`
//! (frames of `ChunkedReadResponse`, each a uvarint length, a big-endian CRC32C and the message,
//! holding Gorilla XOR chunks of up to 120 samples as Prometheus's TSDB writes them).
//!
//! Native histograms travel in `SAMPLES` only (as float histograms): a query whose series hold
//! any is answered in `SAMPLES` when the client accepts it, rather than lose them.

use promql_parser::label::{Matcher, Matchers};
use promql_parser::parser::token::{T_EQL, T_EQL_REGEX, T_NEQ, T_NEQ_REGEX};
use prost::Message;
use sightline_storage::metrics::{BucketSpan, NativeHistogram};

use crate::promql::{RawSeries, SeriesSource, StoreSource, Val};

/// Largest request accepted, decompressed.
pub const MAX_REQUEST_BYTES: usize = 32 << 20;
/// A streamed frame holds series until it passes this, as Prometheus's default.
const FRAME_BYTES: usize = 1 << 20;
/// Samples per XOR chunk, as Prometheus's TSDB cuts them.
const CHUNK_SAMPLES: usize = 120;

pub const SAMPLES_CONTENT_TYPE: &str = "application/x-protobuf";
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request is wrong: 400.
    #[error("{0}")]
    Bad(String),
    /// Reading failed: 500.
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone, PartialEq, Message)]
struct ReadRequest {
    #[prost(message, repeated, tag = "1")]
    queries: Vec<Query>,
    #[prost(int32, repeated, tag = "2")]
    accepted_response_types: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct Query {
    #[prost(int64, tag = "1")]
    start_timestamp_ms: i64,
    #[prost(int64, tag = "2")]
    end_timestamp_ms: i64,
    #[prost(message, repeated, tag = "3")]
    matchers: Vec<LabelMatcher>,
}

#[derive(Clone, PartialEq, Message)]
struct LabelMatcher {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct ReadResponse {
    #[prost(message, repeated, tag = "1")]
    results: Vec<QueryResult>,
}

#[derive(Clone, PartialEq, Message)]
struct QueryResult {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// `prompb.Histogram`, written with float counts.
#[derive(Clone, PartialEq, Message)]
struct Histogram {
    #[prost(double, tag = "2")]
    count_float: f64,
    #[prost(double, tag = "3")]
    sum: f64,
    #[prost(sint32, tag = "4")]
    schema: i32,
    #[prost(double, tag = "5")]
    zero_threshold: f64,
    #[prost(double, tag = "7")]
    zero_count_float: f64,
    #[prost(message, repeated, tag = "8")]
    negative_spans: Vec<Span>,
    #[prost(double, repeated, tag = "10")]
    negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    positive_spans: Vec<Span>,
    #[prost(double, repeated, tag = "13")]
    positive_counts: Vec<f64>,
    #[prost(int32, tag = "14")]
    reset_hint: i32,
    #[prost(int64, tag = "15")]
    timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    custom_values: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(sint32, tag = "1")]
    offset: i32,
    #[prost(uint32, tag = "2")]
    length: u32,
}

#[derive(Clone, PartialEq, Message)]
struct ChunkedReadResponse {
    #[prost(message, repeated, tag = "1")]
    chunked_series: Vec<ChunkedSeries>,
    #[prost(int64, tag = "2")]
    query_index: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ChunkedSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    chunks: Vec<Chunk>,
}

#[derive(Clone, PartialEq, Message)]
struct Chunk {
    #[prost(int64, tag = "1")]
    min_time_ms: i64,
    #[prost(int64, tag = "2")]
    max_time_ms: i64,
    #[prost(int32, tag = "3")]
    r#type: i32,
    #[prost(bytes = "vec", tag = "4")]
    data: Vec<u8>,
}

const SAMPLES: i32 = 0;
const STREAMED_XOR_CHUNKS: i32 = 1;
const XOR_ENCODING: i32 = 1;

fn matchers(q: &Query) -> Result<Matchers, ReadError> {
    let list = q
        .matchers
        .iter()
        .map(|m| {
            let op = match m.r#type {
                0 => T_EQL,
                1 => T_NEQ,
                2 => T_EQL_REGEX,
                3 => T_NEQ_REGEX,
                t => return Err(ReadError::Bad(format!("unknown label matcher type {t}"))),
            };
            Matcher::new_matcher(op, m.name.clone(), m.value.clone()).map_err(ReadError::Bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Matchers::new(list))
}

fn labels(s: &RawSeries) -> Vec<Label> {
    s.labels
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn spans(s: &[BucketSpan]) -> Vec<Span> {
    s.iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

fn histogram(t: i64, h: &NativeHistogram) -> Histogram {
    Histogram {
        count_float: h.count,
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count_float: h.zero_count,
        negative_spans: spans(&h.negative_spans),
        negative_counts: h.negative_buckets.clone(),
        positive_spans: spans(&h.positive_spans),
        positive_counts: h.positive_buckets.clone(),
        reset_hint: i32::from(h.reset_hint),
        timestamp: t,
        custom_values: h.custom_values.clone(),
    }
}

/// Answers a remote-read request body (snappy-compressed): the response's content type and body.
pub async fn read(
    source: &StoreSource,
    body: &[u8],
    max_samples: usize,
) -> Result<(&'static str, Vec<u8>), ReadError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| ReadError::Bad(format!("invalid snappy body: {e}")))?;
    if len > MAX_REQUEST_BYTES {
        return Err(ReadError::Bad(format!(
            "request is {len} bytes decompressed, over the limit of {MAX_REQUEST_BYTES}"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| ReadError::Bad(format!("invalid snappy body: {e}")))?;
    let request = ReadRequest::decode(raw.as_slice())
        .map_err(|e| ReadError::Bad(format!("invalid ReadRequest protobuf: {e}")))?;
    let accepted = if request.accepted_response_types.is_empty() {
        vec![SAMPLES]
    } else {
        request.accepted_response_types.clone()
    };
    let Some(&wanted) = accepted
        .iter()
        .find(|t| [SAMPLES, STREAMED_XOR_CHUNKS].contains(t))
    else {
        return Err(ReadError::Bad(format!(
            "server does not support any of the requested response types: {accepted:?}; supported: SAMPLES, STREAMED_XOR_CHUNKS"
        )));
    };
    let mut results = Vec::with_capacity(request.queries.len());
    let mut samples = 0usize;
    for q in &request.queries {
        let m = matchers(q)?;
        let series = source
            .select(&m, q.start_timestamp_ms, q.end_timestamp_ms)
            .await
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        samples += series.iter().map(|s| s.points.len()).sum::<usize>();
        if samples > max_samples {
            return Err(ReadError::Bad(format!(
                "exceeded sample limit ({max_samples})"
            )));
        }
        results.push(series);
    }
    let has_histograms = results
        .iter()
        .flatten()
        .any(|s| s.points.iter().any(|p| matches!(p.v, Val::H(_))));
    let streamed =
        wanted == STREAMED_XOR_CHUNKS && !(has_histograms && accepted.contains(&SAMPLES));
    if streamed {
        Ok((STREAMED_CONTENT_TYPE, streamed_response(&results)))
    } else {
        let response = samples_response(&results);
        let body = snap::raw::Encoder::new()
            .compress_vec(&response.encode_to_vec())
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        Ok((SAMPLES_CONTENT_TYPE, body))
    }
}

fn samples_response(results: &[Vec<RawSeries>]) -> ReadResponse {
    ReadResponse {
        results: results
            .iter()
            .map(|series| QueryResult {
                timeseries: series
                    .iter()
                    .map(|s| {
                        let mut ts = TimeSeries {
                            labels: labels(s),
                            samples: Vec::new(),
                            histograms: Vec::new(),
                        };
                        for p in &s.points {
                            match &p.v {
                                Val::F(v) => ts.samples.push(Sample {
                                    value: *v,
                                    timestamp: p.t,
                                }),
                                Val::H(h) => ts.histograms.push(histogram(p.t, h)),
                            }
                        }
                        ts
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// One series per frame (Prometheus's client reads the first series of each), its chunks split
/// over more frames past [`FRAME_BYTES`], as Prometheus's own server streams them.
fn streamed_response(results: &[Vec<RawSeries>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (qi, series) in results.iter().enumerate() {
        for s in series {
            let floats: Vec<(i64, f64)> = s
                .points
                .iter()
                .filter_map(|p| p.v.float().map(|v| (p.t, v)))
                .collect();
            let mut frame = ChunkedSeries {
                labels: labels(s),
                chunks: Vec::new(),
            };
            for part in floats.chunks(CHUNK_SAMPLES) {
                frame.chunks.push(Chunk {
                    min_time_ms: part[0].0,
                    max_time_ms: part[part.len() - 1].0,
                    r#type: XOR_ENCODING,
                    data: xor_chunk(part),
                });
                if frame.encoded_len() >= FRAME_BYTES {
                    write_frame(&mut out, qi, &mut frame);
                }
            }
            if !frame.chunks.is_empty() {
                write_frame(&mut out, qi, &mut frame);
            }
        }
    }
    out
}

/// Writes a frame of the series' chunks so far and empties them.
fn write_frame(out: &mut Vec<u8>, query_index: usize, series: &mut ChunkedSeries) {
    let frame = ChunkedReadResponse {
        chunked_series: vec![ChunkedSeries {
            labels: series.labels.clone(),
            chunks: std::mem::take(&mut series.chunks),
        }],
        query_index: query_index as i64,
    };
    let data = frame.encode_to_vec();
    prost::encoding::encode_varint(data.len() as u64, out);
    out.extend_from_slice(&crc32c(&data).to_be_bytes());
    out.extend_from_slice(&data);
}

/// CRC-32C (Castagnoli), as the streamed frames carry it.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |crc, b| {
        table[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// Bits appended most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u8,
}

impl Bits {
    fn bit(&mut self, on: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if on {
            *self.bytes.last_mut().expect("a byte was pushed") |= 1 << self.free;
        }
    }

    /// The low `n` bits of `v`.
    fn bits(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }
}

/// A Gorilla XOR chunk as Prometheus's TSDB encodes one: a big-endian sample count, then the
/// first timestamp (varint) and value (64 bits), the second timestamp's delta (uvarint), and
/// after that delta-of-deltas in 1/16/20/24/68-bit forms; each value after the first XORed with
/// the one before, reusing the previous window of meaningful bits when it fits.
fn xor_chunk(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut b = Bits::default();
    b.bits(samples.len() as u64, 16);
    let (mut t_prev, mut v_prev, mut delta_prev) = (0i64, 0f64, 0u64);
    let (mut leading, mut trailing) = (0xffu8, 0u8);
    for (i, &(t, v)) in samples.iter().enumerate() {
        match i {
            0 => {
                let mut buf = Vec::new();
                // Zig-zag, as Go's binary.PutVarint.
                prost::encoding::encode_varint(((t << 1) ^ (t >> 63)) as u64, &mut buf);
                buf.iter().for_each(|x| b.bits(u64::from(*x), 8));
                b.bits(v.to_bits(), 64);
            }
            1 => {
                let delta = t.wrapping_sub(t_prev) as u64;
                let mut buf = Vec::new();
                prost::encoding::encode_varint(delta, &mut buf);
                buf.iter().for_each(|x| b.bits(u64::from(*x), 8));
                xor_value(&mut b, v, v_prev, &mut leading, &mut trailing);
                delta_prev = delta;
            }
            _ => {
                let delta = t.wrapping_sub(t_prev) as u64;
                let dod = delta.wrapping_sub(delta_prev) as i64;
                let fits = |n: u32| -((1i64 << (n - 1)) - 1) <= dod && dod <= 1i64 << (n - 1);
                if dod == 0 {
                    b.bit(false);
                } else if fits(14) {
                    b.bits(0b10, 2);
                    b.bits(dod as u64, 14);
                } else if fits(17) {
                    b.bits(0b110, 3);
                    b.bits(dod as u64, 17);
                } else if fits(20) {
                    b.bits(0b1110, 4);
                    b.bits(dod as u64, 20);
                } else {
                    b.bits(0b1111, 4);
                    b.bits(dod as u64, 64);
                }
                xor_value(&mut b, v, v_prev, &mut leading, &mut trailing);
                delta_prev = delta;
            }
        }
        t_prev = t;
        v_prev = v;
    }
    b.bytes
}

fn xor_value(b: &mut Bits, v: f64, prev: f64, leading: &mut u8, trailing: &mut u8) {
    let delta = v.to_bits() ^ prev.to_bits();
    if delta == 0 {
        b.bit(false);
        return;
    }
    b.bit(true);
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != 0xff && new_leading >= *leading && new_trailing >= *trailing {
        b.bit(false);
        b.bits(
            delta >> *trailing,
            64 - u32::from(*leading) - u32::from(*trailing),
        );
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    b.bit(true);
    b.bits(u64::from(new_leading), 5);
    // 64 significant bits do not fit in 6: they are written as 0, which never occurs otherwise.
    let significant = 64 - u32::from(new_leading) - u32::from(new_trailing);
    b.bits(u64::from(significant), 6);
    b.bits(delta >> new_trailing, significant);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_chunk_starts_with_its_count_and_first_sample() {
        let c = xor_chunk(&[(1000, 1.0), (2000, 1.0), (3000, 1.0)]);
        assert_eq!(&c[..2], &[0, 3]);
        // Zig-zag varint of 1000 (2000 = 0xd0 0x0f), then 1.0's bits.
        assert_eq!(&c[2..4], &[0xd0, 0x0f]);
        assert_eq!(&c[4..12], &1.0f64.to_bits().to_be_bytes());
        // Delta 1000 as a uvarint (0xe8 0x07), then one 0 bit (same value), then the
        // delta-of-delta 0 (one 0 bit) and the same value (one 0 bit).
        assert_eq!(&c[12..14], &[0xe8, 0x07]);
        assert_eq!(c[14], 0);
        assert_eq!(c.len(), 15);
    }
}

//! A latency distribution with 1% relative error on every quantile (DDSketch's logarithmic
//! mapping): a value `x` falls in bucket `ceil(log_γ x)` with `γ = (1+α)/(1-α)`, and a bucket is
//! reported as `2γ^i/(γ+1)`, which is within `α` of every value in it. Sketches merge by adding
//! bucket counts, so per-minute rows combine into any longer window without losing accuracy.

use std::sync::OnceLock;

/// The relative accuracy of every quantile the sketch reports.
pub const RELATIVE_ACCURACY: f64 = 0.01;

struct Mapping {
    gamma: f64,
    ln_gamma: f64,
}

fn mapping() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| {
        let gamma = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
        Mapping {
            gamma,
            ln_gamma: gamma.ln(),
        }
    })
}

/// The bucket of a duration in nanoseconds; durations under 1 ns count as 1 ns.
pub fn bucket_of(nanos: i64) -> i32 {
    let x = nanos.max(1) as f64;
    (x.ln() / mapping().ln_gamma).ceil() as i32
}

/// The value a bucket stands for, in nanoseconds.
pub fn bucket_value(bucket: i32) -> f64 {
    let m = mapping();
    2.0 * m.gamma.powi(bucket) / (m.gamma + 1.0)
}

/// Bucket counts, dense from `offset`: a latency distribution spans a few hundred buckets at
/// most, so a vector beats a map on every insert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySketch {
    offset: i32,
    counts: Vec<u64>,
    total: u64,
}

impl LatencySketch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn record(&mut self, nanos: i64) {
        self.add_to_bucket(bucket_of(nanos), 1);
    }

    pub fn add_to_bucket(&mut self, bucket: i32, count: u64) {
        if count == 0 {
            return;
        }
        let inside = !self.counts.is_empty()
            && bucket >= self.offset
            && ((bucket - self.offset) as usize) < self.counts.len();
        if !inside {
            self.cover(bucket, bucket);
        }
        self.counts[(bucket - self.offset) as usize] += count;
        self.total += count;
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.total == 0 {
            return;
        }
        self.cover(other.offset, other.offset + other.counts.len() as i32 - 1);
        let start = (other.offset - self.offset) as usize;
        for (mine, theirs) in self.counts[start..].iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// Grows the dense range, once, to hold buckets `low..=high`.
    fn cover(&mut self, low: i32, high: i32) {
        if self.counts.is_empty() {
            self.offset = low;
            self.counts = vec![0; (high - low) as usize + 1];
            return;
        }
        if low < self.offset {
            let grow = (self.offset - low) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = low;
        }
        let len = (high - self.offset) as usize + 1;
        if len > self.counts.len() {
            self.counts.resize(len, 0);
        }
    }

    /// A sketch from its stored form: buckets in increasing order and their counts.
    pub fn from_buckets(buckets: &[i32], counts: &[i64]) -> Self {
        let mut sketch = LatencySketch::new();
        if let (Some(&low), Some(&high)) = (buckets.first(), buckets.last()) {
            if low <= high {
                sketch.cover(low, high);
            }
        }
        for (&bucket, &count) in buckets.iter().zip(counts) {
            sketch.add_to_bucket(bucket, count.max(0) as u64);
        }
        sketch
    }

    /// Non-empty buckets in increasing order, as stored in the rollup tables.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }

    /// The `q`-quantile in nanoseconds: the value of rank `⌊q·(n−1)⌋` among the recorded ones,
    /// to within [`RELATIVE_ACCURACY`]. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.total - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        for (bucket, count) in self.buckets() {
            seen += count;
            if seen > rank {
                return Some(bucket_value(bucket));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[i64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize] as f64
    }

    #[test]
    fn every_quantile_is_within_one_percent() {
        // A skewed mix: microsecond hits, millisecond bulk, second-long outliers.
        let mut values: Vec<i64> = Vec::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = match i % 10 {
                0 => 1_000,
                1..=8 => 1_000_000,
                _ => 1_000_000_000,
            };
            values.push(base + (x % (base as u64 * 50)) as i64);
        }
        let mut sketch = LatencySketch::new();
        for v in &values {
            sketch.record(*v);
        }
        values.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&values, q);
            let got = sketch.quantile(q).unwrap();
            let err = (got - exact).abs() / exact;
            assert!(err <= RELATIVE_ACCURACY, "q={q} exact={exact} got={got}");
        }
        assert_eq!(sketch.count(), 20_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = LatencySketch::new();
        let mut b = LatencySketch::new();
        let mut all = LatencySketch::new();
        for v in [5_000_000i64, 7, 0, 123_456_789, 42_000] {
            a.record(v);
            all.record(v);
        }
        for v in [1i64, 9_999_999_999, 42_000, 300] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(
            a.buckets().collect::<Vec<_>>(),
            all.buckets().collect::<Vec<_>>()
        );
        assert_eq!(a.count(), 9);
        assert_eq!(LatencySketch::new().quantile(0.5), None);
    }
}

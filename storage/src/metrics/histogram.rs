//! A native (exponential, or custom-bucket) histogram sample, as Prometheus defines it, kept
//! losslessly: integer histograms' delta-encoded bucket counts become absolute counts (exact up
//! to 2^53), and whether it was an integer or a float histogram is kept.

/// `offset` buckets after the previous span's end (or the bucket index, for the first span),
/// then `length` consecutive buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpan {
    pub offset: i32,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeHistogram {
    pub count: f64,
    pub sum: f64,
    /// Exponential schemas −4..8; −53 for custom bucket bounds (`custom_values`).
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub negative_spans: Vec<BucketSpan>,
    /// Absolute count of each negative bucket the spans cover.
    pub negative_buckets: Vec<f64>,
    pub positive_spans: Vec<BucketSpan>,
    pub positive_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema −53).
    pub custom_values: Vec<f64>,
    /// 0 unknown, 1 counter reset, 2 no reset, 3 gauge histogram (remote write's `ResetHint`).
    pub reset_hint: i8,
    /// Counts were floats (a float histogram), not integers.
    pub float: bool,
}

/// The custom-buckets schema.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

impl NativeHistogram {
    /// Absolute counts from delta-encoded ones (each bucket's count minus the previous one's).
    pub fn counts_from_deltas(deltas: impl IntoIterator<Item = i64>) -> Vec<f64> {
        let mut current = 0i64;
        deltas
            .into_iter()
            .map(|d| {
                current = current.wrapping_add(d);
                current as f64
            })
            .collect()
    }

    /// Why this histogram is not one Prometheus would take, if it is not (its rules: spans
    /// cover the counts, no negative counts, an integer histogram's count is the sum of its
    /// buckets, custom bounds increasing and finite).
    pub fn invalid(&self) -> Option<String> {
        if !(-4..=8).contains(&self.schema) && self.schema != CUSTOM_BUCKETS_SCHEMA {
            return Some(format!(
                "histogram schema {} is not -4..8 or -53",
                self.schema
            ));
        }
        if self.schema != CUSTOM_BUCKETS_SCHEMA {
            if !self.custom_values.is_empty() {
                return Some("an exponential histogram has custom bounds".into());
            }
            let later_negative = |spans: &[BucketSpan]| spans.iter().skip(1).any(|s| s.offset < 0);
            if later_negative(&self.positive_spans) || later_negative(&self.negative_spans) {
                return Some("a histogram span after the first has a negative offset".into());
            }
        }
        let buckets = self.positive_buckets.iter().chain(&self.negative_buckets);
        if buckets.clone().any(|c| *c < 0.0) || self.zero_count < 0.0 || self.count < 0.0 {
            return Some("a histogram count is negative".into());
        }
        let covered = |spans: &[BucketSpan]| spans.iter().map(|s| s.length as usize).sum::<usize>();
        if covered(&self.positive_spans) != self.positive_buckets.len() {
            return Some(format!(
                "histogram positive spans cover {} buckets but {} counts are given",
                covered(&self.positive_spans),
                self.positive_buckets.len()
            ));
        }
        if covered(&self.negative_spans) != self.negative_buckets.len() {
            return Some(format!(
                "histogram negative spans cover {} buckets but {} counts are given",
                covered(&self.negative_spans),
                self.negative_buckets.len()
            ));
        }
        if self.schema == CUSTOM_BUCKETS_SCHEMA {
            if !self.negative_buckets.is_empty() {
                return Some("a custom-bucket histogram has negative buckets".into());
            }
            if self.custom_values.iter().any(|v| v.is_nan())
                || self.custom_values.windows(2).any(|w| w[0] >= w[1])
            {
                return Some("histogram custom bounds are not strictly increasing".into());
            }
            if self.custom_values.last() == Some(&f64::INFINITY) {
                return Some("the +Inf bound of a custom-bucket histogram is implicit".into());
            }
            if self.positive_spans.iter().any(|s| s.offset < 0) {
                return Some("a custom-bucket histogram span has a negative offset".into());
            }
            if self.zero_count != 0.0 || self.zero_threshold != 0.0 {
                return Some("a custom-bucket histogram has a zero bucket".into());
            }
        }
        if !self.float {
            let in_buckets: f64 = buckets.sum::<f64>() + self.zero_count;
            let consistent = if self.sum.is_nan() {
                in_buckets <= self.count || self.count.is_nan()
            } else {
                in_buckets == self.count
            };
            if !consistent {
                return Some(format!(
                    "{in_buckets} observations in the buckets but the count is {}",
                    self.count
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_become_absolute_counts() {
        assert_eq!(
            NativeHistogram::counts_from_deltas([2, 1, -3, 4]),
            vec![2.0, 3.0, 0.0, 4.0]
        );
    }

    #[test]
    fn spans_must_cover_the_counts() {
        let mut h = NativeHistogram {
            schema: 3,
            count: 3.0,
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![1.0],
            ..Default::default()
        };
        assert!(h.invalid().unwrap().contains("cover 2 buckets"));
        h.positive_buckets.push(2.0);
        assert_eq!(h.invalid(), None);
        h.count = 4.0;
        assert!(h
            .invalid()
            .unwrap()
            .contains("3 observations in the buckets but the count is 4"));
        h.count = 3.0;
        h.schema = 9;
        assert!(h.invalid().is_some());
    }
}

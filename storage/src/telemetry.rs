//! Sightline's measurements of itself: latency histograms that the WAL, the flusher, compaction
//! and queries fill and `/metrics` shows. Lock-free: observing is a few relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 100 µs to 10 s, about ×2.5 apart.
pub const BOUNDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// Counts of durations by bucket, their sum and count.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Non-cumulative: one count per bound, and the last for over the largest.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// What a histogram held at one moment, buckets cumulative as Prometheus shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, count at or under it), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl DurationHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let buckets = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(le, c)| {
                running += c.load(Relaxed);
                (le, running)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count: running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_count_under_their_bound_cumulatively() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(80));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[3], (0.001, 2));
        assert_eq!(s.buckets[11], (10.0, 2));
        assert_eq!(s.buckets[12], (f64::INFINITY, 3));
        assert_eq!(s.count, 3);
        assert!((s.sum_seconds - 60.00108).abs() < 1e-9);
    }
}

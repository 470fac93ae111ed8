//! Span statistics that arrive already counted — SOFATracer's stat logs: per endpoint and
//! period, a count and a total duration — kept in the logged `span_stats` table and summed into
//! `span_red` as they become durable, so every RED reader (the API, span metrics, TraceQL
//! metrics) counts them with the spans'.
//!
//! A stat row has no latency distribution: its sketch is empty, so percentiles come from spans
//! alone, while calls, errors and the mean include it. Its extremes are its mean (the columns
//! are required and nothing reads them).

use std::time::Instant;

use arrow::array::RecordBatch;

use super::table::{read_rows, Aggregate, Measures, RedKey, SPAN_RED_TABLE};
use super::{arrival_hour, Names, RollupConfig, SeriesCap, ROLLUP_SPANS_FOLDED};
use crate::engine::{Derive, DerivedRows};
use crate::error::StorageError;

/// The logged table of counted spans; its schema is `span_red`'s.
pub const SPAN_STATS_TABLE: &str = "span_stats";

impl Measures {
    /// `calls` calls that took `duration_sum_nano` together, `errors` of them failed.
    pub fn from_totals(calls: u64, errors: u64, duration_sum_nano: i64) -> Self {
        let mean = if calls == 0 {
            0
        } else {
            duration_sum_nano / calls as i64
        };
        Measures {
            calls,
            errors: errors.min(calls),
            duration_sum_nano,
            duration_min_nano: mean,
            duration_max_nano: mean,
            ..Measures::default()
        }
    }
}

/// Sums `span_stats` rows into `span_red`, under the same per-hour series cap as spans.
pub struct StatRollups {
    red: Aggregate<RedKey>,
    cap: SeriesCap,
    names: Names,
    folded: u64,
}

impl StatRollups {
    pub fn new(config: &RollupConfig) -> Self {
        Self {
            red: Aggregate::default(),
            cap: SeriesCap::new(config.max_series_per_hour),
            names: Names::default(),
            folded: 0,
        }
    }
}

impl Derive for StatRollups {
    fn source(&self) -> &'static str {
        SPAN_STATS_TABLE
    }

    fn observe(&mut self, batch: &RecordBatch, _now: Instant) -> Result<(), StorageError> {
        let hour = arrival_hour();
        if hour != self.cap.hour {
            self.cap.roll(hour);
            self.names.prune();
        }
        for (key, measures) in read_rows::<RedKey>(batch)? {
            let (service, operation) = self.cap.admit_red(
                &key.service,
                &key.operation,
                (key.span_kind, key.status_code),
                measures.calls,
                &mut self.folded,
            );
            let key = RedKey {
                service: self.names.get(service),
                operation: self.names.get(operation),
                ..key
            };
            self.red.add(key, &measures);
        }
        Ok(())
    }

    fn tick(&mut self, _now: Instant) {}

    fn finish(&mut self) {}

    fn is_empty(&self) -> bool {
        self.red.is_empty()
    }

    fn current(&self) -> Result<DerivedRows, StorageError> {
        Ok(self
            .red
            .to_batch()?
            .map(|b| (SPAN_RED_TABLE, b))
            .into_iter()
            .collect())
    }

    fn seal(&mut self) -> Result<DerivedRows, StorageError> {
        Ok(self
            .red
            .take_batch()?
            .map(|b| (SPAN_RED_TABLE, b))
            .into_iter()
            .collect())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![(ROLLUP_SPANS_FOLDED, self.folded)]
    }
}

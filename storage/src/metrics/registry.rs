//! The active series of a tenant: which series exist, in which recent hours a `metric_series` row
//! is already written for them, how many each metric has — and so which new series a write may
//! bring. It holds about 30 bytes per active series; it is rebuilt at start from the series files
//! of the recent hours.

use std::collections::HashMap;

use super::builder::{reason, MetricWrite};
use super::{IdMap, MetricsConfig};
use crate::store::WriteReport;

/// A series with a sample in this hour or the previous one is active.
const ACTIVE_HOURS: i64 = 2;

#[derive(Debug, Clone, Copy)]
struct SeriesState {
    check: u32,
    metric: u32,
    /// The two most recent hours with a row in `metric_series`, newest first; `i32::MIN` for
    /// none.
    hours: [i32; 2],
}

impl SeriesState {
    fn has_row(&self, hour: i64) -> bool {
        self.hours.contains(&(hour as i32))
    }

    fn note(&mut self, hour: i64) {
        let hour = hour as i32;
        if hour >= self.hours[0] {
            self.hours = [hour, self.hours[0]];
        } else if hour > self.hours[1] {
            self.hours[1] = hour;
        }
    }

    fn latest(&self) -> i64 {
        i64::from(self.hours[0])
    }
}

#[derive(Default)]
struct MetricCounts {
    index: HashMap<String, u32>,
    names: Vec<String>,
    active: Vec<u64>,
}

impl MetricCounts {
    fn get(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.active.push(0);
        self.index.insert(name.to_string(), i);
        i
    }
}

/// Per family: hash of (type, unit, help) and the hour it was last written in.
type MetadataSeen = (u64, i64);

/// What one admission changed, to be undone if its write is refused after all.
#[derive(Debug, Default)]
pub struct Admitted {
    /// (series id, hour, whether the series was new).
    changes: Vec<(u64, i64, bool)>,
    /// Metadata rows written: the family and what it had before.
    metadata: Vec<(String, Option<MetadataSeen>)>,
}

#[derive(Default)]
pub(crate) struct RegistryState {
    series: IdMap<SeriesState>,
    metrics: MetricCounts,
    metadata: HashMap<String, MetadataSeen>,
    hour: i64,
}

/// Which rows an admitted write must add, and which of its series were refused.
pub(crate) struct Decision {
    /// (series index in the write, hour, first timestamp) that need a `metric_series` row.
    pub rows: Vec<(u32, i64, i64)>,
    /// Per series of the write: refused by a limit.
    pub refused: Vec<bool>,
    /// Indexes of the write's metadata records to write.
    pub metadata: Vec<usize>,
    pub admitted: Admitted,
}

pub struct SeriesRegistry {
    state: std::sync::Mutex<RegistryState>,
    config: MetricsConfig,
}

impl SeriesRegistry {
    pub fn new(config: MetricsConfig) -> Self {
        Self {
            state: std::sync::Mutex::new(RegistryState::default()),
            config,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// Series active now (a sample in this hour or the last).
    pub fn active_series(&self) -> u64 {
        self.lock().series.len() as u64
    }

    /// Records a series row found on disk at start.
    pub fn load(&self, id: u64, check: u32, metric: &str, hour: i64) {
        let mut state = self.lock();
        let state = &mut *state;
        state.hour = state.hour.max(hour);
        match state.series.get_mut(&id) {
            Some(s) => s.note(hour),
            None => {
                let metric = state.metrics.get(metric);
                state.metrics.active[metric as usize] += 1;
                let mut s = SeriesState {
                    check,
                    metric,
                    hours: [i32::MIN; 2],
                };
                s.note(hour);
                state.series.insert(id, s);
            }
        }
    }

    /// Records a metadata row found on disk at start.
    pub fn load_metadata(&self, family: &str, hash: u64, hour: i64) {
        let mut state = self.lock();
        let e = state
            .metadata
            .entry(family.to_string())
            .or_insert((hash, hour));
        if hour >= e.1 {
            *e = (hash, hour);
        }
    }
}

impl RegistryState {
    /// Forgets series that have had no sample for [`ACTIVE_HOURS`] when the hour turns.
    fn roll(&mut self, now_hour: i64) {
        if now_hour <= self.hour {
            return;
        }
        self.hour = now_hour;
        let metrics = &mut self.metrics;
        self.series.retain(|_, s| {
            let keep = s.latest() > now_hour - ACTIVE_HOURS;
            if !keep {
                metrics.active[s.metric as usize] -= 1;
            }
            keep
        });
    }

    /// Decides, for each series of `write`, whether it needs a new row and whether it passes
    /// the limits; records the decision (undo it with [`RegistryState::undo`]).
    pub(crate) fn decide(
        &mut self,
        config: &MetricsConfig,
        write: &MetricWrite,
        now_hour: i64,
        report: &mut WriteReport,
        metadata_hash: impl Fn(&super::builder::MetadataRecord) -> u64,
    ) -> Decision {
        self.roll(now_hour);
        let mut decision = Decision {
            rows: Vec::new(),
            refused: vec![false; write.series.len()],
            metadata: Vec::new(),
            admitted: Admitted::default(),
        };
        let mut new_series = 0usize;
        for (i, entry) in write.series.iter().enumerate() {
            if entry.hours.is_empty() {
                continue;
            }
            if let Some(s) = self.series.get_mut(&entry.id) {
                if s.check != entry.check {
                    decision.refused[i] = true;
                    report.refuse_n(reason::SERIES_ID_COLLISION, entry.points, || {
                        format!(
                            "series {}: its id collides with a stored series",
                            write.describe(i as u32)
                        )
                    });
                    continue;
                }
                for (hour, first) in entry.hours.iter() {
                    if !s.has_row(hour) {
                        s.note(hour);
                        decision.rows.push((i as u32, hour, first));
                        decision.admitted.changes.push((entry.id, hour, false));
                    }
                }
                continue;
            }
            let metric_name = &write.metrics[entry.metric as usize];
            let refusal = if new_series >= config.max_new_series_per_request {
                Some((
                    reason::NEW_SERIES_PER_REQUEST_LIMIT,
                    format!(
                        "the request brings more than {} new series (limit max_new_series_per_request)",
                        config.max_new_series_per_request
                    ),
                ))
            } else if self.series.len() >= config.max_active_series {
                Some((
                    reason::ACTIVE_SERIES_LIMIT,
                    format!(
                        "{} active series reached (limit max_active_series); new series of {metric_name} refused",
                        config.max_active_series
                    ),
                ))
            } else {
                let m = self.metrics.get(metric_name);
                (self.metrics.active[m as usize] >= config.max_series_per_metric as u64).then(|| {
                    (
                        reason::SERIES_PER_METRIC_LIMIT,
                        format!(
                            "metric {metric_name} has {} active series (limit max_series_per_metric)",
                            config.max_series_per_metric
                        ),
                    )
                })
            };
            if let Some((why, message)) = refusal {
                decision.refused[i] = true;
                report.refuse_n(why, entry.points, || {
                    format!("series {}: {message}", write.describe(i as u32))
                });
                continue;
            }
            let metric = self.metrics.get(metric_name);
            self.metrics.active[metric as usize] += 1;
            let mut s = SeriesState {
                check: entry.check,
                metric,
                hours: [i32::MIN; 2],
            };
            for (hour, first) in entry.hours.iter() {
                s.note(hour);
                decision.rows.push((i as u32, hour, first));
                decision.admitted.changes.push((entry.id, hour, true));
            }
            self.series.insert(entry.id, s);
            new_series += 1;
        }
        for (i, m) in write.metadata.iter().enumerate() {
            let hash = metadata_hash(m);
            let before = self.metadata.get(&m.family).copied();
            if before.is_some_and(|(h, hour)| h == hash && hour == now_hour) {
                continue;
            }
            self.metadata.insert(m.family.clone(), (hash, now_hour));
            decision.admitted.metadata.push((m.family.clone(), before));
            decision.metadata.push(i);
        }
        decision
    }

    /// Undoes an admission whose write was refused (the store was saturated).
    pub(crate) fn undo(&mut self, admitted: Admitted) {
        for (id, hour, new) in admitted.changes.into_iter().rev() {
            if new {
                if let Some(s) = self.series.remove(&id) {
                    self.metrics.active[s.metric as usize] -= 1;
                }
            } else if let Some(s) = self.series.get_mut(&id) {
                let h = hour as i32;
                if s.hours[0] == h {
                    s.hours = [s.hours[1], i32::MIN];
                } else if s.hours[1] == h {
                    s.hours[1] = i32::MIN;
                }
            }
        }
        for (family, before) in admitted.metadata.into_iter().rev() {
            match before {
                Some(b) => {
                    self.metadata.insert(family, b);
                }
                None => {
                    self.metadata.remove(&family);
                }
            }
        }
    }
}

/// Loads the series rows of a batch of `metric_series` (any projection with time, metric,
/// series id and check) from `since` hour on; returns the rows loaded.
pub fn load_batch(
    registry: &SeriesRegistry,
    batch: &arrow::array::RecordBatch,
    since: i64,
) -> Result<usize, crate::error::StorageError> {
    use super::tables::col;
    use arrow::array::{Array, AsArray};
    let _ = |a: &dyn Array| a.len();
    use arrow::datatypes::{Int32Type, TimestampMillisecondType, UInt32Type, UInt64Type};
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            crate::error::StorageError::Schema(format!("metric_series batch has no {name} column"))
        })
    };
    let times = column(col::TIME)?.as_primitive::<TimestampMillisecondType>();
    let ids = column(col::SERIES_ID)?.as_primitive::<UInt64Type>();
    let checks = column(col::CHECK)?.as_primitive::<UInt32Type>();
    let metrics = column(col::METRIC)?.as_dictionary::<Int32Type>();
    let names = metrics.values().as_string::<i32>();
    let mut loaded = 0;
    for row in 0..batch.num_rows() {
        let hour = times.value(row).div_euclid(3_600_000);
        if hour < since {
            continue;
        }
        let metric = names.value(metrics.keys().value(row) as usize);
        registry.load(ids.value(row), checks.value(row), metric, hour);
        loaded += 1;
    }
    let _ = metrics.len();
    Ok(loaded)
}

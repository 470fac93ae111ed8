//! What a receiver fills while it decodes a request of metrics: series (validated, identified by
//! the hash of their sorted labels), their samples, native histograms and exemplars, and metric
//! metadata. Label strings are copied once per distinct series of the request, into one arena;
//! samples are columns of numbers. What does not pass (bad labels, samples outside the accepted
//! time window, invalid histograms) is counted by reason in the [`WriteReport`], the rest kept.

use std::collections::HashMap;
use std::ops::Range;

use twox_hash::XxHash3_64;

use super::histogram::NativeHistogram;
use super::{IdMap, MetricType, MetricsConfig};
use crate::store::WriteReport;

/// Seeds of the two hashes of a series' labels: its id, and a check that tells two series with
/// the same id apart (a collision is refused, never merged).
const ID_SEED: u64 = 0;
const CHECK_SEED: u64 = 0x5167_6874_6c69_6e65;

/// The label that holds the metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// A series of the request being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRef(pub(crate) u32);

#[derive(Debug)]
pub(crate) struct SeriesEntry {
    pub id: u64,
    pub check: u32,
    /// Index into `metrics`.
    pub metric: u32,
    /// Into `label_pairs`.
    pub labels: Range<u32>,
    /// Hours (since the epoch) this request has points of the series in, with the first
    /// point's timestamp in each.
    pub hours: Hours,
    /// Samples and histograms of the series in the request.
    pub points: u64,
}

/// The hours a request has points of a series in, each with its first timestamp. Nearly always
/// one: it is kept inline, so a series costs no allocation for it.
#[derive(Debug, Default)]
pub(crate) struct Hours {
    first: Option<(i64, i64)>,
    more: Vec<(i64, i64)>,
}

impl Hours {
    fn note(&mut self, hour: i64, ts_ms: i64) {
        match &mut self.first {
            None => self.first = Some((hour, ts_ms)),
            Some((h, first)) if *h == hour => *first = (*first).min(ts_ms),
            Some(_) => match self.more.iter_mut().find(|(h, _)| *h == hour) {
                Some((_, first)) => *first = (*first).min(ts_ms),
                None => self.more.push((hour, ts_ms)),
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.first.iter().copied().chain(self.more.iter().copied())
    }
}

/// One metric family's metadata, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRecord {
    pub family: String,
    pub kind: MetricType,
    pub unit: String,
    pub help: String,
}

/// A decoded request of metrics, ready for the store's admission.
#[derive(Debug, Default)]
pub struct MetricWrite {
    pub(crate) arena: String,
    pub(crate) label_pairs: Vec<(Range<u32>, Range<u32>)>,
    pub(crate) metrics: Vec<String>,
    pub(crate) series: Vec<SeriesEntry>,
    pub(crate) sample_series: Vec<u32>,
    pub(crate) sample_ts: Vec<i64>,
    pub(crate) sample_values: Vec<f64>,
    pub(crate) sample_starts: Vec<Option<i64>>,
    pub(crate) histograms: Vec<(u32, i64, Option<i64>, NativeHistogram)>,
    /// Series, timestamp, value, labels (into `label_pairs`).
    pub(crate) exemplars: Vec<(u32, i64, f64, Range<u32>)>,
    pub(crate) metadata: Vec<MetadataRecord>,
    pub(crate) report: WriteReport,
}

impl MetricWrite {
    pub fn samples(&self) -> usize {
        self.sample_ts.len()
    }

    pub fn histograms(&self) -> usize {
        self.histograms.len()
    }

    pub fn exemplars(&self) -> usize {
        self.exemplars.len()
    }

    /// About the memory its batches and WAL records will take.
    pub fn estimated_bytes(&self) -> usize {
        2 * (self.sample_ts.len() * 40
            + self.histograms.len() * 256
            + self.exemplars.len() * 128
            + self.arena.len()
            + self.series.len() * 48)
    }

    pub fn report(&self) -> &WriteReport {
        &self.report
    }

    pub(crate) fn str(&self, r: &Range<u32>) -> &str {
        &self.arena[r.start as usize..r.end as usize]
    }

    /// Every series of the write as `name{a="b", …}` (labels sorted): what a receiver made of a
    /// request, for its tests.
    pub fn series_texts(&self) -> Vec<String> {
        (0..self.series.len() as u32)
            .map(|s| self.describe(s))
            .collect()
    }

    /// The labels of a series, name first, as `{__name__="x", a="b"}` for messages.
    pub(crate) fn describe(&self, series: u32) -> String {
        let e = &self.series[series as usize];
        describe_labels(
            &self.metrics[e.metric as usize],
            self.label_pairs[e.labels.start as usize..e.labels.end as usize]
                .iter()
                .map(|(n, v)| (self.str(n), self.str(v))),
        )
    }
}

fn describe_labels<'a>(metric: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = format!("{metric}{{");
    let mut first = true;
    for (n, v) in labels {
        if !first {
            s.push_str(", ");
        }
        first = false;
        s.push_str(n);
        s.push_str("=\"");
        s.push_str(&v.replace('"', "\\\""));
        s.push('"');
    }
    s.push('}');
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…}");
    }
    s
}

/// Reasons a series or point is refused, as counted and reported.
pub mod reason {
    pub const INVALID_LABELS: &str = "invalid_labels";
    pub const TOO_MANY_LABELS: &str = "labels_per_series_limit";
    pub const LABEL_NAME_TOO_LONG: &str = "label_name_length_limit";
    pub const LABEL_VALUE_TOO_LONG: &str = "label_value_length_limit";
    pub const SERIES_ID_COLLISION: &str = "series_id_collision";
    pub const TOO_OLD: &str = "sample_too_old";
    pub const TOO_NEW: &str = "sample_too_new";
    pub const INVALID_HISTOGRAM: &str = "invalid_histogram";
    pub const ACTIVE_SERIES_LIMIT: &str = "active_series_limit";
    pub const SERIES_PER_METRIC_LIMIT: &str = "series_per_metric_limit";
    pub const NEW_SERIES_PER_REQUEST_LIMIT: &str = "new_series_per_request_limit";
}

pub struct MetricBatchBuilder {
    config: MetricsConfig,
    /// Points before this (ms) are older than the out-of-order window; after `max_ts`, too far
    /// ahead.
    min_ts: i64,
    max_ts: i64,
    write: MetricWrite,
    by_id: IdMap<u32>,
    metric_index: HashMap<String, u32>,
    scratch: Vec<u8>,
}

fn hour_of_millis(ms: i64) -> i64 {
    ms.div_euclid(3_600_000)
}

impl MetricBatchBuilder {
    /// A builder for a request arriving at `now_ms`.
    pub fn new(config: &MetricsConfig, now_ms: i64) -> Self {
        Self {
            min_ts: now_ms.saturating_sub(config.out_of_order_window.as_millis() as i64),
            max_ts: now_ms.saturating_add(config.future_grace.as_millis() as i64),
            config: config.clone(),
            write: MetricWrite::default(),
            by_id: IdMap::default(),
            metric_index: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Counts `points` refused for `reason`; the message is built only for the first of its
    /// reason.
    pub fn refuse(&mut self, reason: &'static str, points: u64, message: impl FnOnce() -> String) {
        self.write.report.refuse_n(reason, points, message);
    }

    /// Validates and identifies a series from its labels (the metric name as `__name__`),
    /// sorting them in place. `points` is how many samples and histograms the request has for
    /// it: they are what a refusal counts. `None` when refused.
    pub fn series(&mut self, labels: &mut Vec<(&str, &str)>, points: u64) -> Option<SeriesRef> {
        // An empty value is the same as no label (Prometheus's rule).
        labels.retain(|(_, v)| !v.is_empty());
        if !labels.windows(2).all(|w| w[0].0 <= w[1].0) {
            labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        if let Err((reason, problem)) = self.validate(labels) {
            let text = describe_labels("", labels.iter().copied());
            self.refuse(reason, points, || format!("series {text}: {problem}"));
            return None;
        }
        self.scratch.clear();
        for (n, v) in labels.iter() {
            self.scratch.extend_from_slice(n.as_bytes());
            self.scratch.push(0xff);
            self.scratch.extend_from_slice(v.as_bytes());
            self.scratch.push(0xff);
        }
        let id = XxHash3_64::oneshot_with_seed(ID_SEED, &self.scratch);
        let check = XxHash3_64::oneshot_with_seed(CHECK_SEED, &self.scratch) as u32;
        if let Some(&i) = self.by_id.get(&id) {
            let entry = &mut self.write.series[i as usize];
            if entry.check != check {
                let text = describe_labels("", labels.iter().copied());
                self.refuse(reason::SERIES_ID_COLLISION, points, || {
                    format!("series {text}: its id collides with another series of the request")
                });
                return None;
            }
            entry.points += points;
            return Some(SeriesRef(i));
        }
        let name = labels
            .iter()
            .find(|(n, _)| *n == METRIC_NAME_LABEL)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let metric = match self.metric_index.get(name) {
            Some(&m) => m,
            None => {
                let m = self.write.metrics.len() as u32;
                self.write.metrics.push(name.to_string());
                self.metric_index.insert(name.to_string(), m);
                m
            }
        };
        let start = self.write.label_pairs.len() as u32;
        for (n, v) in labels.iter().filter(|(n, _)| *n != METRIC_NAME_LABEL) {
            let n = self.push_str(n);
            let v = self.push_str(v);
            self.write.label_pairs.push((n, v));
        }
        let i = self.write.series.len() as u32;
        self.write.series.push(SeriesEntry {
            id,
            check,
            metric,
            labels: start..self.write.label_pairs.len() as u32,
            hours: Hours::default(),
            points,
        });
        self.by_id.insert(id, i);
        Some(SeriesRef(i))
    }

    /// The id of a series of this request.
    pub fn series_id(&self, series: SeriesRef) -> u64 {
        self.write.series[series.0 as usize].id
    }

    fn push_str(&mut self, s: &str) -> Range<u32> {
        let start = self.write.arena.len() as u32;
        self.write.arena.push_str(s);
        start..self.write.arena.len() as u32
    }

    fn validate(&self, labels: &[(&str, &str)]) -> Result<(), (&'static str, String)> {
        let mut has_name = false;
        for (i, (n, v)) in labels.iter().enumerate() {
            if n.is_empty() {
                return Err((reason::INVALID_LABELS, "a label name is empty".into()));
            }
            if i > 0 && labels[i - 1].0 == *n {
                return Err((reason::INVALID_LABELS, format!("label {n} appears twice")));
            }
            if *n == METRIC_NAME_LABEL {
                has_name = true;
            }
            if n.len() > self.config.max_label_name_bytes {
                return Err((
                    reason::LABEL_NAME_TOO_LONG,
                    format!(
                        "label name of {} bytes is over the limit of {}",
                        n.len(),
                        self.config.max_label_name_bytes
                    ),
                ));
            }
            if v.len() > self.config.max_label_value_bytes {
                return Err((
                    reason::LABEL_VALUE_TOO_LONG,
                    format!(
                        "value of label {n} is {} bytes, over the limit of {}",
                        v.len(),
                        self.config.max_label_value_bytes
                    ),
                ));
            }
        }
        if !has_name {
            return Err((
                reason::INVALID_LABELS,
                "the metric name (__name__) is missing or empty".into(),
            ));
        }
        if labels.len() - 1 > self.config.max_labels_per_series {
            return Err((
                reason::TOO_MANY_LABELS,
                format!(
                    "{} labels besides the name, over the limit of {}",
                    labels.len() - 1,
                    self.config.max_labels_per_series
                ),
            ));
        }
        Ok(())
    }

    /// Whether a point at `ts_ms` is inside the accepted window; counts it refused if not.
    fn in_window(&mut self, series: SeriesRef, ts_ms: i64, what: &str) -> bool {
        if ts_ms < self.min_ts {
            let window = self.config.out_of_order_window;
            let text = self.write.describe(series.0);
            self.refuse(reason::TOO_OLD, 1, || {
                format!("{what} of {text} at {ts_ms} ms is older than the out-of-order window of {window:?}")
            });
            return false;
        }
        if ts_ms > self.max_ts {
            let grace = self.config.future_grace;
            let text = self.write.describe(series.0);
            self.refuse(reason::TOO_NEW, 1, || {
                format!("{what} of {text} at {ts_ms} ms is more than {grace:?} in the future")
            });
            return false;
        }
        true
    }

    fn note_hour(&mut self, series: SeriesRef, ts_ms: i64) {
        let hour = hour_of_millis(ts_ms);
        self.write.series[series.0 as usize].hours.note(hour, ts_ms);
    }

    /// A float sample (stale markers included: their NaN is kept bit for bit).
    pub fn sample(&mut self, series: SeriesRef, ts_ms: i64, value: f64, start_ms: Option<i64>) {
        if !self.in_window(series, ts_ms, "sample") {
            return;
        }
        self.note_hour(series, ts_ms);
        let w = &mut self.write;
        w.sample_series.push(series.0);
        w.sample_ts.push(ts_ms);
        w.sample_values.push(value);
        w.sample_starts.push(start_ms.filter(|s| *s != 0));
    }

    pub fn histogram(
        &mut self,
        series: SeriesRef,
        ts_ms: i64,
        start_ms: Option<i64>,
        histogram: NativeHistogram,
    ) {
        if let Some(problem) = histogram.invalid() {
            let text = self.write.describe(series.0);
            self.refuse(reason::INVALID_HISTOGRAM, 1, || {
                format!("histogram of {text} at {ts_ms} ms: {problem}")
            });
            return;
        }
        if !self.in_window(series, ts_ms, "histogram") {
            return;
        }
        self.note_hour(series, ts_ms);
        self.write
            .histograms
            .push((series.0, ts_ms, start_ms.filter(|s| *s != 0), histogram));
    }

    /// An exemplar of a series: its labels (`trace_id`, `span_id`, …), value and time.
    pub fn exemplar(&mut self, series: SeriesRef, ts_ms: i64, value: f64, labels: &[(&str, &str)]) {
        if ts_ms < self.min_ts || ts_ms > self.max_ts {
            // Exemplars are hints; one out of the window is dropped without failing anything.
            return;
        }
        self.note_hour(series, ts_ms);
        let start = self.write.label_pairs.len() as u32;
        for (n, v) in labels {
            let n = self.push_str(n);
            let v = self.push_str(v);
            self.write.label_pairs.push((n, v));
        }
        let end = self.write.label_pairs.len() as u32;
        self.write
            .exemplars
            .push((series.0, ts_ms, value, start..end));
    }

    pub fn metadata(&mut self, family: &str, kind: MetricType, unit: &str, help: &str) {
        if family.is_empty() {
            return;
        }
        self.write.metadata.push(MetadataRecord {
            family: family.to_string(),
            kind,
            unit: unit.to_string(),
            help: help.to_string(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.write.sample_ts.is_empty()
            && self.write.histograms.is_empty()
            && self.write.exemplars.is_empty()
            && self.write.metadata.is_empty()
    }

    pub fn finish(self) -> MetricWrite {
        self.write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> MetricBatchBuilder {
        MetricBatchBuilder::new(&MetricsConfig::default(), 1_800_000_000_000)
    }

    #[test]
    fn a_series_is_its_sorted_labels_whatever_their_order() {
        let mut b = builder();
        let mut one = vec![("job", "a"), ("__name__", "up"), ("instance", "x")];
        let mut two = vec![("instance", "x"), ("job", "a"), ("__name__", "up")];
        let s1 = b.series(&mut one, 1).unwrap();
        let s2 = b.series(&mut two, 1).unwrap();
        assert_eq!(s1, s2);
        let mut other = vec![("__name__", "up"), ("job", "b")];
        assert_ne!(b.series(&mut other, 1).unwrap(), s1);
        let w = b.finish();
        assert_eq!(w.series.len(), 2);
        assert_eq!(w.describe(0), "up{instance=\"x\", job=\"a\"}");
    }

    #[test]
    fn bad_labels_are_refused_with_the_reason() {
        let mut b = builder();
        assert!(b.series(&mut vec![("job", "a")], 2).is_none());
        assert!(b
            .series(&mut vec![("__name__", ""), ("job", "a")], 1)
            .is_none());
        assert!(b
            .series(&mut vec![("__name__", "x"), ("a", "1"), ("a", "2")], 1)
            .is_none());
        assert!(b
            .series(&mut vec![("__name__", "x"), ("", "1")], 1)
            .is_none());
        let mut many: Vec<(String, String)> =
            (0..10_000).map(|i| (format!("l{i}"), "v".into())).collect();
        many.push(("__name__".into(), "x".into()));
        let mut refs: Vec<(&str, &str)> =
            many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert!(b.series(&mut refs, 1).is_none());
        let long = "v".repeat(5000);
        assert!(b
            .series(&mut vec![("__name__", "x"), ("a", long.as_str())], 1)
            .is_none());
        // An empty value is no label at all.
        assert!(b
            .series(&mut vec![("__name__", "x"), ("a", "")], 1)
            .is_some());
        let w = b.finish();
        let report = w.report();
        let count = |r: &str| {
            report
                .refusals()
                .iter()
                .find(|x| x.reason == r)
                .map_or(0, |x| x.count)
        };
        assert_eq!(count(reason::INVALID_LABELS), 5);
        assert_eq!(count(reason::TOO_MANY_LABELS), 1);
        assert_eq!(count(reason::LABEL_VALUE_TOO_LONG), 1);
        // The first of each reason is the example the client reads.
        let message = report.message("points").unwrap();
        assert!(
            message.starts_with(
                "7 points refused: invalid_labels (5): series {job=\"a\"}: the metric name"
            ),
            "{message}"
        );
        assert!(message.contains("over the limit of 30"), "{message}");
    }

    #[test]
    fn points_outside_the_window_are_refused_and_stale_markers_kept() {
        let now = 1_800_000_000_000;
        let mut b = MetricBatchBuilder::new(&MetricsConfig::default(), now);
        let s = b.series(&mut vec![("__name__", "x")], 4).unwrap();
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        b.sample(s, now - 1000, stale, None);
        b.sample(s, now - 11 * 60_000, 1.0, None);
        b.sample(s, now + 11 * 60_000, 1.0, None);
        b.sample(s, now - 9 * 60_000, f64::INFINITY, None);
        let w = b.finish();
        assert_eq!(w.samples(), 2);
        assert_eq!(w.sample_values[0].to_bits(), 0x7ff0_0000_0000_0002);
        let reasons: Vec<_> = w.report().refusals().iter().map(|r| r.reason).collect();
        assert_eq!(reasons, vec![reason::TOO_OLD, reason::TOO_NEW]);
    }
}

//! Fetching what a query's selectors need: the series whose labels pass the matchers — resolved
//! from the `metric_series` rows of the hours in range, without reading a sample — then only
//! those series' samples and histograms of the time range. Every read is a key lookup of the
//! store (`Version::lookup`) by metric name, series ids and time range, not a planned query.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int32Array, Int8Array, ListArray, RecordBatch, StringArray,
    StructArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{Int32Type, TimestampMillisecondType};
use promql_parser::label::{MatchOp, Matcher, Matchers};
use sightline_storage::metrics::tables::{self as mt, col as mc};
use sightline_storage::metrics::{BucketSpan, NativeHistogram};
use sightline_storage::{KeyLookup, OneOf, StorageError, TableVersion, Version};

use super::value::{Labels, Point, RawSeries, Val, NAME};
use super::PromQlError;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::span_metrics;

/// Where a query's series come from.
#[async_trait]
pub trait SeriesSource: Send + Sync {
    /// Every series passing `matchers` with its points in `[min_ms, max_ms]`, in time order;
    /// series with no point in the range are left out.
    async fn select(
        &self,
        matchers: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Vec<RawSeries>, PromQlError>;
}

/// A selector's alternatives (`a or b`): its one matcher list when it has no `or`.
pub fn alternatives(m: &Matchers) -> Box<dyn Iterator<Item = &[Matcher]> + '_> {
    if m.or_matchers.is_empty() {
        Box::new(std::iter::once(m.matchers.as_slice()))
    } else {
        Box::new(m.or_matchers.iter().map(Vec::as_slice))
    }
}

/// Whether a label set passes every matcher of a selector (`or` alternatives: any of them).
pub fn matches(labels: &Labels, m: &Matchers) -> bool {
    alternatives(m).any(|ms| {
        ms.iter()
            .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
    })
}

/// The metric names a selector can match, when its matchers say so exactly.
fn metric_names(m: &Matchers) -> Option<Vec<String>> {
    let exact = |ms: &[Matcher]| {
        ms.iter()
            .find(|m| m.name == NAME && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    };
    if m.or_matchers.is_empty() {
        exact(&m.matchers).map(|n| vec![n])
    } else {
        m.or_matchers.iter().map(|alt| exact(alt)).collect()
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The store's metric tables, read through one pinned version for the whole query.
pub struct StoreSource {
    engine: QueryEngine,
    version: Version,
}

impl StoreSource {
    /// `engine` should be pinned ([`QueryEngine::pinned`]) so every selector of one query reads
    /// the same version.
    pub fn new(engine: QueryEngine) -> Self {
        let version = engine.version();
        Self { engine, version }
    }

    /// The rows of a metric table the lookups find, read by the store's key lookup — a selector
    /// knows its metric, series and time range, which is all a lookup needs, and planning a
    /// query for each read would cost more than most reads. The reads run on a blocking thread
    /// of their own, so that reads started together run at once; a query given up (its
    /// timeout, a client gone) stops them at their next batch.
    fn read(
        &self,
        table: &'static str,
        lookups: Vec<KeyLookup>,
    ) -> impl std::future::Future<Output = Result<Vec<RecordBatch>, QueryError>> {
        let version = self.version.clone();
        let stop = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = Arc::clone(&stop.0);
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for lookup in &lookups {
                out.extend(version.lookup(table, lookup, &cancelled)?);
            }
            Ok::<_, StorageError>(out)
        });
        async move {
            let _stop = stop;
            read.await
                .map_err(|e| QueryError::Execution(format!("read task failed: {e}")))?
                .map_err(|e| QueryError::Execution(format!("reading {table}: {e}")))
        }
    }

    /// Series ids and labels of the series passing `m` with a row in the hours of the range.
    pub async fn series(
        &self,
        m: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<HashMap<u64, Labels>, QueryError> {
        let lookup = self.lookup(m, min_ms, max_ms).await?;
        self.series_of(m, &lookup, min_ms, max_ms).await
    }

    /// What is known of a selector's series before any series row is read: the metric names it
    /// names, and the ids the postings give.
    async fn lookup(&self, m: &Matchers, min_ms: i64, max_ms: i64) -> Result<Lookup, QueryError> {
        let names = metric_names(m);
        let candidates = match &names {
            Some(names) => self.posted(m, names, min_ms, max_ms).await?,
            None => None,
        };
        Ok(Lookup { names, candidates })
    }

    /// The series rows of a [`Lookup`] that pass `m`.
    async fn series_of(
        &self,
        m: &Matchers,
        lookup: &Lookup,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<HashMap<u64, Labels>, QueryError> {
        let Lookup { names, candidates } = lookup;
        if candidates.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(HashMap::new());
        }
        let key = KeyLookup {
            equal: key_of(
                names.as_deref(),
                candidates.as_ref().map(|c| c.iter().copied().collect()),
            ),
            time: nanos(hour_of(min_ms), max_ms),
            columns: vec![mc::METRIC, mc::SERIES_ID, mc::LABELS],
        };
        let batches = self.read(mt::SERIES_TABLE, vec![key]).await?;
        let mut out = HashMap::new();
        for b in &batches {
            let metric = crate::columns::strings(b, mc::METRIC)?;
            let ids = crate::columns::typed::<UInt64Array>(b, mc::SERIES_ID)?;
            // A selective matcher tests each row in place; only the rows that pass become
            // label sets.
            let lists = LabelLists::of(b)?;
            for r in 0..b.num_rows() {
                let id = ids.value(r);
                if out.contains_key(&id) || candidates.as_ref().is_some_and(|c| !c.contains(&id)) {
                    continue;
                }
                let value_of = |name: &str| -> &str {
                    match name {
                        NAME => metric.value(r),
                        name => lists.value_of(r, name),
                    }
                };
                if alternatives(m).any(|ms| ms.iter().all(|x| x.is_match(value_of(&x.name)))) {
                    out.insert(id, lists.labels(r, Some(metric.value(r))));
                }
            }
        }
        Ok(out)
    }

    /// The ids of the series of `names` holding every label pair `m` asks for by equality,
    /// from the postings; `None` when the postings cannot say (no such matcher, or a store
    /// whose series rows predate its postings).
    async fn posted(
        &self,
        m: &Matchers,
        names: &[String],
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Option<HashSet<u64>>, QueryError> {
        let equal: Vec<&Matcher> = match m.or_matchers.is_empty() {
            true => m
                .matchers
                .iter()
                .filter(|x| x.op == MatchOp::Equal && x.name != NAME && !x.value.is_empty())
                .take(64)
                .collect(),
            false => Vec::new(),
        };
        // Postings that begin later than the series rows miss the older series.
        let since = |table| self.version.table(table).and_then(TableVersion::min_time);
        let complete = match (since(mt::POSTINGS_TABLE), since(mt::SERIES_TABLE)) {
            (Some(postings), Some(series)) => postings <= series,
            _ => false,
        };
        if !complete || equal.is_empty() {
            return Ok(None);
        }
        let lookups = equal
            .iter()
            .map(|x| KeyLookup {
                equal: vec![
                    (mc::METRIC, OneOf::Strings(names.to_vec())),
                    (mc::LABEL, OneOf::Strings(vec![x.name.clone()])),
                    (mc::LABEL_VALUE, OneOf::Strings(vec![x.value.clone()])),
                ],
                time: nanos(hour_of(min_ms), max_ms),
                columns: vec![mc::LABEL, mc::LABEL_VALUE, mc::SERIES_ID],
            })
            .collect();
        let batches = self.read(mt::POSTINGS_TABLE, lookups).await?;
        // Which of the matchers each series' postings satisfy, as bits; a series needs all.
        let mut found: HashMap<u64, u64> = HashMap::new();
        for b in &batches {
            let labels = crate::columns::strings(b, mc::LABEL)?;
            let values = crate::columns::strings(b, mc::LABEL_VALUE)?;
            let ids = crate::columns::typed::<UInt64Array>(b, mc::SERIES_ID)?;
            for r in 0..b.num_rows() {
                let (label, value) = (labels.value(r), values.value(r));
                let bits = equal
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.name == label && x.value == value)
                    .fold(0u64, |acc, (i, _)| acc | 1 << i);
                *found.entry(ids.value(r)).or_default() |= bits;
            }
        }
        let all = u64::MAX >> (64 - equal.len());
        Ok(Some(
            found
                .into_iter()
                .filter(|&(_, bits)| bits == all)
                .map(|(id, _)| id)
                .collect(),
        ))
    }

    /// The label sets of every series passing `m` in the range: stored ones and span metrics.
    pub async fn label_sets(
        &self,
        m: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        let mut out: Vec<Labels> = self
            .series(m, min_ms, max_ms)
            .await?
            .into_values()
            .collect();
        out.extend(
            span_metrics::select(&self.engine, m, min_ms, max_ms)
                .await?
                .into_iter()
                .map(|s| s.labels),
        );
        Ok(out)
    }

    /// The exemplars of the series passing `m`, in `[min_ms, max_ms]`: stored ones and those of
    /// span metrics.
    pub async fn exemplars(
        &self,
        m: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<ExemplarSets, QueryError> {
        let mut out = span_metrics::exemplars(&self.engine, m, min_ms, max_ms).await?;
        out.extend(self.stored_exemplars(m, min_ms, max_ms).await?);
        Ok(out)
    }

    async fn stored_exemplars(
        &self,
        m: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<ExemplarSets, QueryError> {
        let series = self.series(m, min_ms, max_ms).await?;
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let names = metric_names(m);
        let mut by_series: HashMap<u64, Vec<(Labels, i64, f64)>> = HashMap::new();
        for b in self
            .points(
                mt::EXEMPLARS_TABLE,
                &[mc::VALUE, mc::LABELS],
                names.as_deref(),
                id_list(&series).as_deref(),
                min_ms,
                max_ms,
            )
            .await?
        {
            let ids = crate::columns::typed::<UInt64Array>(&b, mc::SERIES_ID)?;
            let ts = crate::columns::by_name(&b, mc::TIMESTAMP)?
                .as_primitive::<TimestampMillisecondType>();
            let vs = crate::columns::typed::<Float64Array>(&b, mc::VALUE)?;
            let lists = LabelLists::of(&b)?;
            for r in 0..b.num_rows() {
                if series.contains_key(&ids.value(r)) {
                    by_series.entry(ids.value(r)).or_default().push((
                        lists.labels(r, None),
                        ts.value(r),
                        vs.value(r),
                    ));
                }
            }
        }
        let mut out: Vec<_> = by_series
            .into_iter()
            .filter_map(|(id, mut e)| {
                e.sort_by_key(|x| x.1);
                Some((series.get(&id)?.clone(), e))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The rows of `table` in `[min_ms, max_ms]`, of the series `ids` when given (else every
    /// series of `names`; the caller keeps the ones it wants): their id, timestamp and the
    /// `columns` asked for.
    fn points(
        &self,
        table: &'static str,
        columns: &[&'static str],
        names: Option<&[String]>,
        ids: Option<&[u64]>,
        min_ms: i64,
        max_ms: i64,
    ) -> impl std::future::Future<Output = Result<Vec<RecordBatch>, QueryError>> {
        let mut wanted = vec![mc::SERIES_ID, mc::TIMESTAMP];
        wanted.extend_from_slice(columns);
        let key = KeyLookup {
            equal: key_of(names, ids.map(<[u64]>::to_vec)),
            time: nanos(min_ms, max_ms),
            columns: wanted,
        };
        self.read(table, vec![key])
    }
}

/// Cancels a store read when dropped; a no-op once the read has finished.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The key columns of a metric-table lookup: the metric names and series ids, when known.
fn key_of(names: Option<&[String]>, ids: Option<Vec<u64>>) -> Vec<(&'static str, OneOf)> {
    let names = names.map(|n| (mc::METRIC, OneOf::Strings(n.to_vec())));
    names
        .into_iter()
        .chain(ids.map(|ids| (mc::SERIES_ID, OneOf::Ids(ids))))
        .collect()
}

/// A millisecond range as the lookups' unix nanoseconds.
fn nanos(min_ms: i64, max_ms: i64) -> (i64, i64) {
    (
        min_ms.saturating_mul(1_000_000),
        max_ms.saturating_mul(1_000_000),
    )
}

/// The start of the hour partition `ms` falls in: series and postings rows are by hour.
fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// What the postings say of a selector before its series rows are read.
struct Lookup {
    names: Option<Vec<String>>,
    candidates: Option<HashSet<u64>>,
}

impl Lookup {
    /// The ids to narrow the point scans by, when they are known before the series rows are
    /// read — `Some(None)` when narrowing would not help (the metric name is the only matcher) —
    /// so that the series rows and the points can be read at once.
    fn early_ids(&self, m: &Matchers) -> Option<Option<Vec<u64>>> {
        self.names.as_ref()?;
        match &self.candidates {
            Some(c) => Some(Some(c.iter().copied().collect())),
            _ if m.or_matchers.is_empty() && m.matchers.iter().all(|x| x.name == NAME) => {
                Some(None)
            }
            _ => None,
        }
    }
}

/// The ids of `series`, to narrow a point read by.
fn id_list(series: &HashMap<u64, Labels>) -> Option<Vec<u64>> {
    Some(series.keys().copied().collect())
}

/// The columns a native histogram is read from.
const HISTOGRAM_COLUMNS: &[&str] = &[
    mc::COUNT,
    mc::SUM,
    mc::ZERO_THRESHOLD,
    mc::ZERO_COUNT,
    mc::SCHEMA,
    mc::NEGATIVE_SPANS,
    mc::NEGATIVE_BUCKETS,
    mc::POSITIVE_SPANS,
    mc::POSITIVE_BUCKETS,
    mc::CUSTOM_VALUES,
    mc::RESET_HINT,
    mc::FLOAT,
];

/// The row ranges of equal consecutive ids.
fn runs(ids: &UInt64Array) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let values = ids.values();
    let mut start = 0;
    std::iter::from_fn(move || {
        let id = *values.get(start)?;
        let len = values[start..].iter().take_while(|&&x| x == id).count();
        let run = start..start + len;
        start += len;
        Some(run)
    })
}

/// A batch's `labels` column (a list of name/value structs per row), its names and values cast
/// once for the whole batch rather than once per row.
struct LabelLists<'b> {
    offsets: &'b [i32],
    names: StringArray,
    values: StringArray,
}

impl<'b> LabelLists<'b> {
    fn of(b: &'b RecordBatch) -> Result<Self, QueryError> {
        let list = crate::columns::typed::<ListArray>(b, mc::LABELS)?;
        let pairs = list
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| QueryError::Execution("labels are not name/value pairs".into()))?;
        Ok(Self {
            offsets: list.value_offsets(),
            names: crate::columns::as_strings(pairs.column(0))?,
            values: crate::columns::as_strings(pairs.column(1))?,
        })
    }

    fn pairs(&self, r: usize) -> std::ops::Range<usize> {
        self.offsets[r] as usize..self.offsets[r + 1] as usize
    }

    /// The value of label `name` in row `r`, empty when it has none.
    fn value_of(&self, r: usize, name: &str) -> &str {
        self.pairs(r)
            .find(|&i| self.names.value(i) == name)
            .map_or("", |i| self.values.value(i))
    }

    /// Row `r`'s labels as a label set, with the metric name if given.
    fn labels(&self, r: usize, metric: Option<&str>) -> Labels {
        let mut pairs = Vec::with_capacity(self.pairs(r).len() + 1);
        if let Some(m) = metric {
            pairs.push((NAME.to_string(), m.to_string()));
        }
        pairs.extend(self.pairs(r).map(|i| {
            (
                self.names.value(i).to_string(),
                self.values.value(i).to_string(),
            )
        }));
        Labels::new(pairs)
    }
}

/// Exemplars by series: (series labels, [(exemplar labels, ms, value)]).
pub type ExemplarSets = Vec<(Labels, Vec<(Labels, i64, f64)>)>;

fn spans(list: &ListArray, r: usize) -> Result<Vec<BucketSpan>, QueryError> {
    let v = list.value(r);
    let s = v
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| QueryError::Execution("histogram spans are not offset/length".into()))?;
    let offsets = s.column(0).as_primitive::<Int32Type>();
    let lengths = s
        .column(1)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| QueryError::Execution("histogram span lengths".into()))?;
    Ok((0..s.len())
        .map(|i| BucketSpan {
            offset: offsets.value(i),
            length: lengths.value(i),
        })
        .collect())
}

fn floats(list: &ListArray, r: usize) -> Vec<f64> {
    list.value(r)
        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
        .values()
        .to_vec()
}

#[async_trait]
impl SeriesSource for StoreSource {
    async fn select(
        &self,
        matchers: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Vec<RawSeries>, PromQlError> {
        let mut out = span_metrics::select(&self.engine, matchers, min_ms, max_ms).await?;
        out.extend(self.stored(matchers, min_ms, max_ms).await?);
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

impl StoreSource {
    async fn stored(
        &self,
        matchers: &Matchers,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Vec<RawSeries>, QueryError> {
        let lookup = self.lookup(matchers, min_ms, max_ms).await?;
        // The postings say no series passes: no scan at all.
        if lookup.candidates.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(Vec::new());
        }
        let names = lookup.names.as_deref();
        let scans = |ids: Option<&[u64]>| {
            let samples = self.points(mt::SAMPLES_TABLE, &[mc::VALUE], names, ids, min_ms, max_ms);
            let histograms = self.points(
                mt::HISTOGRAMS_TABLE,
                HISTOGRAM_COLUMNS,
                names,
                ids,
                min_ms,
                max_ms,
            );
            async move { tokio::try_join!(samples, histograms) }
        };
        let (mut series, (samples, histograms)) = match lookup.early_ids(matchers) {
            Some(ids) => tokio::try_join!(
                self.series_of(matchers, &lookup, min_ms, max_ms),
                scans(ids.as_deref())
            )?,
            None => {
                let series = self.series_of(matchers, &lookup, min_ms, max_ms).await?;
                if series.is_empty() {
                    return Ok(Vec::new());
                }
                let points = scans(id_list(&series).as_deref()).await?;
                (series, points)
            }
        };
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let mut points: HashMap<u64, Vec<Point>> = HashMap::new();
        for b in samples {
            let ids = crate::columns::typed::<UInt64Array>(&b, mc::SERIES_ID)?;
            let ts = crate::columns::by_name(&b, mc::TIMESTAMP)?
                .as_primitive::<TimestampMillisecondType>();
            let vs = crate::columns::typed::<Float64Array>(&b, mc::VALUE)?;
            // Rows come sorted by series: one lookup per run of a series' rows.
            for run in runs(ids) {
                let id = ids.value(run.start);
                if series.contains_key(&id) {
                    points.entry(id).or_default().extend(run.map(|r| Point {
                        t: ts.value(r),
                        v: Val::F(vs.value(r)),
                    }));
                }
            }
        }
        for b in histograms {
            let ids = crate::columns::typed::<UInt64Array>(&b, mc::SERIES_ID)?;
            let ts = crate::columns::by_name(&b, mc::TIMESTAMP)?
                .as_primitive::<TimestampMillisecondType>();
            let f = |name| crate::columns::typed::<Float64Array>(&b, name);
            let (count, sum, zt, zc) = (
                f(mc::COUNT)?,
                f(mc::SUM)?,
                f(mc::ZERO_THRESHOLD)?,
                f(mc::ZERO_COUNT)?,
            );
            let schema = crate::columns::typed::<Int32Array>(&b, mc::SCHEMA)?;
            let l = |name| crate::columns::typed::<ListArray>(&b, name);
            let (ns, nb, ps, pb, cv) = (
                l(mc::NEGATIVE_SPANS)?,
                l(mc::NEGATIVE_BUCKETS)?,
                l(mc::POSITIVE_SPANS)?,
                l(mc::POSITIVE_BUCKETS)?,
                l(mc::CUSTOM_VALUES)?,
            );
            let hint = crate::columns::typed::<Int8Array>(&b, mc::RESET_HINT)?;
            let float = b
                .column_by_name(mc::FLOAT)
                .map(|c| c.as_boolean().clone())
                .ok_or_else(|| QueryError::Execution("column float missing".into()))?;
            for r in 0..b.num_rows() {
                let id = ids.value(r);
                if !series.contains_key(&id) {
                    continue;
                }
                let h = NativeHistogram {
                    count: count.value(r),
                    sum: sum.value(r),
                    schema: schema.value(r),
                    zero_threshold: zt.value(r),
                    zero_count: zc.value(r),
                    negative_spans: spans(ns, r)?,
                    negative_buckets: floats(nb, r),
                    positive_spans: spans(ps, r)?,
                    positive_buckets: floats(pb, r),
                    custom_values: floats(cv, r),
                    reset_hint: hint.value(r),
                    float: float.value(r),
                };
                points.entry(id).or_default().push(Point {
                    t: ts.value(r),
                    v: Val::H(Arc::new(h)),
                });
            }
        }
        Ok(points
            .into_iter()
            .filter_map(|(id, mut pts)| {
                // Unflushed rows and files may repeat a sample or bring it out of order; the
                // last written wins. One file's rows come in order, with no repeats.
                if !pts.is_sorted_by(|a, b| a.t < b.t) {
                    pts.sort_by_key(|p| p.t);
                    pts.dedup_by(|later, earlier| {
                        if later.t == earlier.t {
                            *earlier = later.clone();
                            true
                        } else {
                            false
                        }
                    });
                }
                Some(RawSeries {
                    labels: series.remove(&id)?,
                    points: pts,
                    drop_name: false,
                })
            })
            .collect())
    }
}

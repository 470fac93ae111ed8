//! Span metrics: RED per operation and the service graph as Prometheus series, under the names
//! Grafana's Tempo service map and RED panels read (`traces_spanmetrics_*`,
//! `traces_service_graph_*`) and those of OpenTelemetry's spanmetrics connector that Jaeger's
//! Monitor tab reads (`traces_span_metrics_*`).
//!
//! They are not stored twice: each query computes them from the rollup tables, which counted
//! every span before sampling. A rollup row is one minute, so a series is a counter with one
//! sample at the end of each minute (when that minute's counts are complete), summing the
//! minutes read since a series began; it starts with a 0 at the start of its first minute, so
//! `increase` counts its first calls, and stays flat for [`IDLE_MINUTES`] after its last call
//! before it goes stale, as a metrics generator keeps an idle series. Histogram buckets are
//! read off the latency sketches at fixed boundaries (each sketch bucket, within 1% of its
//! values, counts under the first boundary at or above its value).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use promql_parser::label::{MatchOp, Matchers};
use sightline_storage::rollup::{
    minute_of, sketch, table::NANOS_PER_MINUTE, LatencySketch, Measures, NodeKind,
};
use sightline_storage::schema::col as span_col;
use sightline_storage::span_table::SPANS_TABLE;

use crate::columns;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::exposition::{Exemplar, Family as ExpositionFamily, Kind, Sample};
use crate::promql::format_float;
use crate::promql::select::{alternatives, matches, ExemplarSets};
use crate::promql::value::{Labels, Point, RawSeries, Val, NAME};
use crate::rollups::{self, Window};

/// How long a series without calls keeps its last value before it goes stale.
pub const IDLE_MINUTES: i64 = 15;
const MINUTE_MS: i64 = 60_000;

/// Tempo's default span-metrics buckets, in seconds (also used for the service graph, whose
/// own default starts at 100 ms and would hide every fast call).
const SECONDS_BOUNDS: &[f64] = &[
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.02, 2.05, 4.10,
];
/// The OpenTelemetry spanmetrics connector's default buckets, in milliseconds.
const MILLISECONDS_BOUNDS: &[f64] = &[
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// The label names a family's series carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Style {
    /// Tempo's span metrics: `service`, `span_name`, `span_kind`, `status_code`.
    Tempo,
    /// The spanmetrics connector: `service_name`, `span_name`, `span_kind`, `status_code`.
    Connector,
    /// Tempo's service graph: `client`, `server`, `connection_type`.
    Graph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Calls,
    Errors,
    Bucket,
    Sum,
    Count,
}

/// Whose durations a latency family shows: the span's own (and a call's caller), or a call's
/// callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

struct Family {
    name: &'static str,
    style: Style,
    measure: Measure,
    side: Side,
    /// Nanoseconds per unit of the family's values and bounds.
    unit: f64,
    bounds: &'static [f64],
}

impl Family {
    /// The family a series belongs to: a histogram's name without `_bucket`/`_count`/`_sum`, a
    /// counter's without `_total`.
    fn family_name(&self) -> &'static str {
        let suffix = match self.measure {
            Calls | Errors => "_total",
            Bucket => "_bucket",
            Count => "_count",
            Sum => "_sum",
        };
        self.name.strip_suffix(suffix).unwrap_or(self.name)
    }

    /// For each bound, the lowest sketch bucket whose value is above it: a bucket counts under
    /// the first bound whose threshold is above the bucket's index — integer comparisons
    /// instead of a power and a search for every bucket of every minute's sketch.
    fn thresholds(&self) -> Vec<i32> {
        let value = |i: i32| sketch::bucket_value(i) / self.unit;
        self.bounds
            .iter()
            .map(|&b| {
                let mut i = sketch::bucket_of((b * self.unit).min(i64::MAX as f64) as i64);
                while value(i - 1) > b {
                    i -= 1;
                }
                while value(i) <= b {
                    i += 1;
                }
                i
            })
            .collect()
    }

    fn suffix(&self) -> &'static str {
        &self.name[self.family_name().len()..]
    }

    fn help(&self) -> &'static str {
        match (self.style, self.measure) {
            (Graph, Errors) => {
                "Failed calls between two services, from every span before sampling."
            }
            (Graph, Calls) => "Calls between two services, from every span before sampling.",
            (Graph, _) if self.side == Side::Callee => {
                "Time the server took for calls between two services."
            }
            (Graph, _) => "Time the client waited for calls between two services.",
            (_, Calls) => "Spans per operation, kind and status, counted before sampling.",
            _ => "Span durations per operation, kind and status, from every span before sampling.",
        }
    }
}

const fn family(name: &'static str, style: Style, measure: Measure) -> Family {
    Family {
        name,
        style,
        measure,
        side: Side::Caller,
        unit: 1e9,
        bounds: SECONDS_BOUNDS,
    }
}

const fn in_ms(f: Family) -> Family {
    Family {
        unit: 1e6,
        bounds: MILLISECONDS_BOUNDS,
        ..f
    }
}

const fn callee(f: Family) -> Family {
    Family {
        side: Side::Callee,
        ..f
    }
}

use Measure::*;
use Style::*;

const FAMILIES: &[Family] = &[
    family("traces_spanmetrics_calls_total", Tempo, Calls),
    family("traces_spanmetrics_latency_bucket", Tempo, Bucket),
    family("traces_spanmetrics_latency_sum", Tempo, Sum),
    family("traces_spanmetrics_latency_count", Tempo, Count),
    family("traces_span_metrics_calls_total", Connector, Calls),
    in_ms(family(
        "traces_span_metrics_duration_milliseconds_bucket",
        Connector,
        Bucket,
    )),
    in_ms(family(
        "traces_span_metrics_duration_milliseconds_sum",
        Connector,
        Sum,
    )),
    in_ms(family(
        "traces_span_metrics_duration_milliseconds_count",
        Connector,
        Count,
    )),
    family("traces_service_graph_request_total", Graph, Calls),
    family("traces_service_graph_request_failed_total", Graph, Errors),
    callee(family(
        "traces_service_graph_request_server_seconds_bucket",
        Graph,
        Bucket,
    )),
    callee(family(
        "traces_service_graph_request_server_seconds_sum",
        Graph,
        Sum,
    )),
    callee(family(
        "traces_service_graph_request_server_seconds_count",
        Graph,
        Count,
    )),
    family(
        "traces_service_graph_request_client_seconds_bucket",
        Graph,
        Bucket,
    ),
    family(
        "traces_service_graph_request_client_seconds_sum",
        Graph,
        Sum,
    ),
    family(
        "traces_service_graph_request_client_seconds_count",
        Graph,
        Count,
    ),
];

/// Metadata of the span-metric families: (family name, type, help), histograms under their name
/// without `_bucket`/`_sum`/`_count`.
pub fn metadata() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out: Vec<(&str, &str, &str)> = Vec::new();
    for f in FAMILIES {
        let (name, kind) = match f.measure {
            Calls | Errors => (f.name, "counter"),
            _ => (f.family_name(), "histogram"),
        };
        if !out.iter().any(|(n, _, _)| *n == name) {
            out.push((name, kind, f.help()));
        }
    }
    out
}

fn span_kind_name(kind: i8) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_code_name(code: i8) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// Tempo's `connection_type`: none between two services.
fn connection_type(source: NodeKind, target: NodeKind) -> &'static str {
    match (source, target) {
        (_, NodeKind::Database) => "database",
        (NodeKind::Messaging, _) | (_, NodeKind::Messaging) => "messaging_system",
        (NodeKind::External, _) | (_, NodeKind::External) => "virtual_node",
        _ => "",
    }
}

fn red_labels(style: Style, service: &str, span_name: &str, kind: i8, status: i8) -> Labels {
    let service_label = if style == Tempo {
        "service"
    } else {
        "service_name"
    };
    Labels::new(vec![
        (service_label.into(), service.into()),
        ("span_name".into(), span_name.into()),
        ("span_kind".into(), span_kind_name(kind).into()),
        ("status_code".into(), status_code_name(status).into()),
    ])
}

/// Whether a family's name passes the selector's name matchers (any alternative's).
fn name_passes(name: &str, m: &Matchers) -> bool {
    alternatives(m).any(|ms| {
        ms.iter()
            .filter(|x| x.name == NAME)
            .all(|x| x.is_match(name))
    })
}

fn wanted(m: &Matchers) -> Vec<&'static Family> {
    FAMILIES.iter().filter(|f| name_passes(f.name, m)).collect()
}

/// The one value an equality matcher gives `label`, without alternatives.
fn equal_to<'a>(m: &'a Matchers, label: &str) -> Option<&'a str> {
    if !m.or_matchers.is_empty() {
        return None;
    }
    m.matchers
        .iter()
        .find(|x| x.name == label && x.op == MatchOp::Equal)
        .map(|x| x.value.as_str())
}

fn to_nanos(ms: i64) -> i64 {
    ms.clamp(0, i64::MAX / 2_000_000) * 1_000_000
}

/// The rollup rows a selection over `[min_ms, max_ms]` needs: from far enough back that a
/// series idle at the start still shows, and that a series running through it does not look new.
fn read_window(min_ms: i64, max_ms: i64) -> Window {
    Window {
        start: minute_of(to_nanos(min_ms)) - (IDLE_MINUTES + 1) * NANOS_PER_MINUTE,
        end: to_nanos(max_ms).saturating_add(1),
        load_test: false,
    }
}

/// Minute rows grouped by the label set a style gives them.
type Groups = BTreeMap<Labels, BTreeMap<i64, Measures>>;

async fn groups(
    engine: &QueryEngine,
    styles: &[Style],
    m: &Matchers,
    window: &Window,
) -> Result<HashMap<Style, Groups>, QueryError> {
    let mut out: HashMap<Style, Groups> = HashMap::new();
    let red_styles: Vec<Style> = styles.iter().copied().filter(|s| *s != Graph).collect();
    if !red_styles.is_empty() {
        // One service named by equality in the only style asked for narrows the scan.
        let service = match red_styles[..] {
            [Tempo] => equal_to(m, "service"),
            [Connector] => equal_to(m, "service_name"),
            _ => None,
        };
        let rows = rollups::red_rows(engine, Some(window), service).await?;
        let by_key = minutes_by_key(rows, |k| {
            let key = (k.service, k.operation, k.span_kind, k.status_code);
            (key, k.minute)
        });
        for ((service, operation, kind, status), minutes) in by_key {
            let mut minutes = Some(minutes);
            for (i, &style) in red_styles.iter().enumerate() {
                let labels = red_labels(style, &service, &operation, kind, status);
                // The last style takes the rows; the others copy them.
                let rows = if i + 1 == red_styles.len() {
                    minutes.take().unwrap_or_default()
                } else {
                    minutes.clone().unwrap_or_default()
                };
                add_group(out.entry(style).or_default(), labels, rows);
            }
        }
    }
    if styles.contains(&Graph) {
        let rows = rollups::edge_rows(engine, Some(window)).await?;
        let by_key = minutes_by_key(rows, |k| {
            let key = (k.source, k.target, k.source_kind, k.target_kind);
            (key, k.minute)
        });
        for ((source, target, source_kind, target_kind), minutes) in by_key {
            let labels = Labels::new(vec![
                ("client".into(), source.to_string()),
                ("server".into(), target.to_string()),
                (
                    "connection_type".into(),
                    connection_type(source_kind, target_kind).into(),
                ),
            ]);
            add_group(out.entry(Graph).or_default(), labels, minutes);
        }
    }
    Ok(out)
}

/// Rollup rows by key, each key's minutes merged and in order; `key` gives a row's key and
/// minute. Rows are grouped by key before they get label sets, so that a key's labels are built
/// (and its group found) once, not once per minute.
fn minutes_by_key<R, K: std::hash::Hash + Eq>(
    rows: Vec<(R, Measures)>,
    key: impl Fn(R) -> (K, i64),
) -> HashMap<K, BTreeMap<i64, Measures>> {
    let mut by_key: HashMap<K, BTreeMap<i64, Measures>> = HashMap::new();
    for (row, m) in rows {
        let (k, minute) = key(row);
        match by_key.entry(k).or_default().entry(minute) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(m);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(&m),
        }
    }
    by_key
}

/// Adds a key's minutes to the group of its label set.
fn add_group(groups: &mut Groups, labels: Labels, minutes: BTreeMap<i64, Measures>) {
    let group = groups.entry(labels).or_default();
    if group.is_empty() {
        *group = minutes;
    } else {
        for (minute, m) in minutes {
            group.entry(minute).or_default().merge(&m);
        }
    }
}

/// The durations a side of a call shows; rows from before edges kept the callee's side show the
/// caller's.
fn durations(m: &Measures, side: Side) -> (i64, &LatencySketch) {
    if side == Side::Callee && !m.server_latency.is_empty() {
        (m.server_duration_sum_nano, &m.server_latency)
    } else {
        (m.duration_sum_nano, &m.latency)
    }
}

/// The counts at or under each bound (and +Inf last) of a sketch, by the family's
/// [`Family::thresholds`].
fn bucket_counts(sketch: &LatencySketch, thresholds: &[i32]) -> Vec<f64> {
    let mut counts = vec![0.0; thresholds.len() + 1];
    // Buckets come in ascending order: the bound they fall under only moves up.
    let mut first = 0;
    for (bucket, n) in sketch.buckets() {
        while first < thresholds.len() && thresholds[first] <= bucket {
            first += 1;
        }
        counts[first] += n as f64;
    }
    let mut running = 0.0;
    for c in &mut counts {
        running += *c;
        *c = running;
    }
    counts
}

/// A minute's increments of a family's series (one, or one per bucket); `thresholds` are the
/// family's (see [`Family::thresholds`]).
fn increments(m: &Measures, f: &Family, thresholds: &[i32]) -> Vec<f64> {
    let (sum, sketch) = durations(m, f.side);
    match f.measure {
        Calls | Count => vec![m.calls as f64],
        Errors => vec![m.errors as f64],
        Sum => vec![sum as f64 / f.unit],
        Bucket => bucket_counts(sketch, thresholds),
    }
}

/// The label sets of a family's series over one group.
fn series_labels(f: &Family, base: &Labels) -> Vec<Labels> {
    let mut named = base.clone();
    named.set(NAME, f.name);
    if f.measure != Bucket {
        return vec![named];
    }
    f.bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .map(|le| {
            let mut l = named.clone();
            l.set("le", &format_float(le));
            l
        })
        .collect()
}

/// The counter samples of `n` series from their minute increments, in `[min_ms, max_ms]`.
fn counter_points(
    minutes: impl Iterator<Item = (i64, Vec<f64>)>,
    n: usize,
    min_ms: i64,
    max_ms: i64,
) -> Vec<Vec<Point>> {
    let mut out = vec![Vec::new(); n];
    let mut total = vec![0.0; n];
    let emit = |out: &mut Vec<Vec<Point>>, t: i64, total: &[f64]| {
        if (min_ms..=max_ms).contains(&t) {
            for (series, v) in out.iter_mut().zip(total) {
                series.push(Point { t, v: Val::F(*v) });
            }
        }
    };
    let mut last: Option<i64> = None;
    for (minute_ms, inc) in minutes {
        match last {
            // Still live: the idle minutes in between repeat the total.
            Some(p) if minute_ms - p <= (IDLE_MINUTES + 1) * MINUTE_MS => {
                for t in (p + 2 * MINUTE_MS..=minute_ms).step_by(MINUTE_MS as usize) {
                    emit(&mut out, t, &total);
                }
            }
            _ => {
                if let Some(p) = last {
                    for k in 1..=IDLE_MINUTES {
                        emit(&mut out, p + MINUTE_MS + k * MINUTE_MS, &total);
                    }
                }
                total.iter_mut().for_each(|v| *v = 0.0);
                emit(&mut out, minute_ms, &total);
            }
        }
        for (t, i) in total.iter_mut().zip(&inc) {
            *t += i;
        }
        emit(&mut out, minute_ms + MINUTE_MS, &total);
        last = Some(minute_ms);
    }
    if let Some(p) = last {
        for k in 1..=IDLE_MINUTES {
            emit(&mut out, p + MINUTE_MS + k * MINUTE_MS, &total);
        }
    }
    out
}

fn now_ms() -> i64 {
    crate::params::now_unix_nano() / 1_000_000
}

/// The span-metric series passing `m`, with their samples in `[min_ms, max_ms]` (none after
/// now: a minute's sample appears when it is over).
pub async fn select(
    engine: &QueryEngine,
    m: &Matchers,
    min_ms: i64,
    max_ms: i64,
) -> Result<Vec<RawSeries>, QueryError> {
    let families = wanted(m);
    if families.is_empty() {
        return Ok(Vec::new());
    }
    let mut styles: Vec<Style> = families.iter().map(|f| f.style).collect();
    styles.dedup();
    let by_style = groups(engine, &styles, m, &read_window(min_ms, max_ms)).await?;
    let max_ms = max_ms.min(now_ms());
    let mut out = Vec::new();
    for f in families {
        let Some(groups) = by_style.get(&f.style) else {
            continue;
        };
        let thresholds = f.thresholds();
        for (base, minutes) in groups {
            let labels = series_labels(f, base);
            if !labels.iter().any(|l| matches(l, m)) {
                continue;
            }
            let points = counter_points(
                minutes.iter().map(|(minute, measures)| {
                    (minute / 1_000_000, increments(measures, f, &thresholds))
                }),
                labels.len(),
                min_ms,
                max_ms,
            );
            for (labels, points) in labels.into_iter().zip(points) {
                if !points.is_empty() && matches(&labels, m) {
                    out.push(RawSeries {
                        labels,
                        points,
                        drop_name: false,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Exemplars for the RED families: the slowest kept span of each series and minute, labelled
/// with its `trace_id` and `span_id` (the spans table holds only spans that were kept).
pub async fn exemplars(
    engine: &QueryEngine,
    m: &Matchers,
    min_ms: i64,
    max_ms: i64,
) -> Result<ExemplarSets, QueryError> {
    let families: Vec<&Family> = wanted(m).into_iter().filter(|f| f.style != Graph).collect();
    if families.is_empty() {
        return Ok(Vec::new());
    }
    let ts = |ms: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(to_nanos(ms)),
            Some("UTC".into()),
        ))
    };
    let mut filter = col(span_col::START_TIME)
        .gt_eq(ts(min_ms))
        .and(col(span_col::START_TIME).lt_eq(ts(max_ms)));
    if let Some(s) = equal_to(m, "service").or_else(|| equal_to(m, "service_name")) {
        filter = filter.and(col(span_col::SERVICE_NAME).eq(lit(s.to_string())));
    }
    let batches = engine
        .context()
        .table(SPANS_TABLE)
        .await?
        .filter(filter)?
        .select_columns(&[
            span_col::SERVICE_NAME,
            span_col::SPAN_NAME,
            span_col::SPAN_KIND,
            span_col::STATUS_CODE,
            span_col::START_TIME,
            span_col::DURATION_NANO,
            span_col::TRACE_ID,
            span_col::SPAN_ID,
        ])?
        .collect()
        .await?;
    let mut slowest = Slowest::new();
    for b in &batches {
        read_exemplar_spans(b, &families, m, &mut slowest)?;
    }
    let mut by_series: BTreeMap<Labels, Vec<(Labels, i64, f64)>> = BTreeMap::new();
    for ((fi, labels, _), (start_ms, duration, trace, span)) in slowest {
        let f = families[fi];
        let value = match f.measure {
            Calls => 1.0,
            _ => duration as f64 / f.unit,
        };
        let exemplar = Labels::new(vec![("trace_id".into(), trace), ("span_id".into(), span)]);
        by_series
            .entry(labels)
            .or_default()
            .push((exemplar, start_ms, value));
    }
    Ok(by_series
        .into_iter()
        .map(|(l, mut e)| {
            e.sort_by_key(|x| x.1);
            (l, e)
        })
        .collect())
}

/// The slowest span of each (family, series, minute): its start (ms), duration, trace and span id.
type Slowest = BTreeMap<(usize, Labels, i64), (i64, i64, String, String)>;

fn read_exemplar_spans(
    b: &RecordBatch,
    families: &[&Family],
    m: &Matchers,
    slowest: &mut Slowest,
) -> Result<(), QueryError> {
    let services = columns::strings(b, span_col::SERVICE_NAME)?;
    let names = columns::strings(b, span_col::SPAN_NAME)?;
    let kinds = columns::ints(b, span_col::SPAN_KIND)?;
    let statuses = columns::ints(b, span_col::STATUS_CODE)?;
    let durations = columns::ints(b, span_col::DURATION_NANO)?;
    let starts = columns::by_name(b, span_col::START_TIME)?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| QueryError::Execution("start_time is not in nanoseconds".into()))?;
    let trace_ids = columns::by_name(b, span_col::TRACE_ID)?.as_fixed_size_binary();
    let span_ids = columns::by_name(b, span_col::SPAN_ID)?.as_fixed_size_binary();
    for r in 0..b.num_rows() {
        let (kind, status) = (kinds.value(r) as i8, statuses.value(r) as i8);
        for (fi, f) in families.iter().enumerate() {
            let base = red_labels(f.style, services.value(r), names.value(r), kind, status);
            let mut labels = series_labels(f, &base);
            if f.measure == Bucket {
                // The bucket the span's duration falls in.
                let v = durations.value(r) as f64 / f.unit;
                let i = f.bounds.partition_point(|x| *x < v);
                labels = vec![labels.swap_remove(i)];
            }
            let Some(labels) = labels.pop().filter(|l| matches(l, m)) else {
                continue;
            };
            let start = starts.value(r);
            let key = (fi, labels, minute_of(start));
            let duration = durations.value(r);
            if slowest.get(&key).is_none_or(|s| s.1 < duration) {
                slowest.insert(
                    key,
                    (
                        start / 1_000_000,
                        duration,
                        columns::hex(trace_ids.value(r)),
                        columns::hex(span_ids.value(r)),
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Running totals of every span-metric series, for `/metrics`: each scrape folds in the
/// minutes completed since the one before and adds what the minute in progress holds so far —
/// a minute only grows until it is folded in, so the counters only grow, from 0 when counting
/// began. A series idle for [`IDLE_MINUTES`] is dropped (and starts from 0 if it returns).
pub struct Totals {
    /// Minutes before this (unix ns) are folded in.
    counted_until: i64,
    series: BTreeMap<(usize, Labels), SeriesTotal>,
    /// The minute in progress, as of the last update.
    partial: BTreeMap<(usize, Labels), Vec<f64>>,
}

struct SeriesTotal {
    values: Vec<f64>,
    last_active: i64,
    /// The newest exemplar of each value (bucket), for OpenMetrics.
    exemplars: Vec<Option<Exemplar>>,
}

impl SeriesTotal {
    fn new(n: usize) -> Self {
        Self {
            values: vec![0.0; n],
            last_active: 0,
            exemplars: vec![None; n],
        }
    }
}

/// Each family's series over a window and their increments summed, with the newest minute.
async fn sums(
    engine: &QueryEngine,
    window: &Window,
) -> Result<BTreeMap<(usize, Labels), (Vec<f64>, i64)>, QueryError> {
    let by_style = groups(
        engine,
        &[Tempo, Connector, Graph],
        &Matchers::empty(),
        window,
    )
    .await?;
    let mut out = BTreeMap::new();
    for (fi, f) in FAMILIES.iter().enumerate() {
        let thresholds = f.thresholds();
        for (base, minutes) in by_style.get(&f.style).into_iter().flatten() {
            let mut sum = vec![0.0; series_labels(f, base).len()];
            let mut newest = i64::MIN;
            for (minute, measures) in minutes {
                for (t, i) in sum.iter_mut().zip(increments(measures, f, &thresholds)) {
                    *t += i;
                }
                newest = newest.max(*minute);
            }
            out.insert((fi, base.clone()), (sum, newest));
        }
    }
    Ok(out)
}

impl Totals {
    /// Counting from the minute of `start_unix_nano` (the server's start).
    pub fn new(start_unix_nano: i64) -> Self {
        Self {
            counted_until: minute_of(start_unix_nano),
            series: BTreeMap::new(),
            partial: BTreeMap::new(),
        }
    }

    /// Folds in the minutes completed by `now_unix_nano` and reads the one in progress.
    pub async fn update(
        &mut self,
        engine: &QueryEngine,
        now_unix_nano: i64,
    ) -> Result<(), QueryError> {
        let complete = minute_of(now_unix_nano);
        if complete > self.counted_until {
            let window = Window {
                start: self.counted_until,
                end: complete,
                load_test: false,
            };
            for (key, (sum, newest)) in sums(engine, &window).await? {
                let n = sum.len();
                let total = self
                    .series
                    .entry(key)
                    .or_insert_with(|| SeriesTotal::new(n));
                for (t, i) in total.values.iter_mut().zip(sum) {
                    *t += i;
                }
                total.last_active = total.last_active.max(newest);
            }
            self.counted_until = complete;
            let idle_before = complete - (IDLE_MINUTES + 1) * NANOS_PER_MINUTE;
            self.series.retain(|_, t| t.last_active >= idle_before);
        }
        let in_progress = Window {
            start: complete,
            end: complete + NANOS_PER_MINUTE,
            load_test: false,
        };
        self.partial = sums(engine, &in_progress)
            .await?
            .into_iter()
            .map(|(key, (sum, _))| (key, sum))
            .collect();
        for key in self.partial.keys() {
            let n = series_labels(&FAMILIES[key.0], &key.1).len();
            self.series
                .entry(key.clone())
                .or_insert_with(|| SeriesTotal::new(n))
                .last_active = complete;
        }
        // Exemplars: the newest kept span of each series since the last update.
        let to_ms = |ns: i64| ns / 1_000_000;
        let since = to_ms(complete - NANOS_PER_MINUTE);
        let found = exemplars(engine, &Matchers::empty(), since, to_ms(now_unix_nano)).await?;
        let mut newest: HashMap<Labels, Exemplar> = HashMap::new();
        for (labels, list) in found {
            if let Some((l, t, v)) = list.into_iter().max_by_key(|e| e.1) {
                let labels_of = l.iter().map(|(n, v)| (n.to_string(), v.to_string()));
                newest.insert(
                    labels,
                    Exemplar {
                        labels: labels_of.collect(),
                        value: v,
                        timestamp_ms: t,
                    },
                );
            }
        }
        for ((fi, base), total) in &mut self.series {
            let labels = series_labels(&FAMILIES[*fi], base);
            for (slot, labels) in total.exemplars.iter_mut().zip(labels) {
                if let Some(e) = newest.remove(&labels) {
                    *slot = Some(e);
                }
            }
        }
        Ok(())
    }

    /// The totals as metric families for the exposition formats: a histogram's buckets, count
    /// and sum together for each label set.
    pub fn families(&self) -> Vec<ExpositionFamily> {
        let mut out: Vec<ExpositionFamily> = Vec::new();
        let mut by_family: BTreeMap<&str, BTreeMap<&Labels, Vec<Sample>>> = BTreeMap::new();
        for (key, total) in &self.series {
            let (fi, base) = key;
            let f = &FAMILIES[*fi];
            let name = f.family_name();
            let partial = self.partial.get(key);
            if !out.iter().any(|x| x.name == name) {
                let kind = if matches!(f.measure, Calls | Errors) {
                    Kind::Counter
                } else {
                    Kind::Histogram
                };
                out.push(ExpositionFamily::new(name, kind, f.help()));
            }
            let samples = by_family.entry(name).or_default().entry(base).or_default();
            for (i, (labels, exemplar)) in series_labels(f, base)
                .into_iter()
                .zip(&total.exemplars)
                .enumerate()
            {
                let value = total.values[i] + partial.map_or(0.0, |p| p[i]);
                samples.push(Sample {
                    suffix: f.suffix(),
                    labels: labels
                        .iter()
                        .filter(|(n, _)| *n != NAME)
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    value,
                    // OpenMetrics puts exemplars on counters and buckets only.
                    exemplar: exemplar
                        .clone()
                        .filter(|_| matches!(f.measure, Calls | Errors | Bucket)),
                });
            }
        }
        for family in &mut out {
            for (_, mut samples) in by_family.remove(family.name.as_str()).unwrap_or_default() {
                // A stable sort: the buckets keep their order.
                samples.sort_by_key(|s| match s.suffix {
                    "_bucket" => 0,
                    "_count" => 1,
                    _ => 2,
                });
                family.samples.extend(samples);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(points: &[Point]) -> Vec<(i64, f64)> {
        points
            .iter()
            .map(|p| (p.t, p.v.float().unwrap_or(f64::NAN)))
            .collect()
    }

    #[test]
    fn a_counter_starts_at_zero_stays_flat_while_idle_and_restarts_after() {
        let m = MINUTE_MS;
        let minutes = vec![(0, vec![3.0]), (2 * m, vec![2.0]), (40 * m, vec![1.0])];
        let out = counter_points(minutes.into_iter(), 1, 0, 100 * m);
        let v = values(&out[0]);
        assert_eq!(&v[..4], &[(0, 0.0), (m, 3.0), (2 * m, 3.0), (3 * m, 5.0)]);
        // Flat for the idle minutes after the last call, then nothing until the restart.
        assert_eq!(v[4..].iter().take_while(|p| p.1 == 5.0).count(), 15);
        assert_eq!(v[19], (40 * m, 0.0));
        assert_eq!(v[20], (41 * m, 1.0));
        assert_eq!(v.last().copied(), Some((56 * m, 1.0)));
    }

    #[test]
    fn buckets_count_each_sketch_bucket_under_the_first_bound_above_it() {
        let mut measures = Measures::default();
        for ms in [1, 3, 3, 700] {
            measures.record(ms * 1_000_000, false);
        }
        let f = &FAMILIES[1];
        assert_eq!(f.name, "traces_spanmetrics_latency_bucket");
        let counts = increments(&measures, f, &f.thresholds());
        assert_eq!(counts[0], 1.0); // <= 2 ms
        assert_eq!(counts[1], 3.0); // <= 4 ms
        assert_eq!(counts[8], 3.0); // <= 512 ms
        assert_eq!(counts[9], 4.0); // <= 1.02 s
        assert_eq!(*counts.last().unwrap(), 4.0);
        // The thresholds place every bucket where comparing its value with the bounds would.
        for f in FAMILIES.iter().filter(|f| f.measure == Bucket) {
            let t = f.thresholds();
            for bucket in -200..3000 {
                let value = sketch::bucket_value(bucket) / f.unit;
                assert_eq!(
                    t.partition_point(|t| *t <= bucket),
                    f.bounds.partition_point(|b| *b < value),
                    "{} bucket {bucket}",
                    f.name
                );
            }
        }
        let labels = series_labels(f, &Labels::default());
        assert_eq!(labels[9].get("le"), Some("1.02"));
        assert_eq!(labels.last().unwrap().get("le"), Some("+Inf"));
    }
}

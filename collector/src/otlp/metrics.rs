//! OTLP metrics into Prometheus series, as Prometheus 3's own OTLP receiver translates them by
//! default: names with unit and type suffixes (see [`super::prometheus_names`]); `job` from
//! `service.namespace`/`service.name`, `instance` from `service.instance.id`, the other resource
//! attributes in `target_info` (and a configurable list promoted to labels); gauges and sums as
//! samples — monotonic cumulative sums are counters, delta sums are accumulated to cumulative per
//! series (as the collector's `deltatocumulative` processor does), non-monotonic sums are gauges;
//! histograms as classic `_bucket{le}`, `_sum`, `_count`; exponential histograms as native
//! histograms; summaries as quantile series, `_sum`, `_count`. A point flagged
//! `NO_RECORDED_VALUE` becomes a stale marker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric::Data, number_data_point, AggregationTemporality, Exemplar,
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
};
use sightline_storage::metrics::builder::reason;
use sightline_storage::metrics::{
    BucketSpan, MetricBatchBuilder, MetricType, NativeHistogram, SeriesRef, METRIC_NAME_LABEL,
};

use super::prometheus_names::{label_name, metric_name, unit_name, Kind};

/// The NaN Prometheus marks a series stale with.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
/// Flag bit of a point with no recorded value.
const NO_RECORDED_VALUE: u32 = 1;
/// Prometheus writes exponential histograms with this zero threshold, whatever OTLP says.
const DEFAULT_ZERO_THRESHOLD: f64 = 1e-128;
/// Exemplar attributes are kept only while all labels stay within this many characters.
const MAX_EXEMPLAR_RUNES: usize = 128;
/// `target_info` is written every half lookback (5 minutes) between a resource's first and
/// last point, so it stays visible to queries.
const TARGET_INFO_INTERVAL_MS: i64 = 150_000;
/// Reason of a point that cannot be translated.
const INVALID_POINT: &str = "invalid_otlp_point";

/// Settings of the translation.
#[derive(Debug, Clone, Default)]
pub struct OtlpMetricsConfig {
    /// Resource attributes copied onto every series of the resource as labels.
    pub promote_resource_attributes: Vec<String>,
}

/// Running totals of delta series, so they can be stored cumulative.
#[derive(Default)]
pub struct DeltaState {
    series: Mutex<HashMap<u64, Delta>>,
}

struct Delta {
    start_ns: u64,
    last_ns: u64,
    seen: Instant,
    value: DeltaValue,
}

enum DeltaValue {
    Sum(f64),
    Buckets {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
    },
}

/// Series idle this long start over from their next delta (the processor's `max_stale`).
const DELTA_MAX_STALE: Duration = Duration::from_secs(300);

impl DeltaState {
    /// Adds a delta point; the cumulative start and value, or `None` for a point older than
    /// the last one added (dropped, as the processor drops it).
    fn sum(&self, key: u64, start_ns: u64, time_ns: u64, delta: f64) -> Option<(u64, f64)> {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Self::evict(&mut series);
        let now = Instant::now();
        let e = series.entry(key).or_insert(Delta {
            start_ns,
            last_ns: 0,
            seen: now,
            value: DeltaValue::Sum(0.0),
        });
        if time_ns <= e.last_ns {
            return None;
        }
        let DeltaValue::Sum(total) = &mut e.value else {
            e.value = DeltaValue::Sum(0.0);
            return self_sum(e, time_ns, delta, now);
        };
        *total += delta;
        e.last_ns = time_ns;
        e.seen = now;
        Some((e.start_ns, *total))
    }

    fn histogram(&self, key: u64, p: &HistogramDataPoint) -> Option<(u64, Vec<u64>, u64, f64)> {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Self::evict(&mut series);
        let now = Instant::now();
        let e = series.entry(key).or_insert(Delta {
            start_ns: p.start_time_unix_nano,
            last_ns: 0,
            seen: now,
            value: DeltaValue::Buckets {
                bounds: p.explicit_bounds.clone(),
                counts: vec![0; p.bucket_counts.len()],
                count: 0,
                sum: 0.0,
            },
        });
        if p.time_unix_nano <= e.last_ns {
            return None;
        }
        // New bucket bounds start the running total over.
        let fresh = !matches!(&e.value, DeltaValue::Buckets { bounds, counts, .. }
            if *bounds == p.explicit_bounds && counts.len() == p.bucket_counts.len());
        if fresh {
            e.start_ns = p.start_time_unix_nano;
            e.value = DeltaValue::Buckets {
                bounds: p.explicit_bounds.clone(),
                counts: vec![0; p.bucket_counts.len()],
                count: 0,
                sum: 0.0,
            };
        }
        let DeltaValue::Buckets {
            counts, count, sum, ..
        } = &mut e.value
        else {
            return None;
        };
        for (c, d) in counts.iter_mut().zip(&p.bucket_counts) {
            *c = c.wrapping_add(*d);
        }
        *count = count.wrapping_add(p.count);
        *sum += p.sum.unwrap_or(0.0);
        e.last_ns = p.time_unix_nano;
        e.seen = now;
        Some((e.start_ns, counts.clone(), *count, *sum))
    }

    fn evict(series: &mut HashMap<u64, Delta>) {
        // Cheap enough to look at now and then rather than on every point.
        if series.len().is_multiple_of(1024) {
            series.retain(|_, d| d.seen.elapsed() < DELTA_MAX_STALE);
        }
    }
}

fn self_sum(e: &mut Delta, time_ns: u64, delta: f64, now: Instant) -> Option<(u64, f64)> {
    e.value = DeltaValue::Sum(delta);
    e.last_ns = time_ns;
    e.seen = now;
    Some((e.start_ns, delta))
}

fn millis(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn start_millis(ns: u64) -> Option<i64> {
    (ns != 0).then(|| millis(ns))
}

/// An attribute value as Prometheus writes it into a label (pdata's `AsString`).
fn value_string(v: Option<&AnyValue>) -> String {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return String::new();
    };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => format_double(*d),
        any_value::Value::BytesValue(b) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        any_value::Value::ArrayValue(a) => {
            let items: Vec<serde_json::Value> = a.values.iter().map(json_value).collect();
            serde_json::Value::Array(items).to_string()
        }
        any_value::Value::KvlistValue(kv) => {
            let map: serde_json::Map<String, serde_json::Value> = kv
                .values
                .iter()
                .map(|p| {
                    (
                        p.key.clone(),
                        p.value.as_ref().map_or(serde_json::Value::Null, json_value),
                    )
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        }
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

fn json_value(v: &AnyValue) -> serde_json::Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => serde_json::Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(other) => serde_json::Value::String(value_string(Some(&AnyValue {
            value: Some(other.clone()),
        }))),
        None => serde_json::Value::Null,
    }
}

/// A double as Go's JSON writes it: plain between 1e-6 and 1e21, exponent outside.
fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = d.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{d:e}");
        // `1e-7` and `1e21` → Go's `1e-07` and `1e+21`.
        return match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        };
    }
    format!("{d}")
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A resource's labels for every series of it.
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    promoted: Vec<(String, String)>,
}

/// Sanitized label names, collisions joined with `;` in the order of the original names.
fn sanitize(
    attrs: &[KeyValue],
    skip: &[&str],
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    let mut sorted: Vec<&KeyValue> = attrs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    for kv in sorted {
        let name = label_name(&kv.key)?;
        let value = value_string(kv.value.as_ref());
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) if !v.is_empty() => {
                v.push(';');
                v.push_str(&value);
            }
            Some((_, v)) => *v = value,
            None => out.push((name, value)),
        }
    }
    Ok(())
}

fn set(labels: &mut Vec<(String, String)>, name: &str, value: String) {
    match labels.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => labels.push((name.to_string(), value)),
    }
}

/// Translates one export request into `out`; points that cannot be stored are counted by
/// reason in `out`'s report.
pub fn translate(
    request: &ExportMetricsServiceRequest,
    config: &OtlpMetricsConfig,
    deltas: &DeltaState,
    out: &mut MetricBatchBuilder,
) {
    let mut t = Translator {
        out,
        deltas,
        labels: Vec::new(),
        refs: Vec::new(),
    };
    for rm in &request.resource_metrics {
        let attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let job = attr(attrs, "service.name").map(|name| match attr(attrs, "service.namespace") {
            Some(ns) => format!("{}/{}", value_string(Some(ns)), value_string(Some(name))),
            None => value_string(Some(name)),
        });
        let instance = attr(attrs, "service.instance.id").map(|v| value_string(Some(v)));
        let mut promoted = Vec::new();
        let wanted: Vec<KeyValue> = attrs
            .iter()
            .filter(|kv| config.promote_resource_attributes.contains(&kv.key))
            .cloned()
            .collect();
        if let Err(e) = sanitize(&wanted, &[], &mut promoted) {
            let points = rm
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .map(points_of)
                .sum();
            t.out.refuse(reason::INVALID_LABELS, points, || {
                format!("resource attributes: {e}")
            });
            continue;
        }
        let resource = ResourceLabels {
            job,
            instance,
            promoted,
        };
        let (mut earliest, mut latest) = (u64::MAX, 0u64);
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                for ts in timestamps(metric) {
                    earliest = earliest.min(ts);
                    latest = latest.max(ts);
                }
                t.metric(metric, &resource);
            }
        }
        if earliest != u64::MAX {
            t.target_info(attrs, &resource, millis(earliest), millis(latest));
        }
    }
}

fn timestamps(m: &Metric) -> Vec<u64> {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::Sum(s)) => s.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.time_unix_nano).collect(),
        Some(Data::ExponentialHistogram(h)) => {
            h.data_points.iter().map(|p| p.time_unix_nano).collect()
        }
        Some(Data::Summary(s)) => s.data_points.iter().map(|p| p.time_unix_nano).collect(),
        None => Vec::new(),
    }
}

/// Series points a metric becomes (what a refusal of all of it counts).
fn points_of(m: &Metric) -> u64 {
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len() as u64,
        Some(Data::Sum(s)) => s.data_points.len() as u64,
        Some(Data::Histogram(h)) => h
            .data_points
            .iter()
            .map(|p| p.explicit_bounds.len() as u64 + 3)
            .sum(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len() as u64,
        Some(Data::Summary(s)) => s
            .data_points
            .iter()
            .map(|p| p.quantile_values.len() as u64 + 2)
            .sum(),
        None => 0,
    }
}

struct Translator<'a> {
    out: &'a mut MetricBatchBuilder,
    deltas: &'a DeltaState,
    labels: Vec<(String, String)>,
    refs: Vec<(&'static str, &'static str)>,
}

impl Translator<'_> {
    /// The point's labels (attributes, promoted, job, instance) in `self.labels`.
    fn base_labels(&mut self, attrs: &[KeyValue], resource: &ResourceLabels) -> Result<(), String> {
        self.labels.clear();
        sanitize(attrs, &[METRIC_NAME_LABEL], &mut self.labels)?;
        for (n, v) in &resource.promoted {
            if !self.labels.iter().any(|(m, w)| m == n && !w.is_empty()) {
                set(&mut self.labels, n, v.clone());
            }
        }
        if let Some(job) = &resource.job {
            set(&mut self.labels, "job", job.clone());
        }
        if let Some(instance) = &resource.instance {
            set(&mut self.labels, "instance", instance.clone());
        }
        Ok(())
    }

    /// The series of `name` with the base labels and `extra` ones; `None` when refused.
    fn series(&mut self, name: &str, extra: &[(&str, &str)], points: u64) -> Option<SeriesRef> {
        let mut labels: Vec<(&str, &str)> = self
            .labels
            .iter()
            .filter(|(n, _)| !extra.iter().any(|(e, _)| e == n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        labels.extend_from_slice(extra);
        labels.push((METRIC_NAME_LABEL, name));
        let _ = &self.refs;
        self.out.series(&mut labels, points)
    }

    fn metric(&mut self, metric: &Metric, resource: &ResourceLabels) {
        let (kind, temporality) = match &metric.data {
            Some(Data::Gauge(_)) => (Kind::Gauge, None),
            Some(Data::Sum(s)) if s.is_monotonic => {
                (Kind::MonotonicCounter, Some(s.aggregation_temporality))
            }
            Some(Data::Sum(s)) => (Kind::NonMonotonicCounter, Some(s.aggregation_temporality)),
            Some(Data::Histogram(h)) => (Kind::Histogram, Some(h.aggregation_temporality)),
            Some(Data::ExponentialHistogram(h)) => {
                (Kind::ExponentialHistogram, Some(h.aggregation_temporality))
            }
            Some(Data::Summary(_)) => (Kind::Summary, None),
            None => return,
        };
        let points = points_of(metric);
        let delta = temporality == Some(AggregationTemporality::Delta as i32);
        if temporality.is_some_and(|t| t != AggregationTemporality::Cumulative as i32) && !delta {
            let name = metric.name.clone();
            self.out.refuse(INVALID_POINT, points, || {
                format!("metric {name}: aggregation temporality is unspecified")
            });
            return;
        }
        let name = match metric_name(&metric.name, &metric.unit, kind) {
            Ok(n) => n,
            Err(e) => {
                self.out.refuse(reason::INVALID_LABELS, points, || e);
                return;
            }
        };
        let prom_type = match kind {
            Kind::Gauge | Kind::NonMonotonicCounter => MetricType::Gauge,
            Kind::MonotonicCounter => MetricType::Counter,
            Kind::Histogram | Kind::ExponentialHistogram => MetricType::Histogram,
            Kind::Summary => MetricType::Summary,
        };
        self.out.metadata(
            &name,
            prom_type,
            &unit_name(&metric.unit),
            &metric.description,
        );
        match &metric.data {
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    self.number(p, &name, resource, false);
                }
            }
            Some(Data::Sum(s)) => {
                for p in &s.data_points {
                    self.number(p, &name, resource, delta);
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &h.data_points {
                    self.histogram(p, &name, resource, delta);
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                for p in &h.data_points {
                    self.exponential(p, &name, resource, delta);
                }
            }
            Some(Data::Summary(s)) => {
                for p in &s.data_points {
                    if let Err(e) = self.base_labels(&p.attributes, resource) {
                        self.refuse_labels(&name, p.quantile_values.len() as u64 + 2, e);
                        continue;
                    }
                    let ts = millis(p.time_unix_nano);
                    let start = start_millis(p.start_time_unix_nano);
                    let stale = p.flags & NO_RECORDED_VALUE != 0;
                    let v = |x: f64| if stale { f64::from_bits(STALE_NAN) } else { x };
                    if let Some(s) = self.series(&format!("{name}_sum"), &[], 1) {
                        self.out.sample(s, ts, v(p.sum), start);
                    }
                    if let Some(s) = self.series(&format!("{name}_count"), &[], 1) {
                        self.out.sample(s, ts, v(p.count as f64), start);
                    }
                    for q in &p.quantile_values {
                        let quantile = format_float(q.quantile);
                        if let Some(s) = self.series(&name, &[("quantile", &quantile)], 1) {
                            self.out.sample(s, ts, v(q.value), start);
                        }
                    }
                }
            }
            None => {}
        }
    }

    fn refuse_labels(&mut self, name: &str, points: u64, problem: String) {
        self.out.refuse(reason::INVALID_LABELS, points, || {
            format!("metric {name}: {problem}")
        });
    }

    fn number(&mut self, p: &NumberDataPoint, name: &str, resource: &ResourceLabels, delta: bool) {
        if let Err(e) = self.base_labels(&p.attributes, resource) {
            self.refuse_labels(name, 1, e);
            return;
        }
        let Some(series) = self.series(name, &[], 1) else {
            return;
        };
        let mut value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => 0.0,
        };
        let mut start = start_millis(p.start_time_unix_nano);
        if delta && p.flags & NO_RECORDED_VALUE == 0 {
            let key = self.out.series_id(series);
            match self
                .deltas
                .sum(key, p.start_time_unix_nano, p.time_unix_nano, value)
            {
                Some((s, total)) => {
                    value = total;
                    start = start_millis(s);
                }
                None => {
                    self.out.refuse(INVALID_POINT, 1, || {
                        format!("delta point of {name} is not newer than the one before")
                    });
                    return;
                }
            }
        }
        if p.flags & NO_RECORDED_VALUE != 0 {
            value = f64::from_bits(STALE_NAN);
        }
        let ts = millis(p.time_unix_nano);
        self.out.sample(series, ts, value, start);
        self.exemplars(
            series,
            &p.exemplars,
            &p.exemplars.iter().collect::<Vec<_>>(),
        );
    }

    fn exemplars(&mut self, series: SeriesRef, _all: &[Exemplar], chosen: &[&Exemplar]) {
        for e in chosen {
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => d,
                Some(exemplar::Value::AsInt(i)) => i as f64,
                None => continue,
            };
            let mut labels: Vec<(String, String)> = Vec::new();
            let mut runes = 0usize;
            if !e.trace_id.is_empty() && e.trace_id.iter().any(|b| *b != 0) {
                let v = hex(&e.trace_id);
                runes += "trace_id".len() + v.len();
                labels.push(("trace_id".into(), v));
            }
            if !e.span_id.is_empty() && e.span_id.iter().any(|b| *b != 0) {
                let v = hex(&e.span_id);
                runes += "span_id".len() + v.len();
                labels.push(("span_id".into(), v));
            }
            let attrs: Vec<(String, String)> = e
                .filtered_attributes
                .iter()
                .map(|kv| (kv.key.clone(), value_string(kv.value.as_ref())))
                .collect();
            runes += attrs
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum::<usize>();
            if runes <= MAX_EXEMPLAR_RUNES {
                labels.extend(attrs);
            }
            labels.sort();
            let refs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.out
                .exemplar(series, millis(e.time_unix_nano), value, &refs);
        }
    }

    fn histogram(
        &mut self,
        p: &HistogramDataPoint,
        name: &str,
        resource: &ResourceLabels,
        delta: bool,
    ) {
        let points = p.explicit_bounds.len() as u64 + 3;
        if let Err(e) = self.base_labels(&p.attributes, resource) {
            self.refuse_labels(name, points, e);
            return;
        }
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let mut counts = p.bucket_counts.clone();
        let (mut count, mut sum) = (p.count, p.sum);
        let mut start = start_millis(p.start_time_unix_nano);
        let ts = millis(p.time_unix_nano);
        if delta && !stale {
            let Some(key_series) = self.series(&format!("{name}_count"), &[], 0) else {
                return;
            };
            let key = self.out.series_id(key_series);
            match self.deltas.histogram(key, p) {
                Some((s, c, n, total)) => {
                    counts = c;
                    count = n;
                    sum = p.sum.map(|_| total);
                    start = start_millis(s);
                }
                None => {
                    self.out.refuse(INVALID_POINT, points, || {
                        format!("delta point of {name} is not newer than the one before")
                    });
                    return;
                }
            }
        }
        let v = |x: f64| if stale { f64::from_bits(STALE_NAN) } else { x };
        if let Some(s) = sum {
            if let Some(series) = self.series(&format!("{name}_sum"), &[], 1) {
                self.out.sample(series, ts, v(s), start);
            }
        }
        if let Some(series) = self.series(&format!("{name}_count"), &[], 1) {
            self.out.sample(series, ts, v(count as f64), start);
        }
        // Exemplars go to the first bucket whose bound holds their value.
        let mut exemplars: Vec<&Exemplar> = p.exemplars.iter().collect();
        exemplars.sort_by(|a, b| exemplar_value(a).total_cmp(&exemplar_value(b)));
        let mut next = 0;
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, bound) in p.explicit_bounds.iter().enumerate() {
            let Some(c) = counts.get(i) else { break };
            cumulative = cumulative.wrapping_add(*c);
            let le = format_float(*bound);
            let Some(series) = self.series(&bucket, &[("le", &le)], 1) else {
                continue;
            };
            let start_ex = next;
            while next < exemplars.len() && exemplar_value(exemplars[next]) <= *bound {
                next += 1;
            }
            self.out.sample(series, ts, v(cumulative as f64), start);
            let chosen: Vec<&Exemplar> = exemplars[start_ex..next].to_vec();
            self.exemplars(series, &p.exemplars, &chosen);
        }
        if let Some(series) = self.series(&bucket, &[("le", "+Inf")], 1) {
            self.out.sample(series, ts, v(count as f64), start);
            let chosen: Vec<&Exemplar> = exemplars[next..].to_vec();
            self.exemplars(series, &p.exemplars, &chosen);
        }
    }

    fn exponential(
        &mut self,
        p: &ExponentialHistogramDataPoint,
        name: &str,
        resource: &ResourceLabels,
        delta: bool,
    ) {
        if let Err(e) = self.base_labels(&p.attributes, resource) {
            self.refuse_labels(name, 1, e);
            return;
        }
        if p.scale < -4 {
            let scale = p.scale;
            self.out.refuse(reason::INVALID_HISTOGRAM, 1, || {
                format!("exponential histogram {name}: scale must be >= -4, was {scale}")
            });
            return;
        }
        let Some(series) = self.series(name, &[], 1) else {
            return;
        };
        let scale_down = (p.scale - 8).max(0) as u32;
        let (positive_spans, positive_buckets) = p
            .positive
            .as_ref()
            .map(|b| buckets_layout(&b.bucket_counts, b.offset, scale_down))
            .unwrap_or_default();
        let (negative_spans, negative_buckets) = p
            .negative
            .as_ref()
            .map(|b| buckets_layout(&b.bucket_counts, b.offset, scale_down))
            .unwrap_or_default();
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let h = NativeHistogram {
            count: if stale {
                f64::from_bits(STALE_NAN)
            } else {
                p.count as f64
            },
            sum: if stale {
                f64::from_bits(STALE_NAN)
            } else {
                p.sum.unwrap_or(0.0)
            },
            schema: p.scale.min(8),
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            zero_count: p.zero_count as f64,
            negative_spans,
            negative_buckets,
            positive_spans,
            positive_buckets,
            custom_values: Vec::new(),
            // Delta histograms are stored as gauge histograms, as Prometheus stores them.
            reset_hint: if delta { 3 } else { 0 },
            float: false,
        };
        let ts = millis(p.time_unix_nano);
        self.out
            .histogram(series, ts, start_millis(p.start_time_unix_nano), h);
        let all: Vec<&Exemplar> = p.exemplars.iter().collect();
        self.exemplars(series, &p.exemplars, &all);
    }

    fn target_info(
        &mut self,
        attrs: &[KeyValue],
        resource: &ResourceLabels,
        first: i64,
        last: i64,
    ) {
        const IDENTIFYING: [&str; 3] = ["service.namespace", "service.name", "service.instance.id"];
        if attrs
            .iter()
            .all(|kv| IDENTIFYING.contains(&kv.key.as_str()))
        {
            return;
        }
        self.labels.clear();
        if sanitize(attrs, &IDENTIFYING, &mut self.labels).is_err() {
            return;
        }
        if let Some(job) = &resource.job {
            set(&mut self.labels, "job", job.clone());
        }
        if let Some(instance) = &resource.instance {
            set(&mut self.labels, "instance", instance.clone());
        }
        if resource.job.is_none() && resource.instance.is_none() {
            return;
        }
        self.out
            .metadata("target_info", MetricType::Gauge, "", "Target metadata");
        let mut times = Vec::new();
        let mut t = first;
        while t < last {
            times.push(t);
            t += TARGET_INFO_INTERVAL_MS;
        }
        times.push(last);
        let Some(series) = self.series("target_info", &[], times.len() as u64) else {
            return;
        };
        for t in times {
            self.out.sample(series, t, 1.0, None);
        }
    }
}

fn exemplar_value(e: &Exemplar) -> f64 {
    match e.value {
        Some(exemplar::Value::AsDouble(d)) => d,
        Some(exemplar::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A bound or quantile as Prometheus writes it (`strconv.FormatFloat(f, 'f', -1, 64)`).
fn format_float(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f.is_nan() {
        return "NaN".into();
    }
    format!("{f}")
}

/// OTLP's exponential buckets (bucket `i` holds (base^(offset+i), base^(offset+i+1)]) as
/// Prometheus spans and absolute counts (its bucket `i` holds (base^(i-1), base^i]), merging
/// `2^scale_down` buckets into one when the scale is above Prometheus's maximum. Runs of empty
/// buckets are skipped: up to two become zeros, longer ones start a new span — the layout
/// Prometheus's own receiver produces, so the stored histogram is the one it would store.
fn buckets_layout(counts: &[u64], offset: i32, scale_down: u32) -> (Vec<BucketSpan>, Vec<f64>) {
    if counts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let index = |i: usize| ((offset + i as i32) >> scale_down) + 1;
    let mut spans = vec![BucketSpan {
        offset: (offset >> scale_down) + 1,
        length: 0,
    }];
    let mut values: Vec<f64> = Vec::new();
    let mut emit = |gap: i32, count: u64, spans: &mut Vec<BucketSpan>| {
        if gap > 2 {
            spans.push(BucketSpan {
                offset: gap,
                length: 0,
            });
        } else {
            let gap = gap.max(0) as usize;
            values.extend(std::iter::repeat_n(0.0, gap));
            if let Some(s) = spans.last_mut() {
                s.length += gap as u32;
            }
        }
        values.push(count as f64);
        if let Some(s) = spans.last_mut() {
            s.length += 1;
        }
    };
    // `current` is the bucket whose count `sum` holds, except after empty buckets: then `sum`
    // holds the latest bucket's count and `current` still the last one emitted, so the next
    // emission's gap counts the empty ones skipped.
    let mut current = index(0);
    let mut sum = 0u64;
    for (i, c) in counts.iter().enumerate() {
        let next = index(i);
        if next == current {
            sum += c;
            continue;
        }
        if sum == 0 {
            sum = *c;
            continue;
        }
        emit(next - current - 1, sum, &mut spans);
        sum = *c;
        current = next;
    }
    emit(index(counts.len() - 1) - current, sum, &mut spans);
    (spans, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    #[test]
    fn exponential_buckets_shift_by_one_and_skip_long_gaps() {
        // One empty bucket is a zero; three start a new span.
        let (spans, counts) = buckets_layout(&[1, 0, 2, 0, 0, 0, 3], 0, 0);
        assert_eq!(spans, vec![span(1, 3), span(3, 1)]);
        assert_eq!(counts, vec![1.0, 0.0, 2.0, 3.0]);
        let (spans, counts) = buckets_layout(&[0, 0, 0, 0, 5], 0, 0);
        assert_eq!(spans, vec![span(1, 0), span(4, 1)]);
        assert_eq!(counts, vec![5.0]);
        let (spans, counts) = buckets_layout(&[0, 5], -3, 0);
        assert_eq!(spans, vec![span(-2, 2)]);
        assert_eq!(counts, vec![0.0, 5.0]);
        // Scale 9 down to 8: pairs of buckets merge.
        let (spans, counts) = buckets_layout(&[1, 1, 2, 2], 0, 1);
        assert_eq!(spans, vec![span(1, 2)]);
        assert_eq!(counts, vec![2.0, 4.0]);
    }

    #[test]
    fn doubles_read_as_go_writes_them() {
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(1e21), "1e+21");
        assert_eq!(format_double(1e-7), "1e-07");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
    }
}

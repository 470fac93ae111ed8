//! Histograms in PromQL: `histogram_quantile` over classic buckets (`le`), and the arithmetic
//! of native histograms — scaling, adding (to the coarser schema), the expression form tests
//! print.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use promql_parser::parser::token::{self, TokenType};
use sightline_storage::metrics::{BucketSpan, NativeHistogram};

use super::eval::Result;
use super::value::{Labels, StepSeries, Val};

pub fn scale(h: &NativeHistogram, f: f64) -> NativeHistogram {
    let mut h = h.clone();
    h.count *= f;
    h.sum *= f;
    h.zero_count *= f;
    for b in h
        .positive_buckets
        .iter_mut()
        .chain(h.negative_buckets.iter_mut())
    {
        *b *= f;
    }
    h.float = true;
    h
}

/// Absolute bucket index → count.
fn buckets(spans: &[BucketSpan], counts: &[f64]) -> BTreeMap<i32, f64> {
    let mut out = BTreeMap::new();
    for (idx, v) in bucket_positions(spans, counts.len())
        .into_iter()
        .zip(counts)
    {
        *out.entry(idx).or_insert(0.0) += v;
    }
    out
}

fn reduce(b: BTreeMap<i32, f64>, delta: i32) -> BTreeMap<i32, f64> {
    if delta == 0 {
        return b;
    }
    let mut out = BTreeMap::new();
    for (i, v) in b {
        *out.entry(((i - 1) >> delta) + 1).or_insert(0.0) += v;
    }
    out
}

fn to_spans(b: &BTreeMap<i32, f64>) -> (Vec<BucketSpan>, Vec<f64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut counts = Vec::new();
    let mut next: Option<i32> = None;
    for (&i, &v) in b {
        match next {
            Some(n) if n == i => {
                if let Some(s) = spans.last_mut() {
                    s.length += 1;
                }
            }
            Some(n) => spans.push(BucketSpan {
                offset: i - n,
                length: 1,
            }),
            None => spans.push(BucketSpan {
                offset: i,
                length: 1,
            }),
        }
        counts.push(v);
        next = Some(i + 1);
    }
    (spans, counts)
}

/// `a + b` (or `a - b` with `sign` −1), in the coarser of the two schemas; `None` where
/// Prometheus refuses (custom bounds that differ).
fn combine(a: &NativeHistogram, b: &NativeHistogram, sign: f64) -> Option<NativeHistogram> {
    if is_custom(a) != is_custom(b) {
        return None;
    }
    if is_custom(a) && a.custom_values != b.custom_values {
        return Some(combine_reconciled(a, b, sign));
    }
    let schema = a.schema.min(b.schema);
    let side = |h: &NativeHistogram, spans: &[BucketSpan], counts: &[f64]| {
        reduce(buckets(spans, counts), h.schema - schema)
    };
    let merge = |x: BTreeMap<i32, f64>, y: BTreeMap<i32, f64>| {
        let mut m = x;
        for (i, v) in y {
            *m.entry(i).or_insert(0.0) += sign * v;
        }
        m
    };
    let pos = merge(
        side(a, &a.positive_spans, &a.positive_buckets),
        side(b, &b.positive_spans, &b.positive_buckets),
    );
    let neg = merge(
        side(a, &a.negative_spans, &a.negative_buckets),
        side(b, &b.negative_spans, &b.negative_buckets),
    );
    let (positive_spans, positive_buckets) = to_spans(&pos);
    let (negative_spans, negative_buckets) = to_spans(&neg);
    Some(NativeHistogram {
        count: a.count + sign * b.count,
        sum: a.sum + sign * b.sum,
        schema,
        zero_threshold: a.zero_threshold.max(b.zero_threshold),
        zero_count: a.zero_count + sign * b.zero_count,
        positive_spans,
        positive_buckets,
        negative_spans,
        negative_buckets,
        custom_values: a.custom_values.clone(),
        reset_hint: 0,
        float: true,
    })
}

/// `a ± b` for custom-bucket histograms whose bounds differ: both mapped onto the bounds
/// they share, as Prometheus 3 reconciles them (a bucket goes to the first shared bound at or
/// above its own; one above them all to +Inf), buckets left empty dropped.
fn combine_reconciled(a: &NativeHistogram, b: &NativeHistogram, sign: f64) -> NativeHistogram {
    let bounds = shared_bounds(&a.custom_values, &b.custom_values);
    let mut target: BTreeMap<i32, f64> = BTreeMap::new();
    for (h, factor) in [(a, 1.0), (b, sign)] {
        for (idx, v) in buckets(&h.positive_spans, &h.positive_buckets) {
            let upper = custom_upper(h, idx);
            let to = bounds.partition_point(|shared| *shared < upper);
            *target.entry(to as i32).or_insert(0.0) += factor * v;
        }
    }
    target.retain(|_, v| *v != 0.0);
    let (positive_spans, positive_buckets) = to_spans(&target);
    NativeHistogram {
        count: a.count + sign * b.count,
        sum: a.sum + sign * b.sum,
        schema: a.schema,
        positive_spans,
        positive_buckets,
        custom_values: bounds,
        float: true,
        ..Default::default()
    }
}

/// A custom bucket's upper bound: its custom value, +Inf past the last.
fn custom_upper(h: &NativeHistogram, idx: i32) -> f64 {
    usize::try_from(idx)
        .ok()
        .and_then(|i| h.custom_values.get(i))
        .copied()
        .unwrap_or(f64::INFINITY)
}

/// The bounds two sorted custom-bucket layouts have in common.
fn shared_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().filter(|x| b.contains(x)).copied().collect()
}

/// Whether, between two neighbouring bounds both layouts share (the last being +Inf), the
/// count went down from `prev` to `h`: Prometheus's reset test for custom buckets whose
/// bounds differ.
fn reset_across_bounds(h: &NativeHistogram, prev: &NativeHistogram) -> bool {
    let between = |x: &NativeHistogram, low: f64, high: f64| -> f64 {
        buckets(&x.positive_spans, &x.positive_buckets)
            .into_iter()
            .filter(|(idx, _)| {
                let upper = custom_upper(x, *idx);
                upper > low && upper <= high
            })
            .map(|(_, v)| v)
            .sum()
    };
    let mut low = f64::NEG_INFINITY;
    for high in shared_bounds(&h.custom_values, &prev.custom_values)
        .into_iter()
        .chain([f64::INFINITY])
    {
        if between(h, low, high) < between(prev, low, high) {
            return true;
        }
        low = high;
    }
    false
}

pub fn add(a: &NativeHistogram, b: &NativeHistogram) -> Option<NativeHistogram> {
    combine(a, b, 1.0)
}

/// A binary operation with a histogram on one side or both: `None` where it yields nothing.
pub fn binop(op: TokenType, l: &Val, r: &Val) -> Result<Option<(Val, bool)>> {
    let h = |x: NativeHistogram| Some((Val::H(Arc::new(x)), true));
    Ok(match (op.id(), l, r) {
        (TRIM_UPPER, Val::H(a), Val::F(f)) => h(trim(a, *f, true)),
        (TRIM_LOWER, Val::H(a), Val::F(f)) => h(trim(a, *f, false)),
        (token::T_ADD, Val::H(a), Val::H(b)) => add(a, b).and_then(h),
        (token::T_SUB, Val::H(a), Val::H(b)) => combine(a, b, -1.0).and_then(h),
        (token::T_MUL, Val::H(a), Val::F(f)) | (token::T_MUL, Val::F(f), Val::H(a)) => {
            h(scale(a, *f))
        }
        (token::T_DIV, Val::H(a), Val::F(f)) => h(scale(a, 1.0 / f)),
        (token::T_EQLC, Val::H(a), Val::H(b)) => Some((l.clone(), a == b)),
        (token::T_NEQ, Val::H(a), Val::H(b)) => Some((l.clone(), a != b)),
        _ => None,
    })
}

/// A histogram as Prometheus's `FloatHistogram.String()` writes it, e.g.
/// `{count:20, sum:10, [-2,-1):2, [-0.001,0.001]:2, (0.5,1]:1}` (the label value
/// `count_values` gives a histogram).
pub fn expression(h: &NativeHistogram) -> String {
    let mut s = format!("{{count:{}, sum:{}", go_g(h.count), go_g(h.sum));
    for b in all_buckets(h).into_iter().filter(|b| b.count != 0.0) {
        s.push_str(&format!(
            ", {}{},{}{}:{}",
            if b.lower_inclusive { "[" } else { "(" },
            go_g(b.lower),
            go_g(b.upper),
            if b.upper_inclusive { "]" } else { ")" },
            go_g(b.count)
        ));
    }
    s.push('}');
    s
}

/// Go's `%g` for the values a histogram's text holds: plain decimals, exponents outside
/// [1e-4, 1e21) written as `1e+21`.
fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let a = f.abs();
    if a == 0.0 || (1e-4..1e21).contains(&a) {
        return format!("{f}");
    }
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((m, x)) if x.starts_with('-') => format!("{m}e-{:0>2}", &x[1..]),
        Some((m, x)) => format!("{m}e+{x:0>2}"),
        None => e,
    }
}

/// Applies `f` to each native histogram of a vector; floats are left out.
pub fn map_native(mut v: Vec<StepSeries>, f: impl Fn(&NativeHistogram) -> f64) -> Vec<StepSeries> {
    for s in &mut v {
        s.drop_name = true;
        for slot in s.values.iter_mut() {
            *slot = match slot.take() {
                Some(Val::H(h)) => Some(Val::F(f(&h))),
                _ => None,
            };
        }
    }
    v.retain(|s| s.values.iter().any(Option::is_some));
    v
}

/// Prometheus's tolerance for rounding noise between buckets.
const SMALL_DELTA: f64 = 1e-12;

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let norm = (a.abs() + b.abs()).min(f64::MAX);
    if a == 0.0 || b == 0.0 || norm < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / norm < epsilon
}

/// The φ-quantile of classic buckets `(upper bound, cumulative count)`, as Prometheus's
/// `BucketQuantile`.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some((ub, _)) if *ub == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Buckets with the same bound are one bucket.
    let mut coalesced: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (ub, c) in buckets {
        match coalesced.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => coalesced.push((ub, c)),
        }
    }
    let mut b = coalesced;
    let mut prev = b[0].1;
    for item in b.iter_mut().skip(1) {
        let curr = item.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA) || curr < prev {
            item.1 = prev;
            continue;
        }
        prev = curr;
    }
    if b.len() < 2 {
        return f64::NAN;
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = b[..b.len() - 1].partition_point(|x| x.1 < rank);
    if i == b.len() - 1 {
        return b[b.len() - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// A function of histograms at each step — `native` of each native histogram, `classic` of
/// each group of classic buckets (series with the same labels but `le`) — as Prometheus's
/// `histogram_quantile` and `histogram_fraction` apply them: where a native histogram and
/// classic buckets have the same labels at a step, neither gives a value.
pub fn per_histogram(
    v: &[StepSeries],
    n: usize,
    native: impl Fn(&NativeHistogram, usize) -> f64,
    classic: impl Fn(Vec<(f64, f64)>, usize) -> f64,
) -> Vec<StepSeries> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut natives: Vec<usize> = Vec::new();
    for (i, s) in v.iter().enumerate() {
        if s.values.iter().flatten().any(|v| matches!(v, Val::H(_))) {
            natives.push(i);
        }
        let Some(le) = s.labels.get("le") else {
            continue;
        };
        let Ok(ub) = parse_le(le) else { continue };
        let mut g = s.labels.clone();
        g.remove("le");
        match index.get(&g) {
            Some(&gi) => groups[gi].1.push((ub, i)),
            None => {
                index.insert(g.clone(), groups.len());
                groups.push((g, vec![(ub, i)]));
            }
        }
    }
    let buckets_at = |members: &[(f64, usize)], step: usize| -> Vec<(f64, f64)> {
        members
            .iter()
            .filter_map(|&(ub, i)| match &v[i].values[step] {
                Some(Val::F(c)) => Some((ub, *c)),
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for &i in &natives {
        let s = &v[i];
        let conflict = index.get(&s.labels).map(|&g| &groups[g].1);
        let values: Vec<Option<Val>> = (0..n)
            .map(|step| {
                let Some(Val::H(h)) = &s.values[step] else {
                    return None;
                };
                if conflict.is_some_and(|m| !buckets_at(m, step).is_empty()) {
                    return None;
                }
                Some(Val::F(native(h, step)))
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(StepSeries {
                labels: s.labels.clone(),
                values,
                drop_name: true,
            });
        }
    }
    for (labels, members) in groups {
        let native_twin = natives.iter().find(|&&i| v[i].labels == labels);
        let values: Vec<Option<Val>> = (0..n)
            .map(|step| {
                let b = buckets_at(&members, step);
                if b.is_empty() {
                    return None;
                }
                if native_twin.is_some_and(|&i| matches!(v[i].values[step], Some(Val::H(_)))) {
                    return None;
                }
                Some(Val::F(classic(b, step)))
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(StepSeries {
                labels,
                values,
                drop_name: true,
            });
        }
    }
    out
}

/// `histogram_quantile(φ, v)`.
pub fn quantile_fn(q: &[f64], v: Vec<StepSeries>, n: usize) -> Vec<StepSeries> {
    per_histogram(
        &v,
        n,
        |h, step| native_quantile(q[step], h),
        |b, step| bucket_quantile(q[step], b),
    )
}

/// A quantile as OpenMetrics writes it: `0.5`, `1.0`.
pub fn openmetrics_float(f: f64) -> String {
    let s = super::functions::format_float(f);
    if f.is_finite() && f == f.trunc() && !s.contains('e') {
        format!("{s}.0")
    } else {
        s
    }
}

pub fn parse_le(s: &str) -> std::result::Result<f64, ()> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok().filter(|f| !f.is_nan()).ok_or(()),
    }
}

/// The upper bound of bucket `idx` of an exponential schema, as Prometheus's `getBound`.
pub fn exponential_bound(idx: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = (idx as i64) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let frac_idx = idx & ((1 << schema) - 1);
    let frac = 0.5 * 2f64.powf(frac_idx as f64 / (1i64 << schema) as f64);
    let exp = ((idx >> schema) + 1) as i64;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

fn ldexp(frac: f64, exp: i64) -> f64 {
    if exp > 2000 {
        return f64::INFINITY;
    }
    if exp < -2100 {
        return 0.0;
    }
    // Two steps keep 2^exp representable where exp alone would under- or overflow.
    let half = exp / 2;
    frac * 2f64.powi(half as i32) * 2f64.powi((exp - half) as i32)
}

/// A bucket of a histogram: bounds, count, and which bounds it includes.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
}

/// Every bucket, from the lowest values to the highest: negative buckets, the zero bucket,
/// positive buckets (Prometheus's `AllBucketIterator`).
pub fn all_buckets(h: &NativeHistogram) -> Vec<Bucket> {
    let custom = is_custom(h);
    let mut out = Vec::new();
    if !custom {
        let neg = buckets(&h.negative_spans, &h.negative_buckets);
        for (&i, &c) in neg.iter().rev() {
            out.push(bucket_at(h, i, false, c, false));
        }
        if h.zero_threshold != 0.0 || h.zero_count != 0.0 {
            out.push(Bucket {
                lower: -h.zero_threshold,
                upper: h.zero_threshold,
                count: h.zero_count,
                lower_inclusive: true,
                upper_inclusive: true,
            });
        }
    }
    for (&i, &c) in buckets(&h.positive_spans, &h.positive_buckets).iter() {
        out.push(bucket_at(h, i, true, c, custom));
    }
    out
}

/// A native histogram as the Prometheus HTTP API writes it.
pub fn histogram_json(h: &NativeHistogram) -> serde_json::Value {
    let s = super::functions::format_float;
    let buckets: Vec<serde_json::Value> = all_buckets(h)
        .into_iter()
        .filter(|b| b.count != 0.0)
        .map(|b| {
            let rule = match (b.lower_inclusive, b.upper_inclusive) {
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (true, true) => 3,
            };
            serde_json::json!([rule, s(b.lower), s(b.upper), s(b.count)])
        })
        .collect();
    serde_json::json!({"count": s(h.count), "sum": s(h.sum), "buckets": buckets})
}

pub fn is_custom(h: &NativeHistogram) -> bool {
    h.schema == sightline_storage::metrics::histogram::CUSTOM_BUCKETS_SCHEMA
}

/// Reset hints, as remote write numbers them.
pub const HINT_RESET: i8 = 1;
pub const HINT_NOT_RESET: i8 = 2;
pub const HINT_GAUGE: i8 = 3;

/// Whether `h` follows a counter reset after `prev` (Prometheus's `DetectReset`): by its hint,
/// else by any count (total, zero bucket, any bucket in the coarser schema) going down.
pub fn detect_reset(h: &NativeHistogram, prev: &NativeHistogram) -> bool {
    match h.reset_hint {
        HINT_RESET => return true,
        HINT_NOT_RESET => return false,
        _ => {}
    }
    if h.count < prev.count {
        return true;
    }
    if is_custom(h) != is_custom(prev) {
        return true;
    }
    if is_custom(h) && h.custom_values != prev.custom_values {
        return reset_across_bounds(h, prev);
    }
    if h.schema > prev.schema || h.zero_threshold < prev.zero_threshold {
        return true;
    }
    if h.zero_count < prev.zero_count {
        return true;
    }
    let down = |hs: &[BucketSpan], hb: &[f64], ps: &[BucketSpan], pb: &[f64]| {
        let cur = buckets(hs, hb);
        let before = reduce(buckets(ps, pb), prev.schema - h.schema);
        before
            .iter()
            .any(|(i, c)| *c > cur.get(i).copied().unwrap_or(0.0))
    };
    down(
        &h.positive_spans,
        &h.positive_buckets,
        &prev.positive_spans,
        &prev.positive_buckets,
    ) || down(
        &h.negative_spans,
        &h.negative_buckets,
        &prev.negative_spans,
        &prev.negative_buckets,
    )
}

/// `last - first` of a window of histograms, with counter resets added back for counters
/// (Prometheus's `histogramRate`); `None` for a mix Prometheus refuses.
pub fn window_delta(points: &[&NativeHistogram], counter: bool) -> Option<NativeHistogram> {
    let last = *points.last()?;
    let mut prev = points[0].clone();
    if counter && points.len() > 1 && detect_reset(points[1], &prev) {
        prev = NativeHistogram {
            schema: points[1].schema,
            custom_values: points[1].custom_values.clone(),
            float: true,
            ..Default::default()
        };
    }
    if is_custom(last) != is_custom(&prev) {
        return None;
    }
    if points[1..points.len() - 1]
        .iter()
        .any(|h| counter && is_custom(h) != is_custom(&prev))
    {
        return None;
    }
    let mut h = combine(last, &prev, -1.0)?;
    if counter {
        // From the first point as used above: a reset right after it was dealt with there.
        let mut before: &NativeHistogram = &prev;
        for cur in &points[1..] {
            if detect_reset(cur, before) {
                h = add(&h, before)?;
            }
            before = cur;
        }
    }
    h.reset_hint = HINT_GAUGE;
    Some(h)
}

/// The φ-quantile of a native histogram (Prometheus's `HistogramQuantile`).
pub fn native_quantile(q: f64, h: &NativeHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let mut all = all_buckets(h);
    let forward = h.sum.is_nan() || q < 0.5;
    let mut rank = if forward {
        q * h.count
    } else {
        (1.0 - q) * h.count
    };
    if !forward {
        all.reverse();
    }
    let mut count = 0.0;
    let mut idx = None;
    for (i, b) in all.iter().enumerate() {
        if b.count == 0.0 {
            continue;
        }
        count += b.count;
        idx = Some(i);
        if count >= rank {
            break;
        }
    }
    let Some(i) = idx else {
        return f64::NAN;
    };
    let mut b = all[i];
    let custom = is_custom(h);
    if !custom && b.lower < 0.0 && b.upper > 0.0 {
        if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
            b.lower = 0.0;
        } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
            b.upper = 0.0;
        }
    } else if custom {
        if b.lower == f64::NEG_INFINITY {
            if b.upper <= 0.0 {
                return b.upper;
            }
            b.lower = 0.0;
        } else if b.upper == f64::INFINITY {
            return b.lower;
        }
    }
    if count > h.count {
        count = h.count;
    }
    if count < rank {
        if h.sum.is_nan() {
            return f64::NAN;
        }
        return b.upper;
    }
    if forward {
        rank -= count - b.count;
    } else {
        rank = count - rank;
    }
    let fraction = rank / b.count;
    if custom || (b.lower <= 0.0 && b.upper >= 0.0) {
        return b.lower + (b.upper - b.lower) * fraction;
    }
    let (log_lower, log_upper) = (b.lower.abs().log2(), b.upper.abs().log2());
    if b.lower > 0.0 {
        return (log_lower + (log_upper - log_lower) * fraction).exp2();
    }
    -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
}

fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - b.lower) / (b.upper - b.lower);
    }
    let (ll, lu, lv) = (b.lower.abs().log2(), b.upper.abs().log2(), v.abs().log2());
    if v > 0.0 {
        (lv - ll) / (lu - ll)
    } else {
        1.0 - ((lv - lu) / (ll - lu))
    }
}

/// The share of observations between `lower` and `upper` (Prometheus's `HistogramFraction`).
pub fn native_fraction(lower: f64, upper: f64, h: &NativeHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let custom = is_custom(h);
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let all = all_buckets(h);
    let mut count = 0.0;
    let mut consumed = 0;
    for mut b in all.iter().copied() {
        consumed += 1;
        count += b.count;
        let mut zero_bucket = false;
        if custom {
            if b.lower == f64::NEG_INFINITY && b.upper > 0.0 {
                b.lower = 0.0;
            }
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            zero_bucket = true;
            if h.negative_buckets.is_empty() && !h.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if h.positive_buckets.is_empty() && !h.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        }
        let interpolate = |v: f64, rank: f64| {
            if custom || zero_bucket {
                if b.lower == f64::NEG_INFINITY {
                    return b.count;
                }
                rank + b.count * fraction_below(&b, v, true)
            } else {
                rank + b.count * fraction_below(&b, v, false)
            }
        };
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = interpolate(lower, rank);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = interpolate(upper, rank);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    if h.sum.is_nan() {
        count += all[consumed..].iter().map(|b| b.count).sum::<f64>();
    } else {
        count = h.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / h.count
}

/// The share of observations between `lower` and `upper` in classic buckets
/// (Prometheus's `BucketFraction`).
pub fn bucket_fraction(lower: f64, upper: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if b.is_empty() {
        return f64::NAN;
    }
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b[b.len() - 1].0 != f64::INFINITY {
        return f64::NAN;
    }
    let b = coalesce(b);
    let count = b[b.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if b[0].0 <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, &(upper_bound, c)) in b.iter().enumerate() {
        if i > 0 {
            lower_bound = b[i - 1].0;
        }
        let interpolate = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                return c;
            }
            rank + (c - rank) * (v - lower_bound) / (upper_bound - lower_bound)
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = c;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

fn coalesce(b: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (ub, c) in b {
        match out.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => out.push((ub, c)),
        }
    }
    out
}

/// The estimated variance of a native histogram's observations (Prometheus's
/// `histogram_stdvar`): each bucket's observations at its midpoint (geometric for exponential
/// buckets, 0 in the zero bucket).
pub fn native_variance(h: &NativeHistogram) -> f64 {
    let mean = h.sum / h.count;
    let (mut var, mut c) = (0.0, 0.0);
    for b in all_buckets(h) {
        if b.count == 0.0 {
            continue;
        }
        let val = if is_custom(h) {
            (b.upper + b.lower) / 2.0
        } else if b.lower <= 0.0 && b.upper >= 0.0 {
            0.0
        } else {
            let v = (b.upper * b.lower).sqrt();
            if b.upper < 0.0 {
                -v
            } else {
                v
            }
        };
        let delta = val - mean;
        (var, c) = super::functions::kahan_inc(b.count * delta * delta, var, c);
    }
    (var + c) / h.count
}

/// Token ids for the histogram trim operators `</` (keep what is below) and `>/` (keep what is
/// above), which `promql-parser` has none for; outside its range of ids.
pub const TRIM_UPPER: u16 = 0xff01;
pub const TRIM_LOWER: u16 = 0xff02;

/// `h </ rhs` (upper) or `h >/ rhs`: the observations on one side of `rhs`, each bucket cut by
/// interpolation, the sum re-estimated from midpoints (Prometheus's `TrimBuckets`).
pub fn trim(h: &NativeHistogram, rhs: f64, upper: bool) -> NativeHistogram {
    let custom = is_custom(h);
    let mut out = h.clone();
    out.float = true;
    let (mut count, mut sum) = (0.0, 0.0);
    let mut trimmed = false;
    let all = all_buckets(h);
    // Positive (and custom) buckets, then negative ones, as Prometheus visits them.
    let mut trim_side = |spans: &[BucketSpan], counts: &mut Vec<f64>, positive: bool| {
        let mut any = false;
        for (slot, idx) in bucket_positions(spans, counts.len())
            .into_iter()
            .enumerate()
        {
            let c = counts[slot];
            if c == 0.0 {
                continue;
            }
            any = true;
            let b = bucket_at(h, idx, positive, c, custom);
            let (keep, mid) = trim_bucket(&b, rhs, upper, positive, custom);
            count += keep;
            sum += mid * keep;
            if c != keep {
                counts[slot] = keep;
                trimmed = true;
            }
        }
        any
    };
    let mut new_pos = h.positive_buckets.clone();
    let mut new_neg = h.negative_buckets.clone();
    let has_pos = trim_side(&h.positive_spans, &mut new_pos, true);
    let has_neg = trim_side(&h.negative_spans, &mut new_neg, false);
    if h.zero_count > 0.0 {
        let zb = all
            .iter()
            .find(|b| b.lower_inclusive && b.upper_inclusive)
            .copied()
            .unwrap_or(Bucket {
                lower: -h.zero_threshold,
                upper: h.zero_threshold,
                count: h.zero_count,
                lower_inclusive: true,
                upper_inclusive: true,
            });
        let (keep, mid) = zero_bucket_trim(&zb, rhs, has_neg, has_pos, upper);
        if h.zero_count != keep {
            out.zero_count = keep;
            trimmed = true;
        }
        sum += mid * keep;
        count += keep;
    }
    if trimmed {
        out.positive_buckets = new_pos;
        out.negative_buckets = new_neg;
        out.count = count;
        out.sum = sum;
    }
    out
}

fn bucket_positions(spans: &[BucketSpan], n: usize) -> Vec<i32> {
    let mut out = Vec::with_capacity(n);
    let mut idx = 0;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            out.push(idx);
            idx += 1;
        }
    }
    out
}

fn bucket_at(h: &NativeHistogram, i: i32, positive: bool, count: f64, custom: bool) -> Bucket {
    let (lower, upper) = if custom {
        let cv = &h.custom_values;
        let bound = |j: i32| {
            if j < 0 {
                f64::NEG_INFINITY
            } else {
                cv.get(j as usize).copied().unwrap_or(f64::INFINITY)
            }
        };
        (bound(i - 1), bound(i))
    } else if positive {
        (
            exponential_bound(i - 1, h.schema),
            exponential_bound(i, h.schema),
        )
    } else {
        (
            -exponential_bound(i, h.schema),
            -exponential_bound(i - 1, h.schema),
        )
    };
    Bucket {
        lower,
        upper,
        count,
        lower_inclusive: !positive,
        upper_inclusive: positive,
    }
}

fn trim_bucket(b: &Bucket, rhs: f64, upper: bool, positive: bool, custom: bool) -> (f64, f64) {
    let (keep_all, contains) = if upper {
        (b.upper <= rhs, b.lower < rhs)
    } else {
        (b.lower >= rhs, b.upper > rhs)
    };
    if keep_all {
        (b.count, midpoint(b.lower, b.upper, positive, custom))
    } else if contains {
        bucket_trim(b, rhs, upper, positive, custom)
    } else {
        (0.0, 0.0)
    }
}

fn infinity_bucket_trim(upper_trim: bool, b: &Bucket, rhs: f64) -> (f64, f64) {
    let zero_if_inf = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        if upper_trim {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper.is_finite() {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, zero_if_inf(b.upper));
        }
        if rhs <= b.lower {
            return (b.count, 0.0);
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper.is_finite() {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, zero_if_inf(b.upper));
    }
    if upper_trim {
        return (0.0, zero_if_inf(b.lower));
    }
    if rhs >= b.lower {
        return (b.count, rhs);
    }
    (0.0, zero_if_inf(b.lower))
}

fn split(b: &Bucket, rhs: f64, linear: bool) -> f64 {
    if rhs <= b.lower {
        return 0.0;
    }
    if rhs >= b.upper {
        return b.count;
    }
    b.count * fraction_below(b, rhs, linear)
}

fn zero_bucket_trim(z: &Bucket, rhs: f64, has_neg: bool, has_pos: bool, upper: bool) -> (f64, f64) {
    let (mut lower, mut top) = (z.lower, z.upper);
    if has_neg && !has_pos {
        top = 0.0;
    }
    if has_pos && !has_neg {
        lower = 0.0;
    }
    let (fraction, mid) = if upper {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= top {
            return (z.count, (lower + top) / 2.0);
        }
        ((rhs - lower) / (top - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (z.count, (lower + top) / 2.0);
        }
        if rhs >= top {
            return (0.0, 0.0);
        }
        ((top - rhs) / (top - lower), (rhs + top) / 2.0)
    };
    (z.count * fraction, mid)
}

fn bucket_trim(b: &Bucket, rhs: f64, upper: bool, positive: bool, custom: bool) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return infinity_bucket_trim(upper, b, rhs);
    }
    let under = split(b, rhs, custom);
    if upper {
        (under, midpoint(b.lower, rhs, positive, custom))
    } else {
        (b.count - under, midpoint(rhs, b.upper, positive, custom))
    }
}

fn midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        if upper > 0.0 {
            return upper / 2.0;
        }
        return upper;
    } else if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let g = (lower * upper).abs().sqrt();
    if positive {
        g
    } else {
        -g
    }
}

//! Prometheus's own PromQL test files, run against Sightline's engine over the real store.
//!
//! The files come from the Go module `github.com/prometheus/prometheus` (fetched with
//! `go mod download` at test time, never copied here). Each `load` block is written into a
//! fresh store through the same builder the receivers use; each `eval` runs as promqltest runs
//! it: the query itself, then for an instant query the same query with `@` on every selector
//! at several times, and as a range query one minute either side; values compared with a
//! relative tolerance of 1e-6.
//!
//! Evals that fail are listed, each with why, in `tests/promqltest/skips.txt`; an eval that
//! fails and is not listed fails this test, and so does one listed that now passes.
//! `PROMQL_WRITE_SKIPS=1` rewrites that list from this run; `PROMQL_TABLE=docs/promql.md`
//! rewrites the table of results there.

mod common;
mod promqltest;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr};
use promqltest::{Command as Cmd, Eval, SeriesDef, Value};
use sightline_query::promql::{self, Labels, Options, QueryResult, RawSeries, StoreSource, Val};
use sightline_query::{LiveStore, QueryEngine};
use sightline_storage::metrics::{MetricBatchBuilder, MetricsConfig, NativeHistogram};
use sightline_storage::{Store, StoreConfig};

const MODULE: &str = "github.com/prometheus/prometheus";
const VERSION: &str = "v0.316.0";
const SKIPS: &str = "tests/promqltest/skips.txt";

fn testdata() -> PathBuf {
    common::go_module_dir(MODULE, VERSION).join("promql/promqltest/testdata")
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    engine: QueryEngine,
}

fn metrics_config() -> MetricsConfig {
    // Test data is from 1970: the whole past is inside the window.
    let century = Duration::from_secs(100 * 365 * 86_400);
    MetricsConfig {
        out_of_order_window: century,
        future_grace: century,
        ..MetricsConfig::default()
    }
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.metrics = metrics_config();
        // Test data is from 1970: retention would take it away mid-file.
        config.engine.retention = Duration::from_secs(100 * 365 * 86_400);
        let store = Store::open(config).unwrap();
        let engine = QueryEngine::new(Arc::new(LiveStore(store.clone()))).unwrap();
        Self {
            _dir: dir,
            store,
            engine,
        }
    }

    async fn load(&self, load: &promqltest::Load) -> Result<(), String> {
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut b = MetricBatchBuilder::new(&metrics_config(), now);
        let converted = if load.with_nhcb {
            custom_bucket_histograms(load)
        } else {
            Vec::new()
        };
        for s in load.series.iter().chain(&converted) {
            let mut labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let Some(series) = b.series(&mut labels, s.values.len() as u64) else {
                continue;
            };
            for (i, v) in s.values.iter().enumerate() {
                let t = i as i64 * load.interval_ms;
                match v {
                    Value::Omitted => {}
                    Value::F(f) => b.sample(series, t, *f, None),
                    Value::H(h) => b.histogram(series, t, None, h.clone()),
                }
            }
        }
        let report = self
            .store
            .write_metrics(b.finish())
            .await
            .map_err(|e| e.to_string())?;
        match report.message("points") {
            Some(m) => Err(m),
            None => Ok(()),
        }
    }
}

/// What `load_with_nhcb` adds: each classic histogram (`_bucket{le}`, `_count`, `_sum` with the
/// same other labels) also as a native histogram with custom buckets, per timestamp, as
/// promqltest's `appendCustomHistogram` does.
fn custom_bucket_histograms(load: &promqltest::Load) -> Vec<SeriesDef> {
    #[derive(Default)]
    struct Temp {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        sum: f64,
        invalid: bool,
    }
    let mut by_series: BTreeMap<Vec<(String, String)>, BTreeMap<usize, Temp>> = BTreeMap::new();
    for s in &load.series {
        let name = s
            .labels
            .iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let (kind, base) = if let Some(b) = name.strip_suffix("_bucket") {
            ("bucket", b)
        } else if let Some(b) = name.strip_suffix("_count") {
            ("count", b)
        } else if let Some(b) = name.strip_suffix("_sum") {
            ("sum", b)
        } else {
            continue;
        };
        let le = s
            .labels
            .iter()
            .find(|(n, _)| n == "le")
            .map(|(_, v)| v.clone());
        let le = match (kind, &le) {
            ("bucket", Some(v)) => match promqltest::parse_number(v) {
                Some(f) if !f.is_nan() => Some(f),
                _ => continue,
            },
            ("bucket", None) => continue,
            _ => None,
        };
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "le" && n != "__name__")
            .cloned()
            .collect();
        labels.push(("__name__".into(), base.to_string()));
        labels.sort();
        let per_t = by_series.entry(labels).or_default();
        for (i, v) in s.values.iter().enumerate() {
            let Value::F(f) = v else { continue };
            let t = per_t.entry(i).or_default();
            match kind {
                "bucket" => {
                    let le = le.unwrap_or(f64::INFINITY);
                    if *f < 0.0 {
                        t.invalid = true;
                    }
                    if !t.buckets.iter().any(|(b, _)| *b == le) {
                        t.buckets.push((le, *f));
                    }
                }
                "count" => t.count = Some(*f),
                _ => t.sum = *f,
            }
        }
    }
    let mut out = Vec::new();
    for (labels, per_t) in by_series {
        let mut values = Vec::new();
        for (i, t) in per_t {
            let mut buckets = t.buckets;
            buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            if t.invalid || buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                continue;
            }
            let count = match (t.count, buckets.last()) {
                (Some(c), _) => c,
                (None, Some(b)) => b.1,
                (None, None) => continue,
            };
            if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
                buckets.push((f64::INFINITY, count));
            }
            if buckets.last().map(|b| b.1) != Some(count) {
                continue;
            }
            let mut counts = Vec::new();
            let mut prev = 0.0;
            for (_, c) in &buckets {
                counts.push(c - prev);
                prev = *c;
            }
            let h = NativeHistogram {
                count,
                sum: t.sum,
                schema: -53,
                positive_spans: vec![sightline_storage::metrics::BucketSpan {
                    offset: 0,
                    length: counts.len() as u32,
                }],
                positive_buckets: counts,
                custom_values: buckets[..buckets.len() - 1].iter().map(|b| b.0).collect(),
                float: true,
                ..Default::default()
            };
            while values.len() < i {
                values.push(Value::Omitted);
            }
            values.push(Value::H(h));
        }
        out.push(SeriesDef { labels, values });
    }
    out
}

fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

/// Absolute bucket index → count, zeros left out: two histograms are the same if these are.
fn bucket_map(
    spans: &[sightline_storage::metrics::BucketSpan],
    counts: &[f64],
) -> BTreeMap<i32, f64> {
    let mut out = BTreeMap::new();
    let mut idx = 0;
    let mut c = counts.iter();
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            if let Some(v) = c.next() {
                if *v != 0.0 {
                    out.insert(idx, *v);
                }
            }
            idx += 1;
        }
    }
    out
}

fn same_histogram(exp: &NativeHistogram, got: &NativeHistogram) -> bool {
    let maps_equal = |a: BTreeMap<i32, f64>, b: BTreeMap<i32, f64>| {
        a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|((i, x), (j, y))| i == j && almost_equal(*x, *y))
    };
    exp.schema == got.schema
        && almost_equal(exp.count, got.count)
        && almost_equal(exp.sum, got.sum)
        && exp.zero_threshold == got.zero_threshold
        && almost_equal(exp.zero_count, got.zero_count)
        && exp.custom_values == got.custom_values
        && maps_equal(
            bucket_map(&exp.positive_spans, &exp.positive_buckets),
            bucket_map(&got.positive_spans, &got.positive_buckets),
        )
        && maps_equal(
            bucket_map(&exp.negative_spans, &exp.negative_buckets),
            bucket_map(&got.negative_spans, &got.negative_buckets),
        )
}

fn same_value(exp: &Value, got: &Val) -> Result<(), String> {
    match (exp, got) {
        (Value::F(e), Val::F(g)) if almost_equal(*e, *g) => Ok(()),
        (Value::H(e), Val::H(g)) if same_histogram(e, g) => Ok(()),
        (Value::F(e), Val::F(g)) => Err(format!("expected {e} but got {g}")),
        (Value::H(e), Val::H(g)) => Err(format!("expected histogram {e:?} but got {g:?}")),
        (Value::F(e), Val::H(_)) => Err(format!("expected float {e} but got a histogram")),
        (Value::H(_), Val::F(g)) => Err(format!("expected a histogram but got float {g}")),
        (Value::Omitted, _) => Err("expected no value".into()),
    }
}

fn expected_by_labels(e: &Eval) -> HashMap<Labels, (usize, &SeriesDef)> {
    e.expected
        .iter()
        .enumerate()
        .map(|(i, s)| (Labels::new(s.labels.clone()), (i, s)))
        .collect()
}

fn compare_matrix(e: &Eval, m: &[RawSeries], start: i64, step: i64) -> Result<(), String> {
    if e.scalar.is_some() {
        return Err("expected scalar result, but got matrix".into());
    }
    let exp = expected_by_labels(e);
    for s in m {
        let Some((_, def)) = exp.get(&s.labels) else {
            return Err(format!("unexpected metric {} in result", s.labels));
        };
        let expected: Vec<(i64, &Value)> = def
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| !matches!(v, Value::Omitted))
            .map(|(i, v)| (start + i as i64 * step, v))
            .collect();
        if expected.len() != s.points.len() {
            return Err(format!(
                "expected {} points for {}, but got {}: {:?}",
                expected.len(),
                s.labels,
                s.points.len(),
                s.points
                    .iter()
                    .map(|p| (p.t, p.v.float()))
                    .collect::<Vec<_>>()
            ));
        }
        for ((t, v), p) in expected.iter().zip(&s.points) {
            if *t != p.t {
                return Err(format!(
                    "expected a point at {t} for {}, but it was at {}",
                    s.labels, p.t
                ));
            }
            same_value(v, &p.v).map_err(|err| format!("{} at {t}: {err}", s.labels))?;
        }
    }
    if exp.len() != m.len() {
        for l in exp.keys() {
            if !m.iter().any(|s| &s.labels == l) {
                return Err(format!("expected metric {l} not found"));
            }
        }
    }
    Ok(())
}

fn compare_vector(e: &Eval, v: &[(Labels, i64, Val)], check_order: bool) -> Result<(), String> {
    if e.scalar.is_some() {
        return Err("expected scalar result, but got vector".into());
    }
    let exp = expected_by_labels(e);
    for (pos, (l, _, val)) in v.iter().enumerate() {
        let Some((i, def)) = exp.get(l) else {
            return Err(format!(
                "unexpected metric {l} in result, value {:?}",
                val.float()
            ));
        };
        if check_order && e.ordered && *i != pos {
            return Err(format!(
                "expected {l} at position {} but it was at {}",
                i + 1,
                pos + 1
            ));
        }
        let want = def
            .values
            .first()
            .ok_or("expected series without a value")?;
        same_value(want, val).map_err(|err| format!("{l}: {err}"))?;
    }
    if exp.len() != v.len() {
        for l in exp.keys() {
            if !v.iter().any(|(g, _, _)| g == l) {
                let got: Vec<String> = v.iter().map(|(g, _, _)| g.to_string()).collect();
                return Err(format!("expected metric {l} not found in {got:?}"));
            }
        }
        return Err("duplicate series in result".into());
    }
    Ok(())
}

fn compare(e: &Eval, r: &QueryResult, check_order: bool) -> Result<(), String> {
    match r {
        QueryResult::Scalar { v, .. } => match e.scalar {
            Some(want) if almost_equal(want, *v) => Ok(()),
            Some(want) => Err(format!("expected scalar {want} but got {v}")),
            None => Err(format!(
                "expected vector or matrix result, but got scalar {v}"
            )),
        },
        QueryResult::String { v, .. } => match &e.string {
            Some(s) if s == v => Ok(()),
            _ => Err(format!("expected {:?} but got string {v:?}", e.string)),
        },
        QueryResult::Vector(v) => {
            if e.string.is_some() {
                return Err("expected a string".into());
            }
            compare_vector(e, v, check_order)
        }
        QueryResult::Matrix(m) => {
            if e.ordered && !e.range {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            compare_matrix(e, m, e.start, e.step.max(1))
        }
    }
}

/// Functions whose result changes with the evaluation time even when their arguments do not:
/// promqltest does not re-run queries with them at other times.
const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "end",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "range",
    "start",
    "step",
    "time",
    "timestamp",
];

fn at_time(ms: i64) -> AtModifier {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    AtModifier::At(t)
}

/// Sets `@ ms` on every selector and subquery that has none, not inside a subquery that has
/// one; false if the expression calls a function that makes this unsafe.
fn set_at(e: &mut Expr, ms: i64) -> bool {
    let mut safe = true;
    fn walk(e: &mut Expr, ms: i64, safe: &mut bool) {
        match e {
            Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = Some(at_time(ms)),
            Expr::MatrixSelector(m) if m.vs.at.is_none() => m.vs.at = Some(at_time(ms)),
            Expr::Subquery(sq) => {
                if sq.at.is_none() {
                    sq.at = Some(at_time(ms));
                    // Selectors inside keep their own times.
                    check_calls(&sq.expr, safe);
                } else {
                    check_calls(&sq.expr, safe);
                }
            }
            Expr::Aggregate(a) => {
                walk(&mut a.expr, ms, safe);
                if let Some(p) = &mut a.param {
                    walk(p, ms, safe);
                }
            }
            Expr::Unary(u) => walk(&mut u.expr, ms, safe),
            Expr::Binary(b) => {
                walk(&mut b.lhs, ms, safe);
                walk(&mut b.rhs, ms, safe);
            }
            Expr::Paren(p) => walk(&mut p.expr, ms, safe),
            Expr::Call(c) => {
                if AT_UNSAFE.contains(&c.func.name) {
                    *safe = false;
                }
                for a in &mut c.args.args {
                    walk(a, ms, safe);
                }
            }
            _ => {}
        }
    }
    fn check_calls(e: &Expr, safe: &mut bool) {
        match e {
            Expr::Call(c) => {
                if AT_UNSAFE.contains(&c.func.name) {
                    *safe = false;
                }
                for a in &c.args.args {
                    check_calls(a, safe);
                }
            }
            Expr::Aggregate(a) => {
                check_calls(&a.expr, safe);
                if let Some(p) = &a.param {
                    check_calls(p, safe);
                }
            }
            Expr::Unary(u) => check_calls(&u.expr, safe),
            Expr::Binary(b) => {
                check_calls(&b.lhs, safe);
                check_calls(&b.rhs, safe);
            }
            Expr::Paren(p) => check_calls(&p.expr, safe),
            Expr::Subquery(s) => check_calls(&s.expr, safe),
            _ => {}
        }
    }
    walk(e, ms, &mut safe);
    safe
}

fn check_failure(e: &Eval, err: &str) -> Result<(), String> {
    if let Some(m) = &e.fail_message {
        if m != err {
            return Err(format!("expected error {m:?} but got {err:?}"));
        }
    }
    if let Some(r) = &e.fail_regex {
        let re = regex_lite(r);
        if !re(err) {
            return Err(format!("expected error matching {r:?} but got {err:?}"));
        }
    }
    Ok(())
}

/// Expected-failure regexps are plain substrings or simple patterns in these files.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool + '_ {
    move |s: &str| {
        let p = pattern.trim_matches('/');
        let literal = p
            .replace("\\(", "(")
            .replace("\\)", ")")
            .replace("\\.", ".");
        s.contains(&literal) || p.split(".*").all(|part| s.contains(part))
    }
}

async fn run_instant(
    h: &Harness,
    e: &Eval,
    expr: &Expr,
    t: i64,
    opts: &Options,
    range_check: bool,
) -> Result<(), String> {
    let source = StoreSource::new(h.engine.pinned());
    let r = promql::instant(&source, expr, t, opts)
        .await
        .map(|a| a.result);
    let r = match (r, e.fail) {
        (Err(err), true) => return check_failure(e, &err.to_string()),
        (Err(err), false) => return Err(format!("error: {err}")),
        (Ok(_), true) => return Err("expected an error but got none".into()),
        (Ok(r), false) => r,
    };
    compare(e, &r, true)?;
    if !range_check {
        return Ok(());
    }
    let rr = promql::range(&source, expr, t - 60_000, t + 60_000, 60_000, opts)
        .await
        .map(|a| a.result)
        .map_err(|err| format!("range mode: error: {err}"))?;
    let QueryResult::Matrix(m) = rr else {
        return Err("range mode: not a matrix".into());
    };
    let vector: Vec<(Labels, i64, Val)> = m
        .into_iter()
        .filter_map(|s| {
            let p = s.points.into_iter().find(|p| p.t == t)?;
            Some((s.labels, t, p.v))
        })
        .collect();
    let as_result = match r {
        QueryResult::Scalar { .. } => QueryResult::Scalar {
            t,
            v: vector.first().and_then(|v| v.2.float()).unwrap_or(f64::NAN),
        },
        _ => QueryResult::Vector(vector),
    };
    compare(e, &as_result, false).map_err(|err| format!("range mode: {err}"))
}

async fn run_eval(h: &Harness, e: &Eval, opts: &Options) -> Result<(), String> {
    let expr = match promql::parse(&e.expr) {
        Ok(x) => x,
        Err(err) if e.fail => return check_failure(e, &err.to_string()),
        Err(err) => return Err(format!("parse error: {err}")),
    };
    if e.range {
        let source = StoreSource::new(h.engine.pinned());
        let r = promql::range(&source, &expr, e.start, e.end, e.step, opts)
            .await
            .map(|a| a.result);
        return match (r, e.fail) {
            (Err(err), true) => check_failure(e, &err.to_string()),
            (Err(err), false) => Err(format!("error: {err}")),
            (Ok(_), true) => Err("expected an error but got none".into()),
            (Ok(r), false) => compare(e, &r, false),
        };
    }
    let t = e.end;
    let context_fn = ["start()", "end()", "range()", "step()"]
        .iter()
        .any(|f| e.expr.contains(f));
    let range_check = !e.exclude_from_range && !context_fn && !e.ordered && !e.range_vector;
    run_instant(h, e, &expr, t, opts, range_check).await?;
    // The same query with `@` at several times, as promqltest's atModifierTestCases.
    let mut at_expr = expr.clone();
    if set_at(&mut at_expr, t) {
        let times: Vec<i64> = if t == 0 {
            vec![-1000, 0, 1000]
        } else {
            vec![-10 * t, 0, t / 5, t, 10 * t]
        };
        for et in times {
            run_instant(h, e, &at_expr, et, opts, range_check)
                .await
                .map_err(|err| format!("with @ {t} at {et}: {err}"))?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct FileResult {
    passed: usize,
    total: usize,
    failures: Vec<(usize, String)>,
}

async fn run_file(name: &str, text: &str, opts: &Options) -> FileResult {
    let mut out = FileResult::default();
    let cmds = match promqltest::parse_file(text) {
        Ok(c) => c,
        Err(err) => {
            out.failures
                .push((0, format!("the file does not parse: {err}")));
            return out;
        }
    };
    let mut h = Harness::new();
    let mut load_error: Option<String> = None;
    for c in &cmds {
        match c {
            Cmd::Clear => {
                h.store.shutdown();
                h = Harness::new();
                load_error = None;
            }
            Cmd::Load(l) => {
                if let Err(err) = h.load(l).await {
                    load_error = Some(err);
                }
            }
            Cmd::Eval(e) => {
                out.total += 1;
                let r = tokio::time::timeout(Duration::from_secs(30), run_eval(&h, e, opts))
                    .await
                    .unwrap_or_else(|_| Err("timed out after 30 s".into()));
                match r {
                    Ok(()) => out.passed += 1,
                    Err(err) => {
                        let err = match &load_error {
                            Some(l) => format!("{err} (a load before it was refused in part: {l})"),
                            None => err,
                        };
                        out.failures.push((e.line, err));
                    }
                }
            }
        }
    }
    h.store.shutdown();
    let _ = name;
    out
}

fn read_skips() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(SKIPS).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, why) = l.split_once(char::is_whitespace)?;
            Some((k.to_string(), why.trim().to_string()))
        })
        .collect()
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

#[test]
fn prometheus_promql_test_files() {
    let dir = std::env::var_os("PROMQL_TESTDATA").map_or_else(testdata, PathBuf::from);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = Options {
        max_samples: 10_000_000,
        ..Options::default()
    };
    let skips = read_skips();
    let mut table = Vec::new();
    let mut unexpected = Vec::new();
    let mut new_skips = Vec::new();
    // PROMQL_FILES=a.test,b.test runs only those (for working on them).
    let only: Option<Vec<String>> = std::env::var("PROMQL_FILES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let r = rt.block_on(run_file(&name, &text, &opts));
        eprintln!("promql {name}: {}/{} passed", r.passed, r.total);
        let failed: HashMap<String, &String> = r
            .failures
            .iter()
            .map(|(line, err)| (format!("{name}:{line}"), err))
            .collect();
        for (key, err) in &failed {
            if only.is_some() {
                eprintln!("{key} {}", one_line(err));
            }
            new_skips.push(format!("{key} {}", one_line(err)));
            if !skips.contains_key(key) {
                unexpected.push(format!("{key} fails: {}", one_line(err)));
            }
        }
        for key in skips.keys().filter(|k| k.starts_with(&format!("{name}:"))) {
            if !failed.contains_key(key) {
                unexpected.push(format!("{key} passes now: take it off {SKIPS}"));
            }
        }
        table.push((name, r.passed, r.total));
    }
    new_skips.sort_by_key(|l| {
        let (k, _) = l.split_once(' ').unwrap_or((l, ""));
        let (f, n) = k.rsplit_once(':').unwrap_or((k, "0"));
        (f.to_string(), n.parse::<usize>().unwrap_or(0))
    });
    let rewrite = std::env::var_os("PROMQL_WRITE_SKIPS").is_some();
    if rewrite {
        let mut text = String::from(
            "# Evals of Prometheus's PromQL test files that Sightline does not pass yet, each with\n\
             # what went wrong (file:line of the eval, then the failure). Written by\n\
             # PROMQL_WRITE_SKIPS=1 cargo test --test promql_conformance.\n",
        );
        for l in &new_skips {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(SKIPS, text).unwrap();
    }
    if let Some(path) = std::env::var_os("PROMQL_TABLE") {
        write_table(&PathBuf::from(path), &table);
    }
    let (passed, total) = table
        .iter()
        .fold((0, 0), |(p, t), (_, a, b)| (p + a, t + b));
    eprintln!(
        "promql: {passed}/{total} evals passed over {} files",
        table.len()
    );
    assert!(
        rewrite || unexpected.is_empty(),
        "{} evals differ from {SKIPS}:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

/// Replaces the table between the markers in `path`.
fn write_table(path: &PathBuf, table: &[(String, usize, usize)]) {
    let mut t = String::from("| file | passed | evals | |\n| --- | --- | --- | --- |\n");
    for (name, p, n) in table {
        let pct = if *n == 0 {
            100.0
        } else {
            100.0 * *p as f64 / *n as f64
        };
        t.push_str(&format!("| `{name}` | {p} | {n} | {pct:.0}% |\n"));
    }
    let (p, n) = table
        .iter()
        .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y));
    t.push_str(&format!(
        "| **all** | **{p}** | **{n}** | **{:.0}%** |\n",
        100.0 * p as f64 / n.max(1) as f64
    ));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = ("<!-- promql-table -->", "<!-- /promql-table -->");
    let new = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) => format!("{}{begin}\n{t}{}", &text[..a], &text[b..]),
        _ => format!("{text}\n{begin}\n{t}{end}\n"),
    };
    std::fs::write(path, new).unwrap();
}

//! What PromQL evaluates to: label sets, samples (floats and native histograms), and the four
//! value types, as Prometheus defines them.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use sightline_storage::metrics::NativeHistogram;

/// The label holding the metric name.
pub const NAME: &str = "__name__";

/// Labels that describe the metric rather than the series (the name and, with
/// `type_and_unit`, its type and unit): dropped together when an operation changes the metric.
pub fn is_metadata_label(name: &str) -> bool {
    matches!(name, "__name__" | "__type__" | "__unit__")
}

/// A label set, sorted by name, each name once. Shared, as most series keep their selector's
/// labels through evaluation: a clone is a reference count, a change copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        Self(Arc::new(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets (or, with an empty value, removes) a label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                Arc::make_mut(&mut self.0).remove(i);
            }
            Ok(i) if self.0[i].1 == value => {}
            Ok(i) => Arc::make_mut(&mut self.0)[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => Arc::make_mut(&mut self.0).insert(i, (name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    pub fn without_metadata(&self) -> Labels {
        self.filtered(|n| !is_metadata_label(n))
    }

    /// Only the labels named (`on`, `by`).
    pub fn keep(&self, names: &[String]) -> Labels {
        self.filtered(|n| names.iter().any(|k| k == n))
    }

    /// All labels but those named (`ignoring`, `without`).
    pub fn drop(&self, names: &[String]) -> Labels {
        self.filtered(|n| !names.iter().any(|k| k == n))
    }

    /// The labels whose names pass `keep`: this same set, shared, when all do.
    fn filtered(&self, keep: impl Fn(&str) -> bool) -> Labels {
        if self.0.iter().all(|(n, _)| keep(n)) {
            return self.clone();
        }
        Labels(Arc::new(
            self.0.iter().filter(|(n, _)| keep(n)).cloned().collect(),
        ))
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Prometheus's order of label sets: label by label, name then value, a prefix first.
impl Ord for Labels {
    fn cmp(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            match a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

/// As Prometheus writes a label set in messages: `{__name__="x", a="b"}`.
impl std::fmt::Display for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let legacy = n
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if legacy {
                write!(f, "{n}={v:?}")?;
            } else {
                write!(f, "{n:?}={v:?}")?;
            }
        }
        f.write_str("}")
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    F(f64),
    H(Arc<NativeHistogram>),
}

impl Val {
    pub fn float(&self) -> Option<f64> {
        match self {
            Val::F(f) => Some(*f),
            Val::H(_) => None,
        }
    }
}

/// A stored sample: its time (ms since the epoch) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub t: i64,
    pub v: Val,
}

/// A series as stored: every sample in the time range asked for, in time order.
#[derive(Debug, Clone, Default)]
pub struct RawSeries {
    pub labels: Labels,
    pub points: Vec<Point>,
    /// The name is to be dropped when the query ends (Prometheus's delayed name removal).
    pub drop_name: bool,
}

/// A series evaluated at each step of the query: `values[i]` is its value at step `i`.
#[derive(Debug, Clone)]
pub struct StepSeries {
    pub labels: Labels,
    pub values: Vec<Option<Val>>,
    pub drop_name: bool,
}

/// A value as the evaluator passes it up: every step at once.
#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar at each step.
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<StepSeries>),
    /// A range vector: only where the query is an instant one (`x[5m]` as the whole query).
    Matrix(Vec<RawSeries>),
}

/// A query's answer, as the HTTP API returns it.
#[derive(Debug, Clone)]
pub enum QueryResult {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        v: String,
    },
    /// One sample per series at the query's time.
    Vector(Vec<(Labels, i64, Val)>),
    /// Points per series: a range query's answer, or an instant query of a range vector.
    Matrix(Vec<RawSeries>),
}

/// Prometheus's annotations of an answer: warnings (the answer may be wrong) and infos (it may
/// not be what was meant), each once, in the words Prometheus uses — without its position in
/// the query, which the parser does not keep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Annotations {
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
}

impl Annotations {
    pub fn warn(&mut self, what: impl Into<String>) {
        self.warnings
            .insert(format!("PromQL warning: {}", what.into()));
    }

    pub fn info(&mut self, what: impl Into<String>) {
        self.infos.insert(format!("PromQL info: {}", what.into()));
    }

    /// `quantile value should be between 0 and 1, got …` for each quantile outside [0, 1].
    pub fn check_quantiles(&mut self, qs: &[f64]) {
        for &q in qs {
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                self.warn(format!(
                    "quantile value should be between 0 and 1, got {}",
                    go_float(q)
                ));
            }
        }
    }
}

/// A float as Go's `%g` writes it for the values annotations name.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{f}")
    }
}

/// A query's answer and its annotations.
#[derive(Debug, Clone)]
pub struct Answer {
    pub result: QueryResult,
    pub notes: Annotations,
}

/// Prometheus's stale marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

//! Metrics: the data model — series, samples, native histograms, exemplars, metadata — the tables
//! they live in, and what a write of them must pass: label rules, the accepted time window, and
//! cardinality limits.
//!
//! A series is identified by the 64-bit hash of its sorted labels (with a 32-bit check hash that
//! tells a collision apart), so every writer computes the same id without asking anyone, and a
//! sample row carries that id rather than its labels.

mod admission;
pub mod builder;
pub mod histogram;
pub mod registry;
pub mod tables;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

pub use admission::admit;
pub use builder::{MetricBatchBuilder, MetricWrite, SeriesRef, METRIC_NAME_LABEL};
pub use histogram::{BucketSpan, NativeHistogram};
pub use registry::SeriesRegistry;

/// Limits on what a metrics write may bring.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Samples older than this (before the arrival time) are refused, as Prometheus's
    /// out-of-order window does; within it, any order is taken.
    pub out_of_order_window: Duration,
    /// Samples further ahead than this are refused (a clock years off, a unit mistake).
    pub future_grace: Duration,
    /// Series with a sample in the current or the previous hour.
    pub max_active_series: usize,
    pub max_series_per_metric: usize,
    /// New series one request may bring.
    pub max_new_series_per_request: usize,
    /// Labels besides the metric name.
    pub max_labels_per_series: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
}

impl Default for MetricsConfig {
    /// - 10 minutes of out-of-order window and of future grace: Prometheus's common setting
    ///   and Mimir's `creation_grace_period`.
    /// - 2 million active series: twice the million the benchmark drives; the registry holds
    ///   about 30 bytes per active series, 60 MB at the limit, a tenth of the default budget.
    /// - 1,000,000 series per metric, half the active limit: no one metric can take all of it.
    ///   A big fleet's metrics are large (1,250 node_exporters give `node_interrupts_total`
    ///   360,000 series), so the limit is set by the whole, not by a guess at one metric.
    /// - 100,000 new series per request: a Prometheus remote-write batch carries at most a few
    ///   thousand samples, an OTLP export a few thousand points; only a runaway sends more.
    /// - 30 labels per series, names of 1 KiB and values of 2 KiB: Mimir's defaults.
    fn default() -> Self {
        Self {
            out_of_order_window: Duration::from_secs(600),
            future_grace: Duration::from_secs(600),
            max_active_series: 2_000_000,
            max_series_per_metric: 1_000_000,
            max_new_series_per_request: 100_000,
            max_labels_per_series: 30,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 2048,
        }
    }
}

/// Prometheus metric types, as the metadata table stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    /// The name Prometheus's metadata API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }

    /// From the enum number remote write (1.0 and 2.0) uses.
    pub fn from_remote_write(v: u64) -> Self {
        match v {
            1 => MetricType::Counter,
            2 => MetricType::Gauge,
            3 => MetricType::Histogram,
            4 => MetricType::GaugeHistogram,
            5 => MetricType::Summary,
            6 => MetricType::Info,
            7 => MetricType::StateSet,
            _ => MetricType::Unknown,
        }
    }
}

/// Series ids are hashes already: hashing them again buys nothing.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

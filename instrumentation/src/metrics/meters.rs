//! The meters: counter, timer, distribution summary, gauge and mixin.
//!
//! Recording is a few atomic operations; a counter or timer also keeps, per bucket, the
//! last observation made inside a sampled span as an exemplar (its trace and span id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;

/// Upper bounds (seconds) of a timer's histogram buckets: Prometheus' defaults.
pub const TIMER_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An observation made inside a sampled span.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: String,
    pub span_id: String,
    pub value: f64,
    pub at: SystemTime,
}

/// The exemplar for `value` if the current span is sampled.
fn current_exemplar(value: f64) -> Option<Exemplar> {
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_sampled().then(|| Exemplar {
            trace_id: sc.trace_id().to_string(),
            span_id: sc.span_id().to_string(),
            value,
            at: SystemTime::now(),
        })
    })
}

/// Adds to an f64 kept as bits.
fn add_f64(cell: &AtomicU64, value: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + value).to_bits())
    });
}

/// Raises an f64 kept as bits to at least `value`.
fn max_f64(cell: &AtomicU64, value: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        (value > f64::from_bits(bits)).then(|| value.to_bits())
    });
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    cell: Arc<CounterCell>,
}

#[derive(Debug, Default)]
struct CounterCell {
    count: AtomicU64,
    exemplar: Mutex<Option<Exemplar>>,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.cell.count.fetch_add(n, Ordering::Relaxed);
        if let Some(exemplar) = current_exemplar(n as f64) {
            if let Ok(mut slot) = self.cell.exemplar.lock() {
                *slot = Some(exemplar);
            }
        }
    }

    /// The count so far.
    pub fn count(&self) -> u64 {
        self.cell.count.load(Ordering::Relaxed)
    }

    /// The last increment made inside a sampled span.
    pub fn exemplar(&self) -> Option<Exemplar> {
        self.cell.exemplar.lock().ok().and_then(|e| e.clone())
    }
}

/// Durations: count, total time, maximum, and a histogram over [`TIMER_BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Timer {
    cell: Arc<TimerCell>,
}

#[derive(Debug, Default)]
struct TimerCell {
    count: AtomicU64,
    total_nanos: AtomicU64,
    max_nanos: AtomicU64,
    // One more than the bounds: the last counts what is above every bound.
    buckets: [AtomicU64; TIMER_BUCKETS.len() + 1],
    exemplars: Mutex<[Option<Exemplar>; TIMER_BUCKETS.len() + 1]>,
}

/// A point-in-time copy of a timer.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerSnapshot {
    pub count: u64,
    pub total: Duration,
    pub max: Duration,
    /// Per bucket of [`TIMER_BUCKETS`] (and one above), not cumulative.
    pub buckets: Vec<u64>,
    pub exemplars: Vec<Option<Exemplar>>,
}

impl Timer {
    /// Records one duration.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let cell = &self.cell;
        cell.count.fetch_add(1, Ordering::Relaxed);
        cell.total_nanos.fetch_add(nanos, Ordering::Relaxed);
        cell.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = TIMER_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(TIMER_BUCKETS.len());
        cell.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if let Some(exemplar) = current_exemplar(seconds) {
            if let Ok(mut slots) = cell.exemplars.lock() {
                slots[bucket] = Some(exemplar);
            }
        }
    }

    /// Times `work`.
    pub fn time<R>(&self, work: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let result = work();
        self.record(started.elapsed());
        result
    }

    /// Starts timing; the duration is recorded when the guard drops.
    pub fn start(&self) -> TimerGuard {
        TimerGuard {
            timer: self.clone(),
            started: Instant::now(),
        }
    }

    /// Count, total, max and buckets now.
    pub fn snapshot(&self) -> TimerSnapshot {
        let cell = &self.cell;
        TimerSnapshot {
            count: cell.count.load(Ordering::Relaxed),
            total: Duration::from_nanos(cell.total_nanos.load(Ordering::Relaxed)),
            max: Duration::from_nanos(cell.max_nanos.load(Ordering::Relaxed)),
            buckets: cell
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            exemplars: cell
                .exemplars
                .lock()
                .map(|slots| slots.to_vec())
                .unwrap_or_default(),
        }
    }
}

/// Records the time since [`Timer::start`] when dropped.
#[must_use = "the duration is recorded when the guard drops"]
pub struct TimerGuard {
    timer: Timer,
    started: Instant,
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        self.timer.record(self.started.elapsed());
    }
}

/// Amounts (sizes, counts of items): count, total and maximum.
#[derive(Debug, Clone, Default)]
pub struct DistributionSummary {
    cell: Arc<SummaryCell>,
}

#[derive(Debug, Default)]
struct SummaryCell {
    count: AtomicU64,
    total: AtomicU64,
    max: AtomicU64,
}

/// A point-in-time copy of a distribution summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummarySnapshot {
    pub count: u64,
    pub total: f64,
    pub max: f64,
}

impl DistributionSummary {
    /// Records one amount.
    pub fn record(&self, amount: f64) {
        self.cell.count.fetch_add(1, Ordering::Relaxed);
        add_f64(&self.cell.total, amount);
        max_f64(&self.cell.max, amount);
    }

    /// Count, total and max now.
    pub fn snapshot(&self) -> SummarySnapshot {
        SummarySnapshot {
            count: self.cell.count.load(Ordering::Relaxed),
            total: f64::from_bits(self.cell.total.load(Ordering::Relaxed)),
            max: f64::from_bits(self.cell.max.load(Ordering::Relaxed)),
        }
    }
}

/// A value read from a callback whenever metrics are exported.
#[derive(Clone)]
pub struct Gauge {
    read: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge")
            .field("value", &self.value())
            .finish()
    }
}

impl Gauge {
    pub(crate) fn new(read: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Gauge {
            read: Arc::new(read),
        }
    }

    /// Calls the callback.
    pub fn value(&self) -> f64 {
        (self.read)()
    }
}

/// One measure of a [`Mixin`], or a metric of its own.
#[derive(Debug, Clone)]
pub enum Meter {
    Counter(Counter),
    Timer(Timer),
    Summary(DistributionSummary),
    Gauge(Gauge),
}

impl Meter {
    pub(crate) fn kind(&self) -> MeterKind {
        match self {
            Meter::Counter(_) => MeterKind::Counter,
            Meter::Timer(_) => MeterKind::Timer,
            Meter::Summary(_) => MeterKind::Summary,
            Meter::Gauge(_) => MeterKind::Gauge,
        }
    }
}

/// What a family of metrics measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MeterKind {
    Counter,
    Timer,
    Summary,
    Gauge,
    Mixin,
}

/// Told of each measure a mixin gains, so that exporters can start exporting it.
/// A mixin's named measure.
pub type Measure = (Arc<str>, Meter);

pub(crate) type MeasureHook = Arc<dyn Fn(&str, MeterKind) + Send + Sync>;

/// Several measures under one Id (SOFALookout's mixin metric): say a thread pool's
/// active count, queue size and task timer, exported as `{name}.{measure}`.
#[derive(Clone, Default)]
pub struct Mixin {
    measures: Arc<RwLock<Vec<Measure>>>,
    on_new: Option<MeasureHook>,
}

impl std::fmt::Debug for Mixin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixin")
            .field("measures", &self.measures())
            .finish()
    }
}

impl Mixin {
    pub(crate) fn with_hook(hook: MeasureHook) -> Self {
        Mixin {
            measures: Arc::default(),
            on_new: Some(hook),
        }
    }

    fn measure(&self, name: &str, make: impl FnOnce() -> Meter) -> Meter {
        if let Ok(measures) = self.measures.read() {
            if let Some((_, meter)) = measures.iter().find(|(n, _)| &**n == name) {
                return meter.clone();
            }
        }
        let meter = make();
        let mut added = false;
        let result = match self.measures.write() {
            Ok(mut measures) => match measures.iter().find(|(n, _)| &**n == name) {
                Some((_, existing)) => existing.clone(),
                None => {
                    measures.push((Arc::from(name), meter.clone()));
                    added = true;
                    meter
                }
            },
            Err(_) => meter,
        };
        if added {
            if let Some(hook) = &self.on_new {
                hook(name, result.kind());
            }
        }
        result
    }

    /// The counter measure `name`.
    pub fn counter(&self, name: &str) -> Counter {
        match self.measure(name, || Meter::Counter(Counter::default())) {
            Meter::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    /// The timer measure `name`.
    pub fn timer(&self, name: &str) -> Timer {
        match self.measure(name, || Meter::Timer(Timer::default())) {
            Meter::Timer(t) => t,
            _ => Timer::default(),
        }
    }

    /// The distribution-summary measure `name`.
    pub fn summary(&self, name: &str) -> DistributionSummary {
        match self.measure(name, || Meter::Summary(DistributionSummary::default())) {
            Meter::Summary(s) => s,
            _ => DistributionSummary::default(),
        }
    }

    /// The gauge measure `name`, read from `read`.
    pub fn gauge(&self, name: &str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.measure(name, || Meter::Gauge(Gauge::new(read)));
    }

    /// The measures, in the order they were added.
    pub fn measures(&self) -> Vec<Measure> {
        self.measures.read().map(|m| m.clone()).unwrap_or_default()
    }
}

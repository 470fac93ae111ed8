//! Metrics 2.0 tagged metrics, as SOFALookout: a [`Registry`] of meters keyed by
//! [`Id`] = name + tags.
//!
//! ```
//! use sightline_instrument::metrics::{Id, Priority, Registry};
//! use std::time::Duration;
//!
//! let registry = Registry::new();
//! let requests = registry.counter(Id::new("http.requests").with_tag("route", "/cart"));
//! requests.inc();
//! let latency = registry.timer_with(
//!     Id::new("http.latency").with_tag("route", "/cart"),
//!     Priority::High, // exported every 2 s
//! );
//! latency.record(Duration::from_millis(12));
//! let queue = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(3));
//! let depth = queue.clone();
//! registry.gauge(Id::new("jobs.queued"), move || depth.load(std::sync::atomic::Ordering::Relaxed) as f64);
//!
//! let text = registry.render(sightline_instrument::metrics::Format::Prometheus);
//! assert!(text.contains("http_requests_total{route=\"/cart\"} 1"));
//! assert!(text.contains("jobs_queued 3"));
//! ```
//!
//! Registering the same Id again returns the same meter. Past the registry's cap on Ids
//! a new Id gets a working meter that is not exported, and [`Registry::refused`] counts it.

mod exposition;
mod meters;
pub(crate) mod otlp;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;

pub use exposition::{exposition, Format};
pub use meters::{
    Counter, DistributionSummary, Exemplar, Gauge, Meter, MeterKind, Mixin, SummarySnapshot, Timer,
    TimerGuard, TimerSnapshot, TIMER_BUCKETS,
};

/// A metric's identity: a name and a set of tags (sorted by key, keys unique).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    name: Arc<str>,
    tags: Vec<(Arc<str>, Arc<str>)>,
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "{{{}}}", tags.join(","))?;
        }
        Ok(())
    }
}

impl Id {
    /// An Id without tags.
    pub fn new(name: impl AsRef<str>) -> Self {
        Id {
            name: Arc::from(name.as_ref()),
            tags: Vec::new(),
        }
    }

    /// The same Id with one more tag (replacing a tag of the same key).
    pub fn with_tag(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let (key, value) = (key.as_ref(), value.as_ref());
        match self.tags.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(at) => self.tags[at].1 = Arc::from(value),
            Err(at) => self.tags.insert(at, (Arc::from(key), Arc::from(value))),
        }
        self
    }

    /// The same Id with more tags.
    pub fn with_tags<K: AsRef<str>, V: AsRef<str>>(
        self,
        tags: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        tags.into_iter().fold(self, |id, (k, v)| id.with_tag(k, v))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tags, sorted by key.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (&**k, &**v))
    }

    fn attributes(&self) -> Vec<KeyValue> {
        self.tags
            .iter()
            .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
            .collect()
    }
}

/// How often a metric is exported over OTLP (SOFALookout's priorities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Every 2 s by default.
    High,
    /// Every 30 s by default.
    #[default]
    Normal,
    /// Every 60 s by default.
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The default export step.
    pub fn default_step(self) -> Duration {
        match self {
            Priority::High => Duration::from_secs(2),
            Priority::Normal => Duration::from_secs(30),
            Priority::Low => Duration::from_secs(60),
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// The default cap on the number of Ids in a registry.
pub const DEFAULT_MAX_IDS: usize = 10_000;

/// One exported stream: a family (or a mixin's measure) at one priority.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Stream {
    pub family: Arc<str>,
    pub measure: Option<Arc<str>>,
    pub kind: MeterKind,
    pub priority: Priority,
}

type StreamHook = Arc<dyn Fn(&Stream) + Send + Sync>;

/// A metric of the registry, for exposition and export.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub id: Id,
    pub priority: Priority,
    pub meter: SeriesMeter,
    pub attributes: Arc<[KeyValue]>,
}

#[derive(Debug, Clone)]
pub(crate) enum SeriesMeter {
    Single(Meter),
    Mixin(Mixin),
}

struct Family {
    kind: MeterKind,
    series: BTreeMap<Id, Series>,
}

struct Inner {
    families: RwLock<BTreeMap<Arc<str>, Family>>,
    ids: AtomicUsize,
    max_ids: usize,
    refused: AtomicU64,
    conflicts: AtomicU64,
    hook: RwLock<Option<StreamHook>>,
}

/// Meters keyed by [`Id`]. Cheap to clone; clones share the meters.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("ids", &self.len())
            .field("refused", &self.refused())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// A registry holding at most [`DEFAULT_MAX_IDS`] Ids.
    pub fn new() -> Self {
        Registry::with_max_ids(DEFAULT_MAX_IDS)
    }

    /// A registry holding at most `max_ids` Ids.
    pub fn with_max_ids(max_ids: usize) -> Self {
        Registry {
            inner: Arc::new(Inner {
                families: RwLock::new(BTreeMap::new()),
                ids: AtomicUsize::new(0),
                max_ids,
                refused: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                hook: RwLock::new(None),
            }),
        }
    }

    /// Ids registered.
    pub fn len(&self) -> usize {
        self.inner.ids.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New Ids refused because the registry was full.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Registrations refused because the name already has another kind of meter.
    pub fn conflicts(&self) -> u64 {
        self.inner.conflicts.load(Ordering::Relaxed)
    }

    /// The counter `id` at normal priority.
    pub fn counter(&self, id: Id) -> Counter {
        self.counter_with(id, Priority::Normal)
    }

    pub fn counter_with(&self, id: Id, priority: Priority) -> Counter {
        match self.register(id, priority, MeterKind::Counter, || {
            SeriesMeter::Single(Meter::Counter(Counter::default()))
        }) {
            Some(SeriesMeter::Single(Meter::Counter(c))) => c,
            _ => Counter::default(),
        }
    }

    /// The timer `id` at normal priority.
    pub fn timer(&self, id: Id) -> Timer {
        self.timer_with(id, Priority::Normal)
    }

    pub fn timer_with(&self, id: Id, priority: Priority) -> Timer {
        match self.register(id, priority, MeterKind::Timer, || {
            SeriesMeter::Single(Meter::Timer(Timer::default()))
        }) {
            Some(SeriesMeter::Single(Meter::Timer(t))) => t,
            _ => Timer::default(),
        }
    }

    /// The distribution summary `id` at normal priority.
    pub fn summary(&self, id: Id) -> DistributionSummary {
        self.summary_with(id, Priority::Normal)
    }

    pub fn summary_with(&self, id: Id, priority: Priority) -> DistributionSummary {
        match self.register(id, priority, MeterKind::Summary, || {
            SeriesMeter::Single(Meter::Summary(DistributionSummary::default()))
        }) {
            Some(SeriesMeter::Single(Meter::Summary(s))) => s,
            _ => DistributionSummary::default(),
        }
    }

    /// The gauge `id`, read from `read` at each export; a second registration of the same
    /// Id keeps the first callback.
    pub fn gauge(&self, id: Id, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.gauge_with(id, Priority::Normal, read)
    }

    pub fn gauge_with(
        &self,
        id: Id,
        priority: Priority,
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.register(id, priority, MeterKind::Gauge, || {
            SeriesMeter::Single(Meter::Gauge(Gauge::new(read)))
        });
    }

    /// The mixin `id`: add its measures with [`Mixin::counter`], [`Mixin::gauge`], ...
    pub fn mixin(&self, id: Id) -> Mixin {
        self.mixin_with(id, Priority::Normal)
    }

    pub fn mixin_with(&self, id: Id, priority: Priority) -> Mixin {
        let family = id.name.clone();
        let weak = Arc::downgrade(&self.inner);
        let hook = Arc::new(move |measure: &str, kind: MeterKind| {
            if let Some(inner) = weak.upgrade() {
                Registry { inner }.announce(&Stream {
                    family: family.clone(),
                    measure: Some(Arc::from(measure)),
                    kind,
                    priority,
                });
            }
        });
        match self.register(id, priority, MeterKind::Mixin, || {
            SeriesMeter::Mixin(Mixin::with_hook(hook))
        }) {
            Some(SeriesMeter::Mixin(m)) => m,
            _ => Mixin::default(),
        }
    }

    fn register(
        &self,
        id: Id,
        priority: Priority,
        kind: MeterKind,
        make: impl FnOnce() -> SeriesMeter,
    ) -> Option<SeriesMeter> {
        if let Ok(families) = self.inner.families.read() {
            if let Some(family) = families.get(&id.name) {
                if family.kind != kind {
                    self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                if let Some(series) = family.series.get(&id) {
                    return Some(series.meter.clone());
                }
            }
        }
        let mut new_stream = None;
        let meter = {
            let mut families = self.inner.families.write().ok()?;
            let family = families.entry(id.name.clone()).or_insert_with(|| Family {
                kind,
                series: BTreeMap::new(),
            });
            if family.kind != kind {
                self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            if let Some(series) = family.series.get(&id) {
                return Some(series.meter.clone());
            }
            if self.inner.ids.load(Ordering::Relaxed) >= self.inner.max_ids {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            if kind != MeterKind::Mixin && !family.series.values().any(|s| s.priority == priority) {
                new_stream = Some(Stream {
                    family: id.name.clone(),
                    measure: None,
                    kind,
                    priority,
                });
            }
            let meter = make();
            self.inner.ids.fetch_add(1, Ordering::Relaxed);
            family.series.insert(
                id.clone(),
                Series {
                    attributes: id.attributes().into(),
                    id,
                    priority,
                    meter: meter.clone(),
                },
            );
            meter
        };
        if let Some(stream) = new_stream {
            self.announce(&stream);
        }
        Some(meter)
    }

    fn announce(&self, stream: &Stream) {
        let hook = self.inner.hook.read().ok().and_then(|h| h.clone());
        if let Some(hook) = hook {
            hook(stream);
        }
    }

    /// Calls `hook` for every stream now, and for each new one from now on.
    pub(crate) fn watch_streams(&self, hook: StreamHook) {
        if let Ok(mut slot) = self.inner.hook.write() {
            *slot = Some(hook.clone());
        }
        let mut streams: Vec<Stream> = Vec::new();
        for series in self.all_series() {
            match &series.meter {
                SeriesMeter::Single(meter) => streams.push(Stream {
                    family: series.id.name.clone(),
                    measure: None,
                    kind: meter.kind(),
                    priority: series.priority,
                }),
                SeriesMeter::Mixin(mixin) => {
                    for (measure, meter) in mixin.measures() {
                        streams.push(Stream {
                            family: series.id.name.clone(),
                            measure: Some(measure),
                            kind: meter.kind(),
                            priority: series.priority,
                        });
                    }
                }
            }
        }
        streams.sort();
        streams.dedup();
        for stream in &streams {
            hook(stream);
        }
    }

    /// Every series, sorted by name then tags (a copy: callbacks run without the lock).
    pub(crate) fn all_series(&self) -> Vec<Series> {
        match self.inner.families.read() {
            Ok(families) => families
                .values()
                .flat_map(|f| f.series.values().cloned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The series of one family at one priority.
    pub(crate) fn family_series(&self, family: &str, priority: Priority) -> Vec<Series> {
        match self.inner.families.read() {
            Ok(families) => families
                .get(family)
                .map(|f| {
                    f.series
                        .values()
                        .filter(|s| s.priority == priority)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Reads [`Registry::refused`] without keeping the registry alive.
    pub(crate) fn refused_reader(&self) -> impl Fn() -> f64 + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.inner);
        move || {
            weak.upgrade()
                .map(|inner| inner.refused.load(Ordering::Relaxed) as f64)
                .unwrap_or(0.0)
        }
    }

    /// The exposition text of every metric.
    pub fn render(&self, format: Format) -> String {
        exposition::render(self, format)
    }
}

#[cfg(test)]
mod tests;

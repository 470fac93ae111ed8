//! Rollups computed at ingest, from every span acknowledged (before any sampling could drop
//! one): per-minute RED (`span_red`) and the service graph (`service_edges`).
//!
//! They follow the spans' durability: the store aggregates a batch when it acknowledges it,
//! seals the aggregates together with the span buffer, and writes them in the same manifest
//! commit, so the WAL beyond the checkpoint is exactly the spans whose rollups are not on disk —
//! a replay rebuilds them. Only the halves of calls still waiting for a partner live in memory
//! alone (see [`pairing`]).

pub mod files;
mod pairing;
pub mod sketch;
pub mod stats;
pub mod table;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, AsArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Int64Array, Int8Array,
    RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;

use crate::engine::{Derive, DerivedRows};
use crate::error::StorageError;
use crate::schema::{col, SpanKind, STATUS_ERROR};
use crate::span_table::SPANS_TABLE;
pub use files::{service_edges_table, span_red_table, span_stats_table};
use pairing::{call_key, Call, Half, Pairing};
pub use sketch::LatencySketch;
pub use stats::{StatRollups, SPAN_STATS_TABLE};
pub use table::{
    minute_of, read_rows, service_edges_schema, span_red_schema, Aggregate, EdgeKey, Measures,
    NodeKind, RedKey, RollupKey, SERVICE_EDGES_TABLE, SPAN_RED_TABLE,
};

/// The name that over-cap series and edges are folded into.
pub const OTHER: &str = "__other__";

#[derive(Debug, Clone)]
pub struct RollupConfig {
    /// How long the first half of a call waits for the other.
    pub edge_wait: Duration,
    /// Halves that may wait at once; past it the oldest gives up.
    pub max_pending_edges: usize,
    /// Distinct (service, operation, kind, status) series per hour, and distinct edges per hour;
    /// past it new ones are folded into [`OTHER`].
    pub max_series_per_hour: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self {
            edge_wait: Duration::from_secs(10),
            max_pending_edges: 100_000,
            max_series_per_hour: 10_000,
        }
    }
}

/// What the rollups have folded, given up on, and hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupCounters {
    /// Spans counted under an [`OTHER`] series because the series cap was reached.
    pub spans_folded: u64,
    /// Calls counted under an [`OTHER`] edge because the edge cap was reached.
    pub calls_folded: u64,
    /// Call halves that never found their partner (nor had a fallback target).
    pub halves_unpaired: u64,
    pub halves_pending: u64,
}

/// Sealed rollups: one batch per table, `None` when empty.
#[derive(Debug, Clone, Default)]
pub struct RollupBatches {
    pub span_red: Option<RecordBatch>,
    pub service_edges: Option<RecordBatch>,
}

impl RollupBatches {
    pub fn is_empty(&self) -> bool {
        self.span_red.is_none() && self.service_edges.is_none()
    }
}

/// The cardinality cap: the distinct keys seen in the current hour of arrival.
struct SeriesCap {
    limit: usize,
    hour: i64,
    seen: HashSet<u64>,
    /// First-level names (service, or edge source) seen this hour.
    owners: HashSet<u64>,
}

enum Admit {
    Keep,
    /// Keep the owner, fold the rest of the key.
    FoldDetail,
    /// Fold everything.
    FoldAll,
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl SeriesCap {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            hour: i64::MIN,
            seen: HashSet::new(),
            owners: HashSet::new(),
        }
    }

    fn roll(&mut self, hour: i64) {
        if hour != self.hour {
            self.hour = hour;
            self.seen.clear();
            self.owners.clear();
        }
    }

    fn admit(&mut self, owner: &str, detail: impl Hash) -> Admit {
        let owner_hash = hash_of(owner);
        let series = hash_of((owner_hash, detail));
        if self.seen.contains(&series) {
            return Admit::Keep;
        }
        if self.seen.len() < self.limit {
            self.seen.insert(series);
            self.owners.insert(owner_hash);
            return Admit::Keep;
        }
        if self.owners.contains(&owner_hash) {
            Admit::FoldDetail
        } else {
            Admit::FoldAll
        }
    }

    /// The (service, operation) a RED row of `calls` calls is counted under: its own, or
    /// [`OTHER`] past the cap (the calls added to `folded`).
    fn admit_red<'a>(
        &mut self,
        service: &'a str,
        operation: &'a str,
        (kind, status): (i8, i8),
        calls: u64,
        folded: &mut u64,
    ) -> (&'a str, &'a str) {
        match self.admit(service, (operation, kind, status)) {
            Admit::Keep => (service, operation),
            Admit::FoldDetail => {
                *folded += calls;
                (service, OTHER)
            }
            Admit::FoldAll => {
                *folded += calls;
                (OTHER, OTHER)
            }
        }
    }
}

/// The hour rows arrive in, which the series caps count by.
fn arrival_hour() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 3600)
        .unwrap_or_default()
}

/// One `Arc<str>` per distinct name, so keys and waiting halves share their strings.
#[derive(Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    /// Forgets names no key or waiting half uses any more.
    fn prune(&mut self) {
        self.0.retain(|a| Arc::strong_count(a) > 1);
    }
}

/// The ingest-time aggregator of both rollup tables.
pub struct Rollups {
    red: Aggregate<RedKey>,
    edges: Aggregate<EdgeKey>,
    pairing: Pairing,
    names: Names,
    red_cap: SeriesCap,
    edge_cap: SeriesCap,
    counters: RollupCounters,
    /// Reused between batches.
    calls: Vec<Call>,
}

/// A dictionary-encoded string column of the span schema.
struct DictColumn<'a> {
    array: &'a DictionaryArray<Int32Type>,
    values: &'a StringArray,
}

impl<'a> DictColumn<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Self, StorageError> {
        let array = batch
            .column(batch.schema().index_of(name)?)
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(|| unexpected_type(name))?;
        let values = array
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| unexpected_type(name))?;
        Ok(Self { array, values })
    }

    fn key(&self, row: usize) -> Option<i32> {
        self.array
            .is_valid(row)
            .then(|| self.array.keys().value(row))
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        self.key(row)
            .map(|k| self.values.value(k as usize))
            .filter(|s| !s.is_empty())
    }
}

/// The span schema's load-test flag (absent or null: not load test).
struct LoadTest<'a>(Option<&'a BooleanArray>);

impl<'a> LoadTest<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, StorageError> {
        Ok(Self(match batch.column_by_name(col::LOAD_TEST) {
            Some(_) => Some(typed::<BooleanArray>(batch, col::LOAD_TEST)?),
            None => None,
        }))
    }

    fn at(&self, row: usize) -> bool {
        self.0.is_some_and(|c| c.is_valid(row) && c.value(row))
    }
}

fn unexpected_type(name: &str) -> StorageError {
    StorageError::Arrow(ArrowError::SchemaError(format!(
        "span column {name} has an unexpected type"
    )))
}

fn typed<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, StorageError> {
    batch
        .column(batch.schema().index_of(name)?)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| unexpected_type(name))
}

impl Rollups {
    pub fn new(config: &RollupConfig) -> Self {
        Self {
            red: Aggregate::default(),
            edges: Aggregate::default(),
            pairing: Pairing::new(config.edge_wait, config.max_pending_edges),
            names: Names::default(),
            red_cap: SeriesCap::new(config.max_series_per_hour),
            edge_cap: SeriesCap::new(config.max_series_per_hour),
            counters: RollupCounters::default(),
            calls: Vec::new(),
        }
    }

    pub fn counters(&self) -> RollupCounters {
        RollupCounters {
            halves_unpaired: self.pairing.unpaired,
            halves_pending: self.pairing.pending() as u64,
            ..self.counters
        }
    }

    /// Counts every span of a batch of the span schema.
    pub fn observe(&mut self, batch: &RecordBatch, now: Instant) -> Result<(), StorageError> {
        let hour = arrival_hour();
        if hour != self.red_cap.hour {
            self.red_cap.roll(hour);
            self.edge_cap.roll(hour);
            self.names.prune();
        }
        let services = DictColumn::of(batch, col::SERVICE_NAME)?;
        let names = DictColumn::of(batch, col::SPAN_NAME)?;
        let kinds = typed::<Int8Array>(batch, col::SPAN_KIND)?;
        let statuses = typed::<Int8Array>(batch, col::STATUS_CODE)?;
        let starts = typed::<TimestampNanosecondArray>(batch, col::START_TIME)?;
        let durations = typed::<Int64Array>(batch, col::DURATION_NANO)?;

        // Rows of one batch share few keys: sum them under dictionary keys first, so names are
        // looked up once per key rather than once per span.
        let load_test = LoadTest::of(batch)?;
        let mut local: HashMap<(i32, i32, i8, i8, bool, i64), Measures> = HashMap::new();
        for row in 0..batch.num_rows() {
            let key = (
                services.key(row).unwrap_or(-1),
                names.key(row).unwrap_or(-1),
                kinds.value(row),
                statuses.value(row),
                load_test.at(row),
                minute_of(starts.value(row)),
            );
            local
                .entry(key)
                .or_default()
                .record(durations.value(row), statuses.value(row) == STATUS_ERROR);
        }
        for ((service, name, kind, status, load_test, minute), measures) in local {
            let service = lookup(&services, service);
            let operation = lookup(&names, name);
            let (service, operation) = self.red_cap.admit_red(
                service,
                operation,
                (kind, status),
                measures.calls,
                &mut self.counters.spans_folded,
            );
            let key = RedKey {
                service: self.names.get(service),
                operation: self.names.get(operation),
                span_kind: kind,
                status_code: status,
                load_test,
                minute,
            };
            self.red.add(key, &measures);
        }

        self.observe_calls(batch, &services, now)?;
        self.expire(now);
        Ok(())
    }

    /// Feeds the spans that are halves of calls to the pairing, and counts calls to databases
    /// and queues (whose other half is never instrumented) at once.
    fn observe_calls(
        &mut self,
        batch: &RecordBatch,
        services: &DictColumn<'_>,
        now: Instant,
    ) -> Result<(), StorageError> {
        let kinds = typed::<Int8Array>(batch, col::SPAN_KIND)?;
        let statuses = typed::<Int8Array>(batch, col::STATUS_CODE)?;
        let starts = typed::<TimestampNanosecondArray>(batch, col::START_TIME)?;
        let durations = typed::<Int64Array>(batch, col::DURATION_NANO)?;
        let trace_ids = typed::<FixedSizeBinaryArray>(batch, col::TRACE_ID)?;
        let span_ids = typed::<FixedSizeBinaryArray>(batch, col::SPAN_ID)?;
        let parents = typed::<FixedSizeBinaryArray>(batch, col::PARENT_SPAN_ID)?;
        let peer_service = DictColumn::of(batch, col::PEER_SERVICE)?;
        let server_address = DictColumn::of(batch, col::SERVER_ADDRESS)?;
        let db_system = DictColumn::of(batch, col::DB_SYSTEM)?;
        let messaging_system = DictColumn::of(batch, col::MESSAGING_SYSTEM)?;
        let destination = DictColumn::of(batch, col::MESSAGING_DESTINATION)?;
        let load_test = LoadTest::of(batch)?;

        // One shared name per dictionary entry, looked up once per batch, not once per span.
        let service_names: Vec<Arc<str>> = (0..services.values.len())
            .map(|k| self.names.get(services.values.value(k)))
            .collect();
        let empty = self.names.get("");
        let mut calls = std::mem::take(&mut self.calls);
        for row in 0..batch.num_rows() {
            let kind = SpanKind::from_i32(i32::from(kinds.value(row)));
            if !matches!(
                kind,
                SpanKind::Client | SpanKind::Server | SpanKind::Producer | SpanKind::Consumer
            ) {
                continue;
            }
            let service = services
                .key(row)
                .and_then(|k| service_names.get(k as usize))
                .unwrap_or(&empty);
            let half = |fallback: Option<Arc<str>>| Half {
                service: service.clone(),
                start_unix_nano: starts.value(row),
                duration_nano: durations.value(row),
                error: statuses.value(row) == STATUS_ERROR,
                load_test: load_test.at(row),
                fallback,
            };
            let queue = messaging_system
                .get(row)
                .map(|system| destination.get(row).unwrap_or(system));
            let direct = |target: Arc<str>, target_kind, outgoing: bool| {
                let h = half(None);
                let (source, source_kind, target, target_kind) = if outgoing {
                    (h.service, NodeKind::Service, target, target_kind)
                } else {
                    (target, target_kind, h.service, NodeKind::Service)
                };
                Call {
                    source,
                    source_kind,
                    target,
                    target_kind,
                    start_unix_nano: h.start_unix_nano,
                    duration_nano: h.duration_nano,
                    // A consumer is the callee of the queue's call.
                    callee_duration_nano: (!outgoing).then_some(h.duration_nano),
                    error: h.error,
                    load_test: h.load_test,
                }
            };
            match (kind, queue) {
                (SpanKind::Producer, Some(q)) => {
                    calls.push(direct(self.names.get(q), NodeKind::Messaging, true));
                }
                (SpanKind::Consumer, Some(q)) => {
                    calls.push(direct(self.names.get(q), NodeKind::Messaging, false));
                }
                (SpanKind::Client | SpanKind::Producer, _) => {
                    if let Some(db) = db_system.get(row) {
                        let name = peer_service.get(row).unwrap_or(db);
                        calls.push(direct(self.names.get(name), NodeKind::Database, true));
                        continue;
                    }
                    let fallback = peer_service
                        .get(row)
                        .or_else(|| server_address.get(row))
                        .map(|t| self.names.get(t));
                    let key = call_key(trace_ids.value(row), span_ids.value(row));
                    self.pairing.caller(key, half(fallback), now, &mut calls);
                }
                _ => {
                    if parents.is_valid(row) {
                        let key = call_key(trace_ids.value(row), parents.value(row));
                        self.pairing.callee(key, half(None), now, &mut calls);
                    }
                }
            }
        }
        self.count_calls(&mut calls);
        self.calls = calls;
        Ok(())
    }

    fn count_calls(&mut self, calls: &mut Vec<Call>) {
        for call in calls.drain(..) {
            let (source, source_kind, target, target_kind) = match self.edge_cap.admit(
                &call.source,
                (&*call.target, call.source_kind, call.target_kind),
            ) {
                Admit::Keep => (call.source, call.source_kind, call.target, call.target_kind),
                Admit::FoldDetail => {
                    self.counters.calls_folded += 1;
                    (
                        call.source,
                        call.source_kind,
                        self.names.get(OTHER),
                        NodeKind::External,
                    )
                }
                Admit::FoldAll => {
                    self.counters.calls_folded += 1;
                    let other = self.names.get(OTHER);
                    (other.clone(), NodeKind::External, other, NodeKind::External)
                }
            };
            let key = EdgeKey {
                source,
                source_kind,
                target,
                target_kind,
                load_test: call.load_test,
                minute: minute_of(call.start_unix_nano),
            };
            self.edges.record_call(
                key,
                call.duration_nano,
                call.callee_duration_nano,
                call.error,
            );
        }
    }

    /// Gives up on call halves that waited too long (see [`pairing::Pairing::expire`]).
    pub fn expire(&mut self, now: Instant) {
        let mut calls = std::mem::take(&mut self.calls);
        self.pairing.expire(now, &mut calls);
        self.count_calls(&mut calls);
        self.calls = calls;
    }

    /// Resolves every waiting half now: at shutdown, when no partner can come any more.
    pub fn expire_all(&mut self) {
        let mut calls = std::mem::take(&mut self.calls);
        self.pairing.expire_all(&mut calls);
        self.count_calls(&mut calls);
        self.calls = calls;
    }

    /// The aggregates so far, without resetting them (for readers).
    pub fn current(&self) -> Result<RollupBatches, StorageError> {
        Ok(RollupBatches {
            span_red: self.red.to_batch()?,
            service_edges: self.edges.to_batch()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.red.is_empty() && self.edges.is_empty()
    }

    /// Takes the aggregates so far (to be written with the span buffer they belong to).
    pub fn seal(&mut self) -> Result<RollupBatches, StorageError> {
        Ok(RollupBatches {
            span_red: self.red.take_batch()?,
            service_edges: self.edges.take_batch()?,
        })
    }
}

impl RollupBatches {
    fn into_rows(self) -> DerivedRows {
        let mut rows = Vec::new();
        if let Some(b) = self.span_red {
            rows.push((SPAN_RED_TABLE, b));
        }
        if let Some(b) = self.service_edges {
            rows.push((SERVICE_EDGES_TABLE, b));
        }
        rows
    }
}

impl Derive for Rollups {
    fn source(&self) -> &'static str {
        SPANS_TABLE
    }

    fn observe(&mut self, batch: &RecordBatch, now: Instant) -> Result<(), StorageError> {
        Rollups::observe(self, batch, now)
    }

    fn tick(&mut self, now: Instant) {
        self.expire(now);
    }

    fn finish(&mut self) {
        self.expire_all();
    }

    fn is_empty(&self) -> bool {
        Rollups::is_empty(self)
    }

    fn current(&self) -> Result<DerivedRows, StorageError> {
        Ok(Rollups::current(self)?.into_rows())
    }

    fn seal(&mut self) -> Result<DerivedRows, StorageError> {
        Ok(Rollups::seal(self)?.into_rows())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = Rollups::counters(self);
        vec![
            (ROLLUP_SPANS_FOLDED, c.spans_folded),
            (ROLLUP_CALLS_FOLDED, c.calls_folded),
            (CALL_HALVES_UNPAIRED, c.halves_unpaired),
            (CALL_HALVES_PENDING, c.halves_pending),
        ]
    }
}

/// Names of the rollups' counters (see [`RollupCounters`]).
pub const ROLLUP_SPANS_FOLDED: &str = "rollup_spans_folded";
pub const ROLLUP_CALLS_FOLDED: &str = "rollup_calls_folded";
pub const CALL_HALVES_UNPAIRED: &str = "call_halves_unpaired";
pub const CALL_HALVES_PENDING: &str = "call_halves_pending";

fn lookup<'a>(column: &DictColumn<'a>, key: i32) -> &'a str {
    if key < 0 {
        ""
    } else {
        column.values.value(key as usize)
    }
}

#[cfg(test)]
mod tests;

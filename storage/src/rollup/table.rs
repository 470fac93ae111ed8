//! The two rollup tables — `span_red` (per minute and per service, operation, span kind and
//! status) and `service_edges` (per minute and per caller → callee) — their Arrow schemas, and
//! the in-memory aggregate that both the ingest path and compaction fill.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Builder, Int64Array, Int64Builder, Int8Array,
    ListArray, ListBuilder, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::sketch::LatencySketch;
use crate::error::StorageError;
use crate::schema::timestamp_type;

/// Column names of the rollup tables.
pub mod col {
    /// Start of the minute, for both tables.
    pub const TIME: &str = "time";
    pub const SERVICE_NAME: &str = "service_name";
    pub const SPAN_NAME: &str = "span_name";
    pub const SPAN_KIND: &str = "span_kind";
    pub const STATUS_CODE: &str = "status_code";
    pub const SOURCE: &str = "source";
    pub const SOURCE_KIND: &str = "source_kind";
    pub const TARGET: &str = "target";
    pub const TARGET_KIND: &str = "target_kind";
    pub const CALLS: &str = "calls";
    pub const ERRORS: &str = "errors";
    pub const DURATION_SUM_NANO: &str = "duration_sum_nano";
    pub const DURATION_MIN_NANO: &str = "duration_min_nano";
    pub const DURATION_MAX_NANO: &str = "duration_max_nano";
    /// The latency sketch: bucket indexes (see [`super::super::sketch`]) and their counts.
    pub const LATENCY_BUCKETS: &str = "latency_buckets";
    pub const LATENCY_COUNTS: &str = "latency_counts";
    /// Edges only: the callee's side of the same calls (null in files written before it).
    pub const SERVER_DURATION_SUM_NANO: &str = "server_duration_sum_nano";
    pub const SERVER_LATENCY_BUCKETS: &str = "server_latency_buckets";
    pub const SERVER_LATENCY_COUNTS: &str = "server_latency_counts";
    /// Both tables: the row counts load-test traffic (null in files written before it: not).
    pub const LOAD_TEST: &str = "load_test";
}

pub const NANOS_PER_MINUTE: i64 = 60_000_000_000;
pub const SPAN_RED_TABLE: &str = "span_red";
pub const SERVICE_EDGES_TABLE: &str = "service_edges";

pub fn minute_of(unix_nano: i64) -> i64 {
    unix_nano.div_euclid(NANOS_PER_MINUTE) * NANOS_PER_MINUTE
}

/// What a node of the service graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Service,
    Database,
    Messaging,
    External,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Database => "database",
            NodeKind::Messaging => "messaging",
            NodeKind::External => "external",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "service" => NodeKind::Service,
            "database" => NodeKind::Database,
            "messaging" => NodeKind::Messaging,
            "external" => NodeKind::External,
            _ => return None,
        })
    }
}

/// Count, errors, duration sum/min/max and latency distribution of a set of calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measures {
    pub calls: u64,
    pub errors: u64,
    pub duration_sum_nano: i64,
    pub duration_min_nano: i64,
    pub duration_max_nano: i64,
    pub latency: LatencySketch,
    /// Edges only: the time the callee took for the same calls — its own span's duration where
    /// its half was seen, else the caller's (a database or an uninstrumented peer).
    pub server_duration_sum_nano: i64,
    pub server_latency: LatencySketch,
}

impl Measures {
    pub fn record(&mut self, duration_nano: i64, error: bool) {
        self.merge_extremes(duration_nano, duration_nano);
        self.calls += 1;
        self.errors += u64::from(error);
        self.duration_sum_nano = self.duration_sum_nano.saturating_add(duration_nano);
        self.latency.record(duration_nano);
    }

    /// A call of an edge: the caller's duration and, if its half was seen, the callee's.
    pub fn record_call(&mut self, duration_nano: i64, callee_nano: Option<i64>, error: bool) {
        self.record(duration_nano, error);
        let server = callee_nano.unwrap_or(duration_nano);
        self.server_duration_sum_nano = self.server_duration_sum_nano.saturating_add(server);
        self.server_latency.record(server);
    }

    pub fn merge(&mut self, other: &Measures) {
        if other.calls == 0 {
            return;
        }
        self.merge_extremes(other.duration_min_nano, other.duration_max_nano);
        self.calls += other.calls;
        self.errors += other.errors;
        self.duration_sum_nano = self
            .duration_sum_nano
            .saturating_add(other.duration_sum_nano);
        self.latency.merge(&other.latency);
        self.server_duration_sum_nano = self
            .server_duration_sum_nano
            .saturating_add(other.server_duration_sum_nano);
        self.server_latency.merge(&other.server_latency);
    }

    fn merge_extremes(&mut self, min: i64, max: i64) {
        if self.calls == 0 {
            self.duration_min_nano = min;
            self.duration_max_nano = max;
        } else {
            self.duration_min_nano = self.duration_min_nano.min(min);
            self.duration_max_nano = self.duration_max_nano.max(max);
        }
    }

    pub fn mean_nano(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.duration_sum_nano as f64 / self.calls as f64)
    }
}

/// A row key of a rollup table. Keys order by their names first and minute last, which is also
/// the order rows are written in, so a service filter prunes row groups.
pub trait RollupKey: Clone + Eq + Hash + Ord {
    fn dir() -> &'static str;
    fn schema() -> SchemaRef;
    fn key_fields() -> Vec<Field>;
    fn minute(&self) -> i64;
    fn key_columns(keys: &[&Self]) -> Vec<ArrayRef>;
    fn read_keys(batch: &RecordBatch) -> Result<Vec<Self>, StorageError>;
    /// Whether rows carry the callee's side of their calls ([`Measures::server_latency`]).
    fn server_side() -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RedKey {
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub span_kind: i8,
    pub status_code: i8,
    pub load_test: bool,
    pub minute: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub source: Arc<str>,
    pub source_kind: NodeKind,
    pub target: Arc<str>,
    pub target_kind: NodeKind,
    pub load_test: bool,
    pub minute: i64,
}

fn string_column(keys: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(keys.to_vec()))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, StorageError> {
    batch
        .column(batch.schema().index_of(name)?)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            StorageError::Arrow(ArrowError::SchemaError(format!(
                "rollup column {name} has an unexpected type"
            )))
        })
}

fn minutes(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, StorageError> {
    column(batch, col::TIME)
}

fn load_test_field() -> Field {
    Field::new(col::LOAD_TEST, DataType::Boolean, true)
}

fn load_test_column(values: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(values.collect::<Vec<_>>()))
}

/// Row `i`'s load-test flag; false where the column is null or (an older file) missing.
fn read_load_test(batch: &RecordBatch) -> Result<impl Fn(usize) -> bool + '_, StorageError> {
    let column = match batch.column_by_name(col::LOAD_TEST) {
        Some(_) => Some(column::<BooleanArray>(batch, col::LOAD_TEST)?),
        None => None,
    };
    Ok(move |i: usize| column.is_some_and(|c| c.is_valid(i) && c.value(i)))
}

/// Reads a string column, sharing one `Arc<str>` per distinct value.
fn read_strings(batch: &RecordBatch, name: &str) -> Result<Vec<Arc<str>>, StorageError> {
    let array = column::<StringArray>(batch, name)?;
    let mut seen: HashMap<&str, Arc<str>> = HashMap::new();
    Ok(array
        .iter()
        .map(|v| {
            let v = v.unwrap_or_default();
            seen.entry(v).or_insert_with(|| Arc::from(v)).clone()
        })
        .collect())
}

impl RollupKey for RedKey {
    fn dir() -> &'static str {
        SPAN_RED_TABLE
    }

    fn schema() -> SchemaRef {
        span_red_schema()
    }

    fn key_fields() -> Vec<Field> {
        vec![
            Field::new(col::SERVICE_NAME, DataType::Utf8, false),
            Field::new(col::SPAN_NAME, DataType::Utf8, false),
            Field::new(col::SPAN_KIND, DataType::Int8, false),
            Field::new(col::STATUS_CODE, DataType::Int8, false),
            load_test_field(),
        ]
    }

    fn minute(&self) -> i64 {
        self.minute
    }

    fn key_columns(keys: &[&Self]) -> Vec<ArrayRef> {
        let services: Vec<&str> = keys.iter().map(|k| &*k.service).collect();
        let operations: Vec<&str> = keys.iter().map(|k| &*k.operation).collect();
        vec![
            string_column(&services),
            string_column(&operations),
            Arc::new(Int8Array::from_iter_values(
                keys.iter().map(|k| k.span_kind),
            )),
            Arc::new(Int8Array::from_iter_values(
                keys.iter().map(|k| k.status_code),
            )),
            load_test_column(keys.iter().map(|k| k.load_test)),
        ]
    }

    fn read_keys(batch: &RecordBatch) -> Result<Vec<Self>, StorageError> {
        let services = read_strings(batch, col::SERVICE_NAME)?;
        let operations = read_strings(batch, col::SPAN_NAME)?;
        let kinds = column::<Int8Array>(batch, col::SPAN_KIND)?;
        let statuses = column::<Int8Array>(batch, col::STATUS_CODE)?;
        let load_test = read_load_test(batch)?;
        let minutes = minutes(batch)?;
        Ok((0..batch.num_rows())
            .map(|i| RedKey {
                service: services[i].clone(),
                operation: operations[i].clone(),
                span_kind: kinds.value(i),
                status_code: statuses.value(i),
                load_test: load_test(i),
                minute: minutes.value(i),
            })
            .collect())
    }
}

impl RollupKey for EdgeKey {
    fn dir() -> &'static str {
        SERVICE_EDGES_TABLE
    }

    fn server_side() -> bool {
        true
    }

    fn schema() -> SchemaRef {
        service_edges_schema()
    }

    fn key_fields() -> Vec<Field> {
        vec![
            Field::new(col::SOURCE, DataType::Utf8, false),
            Field::new(col::SOURCE_KIND, DataType::Utf8, false),
            Field::new(col::TARGET, DataType::Utf8, false),
            Field::new(col::TARGET_KIND, DataType::Utf8, false),
            load_test_field(),
        ]
    }

    fn minute(&self) -> i64 {
        self.minute
    }

    fn key_columns(keys: &[&Self]) -> Vec<ArrayRef> {
        let sources: Vec<&str> = keys.iter().map(|k| &*k.source).collect();
        let source_kinds: Vec<&str> = keys.iter().map(|k| k.source_kind.as_str()).collect();
        let targets: Vec<&str> = keys.iter().map(|k| &*k.target).collect();
        let target_kinds: Vec<&str> = keys.iter().map(|k| k.target_kind.as_str()).collect();
        vec![
            string_column(&sources),
            string_column(&source_kinds),
            string_column(&targets),
            string_column(&target_kinds),
            load_test_column(keys.iter().map(|k| k.load_test)),
        ]
    }

    fn read_keys(batch: &RecordBatch) -> Result<Vec<Self>, StorageError> {
        let sources = read_strings(batch, col::SOURCE)?;
        let targets = read_strings(batch, col::TARGET)?;
        let kind = |name: &str| -> Result<Vec<NodeKind>, StorageError> {
            column::<StringArray>(batch, name)?
                .iter()
                .map(|v| {
                    v.and_then(NodeKind::parse).ok_or_else(|| {
                        StorageError::Arrow(ArrowError::InvalidArgumentError(format!(
                            "{name} holds an unknown node kind {v:?}"
                        )))
                    })
                })
                .collect()
        };
        let source_kinds = kind(col::SOURCE_KIND)?;
        let target_kinds = kind(col::TARGET_KIND)?;
        let load_test = read_load_test(batch)?;
        let minutes = minutes(batch)?;
        Ok((0..batch.num_rows())
            .map(|i| EdgeKey {
                source: sources[i].clone(),
                source_kind: source_kinds[i],
                target: targets[i].clone(),
                target_kind: target_kinds[i],
                load_test: load_test(i),
                minute: minutes.value(i),
            })
            .collect())
    }
}

fn sketch_fields(buckets: &str, counts: &str, nullable: bool) -> [Field; 2] {
    [
        Field::new(
            buckets,
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            nullable,
        ),
        Field::new(
            counts,
            DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
            nullable,
        ),
    ]
}

fn measure_fields(server_side: bool) -> Vec<Field> {
    let mut fields = vec![
        Field::new(col::CALLS, DataType::Int64, false),
        Field::new(col::ERRORS, DataType::Int64, false),
        Field::new(col::DURATION_SUM_NANO, DataType::Int64, false),
        Field::new(col::DURATION_MIN_NANO, DataType::Int64, false),
        Field::new(col::DURATION_MAX_NANO, DataType::Int64, false),
    ];
    fields.extend(sketch_fields(
        col::LATENCY_BUCKETS,
        col::LATENCY_COUNTS,
        false,
    ));
    if server_side {
        // Nullable: files written before these columns existed read them as null.
        fields.push(Field::new(
            col::SERVER_DURATION_SUM_NANO,
            DataType::Int64,
            true,
        ));
        fields.extend(sketch_fields(
            col::SERVER_LATENCY_BUCKETS,
            col::SERVER_LATENCY_COUNTS,
            true,
        ));
    }
    fields
}

fn build_schema<K: RollupKey>() -> SchemaRef {
    let mut fields = vec![Field::new(col::TIME, timestamp_type(), false)];
    fields.extend(K::key_fields());
    fields.extend(measure_fields(K::server_side()));
    Arc::new(Schema::new(fields))
}

/// A sketch per row as the two list columns (bucket indexes, counts) the tables store.
fn sketch_columns<'a>(sketches: impl Iterator<Item = &'a LatencySketch>) -> [ArrayRef; 2] {
    let mut buckets = ListBuilder::new(Int32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int32,
        false,
    )));
    let mut counts = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Int64,
        false,
    )));
    for sketch in sketches {
        for (b, c) in sketch.buckets() {
            buckets.values().append_value(b);
            counts.values().append_value(c as i64);
        }
        buckets.append(true);
        counts.append(true);
    }
    [Arc::new(buckets.finish()), Arc::new(counts.finish())]
}

/// The sketch of row `i` of two list columns; empty where null.
fn sketch_at(buckets: &ListArray, counts: &ListArray, i: usize) -> LatencySketch {
    if buckets.is_null(i) || counts.is_null(i) {
        return LatencySketch::new();
    }
    let (b, c) = (buckets.value(i), counts.value(i));
    match (
        b.as_primitive_opt::<Int32Type>(),
        c.as_primitive_opt::<Int64Type>(),
    ) {
        (Some(b), Some(c)) => LatencySketch::from_buckets(b.values(), c.values()),
        _ => LatencySketch::new(),
    }
}

pub fn span_red_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA.get_or_init(build_schema::<RedKey>).clone()
}

pub fn service_edges_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA.get_or_init(build_schema::<EdgeKey>).clone()
}

/// Rows of one rollup table being summed: one [`Measures`] per key.
#[derive(Debug, Clone)]
pub struct Aggregate<K> {
    rows: HashMap<K, Measures>,
}

impl<K> Default for Aggregate<K> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
        }
    }
}

impl<K: RollupKey> Aggregate<K> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn add(&mut self, key: K, measures: &Measures) {
        match self.rows.get_mut(&key) {
            Some(m) => m.merge(measures),
            None => {
                self.rows.insert(key, measures.clone());
            }
        }
    }

    pub fn record(&mut self, key: K, duration_nano: i64, error: bool) {
        self.rows
            .entry(key)
            .or_default()
            .record(duration_nano, error);
    }

    pub fn record_call(
        &mut self,
        key: K,
        duration_nano: i64,
        callee_nano: Option<i64>,
        error: bool,
    ) {
        self.rows
            .entry(key)
            .or_default()
            .record_call(duration_nano, callee_nano, error);
    }

    /// Adds every row of a batch of this table (as written by [`to_batch`](Self::to_batch)).
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        for (key, measures) in read_rows::<K>(batch)? {
            self.add(key, &measures);
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Measures)> {
        self.rows.iter()
    }

    pub fn into_rows(self) -> impl Iterator<Item = (K, Measures)> {
        self.rows.into_iter()
    }

    /// The rows in key order as one batch; `None` when empty.
    pub fn to_batch(&self) -> Result<Option<RecordBatch>, StorageError> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let mut rows: Vec<(&K, &Measures)> = self.rows.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let keys: Vec<&K> = rows.iter().map(|(k, _)| *k).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from_iter_values(keys.iter().map(|k| k.minute()))
                .with_timezone("UTC"),
        )];
        columns.extend(K::key_columns(&keys));
        let int = |f: &dyn Fn(&Measures) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, m)| f(m))))
        };
        columns.push(int(&|m| m.calls as i64));
        columns.push(int(&|m| m.errors as i64));
        columns.push(int(&|m| m.duration_sum_nano));
        columns.push(int(&|m| m.duration_min_nano));
        columns.push(int(&|m| m.duration_max_nano));
        columns.extend(sketch_columns(rows.iter().map(|(_, m)| &m.latency)));
        if K::server_side() {
            columns.push(int(&|m| m.server_duration_sum_nano));
            columns.extend(sketch_columns(rows.iter().map(|(_, m)| &m.server_latency)));
        }
        Ok(Some(RecordBatch::try_new(K::schema(), columns)?))
    }

    /// Empties the aggregate into a batch.
    pub fn take_batch(&mut self) -> Result<Option<RecordBatch>, StorageError> {
        let batch = self.to_batch()?;
        self.rows.clear();
        Ok(batch)
    }
}

/// Reads the rows of a rollup batch back into keys and measures.
pub fn read_rows<K: RollupKey>(batch: &RecordBatch) -> Result<Vec<(K, Measures)>, StorageError> {
    let keys = K::read_keys(batch)?;
    let int = |name| column::<Int64Array>(batch, name);
    let (calls, errors, sums, mins, maxs) = (
        int(col::CALLS)?,
        int(col::ERRORS)?,
        int(col::DURATION_SUM_NANO)?,
        int(col::DURATION_MIN_NANO)?,
        int(col::DURATION_MAX_NANO)?,
    );
    let buckets = column::<ListArray>(batch, col::LATENCY_BUCKETS)?;
    let counts = column::<ListArray>(batch, col::LATENCY_COUNTS)?;
    // Absent from files written before edges kept the callee's side, and from `span_red`.
    let server = || -> Option<(&Int64Array, &ListArray, &ListArray)> {
        let get = |name| batch.column_by_name(name).map(|c| c.as_any());
        Some((
            get(col::SERVER_DURATION_SUM_NANO)?.downcast_ref()?,
            get(col::SERVER_LATENCY_BUCKETS)?.downcast_ref()?,
            get(col::SERVER_LATENCY_COUNTS)?.downcast_ref()?,
        ))
    };
    let server = server();
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate() {
        let (server_duration_sum_nano, server_latency) = match server {
            Some((sums, b, c)) if sums.is_valid(i) => (sums.value(i), sketch_at(b, c, i)),
            _ => (0, LatencySketch::new()),
        };
        out.push((
            key,
            Measures {
                calls: calls.value(i).max(0) as u64,
                errors: errors.value(i).max(0) as u64,
                duration_sum_nano: sums.value(i),
                duration_min_nano: mins.value(i),
                duration_max_nano: maxs.value(i),
                latency: sketch_at(buckets, counts, i),
                server_duration_sum_nano,
                server_latency,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_into_the_same_rows() {
        let mut red = Aggregate::<RedKey>::default();
        let key = |op: &str, minute| RedKey {
            service: "cart".into(),
            operation: op.into(),
            span_kind: 2,
            status_code: 0,
            load_test: false,
            minute,
        };
        red.record(key("GET /cart", 0), 1_000_000, false);
        red.record(key("GET /cart", 0), 3_000_000, true);
        red.record(key("POST /cart", NANOS_PER_MINUTE), 7, false);
        let batch = red.to_batch().unwrap().unwrap();
        assert_eq!(batch.schema(), span_red_schema());
        let mut back = Aggregate::<RedKey>::default();
        back.add_batch(&batch).unwrap();
        back.add_batch(&batch).unwrap();
        let m = &back.rows[&key("GET /cart", 0)];
        assert_eq!((m.calls, m.errors, m.duration_sum_nano), (4, 2, 8_000_000));
        assert_eq!(
            (m.duration_min_nano, m.duration_max_nano),
            (1_000_000, 3_000_000)
        );
        assert_eq!(m.latency.count(), 4);
        assert_eq!(back.len(), 2);

        let mut edges = Aggregate::<EdgeKey>::default();
        let edge = EdgeKey {
            source: "cart".into(),
            source_kind: NodeKind::Service,
            target: "postgresql".into(),
            target_kind: NodeKind::Database,
            load_test: false,
            minute: 0,
        };
        edges.record_call(edge.clone(), 5, Some(3), false);
        edges.record_call(edge.clone(), 7, None, false);
        let batch = edges.take_batch().unwrap().unwrap();
        assert!(edges.is_empty());
        let rows = read_rows::<EdgeKey>(&batch).unwrap();
        assert_eq!(rows[0].0, edge);
        assert_eq!(rows[0].1.duration_sum_nano, 12);
        assert_eq!(rows[0].1.server_duration_sum_nano, 10);
        assert_eq!(rows[0].1.server_latency.count(), 2);
        // A file from before the callee's side was kept reads as an empty one.
        let old = batch
            .project(&(0..batch.num_columns() - 3).collect::<Vec<_>>())
            .unwrap();
        let rows = read_rows::<EdgeKey>(&old).unwrap();
        assert_eq!(rows[0].1.calls, 2);
        assert!(rows[0].1.server_latency.is_empty());
    }
}

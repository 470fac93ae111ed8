//! `GET /metrics`: Sightline's own measurements (ingest, refusals by reason, the WAL, flushes,
//! compaction, queries, memory) and the span metrics, in Prometheus's text format or
//! OpenMetrics (with exemplars), for any Prometheus to scrape.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sightline_collector::receiver;
use sightline_query::exposition::{self, Family, Format, Kind};
use sightline_query::prometheus::QueryTelemetry;
use sightline_query::span_metrics::Totals;
use sightline_query::QueryEngine;
use sightline_storage::rollup;
use sightline_storage::Store;
use tokio::sync::Mutex;

struct Exporter {
    store: Store,
    engine: QueryEngine,
    queries: Arc<QueryTelemetry>,
    span_metrics: Mutex<Totals>,
}

pub fn router(store: Store, engine: QueryEngine, queries: Arc<QueryTelemetry>) -> Router {
    let now = sightline_query::params::now_unix_nano();
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Exporter {
            store,
            engine,
            queries,
            span_metrics: Mutex::new(Totals::new(now)),
        }))
}

async fn metrics(State(exporter): State<Arc<Exporter>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let mut families = own_families(&exporter);
    {
        let mut totals = exporter.span_metrics.lock().await;
        let now = sightline_query::params::now_unix_nano();
        if let Err(e) = totals.update(&exporter.engine.pinned(), now).await {
            // The store's own figures still answer; the span metrics catch up next scrape.
            tracing::warn!(error = %e, "span metrics for /metrics could not be read");
        }
        families.extend(totals.families());
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        exposition::write(&families, format),
    )
        .into_response()
}

fn counter(name: &str, help: &str, value: u64) -> Family {
    let mut f = Family::new(name, Kind::Counter, help);
    f.value(&[], value as f64);
    f
}

fn gauge(name: &str, help: &str, value: f64) -> Family {
    let mut f = Family::new(name, Kind::Gauge, help);
    f.value(&[], value);
    f
}

fn own_families(exporter: &Exporter) -> Vec<Family> {
    let store = &exporter.store;
    let engine = store.engine();
    let stats = engine.stats();
    let version = store.version();
    let derived = engine.derive_counters();
    let derived = |name: &str| derived.get(name).copied().unwrap_or(0);

    let mut rows = Family::new(
        "sightline_rows_acknowledged",
        Kind::Counter,
        "Rows written durably, by table (spans, metric samples, rollups, ...).",
    );
    let mut in_files = Family::new(
        "sightline_table_bytes",
        Kind::Gauge,
        "Bytes of Parquet files, by table.",
    );
    for t in &version.tables {
        let table = [("table", t.spec.name)];
        rows.value(&table, engine.rows_acknowledged(t.spec.name) as f64);
        in_files.value(&table, t.files.iter().map(|f| f.bytes).sum::<u64>() as f64);
    }
    let mut requests_refused = Family::new(
        "sightline_requests_refused",
        Kind::Counter,
        "Ingest requests refused, by protocol and reason.",
    );
    for ((protocol, reason), n) in receiver::refusals() {
        requests_refused.value(&[("protocol", protocol), ("reason", reason)], n as f64);
    }
    let mut items_refused = Family::new(
        "sightline_items_refused",
        Kind::Counter,
        "Spans and metric points refused inside accepted requests, by signal and reason.",
    );
    for (reason, n) in receiver::spans_refused() {
        items_refused.value(&[("signal", "spans"), ("reason", reason)], n as f64);
    }
    for (reason, n) in store.refusals() {
        items_refused.value(&[("signal", "metrics"), ("reason", reason)], n as f64);
    }
    let mut seals = Family::new(
        "sightline_seals",
        Kind::Counter,
        "In-memory buffers sealed for flushing, by cause.",
    );
    for (cause, n) in [
        ("age", &stats.seals_by_age),
        ("size", &stats.seals_by_size),
        ("memory", &stats.seals_by_memory),
    ] {
        seals.value(&[("cause", cause)], n.load(Relaxed) as f64);
    }
    let latency = |name: &str, help: &str, h: &sightline_storage::telemetry::DurationHistogram| {
        let mut f = Family::new(name, Kind::Histogram, help);
        f.histogram(&[], &h.snapshot());
        f
    };
    let queries = &exporter.queries;
    let mut remote_reads = Family::new(
        "sightline_remote_read_requests",
        Kind::Counter,
        "Remote-read requests answered, by response type.",
    );
    remote_reads
        .value(
            &[("response_type", "samples")],
            queries.remote_reads_sampled.load(Relaxed) as f64,
        )
        .value(
            &[("response_type", "streamed_xor_chunks")],
            queries.remote_reads_streamed.load(Relaxed) as f64,
        );
    vec![
        remote_reads,
        rows,
        in_files,
        requests_refused,
        items_refused,
        counter(
            "sightline_wal_bytes_written",
            "Bytes appended to the write-ahead log.",
            stats.wal_bytes.load(Relaxed),
        ),
        latency(
            "sightline_wal_commit_seconds",
            "Time to write and fsync one group commit of the write-ahead log.",
            &stats.wal_commit_seconds,
        ),
        counter(
            "sightline_wal_rotation_failures",
            "Failed rotations of the write-ahead log.",
            stats.wal_rotation_failures.load(Relaxed),
        ),
        seals,
        counter(
            "sightline_files_flushed",
            "Parquet files written from memory.",
            stats.files_flushed.load(Relaxed),
        ),
        latency(
            "sightline_flush_seconds",
            "Time to write one sealed buffer to Parquet and commit it.",
            &stats.flush_seconds,
        ),
        counter(
            "sightline_flush_failures",
            "Flushes that failed (and will be retried).",
            stats.flush_failures.load(Relaxed),
        ),
        counter(
            "sightline_files_compacted",
            "Parquet files merged away by compaction.",
            stats.files_compacted.load(Relaxed),
        ),
        latency(
            "sightline_compaction_seconds",
            "Time to merge one set of files.",
            &stats.compaction_seconds,
        ),
        counter(
            "sightline_partitions_expired",
            "Partitions removed by retention.",
            stats.partitions_expired.load(Relaxed),
        ),
        latency(
            "sightline_promql_query_seconds",
            "Time to answer one PromQL query (query and query_range).",
            &queries.seconds,
        ),
        counter(
            "sightline_promql_queries_failed",
            "PromQL queries that failed in evaluation.",
            queries.failed.load(Relaxed),
        ),
        counter(
            "sightline_promql_queries_timed_out",
            "PromQL queries that ran out of time.",
            queries.timed_out.load(Relaxed),
        ),
        gauge(
            "sightline_memory_used_bytes",
            "Memory held by buffers and requests, counted against the budget.",
            store.memory().used() as f64,
        ),
        gauge(
            "sightline_memory_budget_bytes",
            "The memory budget.",
            store.memory().limit() as f64,
        ),
        gauge(
            "sightline_active_series",
            "Metric series with a sample in this hour or the last.",
            store.active_series() as f64,
        ),
        counter(
            "sightline_rollup_spans_folded",
            "Spans counted under __other__ because the rollup series cap was reached.",
            derived(rollup::ROLLUP_SPANS_FOLDED),
        ),
        counter(
            "sightline_call_halves_unpaired",
            "Halves of calls whose other half never came.",
            derived(rollup::CALL_HALVES_UNPAIRED),
        ),
    ]
}

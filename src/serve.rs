//! `sightline serve`: the embedded store, the OTLP receivers and the HTTP port, each built by a
//! small function and started together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sightline_collector::otlp::{self, metrics::OtlpMetricsConfig, Otlp};
use sightline_collector::{lookout, remote_write, zipkin, Receiving};
use sightline_query::{LiveStore, QueryEngine, SqlLimits};
use sightline_storage::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    // Installed before anything is announced, so a signal sent right after start-up is a clean
    // shutdown rather than the default, abrupt exit.
    let signals = ShutdownSignals::install()?;
    let store = open_store(&config).await?;
    let receiving = Receiving::new(Arc::new(store.clone()));
    let otlp = Otlp::new(
        Arc::clone(&receiving),
        OtlpMetricsConfig {
            promote_resource_attributes: config.otlp_promote_resource_attributes.clone(),
        },
    );

    let engine = QueryEngine::new(Arc::new(LiveStore(store.clone())))
        .context("building the query engine")?;

    let grpc = bind(config.otlp_grpc_addr, "otlp grpc").await?;
    let otlp_http = bind(config.otlp_http_addr, "otlp http").await?;
    let http = bind(config.http_addr, "http").await?;
    let lookout_port = bind(config.lookout_addr, "lookout").await?;
    let zipkin_port = bind(config.zipkin_addr, "zipkin").await?;
    let grpc_addr = grpc.local_addr()?;
    tracing::info!(
        otlp_grpc = %grpc_addr,
        otlp_http = %otlp_http.local_addr()?,
        http = %http.local_addr()?,
        lookout = %lookout_port.local_addr()?,
        zipkin = %zipkin_port.local_addr()?,
        data_dir = %config.data_dir.display(),
        "sightline started"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = [
        tokio::spawn(serve(
            grpc,
            otlp::grpc::router(Arc::clone(&otlp)),
            stop_rx.clone(),
        )),
        tokio::spawn(serve(otlp_http, otlp::http::router(otlp), stop_rx.clone())),
        tokio::spawn(serve(
            lookout_port,
            lookout::router(Arc::clone(&receiving)),
            stop_rx.clone(),
        )),
        tokio::spawn(serve(
            zipkin_port,
            zipkin_router(&engine, &receiving),
            stop_rx.clone(),
        )),
        tokio::spawn(serve(
            http,
            http_router(store.clone(), engine, receiving, &config),
            stop_rx.clone(),
        )),
    ];
    if config.demo {
        let endpoint = crate::demo::endpoint_for(grpc_addr)?;
        tokio::spawn(async move {
            if let Err(e) = crate::demo::run(endpoint, crate::demo::DEFAULT_RATE, stop_rx).await {
                tracing::error!(error = %e, "demo shop stopped");
            }
        });
    }
    signals.wait().await;
    tracing::info!("shutting down: draining requests and flushing buffers");
    let _ = stop_tx.send(true);
    for s in servers {
        match tokio::time::timeout(DRAIN_TIMEOUT, s).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Err(_) => tracing::warn!("requests still running after the drain timeout"),
            _ => {}
        }
    }
    tokio::task::spawn_blocking(move || store.shutdown())
        .await
        .context("flushing the store")?;
    tracing::info!("sightline stopped");
    Ok(())
}

async fn open_store(config: &ServeConfig) -> anyhow::Result<Store> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.engine.retention = config.retention;
    store_config.engine.memory_budget = config.memory_budget;
    store_config.engine.seal_max_age = config.seal_max_age;
    store_config.engine.seal_max_bytes = config.seal_max_bytes;
    store_config.engine.compaction_target_rows = config.compaction_target_rows;
    store_config.engine.maintenance_interval = config.maintenance_interval;
    store_config.rollups.edge_wait = config.edge_wait;
    store_config.rollups.max_series_per_hour = config.max_series_per_hour;
    store_config.metrics.out_of_order_window = config.out_of_order_window;
    store_config.metrics.max_active_series = config.max_active_series;
    store_config.metrics.max_series_per_metric = config.max_series_per_metric;
    let dir = config.data_dir.display().to_string();
    // Opening replays the WAL, which may take a while: off the async workers.
    tokio::task::spawn_blocking(move || Store::open(store_config))
        .await?
        .with_context(|| format!("opening the store in {dir}"))
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} port {addr}"))
}

async fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}

/// Port 8080: health, readiness, `/metrics`, the store's status and maintenance endpoints, the
/// query API (docs/api.md), the Prometheus HTTP API and remote write, Zipkin's span intake, and
/// the web UI's pages and assets.
fn http_router(
    store: Store,
    engine: QueryEngine,
    receiving: Arc<Receiving>,
    config: &ServeConfig,
) -> Router {
    let mut prom_config = sightline_query::prometheus::PromApiConfig {
        timeout: config.query_timeout,
        slow_query: config.slow_query,
        ..Default::default()
    };
    prom_config.options.max_samples = config.query_max_samples;
    prom_config.options.max_series = config.query_max_series;
    prom_config.options.require_label_matcher = config.require_label_matcher;
    let own_metrics = crate::self_metrics::router(
        store.clone(),
        engine.clone(),
        Arc::clone(&prom_config.telemetry),
    );
    let prometheus_api = sightline_query::prometheus::router(engine.clone(), prom_config);
    let query_api = sightline_query::http::router(engine.clone(), SqlLimits::default());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/status/storage", get(storage_status))
        .route("/api/v1/admin/flush", post(admin_flush))
        .route("/api/v1/admin/compact", post(admin_compact))
        .with_state(store)
        .merge(query_api)
        .merge(prometheus_api)
        .merge(own_metrics)
        .nest(zipkin::HTTP_PREFIX, zipkin_router(&engine, &receiving))
        .nest(
            "/jaeger",
            sightline_query::jaeger::router(engine.clone(), SqlLimits::default()),
        )
        .nest(
            "/tempo",
            sightline_query::tempo::router(engine.clone(), SqlLimits::default()),
        )
        .merge(remote_write::router(receiving))
        .merge(sightline_ui::router())
}

/// Zipkin's API, intake and queries, as on Zipkin's own server: at the root of port 9411 and
/// under `/zipkin` on 8080.
fn zipkin_router(engine: &QueryEngine, receiving: &Arc<Receiving>) -> Router {
    zipkin::router(Arc::clone(receiving)).merge(sightline_query::zipkin::router(
        engine.clone(),
        SqlLimits::default(),
    ))
}

async fn readyz(State(store): State<Store>) -> impl IntoResponse {
    if store.is_healthy() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "write-ahead log failed")
    }
}

#[derive(Serialize)]
struct StorageStatus {
    spans_acknowledged: u64,
    spans_in_files: u64,
    spans_in_memory: u64,
    files: usize,
    bytes_in_files: u64,
    memory_used_bytes: usize,
    memory_budget_bytes: usize,
    wal_bytes_written: u64,
    wal_syncs: u64,
    wal_rotation_failures: u64,
    files_flushed: u64,
    files_compacted: u64,
    flush_failures: u64,
    partitions_expired: u64,
    seals_by_age: u64,
    seals_by_size: u64,
    seals_by_memory: u64,
    rollup_files: usize,
    rollup_spans_folded: u64,
    rollup_calls_folded: u64,
    call_halves_unpaired: u64,
    call_halves_pending: u64,
    /// Series with a sample in this hour or the last.
    active_series: u64,
    samples_acknowledged: u64,
    histograms_acknowledged: u64,
    exemplars_acknowledged: u64,
    /// Metric points refused at admission since start, by reason.
    metric_rejections: std::collections::BTreeMap<&'static str, u64>,
    /// Every table: rows and files, in files and in memory.
    tables: Vec<TableStatus>,
}

#[derive(Serialize)]
struct TableStatus {
    name: &'static str,
    rows_acknowledged: u64,
    rows_in_files: u64,
    rows_in_memory: u64,
    files: usize,
    bytes_in_files: u64,
}

async fn storage_status(State(store): State<Store>) -> Json<StorageStatus> {
    use sightline_storage::metrics::tables as metrics;
    use sightline_storage::rollup;
    use std::sync::atomic::Ordering::Relaxed;
    let version = store.version();
    let engine = store.engine();
    let stats = engine.stats();
    let derived = engine.derive_counters();
    let tables: Vec<TableStatus> = version
        .tables
        .iter()
        .map(|t| TableStatus {
            name: t.spec.name,
            rows_acknowledged: engine.rows_acknowledged(t.spec.name),
            rows_in_files: t.files.iter().map(|f| f.rows).sum(),
            rows_in_memory: t.in_memory.iter().map(|b| b.num_rows() as u64).sum(),
            files: t.files.len(),
            bytes_in_files: t.files.iter().map(|f| f.bytes).sum(),
        })
        .collect();
    let table = |name: &str| tables.iter().find(|t| t.name == name);
    let spans = table(sightline_storage::span_table::SPANS_TABLE);
    let counter = |name: &str| derived.get(name).copied().unwrap_or(0);
    Json(StorageStatus {
        spans_acknowledged: spans.map_or(0, |t| t.rows_acknowledged),
        spans_in_files: spans.map_or(0, |t| t.rows_in_files),
        spans_in_memory: spans.map_or(0, |t| t.rows_in_memory),
        files: spans.map_or(0, |t| t.files),
        bytes_in_files: spans.map_or(0, |t| t.bytes_in_files),
        memory_used_bytes: store.memory().used(),
        memory_budget_bytes: store.memory().limit(),
        wal_bytes_written: stats.wal_bytes.load(Relaxed),
        wal_syncs: stats.wal_syncs.load(Relaxed),
        wal_rotation_failures: stats.wal_rotation_failures.load(Relaxed),
        files_flushed: stats.files_flushed.load(Relaxed),
        files_compacted: stats.files_compacted.load(Relaxed),
        flush_failures: stats.flush_failures.load(Relaxed),
        partitions_expired: stats.partitions_expired.load(Relaxed),
        seals_by_age: stats.seals_by_age.load(Relaxed),
        seals_by_size: stats.seals_by_size.load(Relaxed),
        seals_by_memory: stats.seals_by_memory.load(Relaxed),
        rollup_files: [rollup::SPAN_RED_TABLE, rollup::SERVICE_EDGES_TABLE]
            .iter()
            .filter_map(|n| table(n))
            .map(|t| t.files)
            .sum(),
        rollup_spans_folded: counter(rollup::ROLLUP_SPANS_FOLDED),
        rollup_calls_folded: counter(rollup::ROLLUP_CALLS_FOLDED),
        call_halves_unpaired: counter(rollup::CALL_HALVES_UNPAIRED),
        call_halves_pending: counter(rollup::CALL_HALVES_PENDING),
        active_series: store.active_series(),
        samples_acknowledged: engine.rows_acknowledged(metrics::SAMPLES_TABLE),
        histograms_acknowledged: engine.rows_acknowledged(metrics::HISTOGRAMS_TABLE),
        exemplars_acknowledged: engine.rows_acknowledged(metrics::EXEMPLARS_TABLE),
        metric_rejections: store.refusals(),
        tables,
    })
}

async fn admin_flush(State(store): State<Store>) -> impl IntoResponse {
    match store.flush().await {
        Ok(()) => (StatusCode::OK, "flushed".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn admin_compact(State(store): State<Store>) -> impl IntoResponse {
    let result = async {
        store.flush().await?;
        store.compact_now().await
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, "compacted".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

//! Two services whose traces join across an HTTP hop: `frontend` answers
//! `GET /checkout/{item}` by calling `backend`'s `GET /stock/{item}` through reqwest.
//!
//! ```sh
//! sightline serve &                                   # or any OTLP collector on :4317
//! cargo run -p sightline-instrument --example two_services -- backend 127.0.0.1:3001 &
//! cargo run -p sightline-instrument --example two_services -- frontend 127.0.0.1:3000 http://127.0.0.1:3001 &
//! curl localhost:3000/checkout/42
//! curl localhost:3000/metrics                         # the stat log, Prometheus text
//! ```
//!
//! Each process prints `listening on <address>` once it accepts requests, and flushes its
//! spans when it gets SIGTERM or Ctrl-C.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use sightline_instrument::metrics::{exposition, Id};
use sightline_instrument::middleware::{HttpServerLayer, TracedRequest as _};
use sightline_instrument::Builder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, address) = match args.as_slice() {
        [role, address, ..] => (role.as_str(), address.as_str()),
        _ => return Err("usage: two_services (backend ADDR | frontend ADDR BACKEND_URL)".into()),
    };
    let guard = Builder::new(role)
        .batch_delay(Duration::from_millis(200))
        .init()?;
    let registry = guard.registry().clone();
    let routes = match role {
        "backend" => Router::new().route("/stock/{item}", get(stock)),
        "frontend" => {
            let backend = args
                .get(2)
                .ok_or("frontend needs the backend's URL")?
                .clone();
            Router::new()
                .route("/checkout/{item}", get(checkout))
                .with_state(Frontend {
                    backend,
                    client: reqwest::Client::new(),
                })
        }
        other => return Err(format!("unknown role {other}").into()),
    };
    let metrics = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let registry = registry.clone();
            async move { exposition(&registry, &headers) }
        }),
    );
    let app = routes
        .layer(HttpServerLayer::new(guard.tracer().clone()).with_stat_log(guard.registry()))
        .merge(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    drop(guard); // flushes the last spans
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[derive(Clone)]
struct Frontend {
    backend: String,
    client: reqwest::Client,
}

#[tracing::instrument(skip(frontend))]
async fn checkout(
    State(frontend): State<Frontend>,
    Path(item): Path<u64>,
) -> Result<String, StatusCode> {
    let response = frontend
        .client
        .get(format!("{}/stock/{item}", frontend.backend))
        .send_traced()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if !response.status().is_success() {
        return Err(StatusCode::BAD_GATEWAY);
    }
    let stock = response.text().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    sightline_instrument::registry()
        .counter(Id::new("checkouts").with_tag("outcome", "ok"))
        .inc();
    Ok(format!("item {item}: {stock}\n"))
}

#[tracing::instrument]
async fn stock(Path(item): Path<u64>) -> Result<String, StatusCode> {
    let left = reserve(item).await;
    if left == 0 {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(format!("{left} left"))
}

/// An internal step: an OpenTracing-style span under the `tracing` span above.
async fn reserve(item: u64) -> u64 {
    let tracer = sightline_instrument::tracer();
    let mut span = tracer.span("reserve").tag("item.id", item as i64).start();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let left = 100 - item % 100;
    span.log([("event", "reserved")])
        .set_tag("stock.left", left as i64);
    span.finish();
    left
}

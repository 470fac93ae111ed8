//! The demo shop: a simulated web shop that sends its traces over OTLP/gRPC, so that a newcomer
//! sees a living service map, top-N list and dashboards within seconds (`sightline serve --demo`,
//! or `sightline demo --endpoint URL` against any OTLP receiver).
//!
//! Six services — `frontend` (the HTTP front door), `auth`, `catalog`, `cart`, `payments` and
//! `fulfillment` (consuming the `orders` Kafka topic) — a PostgreSQL database and Stripe as an
//! external API. Traffic swells and ebbs over ten minutes; calls fail now and then; database
//! queries spike; and in every ten-minute cycle Stripe has a two-minute incident (slow, failing,
//! retried) that shows up in payments and the checkout.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::config::parse_duration;
use crate::otlp_out::{self, Kind, SpanSpec, TraceExporter, Value};

#[derive(Args)]
pub struct DemoArgs {
    /// OTLP/gRPC endpoint to send to.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// Traces per second on average.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Stop after this long (e.g. `10m`); runs until interrupted without it.
    #[arg(long)]
    pub duration: Option<String>,
}

pub const DEFAULT_RATE: f64 = 20.0;
const TICK: Duration = Duration::from_millis(250);
/// The traffic and incident cycle.
const CYCLE_SECS: u64 = 600;
/// When, within each cycle, Stripe is in trouble.
const INCIDENT_SECS: std::ops::Range<u64> = 300..420;
const RESOURCE: [(&str, &str); 2] = [
    ("service.version", "2.3.1"),
    ("deployment.environment", "demo"),
];

impl DemoArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let run = run(self.endpoint.clone(), self.rate, stop_rx);
        match self.duration {
            Some(d) => {
                let d = parse_duration("duration", &d)?;
                match tokio::time::timeout(d, run).await {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                }
            }
            None => run.await,
        }
    }
}

/// Sends the shop's traces to `endpoint` until `stop` turns true.
pub async fn run(
    endpoint: String,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(endpoint.clone())?.connect_lazy();
    let mut exporter = TraceExporter::new(channel);
    let mut rng = SmallRng::from_os_rng();
    let mut owed = 0.0f64;
    let mut interval = tokio::time::interval(TICK);
    let mut failures = 0u64;
    tracing::info!(%endpoint, rate, "demo shop started");
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let now = now_nanos();
        let cycle = (now / 1_000_000_000) % CYCLE_SECS;
        let swell = 1.0 + 0.4 * (cycle as f64 / CYCLE_SECS as f64 * std::f64::consts::TAU).sin();
        owed += rate * swell * TICK.as_secs_f64();
        let mut spans = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            let start = now - rng.random_range(0..TICK.as_nanos() as u64);
            spans.extend(Shop::trace(&mut rng, start, INCIDENT_SECS.contains(&cycle)));
        }
        // One request per service, as each service's SDK would send: the halves of a call
        // arrive separately.
        for service in SERVICES {
            let mine: Vec<SpanSpec> = spans
                .iter()
                .filter(|s| s.service == service)
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let request = otlp_out::encode(&mine, &RESOURCE, "sightline-demo");
            if let Err(e) = exporter.export(Bytes::from(request.bytes)).await {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "demo export failed");
                }
            }
        }
    }
}

/// The OTLP/gRPC URL of a listen address; an unspecified address is reached on loopback.
pub fn endpoint_for(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let url = format!("http://{host}:{}", addr.port());
    url.parse::<tonic::transport::Uri>()
        .with_context(|| format!("demo endpoint {url}"))?;
    Ok(url)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

const SERVICES: [&str; 6] = [
    "frontend",
    "auth",
    "catalog",
    "cart",
    "payments",
    "fulfillment",
];
const MS: u64 = 1_000_000;
/// Time on the wire between a client span and its server span, each way.
const NETWORK: u64 = 300_000;

/// How a span ended: when, and the error message if it failed.
struct Outcome {
    end: u64,
    error: Option<String>,
}

type Handler = fn(&mut Shop, [u8; 8], u64) -> Outcome;

/// One trace being built.
struct Shop {
    rng: SmallRng,
    trace_id: [u8; 16],
    spans: Vec<SpanSpec>,
    incident: bool,
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

impl Shop {
    fn trace(rng: &mut SmallRng, start: u64, incident: bool) -> Vec<SpanSpec> {
        let trace_id = rng.random();
        let mut shop = Shop {
            rng: SmallRng::seed_from_u64(rng.random()),
            trace_id,
            spans: Vec::new(),
            incident,
        };
        let (method, route, handler): (&str, &str, Handler) = match shop.rng.random_range(0..100) {
            0..=29 => ("GET", "/", Shop::home),
            30..=64 => ("GET", "/product/{id}", Shop::product_page),
            65..=84 => ("POST", "/cart", Shop::add_to_cart),
            _ => ("POST", "/checkout", Shop::checkout),
        };
        let id = shop.new_id();
        let outcome = handler(&mut shop, id, start);
        shop.server_span("frontend", method, route, id, None, start, &outcome);
        shop.spans
    }

    fn new_id(&mut self) -> [u8; 8] {
        self.rng.random()
    }

    /// A log-normal duration around `median_ms`.
    fn latency(&mut self, median_ms: f64) -> u64 {
        let u1: f64 = self.rng.random_range(1e-12..1.0);
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (median_ms * (0.5 * z).exp() * MS as f64) as u64
    }

    fn fails(&mut self, probability: f64) -> bool {
        self.rng.random_bool(probability)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        service: &'static str,
        name: String,
        kind: Kind,
        id: [u8; 8],
        parent: Option<[u8; 8]>,
        start: u64,
        outcome: &Outcome,
        attributes: Vec<(String, Value)>,
    ) {
        self.spans.push(SpanSpec {
            service,
            trace_id: self.trace_id,
            span_id: id,
            parent,
            name,
            kind,
            start,
            end: outcome.end,
            error: outcome.error.clone(),
            attributes,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn server_span(
        &mut self,
        service: &'static str,
        method: &str,
        route: &str,
        id: [u8; 8],
        parent: Option<[u8; 8]>,
        start: u64,
        outcome: &Outcome,
    ) {
        let status = if outcome.error.is_some() { 500 } else { 200 };
        self.push(
            service,
            format!("{method} {route}"),
            Kind::Server,
            id,
            parent,
            start,
            outcome,
            vec![
                ("http.request.method".into(), s(method)),
                ("http.route".into(), s(route)),
                ("http.response.status_code".into(), Value::Int(status)),
                ("url.scheme".into(), s("http")),
            ],
        );
    }

    /// An HTTP call from `caller` to `callee`: a CLIENT span in the caller, a SERVER span in the
    /// callee running `handler`.
    #[allow(clippy::too_many_arguments)]
    fn http_call(
        &mut self,
        caller: &'static str,
        parent: [u8; 8],
        callee: &'static str,
        method: &str,
        route: &str,
        start: u64,
        handler: Handler,
    ) -> Outcome {
        let client_id = self.new_id();
        let server_id = self.new_id();
        let inner = handler(self, server_id, start + NETWORK);
        self.server_span(
            callee,
            method,
            route,
            server_id,
            Some(client_id),
            start + NETWORK,
            &inner,
        );
        let outcome = Outcome {
            end: inner.end + NETWORK,
            error: inner.error.map(|_| format!("{callee} answered 500")),
        };
        let status = if outcome.error.is_some() { 500 } else { 200 };
        self.push(
            caller,
            format!("{method} {route}"),
            Kind::Client,
            client_id,
            Some(parent),
            start,
            &outcome,
            vec![
                ("http.request.method".into(), s(method)),
                ("server.address".into(), s(&format!("{callee}.shop.svc"))),
                ("http.response.status_code".into(), Value::Int(status)),
            ],
        );
        outcome
    }

    /// A query to the shop's PostgreSQL database; 1% of them hit a cold cache.
    fn query(
        &mut self,
        service: &'static str,
        parent: [u8; 8],
        start: u64,
        statement: &str,
    ) -> Outcome {
        let mut took = self.latency(1.5);
        if self.fails(0.01) {
            took *= 20;
        }
        let error = self.fails(0.003).then(|| "deadlock detected".to_string());
        let outcome = Outcome {
            end: start + took,
            error,
        };
        let id = self.new_id();
        let operation = statement.split_whitespace().next().unwrap_or("SELECT");
        let table = statement.split_whitespace().last().unwrap_or("");
        self.push(
            service,
            format!("{operation} shop.{table}"),
            Kind::Client,
            id,
            Some(parent),
            start,
            &outcome,
            vec![
                ("db.system".into(), s("postgresql")),
                ("db.namespace".into(), s("shop")),
                ("db.operation.name".into(), s(operation)),
                ("db.query.text".into(), s(statement)),
                ("server.address".into(), s("postgres.shop.svc")),
            ],
        );
        outcome
    }

    fn done(start: u64, work_ms: u64, error: Option<String>) -> Outcome {
        Outcome {
            end: start + work_ms * MS / 10,
            error,
        }
    }

    // Handlers: what each endpoint does.

    fn home(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let products = self.http_call(
            "frontend",
            id,
            "catalog",
            "GET",
            "/products",
            start,
            Shop::list_products,
        );
        let cart = self.http_call(
            "frontend",
            id,
            "cart",
            "GET",
            "/cart",
            products.end,
            Shop::get_cart,
        );
        let render = self.latency(2.0);
        let render_id = self.new_id();
        let rendered = Outcome {
            end: cart.end + render,
            error: None,
        };
        self.push(
            "frontend",
            "render home".into(),
            Kind::Internal,
            render_id,
            Some(id),
            cart.end,
            &rendered,
            vec![],
        );
        Shop::done(rendered.end, 2, products.error.or(cart.error))
    }

    /// Verifies the caller's token with `auth`: when it is refused, the request ends there.
    fn authorized(&mut self, id: [u8; 8], start: u64) -> Result<u64, Outcome> {
        let auth = self.http_call(
            "frontend",
            id,
            "auth",
            "POST",
            "/verify",
            start,
            Shop::verify,
        );
        match auth.error {
            Some(e) => Err(Shop::done(auth.end, 3, Some(e))),
            None => Ok(auth.end),
        }
    }

    fn product_page(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let at = match self.authorized(id, start) {
            Ok(at) => at,
            Err(denied) => return denied,
        };
        let item = self.http_call(
            "frontend",
            id,
            "catalog",
            "GET",
            "/products/{id}",
            at,
            Shop::get_product,
        );
        Shop::done(item.end, 5, item.error)
    }

    fn add_to_cart(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let at = match self.authorized(id, start) {
            Ok(at) => at,
            Err(denied) => return denied,
        };
        let added = self.http_call(
            "frontend",
            id,
            "cart",
            "POST",
            "/cart/items",
            at,
            Shop::add_item,
        );
        Shop::done(added.end, 4, added.error)
    }

    fn checkout(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let at = match self.authorized(id, start) {
            Ok(at) => at,
            Err(denied) => return denied,
        };
        let cart = self.http_call("frontend", id, "cart", "GET", "/cart", at, Shop::get_cart);
        let paid = self.http_call(
            "frontend",
            id,
            "payments",
            "POST",
            "/charge",
            cart.end,
            Shop::charge,
        );
        Shop::done(paid.end, 6, cart.error.or(paid.error))
    }

    fn verify(&mut self, _id: [u8; 8], start: u64) -> Outcome {
        let took = self.latency(1.2);
        let error = self
            .fails(0.005)
            .then(|| "token service unavailable".to_string());
        Outcome {
            end: start + took,
            error,
        }
    }

    fn list_products(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let q = self.query("catalog", id, start, "SELECT id, name, price FROM products");
        Shop::done(q.end, 8, q.error)
    }

    fn get_product(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let q = self.query("catalog", id, start, "SELECT * FROM products");
        let stock = self.query("catalog", id, q.end, "SELECT count FROM stock");
        Shop::done(stock.end, 4, q.error.or(stock.error))
    }

    fn get_cart(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let q = self.query("cart", id, start, "SELECT * FROM cart_items");
        Shop::done(q.end, 3, q.error)
    }

    fn add_item(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let q = self.query("cart", id, start, "INSERT INTO cart_items");
        Shop::done(q.end, 3, q.error)
    }

    /// Charges the card at Stripe — retried once when it fails — then publishes the order.
    fn charge(&mut self, id: [u8; 8], start: u64) -> Outcome {
        let mut at = start + 500_000;
        let mut error = None;
        for attempt in 1..=2 {
            let (median, failure) = if self.incident {
                (900.0, 0.3)
            } else {
                (120.0, 0.01)
            };
            let took = self.latency(median);
            error = self
                .fails(failure)
                .then(|| "stripe: 502 Bad Gateway".to_string());
            let outcome = Outcome {
                end: at + took,
                error: error.clone(),
            };
            let call_id = self.new_id();
            self.push(
                "payments",
                "POST /v1/charges".into(),
                Kind::Client,
                call_id,
                Some(id),
                at,
                &outcome,
                vec![
                    ("http.request.method".into(), s("POST")),
                    ("peer.service".into(), s("stripe")),
                    ("server.address".into(), s("api.stripe.com")),
                    ("http.request.resend_count".into(), Value::Int(attempt - 1)),
                    (
                        "http.response.status_code".into(),
                        Value::Int(if outcome.error.is_some() { 502 } else { 200 }),
                    ),
                ],
            );
            at = outcome.end + 200_000;
            if error.is_none() {
                break;
            }
        }
        if error.is_some() {
            return Shop::done(at, 2, error);
        }
        let record = self.query("payments", id, at, "INSERT INTO payments");
        let published = self.publish(id, record.end);
        Shop::done(published, 2, record.error)
    }

    /// Publishes the order to Kafka; `fulfillment` consumes it a little later.
    fn publish(&mut self, parent: [u8; 8], start: u64) -> u64 {
        let messaging = vec![
            ("messaging.system".into(), s("kafka")),
            ("messaging.destination.name".into(), s("orders")),
            ("messaging.operation.type".into(), s("publish")),
        ];
        let producer_id = self.new_id();
        let sent = Outcome {
            end: start + self.latency(0.8),
            error: None,
        };
        self.push(
            "payments",
            "orders publish".into(),
            Kind::Producer,
            producer_id,
            Some(parent),
            start,
            &sent,
            messaging.clone(),
        );
        let consumer_id = self.new_id();
        let picked_up = sent.end + self.latency(15.0);
        let shipment = self.query(
            "fulfillment",
            consumer_id,
            picked_up + MS,
            "INSERT INTO shipments",
        );
        let processed = Outcome {
            end: shipment.end + self.latency(1.0),
            error: shipment.error,
        };
        let mut attributes = messaging;
        attributes[2].1 = s("process");
        self.push(
            "fulfillment",
            "orders process".into(),
            Kind::Consumer,
            consumer_id,
            Some(producer_id),
            picked_up,
            &processed,
            attributes,
        );
        sent.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_whole_and_linked() {
        let mut rng = SmallRng::seed_from_u64(7);
        for incident in [false, true] {
            for _ in 0..200 {
                let spans = Shop::trace(&mut rng, 1_000_000_000_000, incident);
                let roots: Vec<_> = spans.iter().filter(|s| s.parent.is_none()).collect();
                assert_eq!(roots.len(), 1);
                assert_eq!(roots[0].service, "frontend");
                for s in &spans {
                    assert!(s.end >= s.start, "{s:?}");
                    if let Some(p) = s.parent {
                        assert!(spans.iter().any(|o| o.span_id == p), "orphan {s:?}");
                    }
                }
            }
        }
    }
}

//! The default span workload (shared/design/workloads.md): 10 services, traces of 5–30 spans with
//! CLIENT→SERVER pairs across services, HTTP/RPC/DB/messaging attributes, ~11 attributes per span
//! from ~100 keys × ~1,000 values, 1–2% errors, log-normal durations, random ids.
//!
//! Requests are encoded once as OTLP protobuf; before each send the ids are XORed with fresh
//! random keys and the times shifted to now, so the client spends its CPU on sending, not on
//! encoding, while every request still carries new random ids.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::otlp_out::{self, Kind, SpanSpec, Value};

const SERVICES: [&str; 10] = [
    "frontend",
    "checkout",
    "cart",
    "catalog",
    "payments",
    "auth",
    "shipping",
    "inventory",
    "recommendation",
    "notifications",
];
/// Resource attributes of every service besides its name.
const RESOURCE: [(&str, &str); 3] = [
    ("service.version", "1.4.2"),
    ("host.name", "node-7"),
    ("telemetry.sdk.language", "rust"),
];
const FILLER_KEYS: usize = 100;
const FILLER_VALUES: usize = 1000;
const ATTRIBUTES_PER_SPAN: usize = 11;
/// Prefixes that give filler values the length of real ones (segments, regions, flags).
const FILLER_WORDS: [&str; 8] = [
    "customer-segment-premium",
    "eu-west-1-zone-b",
    "feature-flag-checkout-v2",
    "tenant-acme-corp",
    "experiment-cohort-control",
    "payment-provider-stripe",
    "locale-en-gb",
    "cache-tier-hot",
];

/// One pre-encoded request and the time its spans were encoded at.
pub struct Template {
    pub request: otlp_out::Encoded,
    base_time: u64,
}

impl Template {
    /// A copy with fresh ids and times starting at `now_unix_nano`.
    pub fn instantiate(&self, rng: &mut SmallRng, now_unix_nano: u64) -> Vec<u8> {
        let r = &self.request;
        let mut out = r.bytes.clone();
        let trace_key: [u8; 16] = rng.random();
        let span_key: [u8; 8] = rng.random();
        for &p in &r.trace_id_at {
            for (b, k) in out[p..p + 16].iter_mut().zip(trace_key) {
                *b ^= k;
            }
        }
        for &p in &r.span_id_at {
            for (b, k) in out[p..p + 8].iter_mut().zip(span_key) {
                *b ^= k;
            }
        }
        let shift = now_unix_nano.saturating_sub(self.base_time);
        for &p in &r.time_at {
            let mut t = [0u8; 8];
            t.copy_from_slice(&out[p..p + 8]);
            let v = u64::from_le_bytes(t).wrapping_add(shift);
            out[p..p + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// Log-normal duration in nanoseconds around `median_ms`.
fn lognormal_ns(rng: &mut SmallRng, median_ms: f64) -> u64 {
    // Box-Muller for a standard normal.
    let u1: f64 = rng.random_range(1e-12..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (median_ms * (0.8 * z).exp() * 1e6) as u64
}

struct TraceGen<'r> {
    rng: &'r mut SmallRng,
    spans: Vec<SpanSpec>,
    target: usize,
    trace_id: [u8; 16],
}

impl TraceGen<'_> {
    fn filler(&mut self, attrs: &mut Vec<(String, Value)>) {
        while attrs.len() < ATTRIBUTES_PER_SPAN {
            let k = self.rng.random_range(0..FILLER_KEYS);
            let v = self.rng.random_range(0..FILLER_VALUES);
            let value = if k % 5 == 0 {
                Value::Int(v as i64)
            } else {
                Value::Str(format!("{}-{v:04}", FILLER_WORDS[v % FILLER_WORDS.len()]))
            };
            attrs.push((format!("app.attr_{k:02}"), value));
        }
    }

    fn push(&mut self, mut s: SpanSpec) -> [u8; 8] {
        self.filler(&mut s.attributes);
        let id = s.span_id;
        self.spans.push(s);
        id
    }

    fn new_id(&mut self) -> [u8; 8] {
        self.rng.random()
    }

    /// A SERVER span in `service` handling `route`, and whatever it calls.
    fn server(&mut self, service: usize, parent: Option<[u8; 8]>, start: u64, depth: usize) -> u64 {
        let route = format!("/api/{}/{{id}}", SERVICES[service]);
        let error = self.rng.random_bool(0.015);
        let mut attrs = vec![
            (
                "http.request.method".into(),
                Value::Str(["GET", "POST"][self.rng.random_range(0..2)].into()),
            ),
            ("http.route".into(), Value::Str(route.clone())),
            (
                "http.response.status_code".into(),
                Value::Int(if error { 500 } else { 200 }),
            ),
            ("url.scheme".into(), Value::Str("http".into())),
        ];
        let id = self.new_id();
        let mut cursor = start + 200_000;
        let calls = if depth >= 3 {
            0
        } else {
            self.rng.random_range(0..=3)
        };
        for _ in 0..calls {
            if self.spans.len() + 2 > self.target {
                break;
            }
            let end = match self.rng.random_range(0..10) {
                0..=5 => {
                    let callee = self.rng.random_range(0..SERVICES.len());
                    self.client_call(service, callee, id, cursor, depth)
                }
                6..=8 => self.db_call(service, id, cursor),
                _ => self.publish(service, id, cursor),
            };
            cursor = end + 100_000;
        }
        let end = cursor.max(start + lognormal_ns(self.rng, 3.0));
        attrs.push((
            "server.address".into(),
            Value::Str(format!("{}.svc", SERVICES[service])),
        ));
        self.spans.push(SpanSpec {
            service: SERVICES[service],
            trace_id: self.trace_id,
            span_id: id,
            parent,
            name: format!("GET {route}"),
            kind: Kind::Server,
            start,
            end,
            error: error.then(|| "upstream returned an error".to_string()),
            attributes: attrs,
        });
        let last = self.spans.len() - 1;
        let mut attrs = std::mem::take(&mut self.spans[last].attributes);
        self.filler(&mut attrs);
        self.spans[last].attributes = attrs;
        end
    }

    fn client_call(
        &mut self,
        caller: usize,
        callee: usize,
        parent: [u8; 8],
        start: u64,
        depth: usize,
    ) -> u64 {
        let id = self.new_id();
        let server_end = self.server(callee, Some(id), start + 150_000, depth + 1);
        let end = server_end + 150_000;
        self.push(SpanSpec {
            service: SERVICES[caller],
            trace_id: self.trace_id,
            span_id: id,
            parent: Some(parent),
            name: format!("GET /api/{}", SERVICES[callee]),
            kind: Kind::Client,
            start,
            end,
            error: None,
            attributes: vec![
                ("http.request.method".into(), Value::Str("GET".into())),
                (
                    "server.address".into(),
                    Value::Str(format!("{}.svc", SERVICES[callee])),
                ),
                ("peer.service".into(), Value::Str(SERVICES[callee].into())),
            ],
        });
        end
    }

    fn db_call(&mut self, service: usize, parent: [u8; 8], start: u64) -> u64 {
        let id = self.new_id();
        let end = start + lognormal_ns(self.rng, 1.5);
        let table = ["orders", "users", "items", "carts"][self.rng.random_range(0..4)];
        let error = self.rng.random_bool(0.01);
        self.push(SpanSpec {
            service: SERVICES[service],
            trace_id: self.trace_id,
            span_id: id,
            parent: Some(parent),
            name: format!("SELECT {table}"),
            kind: Kind::Client,
            start,
            end,
            error: error.then(|| "upstream returned an error".to_string()),
            attributes: vec![
                ("db.system".into(), Value::Str("postgresql".into())),
                ("db.operation.name".into(), Value::Str("SELECT".into())),
                ("db.collection.name".into(), Value::Str(table.into())),
                ("server.address".into(), Value::Str("postgres.svc".into())),
            ],
        });
        end
    }

    fn publish(&mut self, service: usize, parent: [u8; 8], start: u64) -> u64 {
        let id = self.new_id();
        let end = start + lognormal_ns(self.rng, 0.5);
        self.push(SpanSpec {
            service: SERVICES[service],
            trace_id: self.trace_id,
            span_id: id,
            parent: Some(parent),
            name: "orders publish".into(),
            kind: Kind::Producer,
            start,
            end,
            error: None,
            attributes: vec![
                ("messaging.system".into(), Value::Str("kafka".into())),
                (
                    "messaging.destination.name".into(),
                    Value::Str("orders".into()),
                ),
            ],
        });
        if self.spans.len() < self.target {
            let cid = self.new_id();
            let took = lognormal_ns(self.rng, 2.0);
            let consumer = SERVICES.len() - 1;
            self.push(SpanSpec {
                service: SERVICES[consumer],
                trace_id: self.trace_id,
                span_id: cid,
                parent: Some(id),
                name: "orders process".into(),
                kind: Kind::Consumer,
                start: end + 1_000_000,
                end: end + 1_000_000 + took,
                error: None,
                attributes: vec![
                    ("messaging.system".into(), Value::Str("kafka".into())),
                    (
                        "messaging.destination.name".into(),
                        Value::Str("orders".into()),
                    ),
                ],
            });
        }
        end
    }
}

/// One trace of the workload, starting at `start` (unix nanoseconds).
pub fn trace(rng: &mut SmallRng, start: u64) -> Vec<SpanSpec> {
    let target = rng.random_range(5..=30);
    let trace_id: [u8; 16] = rng.random();
    let mut g = TraceGen {
        rng,
        spans: Vec::with_capacity(target),
        target,
        trace_id,
    };
    g.server(0, None, start, 0);
    let root_id = g.spans[g.spans.len() - 1].span_id;
    // Top up small traces with more calls from the front door.
    while g.spans.len() < target {
        let callee = g.rng.random_range(1..SERVICES.len());
        let at = start + g.rng.random_range(100_000..2_000_000);
        g.client_call(0, callee, root_id, at, 1);
    }
    g.spans
}

/// `count` request templates of about `spans_per_request` spans each.
pub fn templates(count: usize, spans_per_request: usize, seed: u64) -> Vec<Template> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let base_time = 1_700_000_000_000_000_000u64;
    (0..count)
        .map(|_| {
            let mut spans = Vec::with_capacity(spans_per_request + 30);
            while spans.len() < spans_per_request {
                let offset = rng.random_range(0..1_000_000_000u64);
                spans.extend(trace(&mut rng, base_time + offset));
            }
            Template {
                request: otlp_out::encode(&spans, &RESOURCE, "sightline-bench"),
                base_time,
            }
        })
        .collect()
}

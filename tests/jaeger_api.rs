//! The Jaeger query API (`/jaeger/api/...`, what Grafana's Jaeger datasource calls) against the
//! real Jaeger as an oracle: Jaeger built from the Go module proxy (`cmd/jaeger`, memory storage)
//! and Sightline take the same OTLP spans — two services, every attribute type, events, links,
//! statuses, trace state, scopes, a 64-bit trace id — and the queries Grafana and Jaeger's UI send
//! get the same JSON from both, compared field by field (a span's process resolved from its
//! `processID`, spans and search results in any order, as Jaeger's are). Where Jaeger's memory
//! store differs from what it documents (the `error` tag, dependencies), the difference is
//! asserted and documented in docs/grafana.md.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::otlp::{kv, s, ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span, Status};
use common::{get, post, Running, Server};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;
use serde_json::{json, Value};

/// The newest Jaeger release the module proxy serves as approved (v1.76.0 is served but not
/// approved for use here).
const JAEGER_VERSION: &str = "v1.75.0";

fn jaeger_config(query: u16, grpc: u16, otlp: u16) -> String {
    format!(
        "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"
    )
}

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value(v),
        ..Default::default()
    }
}

fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

struct Call {
    trace: [u8; 16],
    id: u8,
    parent: Option<u8>,
    name: &'static str,
    kind: i32,
    /// Microseconds after the trace's start, and the duration in microseconds.
    at: u64,
    duration: u64,
}

fn span(c: &Call, start: u64, attributes: Vec<KeyValue>, status: Option<Status>) -> Span {
    let mut span_id = [0u8; 8];
    span_id[7] = c.id;
    span_id[0] = c.trace[15];
    Span {
        trace_id: c.trace.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: c
            .parent
            .map(|p| {
                let mut id = span_id;
                id[7] = p;
                id.to_vec()
            })
            .unwrap_or_default(),
        name: c.name.into(),
        kind: c.kind,
        start_time_unix_nano: start + c.at * 1000,
        end_time_unix_nano: start + (c.at + c.duration) * 1000,
        attributes,
        status,
        ..Default::default()
    }
}

fn resource_spans(
    service: &str,
    extra: Vec<KeyValue>,
    scope: &str,
    spans: Vec<Span>,
) -> ResourceSpans {
    let mut attributes = vec![kv("service.name", s(service))];
    attributes.extend(extra);
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                version: if scope.is_empty() { "" } else { "1.2.0" }.into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn trace_id(n: u8, wide: bool) -> [u8; 16] {
    let mut id = [0u8; 16];
    if wide {
        id[0] = 0x4b;
        id[3] = n;
    }
    id[15] = n;
    id[9] = 0x1f;
    id
}

/// Three traces, one request each, oldest first (Jaeger's memory store lists the most recently
/// stored first): a checkout through two services, an error, and a batch job with a 64-bit id.
fn fixture(now: u64) -> Vec<ExportTraceServiceRequest> {
    let minute = 60_000_000_000u64;
    let t1 = trace_id(1, true);
    let t2 = trace_id(2, true);
    let t3 = trace_id(3, false);
    let frontend_resource = || {
        vec![
            kv("host.name", s("web-1")),
            kv("telemetry.sdk.language", s("rust")),
            attr("process.pid", int(4242)),
        ]
    };
    let start1 = now - 10 * minute;
    let root = Call {
        trace: t1,
        id: 1,
        parent: None,
        name: "GET /checkout",
        kind: 2,
        at: 0,
        duration: 120_000,
    };
    let call = Call {
        trace: t1,
        id: 2,
        parent: Some(1),
        name: "POST /charge",
        kind: 3,
        at: 1_000,
        duration: 80_000,
    };
    let serve = Call {
        trace: t1,
        id: 3,
        parent: Some(2),
        name: "POST /charge",
        kind: 2,
        at: 2_000,
        duration: 70_000,
    };
    let query = Call {
        trace: t1,
        id: 4,
        parent: Some(3),
        name: "SELECT payments",
        kind: 3,
        at: 3_000,
        duration: 30_000,
    };
    let publish = Call {
        trace: t1,
        id: 5,
        parent: Some(3),
        name: "payments publish",
        kind: 4,
        at: 40_000,
        duration: 2_000,
    };
    let render = Call {
        trace: t1,
        id: 6,
        parent: Some(1),
        name: "render",
        kind: 1,
        at: 90_000,
        duration: 5_500,
    };
    let mut root_span = span(
        &root,
        start1,
        vec![
            kv("http.request.method", s("GET")),
            attr("http.response.status_code", int(200)),
            attr("sampled.ratio", any_value::Value::DoubleValue(0.25)),
            attr("cache.hit", any_value::Value::BoolValue(false)),
            attr(
                "request.digest",
                any_value::Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef]),
            ),
            attr(
                "feature.flags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("new-cart")),
                        },
                        AnyValue {
                            value: Some(s("dark-mode")),
                        },
                    ],
                }),
            ),
            attr("order.id", int(9_007_199_254_740_993)),
        ],
        Some(Status {
            code: 1,
            message: String::new(),
        }),
    );
    root_span.trace_state = "vendor=abc".into();
    root_span.events = vec![
        Event {
            time_unix_nano: start1 + 500_000,
            name: "cart loaded".into(),
            attributes: vec![attr("items", int(3)), kv("currency", s("EUR"))],
            ..Default::default()
        },
        Event {
            time_unix_nano: start1 + 95_000_000,
            name: "rendered".into(),
            ..Default::default()
        },
    ];
    let mut render_span = span(
        &render,
        start1,
        vec![kv("template", s("checkout.html"))],
        None,
    );
    render_span.links = vec![Link {
        trace_id: trace_id(9, true).to_vec(),
        span_id: vec![9; 8],
        attributes: vec![kv("link.reason", s("prefetch"))],
        ..Default::default()
    }];
    let checkout = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "frontend",
                frontend_resource(),
                "frontend-http",
                vec![
                    root_span,
                    span(
                        &call,
                        start1,
                        vec![
                            kv("server.address", s("payments")),
                            attr("server.port", int(8443)),
                        ],
                        None,
                    ),
                    render_span,
                ],
            ),
            resource_spans(
                "payments",
                vec![
                    kv("host.name", s("pay-1")),
                    kv("deployment.environment.name", s("prod")),
                ],
                "payments-http",
                vec![
                    span(
                        &serve,
                        start1,
                        vec![
                            kv("http.route", s("/charge")),
                            attr("http.response.status_code", int(201)),
                        ],
                        None,
                    ),
                    span(
                        &query,
                        start1,
                        vec![
                            kv("db.system.name", s("postgresql")),
                            kv("db.query.text", s("SELECT * FROM payments WHERE id = $1")),
                        ],
                        None,
                    ),
                    span(
                        &publish,
                        start1,
                        vec![
                            kv("messaging.system", s("kafka")),
                            kv("messaging.destination.name", s("payments")),
                        ],
                        None,
                    ),
                ],
            ),
        ],
    };
    let start2 = now - 5 * minute;
    let root2 = Call {
        trace: t2,
        id: 1,
        parent: None,
        name: "GET /checkout",
        kind: 2,
        at: 0,
        duration: 2_500_000,
    };
    let call2 = Call {
        trace: t2,
        id: 2,
        parent: Some(1),
        name: "POST /charge",
        kind: 3,
        at: 10_000,
        duration: 2_400_000,
    };
    let serve2 = Call {
        trace: t2,
        id: 3,
        parent: Some(2),
        name: "POST /charge",
        kind: 2,
        at: 20_000,
        duration: 2_300_000,
    };
    let failed = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "frontend",
                frontend_resource(),
                "frontend-http",
                vec![
                    span(
                        &root2,
                        start2,
                        vec![attr("http.response.status_code", int(502))],
                        Some(Status {
                            code: 2,
                            message: "upstream failed".into(),
                        }),
                    ),
                    span(
                        &call2,
                        start2,
                        vec![kv("server.address", s("payments"))],
                        Some(Status {
                            code: 2,
                            message: String::new(),
                        }),
                    ),
                ],
            ),
            resource_spans(
                "payments",
                vec![
                    kv("host.name", s("pay-1")),
                    kv("deployment.environment.name", s("prod")),
                ],
                "payments-http",
                vec![span(
                    &serve2,
                    start2,
                    vec![
                        kv("http.route", s("/charge")),
                        attr("http.response.status_code", int(500)),
                    ],
                    Some(Status {
                        code: 2,
                        message: "card declined".into(),
                    }),
                )],
            ),
        ],
    };
    let start3 = now - 2 * minute;
    let job = Call {
        trace: t3,
        id: 1,
        parent: None,
        name: "nightly-report",
        kind: 0,
        at: 0,
        duration: 1_200_000,
    };
    let step = Call {
        trace: t3,
        id: 2,
        parent: Some(1),
        name: "aggregate",
        kind: 1,
        at: 100_000,
        duration: 900_000,
    };
    let batch = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            "reports",
            vec![],
            "",
            vec![
                span(&job, start3, vec![kv("job.name", s("nightly"))], None),
                span(&step, start3, vec![], None),
            ],
        )],
    };
    vec![checkout, failed, batch]
}

/// Jaeger's JSON made comparable: numbers as floats, `null` lists as empty ones, each span's
/// process inlined, and spans, traces and name lists in a fixed order (Jaeger's follow its
/// storage's and its maps').
fn normalised(v: Value) -> Value {
    fn numbers(v: Value) -> Value {
        match v {
            Value::Number(n) => json!(n.as_f64().unwrap()),
            Value::Array(a) => Value::Array(a.into_iter().map(numbers).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, numbers(v))).collect())
            }
            other => other,
        }
    }
    fn trace(mut t: Value) -> Value {
        let processes = t["processes"].take();
        if let Some(spans) = t["spans"].as_array_mut() {
            for span in spans.iter_mut() {
                let id = span["processID"].take();
                span["process"] = processes[id.as_str().unwrap_or_default()].clone();
            }
            spans.sort_by_key(|s| s["spanID"].as_str().unwrap_or_default().to_string());
        }
        t
    }
    let mut v = numbers(v);
    if v["data"].is_null() {
        v["data"] = json!([]);
    }
    if let Some(items) = v["data"].as_array_mut() {
        if items.iter().all(|i| i.get("spans").is_some()) {
            for t in items.iter_mut() {
                *t = trace(t.take());
            }
            items.sort_by_key(|t| t["traceID"].as_str().unwrap_or_default().to_string());
        } else {
            items.sort_by_key(|i| i.to_string());
        }
    }
    v
}

fn json_of(url: &str) -> (u16, Value) {
    let (status, body) = get(url);
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

#[test]
fn jaeger_api_answers_as_jaeger_does() {
    let jaeger_bin =
        common::go_binary("github.com/jaegertracing/jaeger/cmd/jaeger", JAEGER_VERSION);
    let dir = tempfile::tempdir().unwrap();
    let (query_port, grpc_port, otlp_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = dir.path().join("jaeger.yaml");
    std::fs::write(&config, jaeger_config(query_port, grpc_port, otlp_port)).unwrap();
    let _jaeger = Running(
        Command::new(&jaeger_bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jaeger"),
    );
    let jaeger = format!("http://127.0.0.1:{query_port}");
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--edge-wait", "1s"]);
    let sightline = format!("http://{}/jaeger", server.http_addr);
    common::wait_ready(&format!("{jaeger}/api/services"), "jaeger");

    let now = common::now_nanos();
    for request in fixture(now) {
        let body = request.encode_to_vec();
        for url in [
            format!("http://127.0.0.1:{otlp_port}/v1/traces"),
            server.traces_url(),
        ] {
            let (status, _, reply) = post(&url, "application/x-protobuf", &[], body.clone());
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&reply));
        }
    }
    // Services and dependencies come from the rollups; Jaeger's memory store takes a moment too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = |base: &str| {
        json_of(&format!("{base}/api/services")).1["data"]
            .as_array()
            .map_or(0, Vec::len)
            == 3
            && json_of(&format!("{base}/api/traces?service=reports")).1["data"]
                .as_array()
                .map_or(0, Vec::len)
                == 1
    };
    while !(ready(&jaeger) && ready(&sightline)) {
        assert!(Instant::now() < deadline, "spans did not arrive in both");
        std::thread::sleep(Duration::from_millis(200));
    }

    let t1 = "4b00000100000000001f000000000001";
    let t2 = "4b00000200000000001f000000000002";
    let t3 = "001f000000000003";
    let (start_us, end_us) = ((now / 1000) - 3_600_000_000, now / 1000 + 60_000_000);
    let tags = |json: &str| common::url_encode(json);
    let mut paths: Vec<String> = vec![
        "/api/services".into(),
        "/api/services/frontend/operations".into(),
        "/api/services/payments/operations".into(),
        "/api/services/nobody/operations".into(),
        "/api/operations?service=payments".into(),
        "/api/operations?service=payments&spanKind=server".into(),
        "/api/operations?service=frontend&spanKind=internal".into(),
        "/api/operations?service=reports&spanKind=".into(),
        format!("/api/traces/{t1}"),
        format!("/api/traces/{t2}"),
        format!("/api/traces/{t3}"),
        format!("/api/traces/0000000000000000{t3}"),
        "/api/traces?service=frontend".into(),
        "/api/traces?service=payments&operation=POST%20/charge".into(),
        "/api/traces?service=frontend&operation=render".into(),
        "/api/traces?service=nobody".into(),
        "/api/traces?service=reports&operation=&minDuration=&maxDuration=&limit=20&lookback=1h"
            .into(),
        format!(
            "/api/traces?service=payments&tags={}",
            tags(r#"{"http.route":"/charge"}"#)
        ),
        format!(
            "/api/traces?service=payments&tags={}",
            tags(r#"{"http.response.status_code":"500"}"#)
        ),
        format!(
            "/api/traces?service=payments&tags={}",
            tags(r#"{"deployment.environment.name":"prod","http.response.status_code":"201"}"#)
        ),
        format!(
            "/api/traces?service=frontend&tags={}",
            tags(r#"{"host.name":"web-2"}"#)
        ),
        "/api/traces?service=frontend&tag=server.address:payments".into(),
        "/api/traces?service=frontend&minDuration=2s".into(),
        "/api/traces?service=frontend&minDuration=100ms&maxDuration=1s".into(),
        "/api/traces?service=payments&maxDuration=100ms".into(),
        "/api/traces?service=frontend&limit=1".into(),
        format!("/api/traces?service=frontend&start={start_us}&end={end_us}"),
        format!(
            "/api/traces?service=frontend&start={}&end={end_us}",
            now / 1000 - 7 * 60_000_000
        ),
        format!("/api/traces?traceID={t1}&traceID={t3}"),
        format!("/api/traces?traceID={t2}&traceID=00000000000000ee"),
        // Grafana's backend sends the trace's time range in milliseconds.
        format!(
            "/api/traces/{t1}?start={}&end={}",
            now / 1_000_000 - 3_600_000,
            now / 1_000_000
        ),
    ];
    paths.push(format!(
        "/api/traces?end={end_us}&limit=10&maxDuration=5s&minDuration=1s&operation=GET%20%2Fcheckout&service=frontend&start={start_us}"
    ));

    let mut differences = Vec::new();
    let mut spans_compared = 0;
    for path in &paths {
        let (js, j) = json_of(&format!("{jaeger}{path}"));
        let (ss, s) = json_of(&format!("{sightline}{path}"));
        assert_eq!(js, 200, "jaeger {path}: {j}");
        let (j, s) = (normalised(j), normalised(s));
        spans_compared += j["data"].as_array().map_or(0, |d| {
            d.iter()
                .map(|t| t["spans"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        });
        if ss != 200 || j != s {
            differences.push(format!("{path}\n  jaeger:    {j}\n  sightline ({ss}): {s}"));
        }
    }
    eprintln!("{} queries, {spans_compared} spans compared", paths.len());
    // Most queries find traces: an empty answer from both would prove nothing.
    assert!(spans_compared > 100, "{spans_compared} spans compared");
    assert!(
        differences.is_empty(),
        "{} of {} queries differ:\n{}",
        differences.len(),
        paths.len(),
        differences.join("\n")
    );

    // The error tag: Jaeger's memory store compares the string "true" with a boolean and finds
    // spans with status OK instead; Sightline finds the failed spans, as Jaeger's other stores do.
    let errors = |base: &str, value: &str| -> Vec<String> {
        let path = format!(
            "/api/traces?service=frontend&tags={}",
            tags(&format!(r#"{{"error":"{value}"}}"#))
        );
        let mut ids: Vec<String> = json_of(&format!("{base}{path}")).1["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["traceID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(errors(&sightline, "true"), [t2]);
    assert_eq!(errors(&sightline, "false"), [t1]);
    assert_eq!(errors(&jaeger, "true"), [t1]);

    // Dependencies: Jaeger's memory store links every span to its parent's service, its own
    // service's internal spans included; Sightline's come from the service-graph rollups —
    // calls between services, and to the databases and queues they use.
    let dependencies = format!(
        "/api/dependencies?endTs={}&lookback=86400000",
        now / 1_000_000 + 1000
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let link = |links: &Value, parent: &str, child: &str| {
        links["data"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|l| l["parent"] == parent && l["child"] == child)
            })
            .map(|l| l["callCount"].as_u64().unwrap())
    };
    let mut s = json_of(&format!("{sightline}{dependencies}")).1;
    while link(&s, "frontend", "payments").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        s = json_of(&format!("{sightline}{dependencies}")).1;
    }
    let j = json_of(&format!("{jaeger}{dependencies}")).1;
    assert_eq!(link(&j, "frontend", "payments"), Some(2), "{j}");
    assert_eq!(link(&s, "frontend", "payments"), Some(2), "{s}");
    assert_eq!(link(&j, "frontend", "frontend"), Some(3), "{j}");
    assert_eq!(link(&s, "frontend", "frontend"), None, "{s}");
    assert_eq!(link(&s, "payments", "postgresql"), Some(1), "{s}");
    let only_reports = json_of(&format!("{sightline}{dependencies}&service=reports")).1;
    assert_eq!(only_reports["data"], json!([]), "{only_reports}");

    // Bad requests: Jaeger's envelope with the status and a message naming the problem.
    for (path, status, says) in [
        ("/api/traces", 400, "parameter 'service' is required"),
        (
            "/api/traces?service=frontend&minDuration=fast",
            400,
            "minDuration",
        ),
        (
            "/api/traces?service=frontend&minDuration=2s&maxDuration=1s",
            400,
            "maxDuration",
        ),
        ("/api/traces?service=frontend&start=yesterday", 400, "start"),
        ("/api/traces?service=frontend&tags=%7Bnot-json", 400, "tags"),
        ("/api/traces?service=frontend&limit=many", 400, "limit"),
        ("/api/traces/xyz", 400, "hex"),
        ("/api/traces/00000000000000ee", 404, "trace not found"),
        ("/api/operations", 400, "parameter 'service' is required"),
        ("/api/dependencies?endTs=soon", 400, "endTs"),
    ] {
        let (got, body) = json_of(&format!("{sightline}{path}"));
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], status, "{path}: {body}");
        let msg = body["errors"][0]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{path}: {body}");
        let (jaeger_status, _) = json_of(&format!("{jaeger}{path}"));
        assert_eq!(jaeger_status, status, "jaeger {path}");
    }
    server.stop();
}

//! The Tempo API under `/tempo` as Grafana's Tempo datasource calls it: Save & test (`echo`,
//! `status/buildinfo`), trace by id as `tempopb.TraceByIDResponse` protobuf (decoded here with
//! the official OTLP types, its `Trace` being wire-identical to `TracesData`) and as JSON,
//! TraceQL search with the datasource's parameters (results holding exactly Tempo's fields, which
//! Grafana's parser insists on), tag names and values, and the errors for what is malformed.

mod common;

use std::collections::BTreeSet;

use common::otlp::{encode, i, kv, request, s, span, Span, Status};
use common::{get, post, Server};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::Value;

/// `tempopb.TraceByIDResponse` (Apache-2.0 protos): the trace, and metrics.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempoTrace>,
}

#[derive(Clone, PartialEq, Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

const MS: u64 = 1_000_000;

fn at(s: &mut Span, start: u64, ms: u64) {
    s.start_time_unix_nano = start;
    s.end_time_unix_nano = start + ms * MS;
}

/// Trace 1: frontend `GET /checkout` → payments `POST /charge` (error 500, region eu-west-1)
/// → payments `SELECT` (an exception event). Trace 2: frontend `GET /health`, 2 ms. Trace 3: a
/// `reports` batch job of 1.2 s.
fn send(server: &Server, now: u64) {
    let t0 = now - 60_000 * MS;
    let mut root = span(0, "GET /checkout");
    at(&mut root, t0, 120);
    root.attributes = vec![kv("http.request.method", s("GET"))];
    let mut call = span(0, "POST /charge");
    call.span_id = vec![2; 8];
    call.parent_span_id = root.span_id.clone();
    call.kind = 3;
    at(&mut call, t0 + MS, 100);
    let mut charge = span(0, "POST /charge");
    charge.span_id = vec![3; 8];
    charge.parent_span_id = call.span_id.clone();
    at(&mut charge, t0 + 2 * MS, 80);
    charge.attributes = vec![
        kv("http.response.status_code", i(500)),
        kv("region", s("eu-west-1")),
    ];
    charge.status = Some(Status {
        code: 2,
        message: "card declined".into(),
    });
    let mut select = span(0, "SELECT payments");
    select.span_id = vec![4; 8];
    select.parent_span_id = charge.span_id.clone();
    select.kind = 3;
    at(&mut select, t0 + 3 * MS, 30);
    select.attributes = vec![kv("db.system", s("postgresql"))];
    select.events = vec![Event {
        time_unix_nano: t0 + 4 * MS,
        name: "exception".into(),
        ..Default::default()
    }];
    let mut health = span(1, "GET /health");
    at(&mut health, t0 + 10_000 * MS, 2);
    let mut job = span(2, "nightly-report");
    job.kind = 0;
    at(&mut job, t0 + 20_000 * MS, 1200);
    for (service, spans) in [
        ("frontend", vec![root, call, health]),
        ("payments", vec![charge, select]),
        ("reports", vec![job]),
    ] {
        let (status, _, body) = post(
            &server.traces_url(),
            "application/x-protobuf",
            &[],
            encode(&request(service, spans)),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

fn tempo(server: &Server, path: &str) -> (u16, String) {
    get(&format!("http://{}/tempo{path}", server.http_addr))
}

fn json(server: &Server, path: &str) -> Value {
    let (status, body) = tempo(server, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"))
}

/// The trace ids a search found, as Tempo writes them.
fn found(server: &Server, q: &str, extra: &str) -> Vec<String> {
    let v = json(
        server,
        &format!("/api/search?q={}&limit=20{extra}", common::url_encode(q)),
    );
    let mut ids: Vec<String> = v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every key of a search result is one of Tempo's `TraceSearchMetadata`, `SpanSet` and `Span`.
fn only_tempo_fields(v: &Value) {
    let allowed = |o: &Value, keys: &[&str]| {
        for k in o.as_object().unwrap().keys() {
            assert!(keys.contains(&k.as_str()), "unexpected field {k} in {o}");
        }
    };
    for t in v["traces"].as_array().unwrap() {
        allowed(
            t,
            &[
                "traceID",
                "rootServiceName",
                "rootTraceName",
                "startTimeUnixNano",
                "durationMs",
                "spanSet",
                "spanSets",
                "serviceStats",
            ],
        );
        for set in t["spanSets"].as_array().unwrap() {
            allowed(set, &["spans", "matched", "attributes"]);
            for span in set["spans"].as_array().unwrap() {
                allowed(
                    span,
                    &[
                        "spanID",
                        "name",
                        "startTimeUnixNano",
                        "durationNanos",
                        "attributes",
                    ],
                );
            }
        }
    }
}

#[test]
fn tempo_api_answers_grafanas_tempo_datasource() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = common::now_nanos();
    send(&server, now);
    // Tempo writes trace ids without their leading zeros.
    let id = |n: u8| common::hex(&[n; 16]).trim_start_matches('0').to_string();
    let (t1, t2, t3) = (id(1), id(2), id(3));

    // Save & test.
    assert_eq!(tempo(&server, "/api/echo"), (200, "echo".to_string()));
    assert!(json(&server, "/api/status/buildinfo")["version"]
        .as_str()
        .unwrap()
        .starts_with("2."));

    // Trace by id, as Grafana asks for it: protobuf.
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "http://{}/tempo/api/v2/traces/{t1}",
            server.http_addr
        ))
        .header("Accept", "application/protobuf")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let decoded = TraceByIdResponse::decode(resp.bytes().unwrap()).unwrap();
    let batches = decoded.trace.unwrap().resource_spans;
    // One resource per service, its spans under it.
    let per_service: Vec<(String, Vec<String>)> = batches
        .iter()
        .map(|rs| {
            let service = rs.resource.as_ref().unwrap().attributes[0].clone();
            assert_eq!(service.key, "service.name");
            let names = rs
                .scope_spans
                .iter()
                .flat_map(|ss| ss.spans.iter().map(|sp| sp.name.clone()))
                .collect();
            (
                format!("{:?}", service.value.unwrap().value.unwrap()),
                names,
            )
        })
        .collect();
    assert_eq!(per_service.len(), 2, "{per_service:?}");
    assert!(per_service[0].0.contains("frontend"), "{per_service:?}");
    assert_eq!(per_service[0].1, ["GET /checkout", "POST /charge"]);
    assert_eq!(per_service[1].1, ["POST /charge", "SELECT payments"]);
    let charge = batches
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .find(|s| s.span_id == vec![3; 8])
        .unwrap();
    assert_eq!(charge.status.as_ref().unwrap().code, 2);
    assert_eq!(charge.status.as_ref().unwrap().message, "card declined");
    assert_eq!(charge.parent_span_id, vec![2; 8]);
    assert_eq!(
        charge.end_time_unix_nano - charge.start_time_unix_nano,
        80 * MS
    );
    assert!(charge.attributes.iter().any(|a| a.key == "region"));
    // The same as JSON, and the older endpoint; unknown and malformed ids.
    let v2 = json(&server, &format!("/api/v2/traces/{t1}"));
    assert_eq!(
        v2["trace"]["resourceSpans"].as_array().unwrap().len(),
        2,
        "{v2}"
    );
    let v1 = json(&server, &format!("/api/traces/{t1}"));
    assert_eq!(v1["batches"].as_array().unwrap().len(), 2, "{v1}");
    assert_eq!(
        tempo(&server, &format!("/api/v2/traces/{}", "e".repeat(32))).0,
        404
    );
    assert_eq!(tempo(&server, "/api/v2/traces/not-hex").0, 400);

    // Search: Grafana's request shape, then TraceQL of every kind.
    let start = now / 1_000_000_000 - 3600;
    let end = now / 1_000_000_000 + 60;
    let window = format!("&spss=3&start={start}&end={end}");
    let all = json(&server, &format!("/api/search?q=%7B%7D&limit=20{window}"));
    only_tempo_fields(&all);
    assert_eq!(all["traces"].as_array().unwrap().len(), 3, "{all}");
    let checkout = all["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["traceID"] == t1)
        .unwrap();
    assert_eq!(checkout["rootServiceName"], "frontend");
    assert_eq!(checkout["rootTraceName"], "GET /checkout");
    assert_eq!(checkout["durationMs"], 120);
    assert_eq!(checkout["spanSets"][0]["matched"], 4);
    assert_eq!(
        checkout["spanSets"][0]["spans"].as_array().unwrap().len(),
        3,
        "spss"
    );
    // Newest first.
    assert_eq!(all["traces"][0]["traceID"], t3);

    let one = |id: &str| vec![id.to_string()];
    for (q, want) in [
        (r#"{ resource.service.name = "payments" }"#, one(&t1)),
        (
            r#"{ span.http.response.status_code >= 500 && status = error }"#,
            one(&t1),
        ),
        (r#"{ .region =~ "eu-.*" }"#, one(&t1)),
        (r#"{ duration > 1s }"#, one(&t3)),
        (r#"{ duration < 5ms && kind = server }"#, one(&t2)),
        (
            r#"{ name = "GET /health" } || { resource.service.name = "reports" }"#,
            vec![t2.clone(), t3.clone()],
        ),
        (
            r#"{ resource.service.name = "frontend" } >> { event:name = "exception" }"#,
            one(&t1),
        ),
        (
            r#"{ name = "SELECT payments" } < { status = error }"#,
            one(&t1),
        ),
        (
            r#"{ resource.service.name = "frontend" } && { resource.service.name = "payments" }"#,
            one(&t1),
        ),
        (r#"{ } | count() > 3"#, one(&t1)),
        (r#"{ kind = client } | avg(duration) > 60ms"#, one(&t1)),
        (
            r#"{ traceDuration > 100ms && rootServiceName = "frontend" }"#,
            one(&t1),
        ),
        (r#"{ statusMessage = "card declined" }"#, one(&t1)),
        (r#"{ resource.service.name = "nobody" }"#, vec![]),
    ] {
        assert_eq!(found(&server, q, &window), want, "{q}");
    }
    // The newest candidate (the reports job) does not match a regular expression the scan
    // cannot check: more candidates are read until `limit` traces match.
    let v = json(
        &server,
        &format!(
            "/api/search?q={}&limit=1{window}",
            common::url_encode(r#"{ name =~ "GET .*" }"#)
        ),
    );
    assert_eq!(v["traces"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["traces"][0]["traceID"], t2, "{v}");
    // The fields a query reads come back on its spans; by() and select() shape the spansets.
    let v = json(
        &server,
        &format!(
            "/api/search?q={}{window}",
            common::url_encode(r#"{ span.region != nil } | select(span.db.system, status)"#)
        ),
    );
    only_tempo_fields(&v);
    let attrs = &v["traces"][0]["spanSets"][0]["spans"][0]["attributes"];
    assert!(attrs.to_string().contains("eu-west-1"), "{v}");
    assert!(attrs.to_string().contains("\"error\""), "{v}");
    let v = json(
        &server,
        &format!(
            "/api/search?q={}{window}",
            common::url_encode(r#"{ } | by(resource.service.name)"#)
        ),
    );
    let checkout = v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["traceID"] == t1)
        .unwrap();
    assert_eq!(
        checkout["spanSets"].as_array().unwrap().len(),
        2,
        "{checkout}"
    );
    assert_eq!(
        checkout["spanSets"][0]["attributes"][0]["key"],
        "by(resource.service.name)"
    );
    // The older search form: tags (logfmt) and the whole trace's duration.
    let v = json(
        &server,
        &format!(
            "/api/search?tags={}&minDuration=100ms{window}",
            common::url_encode("service.name=frontend")
        ),
    );
    let ids: Vec<&str> = v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [t1.as_str()], "{v}");

    // Tag names and values, as the query builder asks for them.
    let tags = json(
        &server,
        &format!("/api/v2/search/tags?start={start}&end={end}"),
    );
    let scope = |name: &str| -> BTreeSet<String> {
        tags["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        scope("span").contains("region") && scope("span").contains("db.system"),
        "{tags}"
    );
    assert!(scope("resource").contains("service.name"), "{tags}");
    assert!(scope("intrinsic").contains("duration"), "{tags}");
    let values = json(
        &server,
        &format!("/api/v2/search/tag/resource.service.name/values?start={start}&end={end}"),
    );
    let names: Vec<&str> = values["tagValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["frontend", "payments", "reports"], "{values}");
    let values = json(
        &server,
        &format!(
            "/api/v2/search/tag/name/values?q={}&start={start}&end={end}",
            common::url_encode(r#"{ resource.service.name = "payments" }"#)
        ),
    );
    assert_eq!(
        values["tagValues"].to_string(),
        r#"[{"type":"string","value":"POST /charge"},{"type":"string","value":"SELECT payments"}]"#
    );
    let values = json(
        &server,
        &format!(
            "/api/v2/search/tag/span.http.response.status_code/values?start={start}&end={end}"
        ),
    );
    assert_eq!(
        values["tagValues"].to_string(),
        r#"[{"type":"int","value":"500"}]"#
    );
    let values = json(
        &server,
        &format!("/api/v2/search/tag/status/values?start={start}&end={end}"),
    );
    assert_eq!(values["tagValues"].as_array().unwrap().len(), 3);

    // Malformed requests: a 400 naming the problem; the server keeps answering.
    for (path, says) in [
        ("/api/search?q=%7B", "TraceQL"),
        (
            "/api/search?q=%7B%20.a%20%3D%201%20%7D%20%7C%20rate()",
            "rate() is not supported",
        ),
        (
            "/api/search?q=%7B%20name%20%3D~%20%22(%22%20%7D",
            "regular expression",
        ),
        ("/api/search?q=%7B%7D&start=yesterday", "start"),
        ("/api/search?q=%7B%7D&limit=0", "limit"),
        ("/api/search?tags=broken", "key=value"),
        ("/api/v2/search/tags?scope=everything", "scope"),
        ("/api/v2/search/tag/not%20a%20tag/values", "not a tag"),
    ] {
        let (status, body) = tempo(&server, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    assert_eq!(
        json(&server, "/api/search?q=%7B%7D")["traces"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    server.stop();
}

/// The labels of a metrics series as `key=value` text, and the sum of its samples.
fn series_sums(v: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels: Vec<String> = s["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let value = &l["value"];
                    let text = value["stringValue"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| value["doubleValue"].to_string());
                    format!("{}={text}", l["key"].as_str().unwrap())
                })
                .collect();
            let sum = match s.get("samples") {
                Some(samples) => samples
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        // Tempo's JSON: 64-bit times as strings, on the step.
                        let t: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
                        assert_eq!(t % 60_000, 0, "{p}");
                        p["value"].as_f64().unwrap()
                    })
                    .sum(),
                None => s["value"].as_f64().unwrap(),
            };
            (labels.join(","), sum)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn traceql_metrics_are_answered_from_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let now = common::now_nanos();
    send(&server, now);
    // Eleven whole minutes.
    let start = (now / 1_000_000_000 - 600) / 60 * 60;
    let end = start + 660;
    let range = |q: &str, extra: &str| {
        json(
            &server,
            &format!(
                "/api/metrics/query_range?q={}&start={start}&end={end}{extra}",
                common::url_encode(q)
            ),
        )
    };

    let v = range(
        r#"{ resource.service.name = "payments" } | count_over_time() by (name)"#,
        "&step=60",
    );
    assert_eq!(
        series_sums(&v),
        [
            ("name=POST /charge".to_string(), 1.0),
            ("name=SELECT payments".to_string(), 1.0)
        ]
    );
    assert_eq!(v["series"][0]["samples"].as_array().unwrap().len(), 11);
    // rate(): per second of each step; the step as a Go duration, and in nanoseconds.
    let v = range("{ status = error } | rate()", "&step=2m");
    assert_eq!(v["series"][0]["samples"].as_array().unwrap().len(), 6);
    let per_second: f64 = series_sums(&v)[0].1;
    assert!((per_second * 120.0 - 1.0).abs() < 1e-9, "{v}");
    let v = range(
        "{ kind = server || kind = unspecified } | quantile_over_time(duration, .5) by (resource.service.name)",
        "",
    );
    let sums = series_sums(&v);
    assert_eq!(sums.len(), 3, "{v}");
    let (labels, reports) = &sums[2];
    assert_eq!(labels, "resource.service.name=reports,p=0.5");
    assert!(
        (reports - 1.2).abs() < 0.02,
        "1.2 s within the sketch's 1%: {v}"
    );

    // An instant query: one value per series over the range.
    let v = json(
        &server,
        &format!(
            "/api/metrics/query?q={}&start={}&end={}",
            common::url_encode("{ } | count_over_time() by (resource.service.name)"),
            start * 1_000_000_000,
            end * 1_000_000_000
        ),
    );
    assert_eq!(
        series_sums(&v),
        [
            ("resource.service.name=frontend".to_string(), 3.0),
            ("resource.service.name=payments".to_string(), 2.0),
            ("resource.service.name=reports".to_string(), 1.0)
        ]
    );

    for (q, extra, says) in [
        (
            r#"{ span.region = "eu-west-1" } | rate()"#,
            "",
            "span.region is not kept",
        ),
        (
            "{ } | rate() by (span.region)",
            "",
            "span.region is not kept",
        ),
        ("{ } | avg_over_time(duration)", "", "not supported"),
        ("{ }", "", "ends in | rate()"),
        ("{ } | rate()", "&step=1s&start=0", "at most 11000"),
        ("{ } | rate()", "&step=fast", "step"),
    ] {
        let (status, body) = tempo(
            &server,
            &format!(
                "/api/metrics/query_range?q={}{extra}",
                common::url_encode(q)
            ),
        );
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(says), "{q}: {body}");
    }
    let (status, body) = tempo(&server, "/api/metrics/query_range");
    assert_eq!(status, 400);
    assert!(body.contains("parameter q"), "{body}");
    server.stop();
}

//! Round trips for every format, and header values written by other implementations
//! (fixed strings from the W3C, B3 and SOFATracer documentation).

use std::collections::HashMap;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use super::*;

fn carrier(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

fn ids(cx: &Context) -> (String, String, bool, bool) {
    let span = cx.span();
    let sc = span.span_context();
    (
        sc.trace_id().to_string(),
        sc.span_id().to_string(),
        sc.is_sampled(),
        sc.is_remote(),
    )
}

fn local(trace: &str, span: &str, sampled: bool) -> Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex(trace).unwrap(),
        SpanId::from_hex(span).unwrap(),
        flags,
        false,
        TraceState::default(),
    ))
}

fn with_baggage(cx: Context) -> Context {
    add_baggage(
        &cx,
        [
            (
                "tenant".to_string(),
                "acme corp".to_string(),
                BaggageMetadata::default(),
            ),
            (
                "zone".to_string(),
                "gz&1=2".to_string(),
                BaggageMetadata::from(SOFA_SYS_BAGGAGE),
            ),
        ],
    )
}

#[test]
fn every_format_round_trips_ids_and_sampling() {
    for format in [
        Format::TraceContext,
        Format::B3Single,
        Format::B3Multi,
        Format::SofaTracer,
    ] {
        for sampled in [true, false] {
            let propagation = Propagation::new([format]);
            let cx = local(
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "00f067aa0ba902b7",
                sampled,
            );
            let mut headers = HashMap::new();
            propagation.inject(&cx, &mut headers);
            assert!(!headers.is_empty(), "{format:?} wrote nothing");
            let back = propagation.extract(&headers);
            assert_eq!(
                ids(&back),
                (
                    "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
                    "00f067aa0ba902b7".to_string(),
                    sampled,
                    true
                ),
                "{format:?} {headers:?}"
            );
        }
    }
}

#[test]
fn baggage_round_trips_in_w3c_and_sofatracer() {
    for formats in [
        vec![Format::TraceContext, Format::Baggage],
        vec![Format::SofaTracer],
    ] {
        let propagation = Propagation::new(formats.clone());
        let cx = with_baggage(local(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            true,
        ));
        let mut headers = HashMap::new();
        propagation.inject(&cx, &mut headers);
        let back = propagation.extract(&headers);
        assert_eq!(
            back.baggage()
                .get("tenant")
                .map(|v| v.to_string())
                .as_deref(),
            Some("acme corp"),
            "{formats:?} {headers:?}"
        );
        assert_eq!(
            back.baggage().get("zone").map(|v| v.to_string()).as_deref(),
            Some("gz&1=2"),
            "{formats:?} {headers:?}"
        );
    }
}

#[test]
fn w3c_specification_examples() {
    let propagation = Propagation::default();
    let cx = propagation.extract(&carrier(&[
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        (
            "baggage",
            "userId=alice,serverNode=DF%2028,isProduction=false",
        ),
    ]));
    assert_eq!(
        ids(&cx),
        (
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into(),
            true,
            true
        )
    );
    assert_eq!(
        cx.span().span_context().trace_state().get("rojo"),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(
        cx.baggage()
            .get("serverNode")
            .map(|v| v.to_string())
            .as_deref(),
        Some("DF 28")
    );
    assert_eq!(
        cx.baggage().get("userId").map(|v| v.to_string()).as_deref(),
        Some("alice")
    );
    // Unsampled flag.
    let cx = propagation.extract(&carrier(&[(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    )]));
    assert!(!cx.span().span_context().is_sampled());
}

#[test]
fn b3_specification_examples() {
    let single = Propagation::new([Format::B3Single]);
    let cx = single.extract(&carrier(&[(
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    )]));
    assert_eq!(
        ids(&cx),
        (
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
            "e457b5a2e4d86bd1".into(),
            true,
            true
        )
    );
    // Debug means sampled; a 64-bit trace id is left-padded.
    let cx = single.extract(&carrier(&[("b3", "463ac35c9f6413ad-e457b5a2e4d86bd1-d")]));
    assert_eq!(
        ids(&cx),
        (
            "0000000000000000463ac35c9f6413ad".into(),
            "e457b5a2e4d86bd1".into(),
            true,
            true
        )
    );
    // Only a sampling decision: no parent.
    let cx = single.extract(&carrier(&[("b3", "0")]));
    assert!(!cx.span().span_context().is_valid());

    let multi = Propagation::new([Format::B3Multi]);
    let cx = multi.extract(&carrier(&[
        ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
        ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ("X-B3-Sampled", "1"),
    ]));
    assert_eq!(
        ids(&cx),
        (
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
            "e457b5a2e4d86bd1".into(),
            true,
            true
        )
    );
    let cx = multi.extract(&carrier(&[
        ("X-B3-TraceId", "463ac35c9f6413ad"),
        ("X-B3-SpanId", "a2fb4a1d1a96d312"),
        ("X-B3-Flags", "1"),
    ]));
    assert_eq!(
        ids(&cx),
        (
            "0000000000000000463ac35c9f6413ad".into(),
            "a2fb4a1d1a96d312".into(),
            true,
            true
        )
    );
    // Injection writes what other B3 implementations read.
    let mut headers = HashMap::new();
    Propagation::new([Format::B3Single, Format::B3Multi]).inject(
        &local("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", true),
        &mut headers,
    );
    assert_eq!(
        headers["b3"],
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    );
    assert_eq!(headers["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(headers["x-b3-spanid"], "e457b5a2e4d86bd1");
    assert_eq!(headers["x-b3-sampled"], "1");
}

#[test]
fn sofatracer_sftc_head_from_its_documentation() {
    let propagation = Propagation::new([Format::SofaTracer]);
    let cx = propagation.extract(&carrier(&[(
        "sftc_head",
        "tcid=0ad1348f1403169275002100356696&spid=0.1&pspid=0&sample=true&_sys_zone=gz&tenant=acme%26co&",
    )]));
    // 30 hex digits, left-padded as Zipkin normalises it; span id FNV-1a 64 of "0.1".
    assert_eq!(
        ids(&cx),
        (
            "000ad1348f1403169275002100356696".into(),
            "4e18dd181d0a2066".into(),
            true,
            true
        )
    );
    assert_eq!(
        cx.baggage().get("tenant").map(|v| v.to_string()).as_deref(),
        Some("acme&co")
    );
    let zone = cx.baggage().get_with_metadata("zone").cloned();
    assert_eq!(
        zone.map(|(v, m)| (v.to_string(), m.as_str().to_string())),
        Some(("gz".to_string(), SOFA_SYS_BAGGAGE.to_string()))
    );
    let original = cx.get::<SofaTracerIds>().expect("originals kept");
    assert_eq!(original.trace_id, "0ad1348f1403169275002100356696");
    assert_eq!(original.span_id, "0.1");

    // Our next hop to the Java side carries its own trace id back.
    let mut headers = HashMap::new();
    propagation.inject(&cx, &mut headers);
    assert!(
        headers["sftc_head"]
            .starts_with("tcid=0ad1348f1403169275002100356696&spid=4e18dd181d0a2066&sample=true&"),
        "{headers:?}"
    );
    assert!(headers["sftc_head"].contains("_sys_zone=gz&"));
    assert!(headers["sftc_head"].contains("tenant=acme%26co&"));
    assert_eq!(headers["x-b3-traceid"], "0ad1348f1403169275002100356696");
    assert_eq!(headers["x-b3-sampled"], "true");
    assert_eq!(headers["baggage-sys-zone"], "gz");
    assert_eq!(headers["baggage-tenant"], "acme%26co");
}

#[test]
fn sofatracer_sftc_head_url_encoded_by_its_http_injector() {
    // SOFATracer's HttpHeadersFormatter URL-encodes the whole serialised context.
    let propagation = Propagation::new([Format::SofaTracer]);
    let cx = propagation.extract(&carrier(&[(
        "sftc_head",
        "tcid%3D0ad1348f1403169275002100356696%26spid%3D0.1%26pspid%3D0%26sample%3Dtrue%26_sys_zone%3Dgz%26tenant%3Dacme%2526co%26",
    )]));
    assert_eq!(
        ids(&cx),
        (
            "000ad1348f1403169275002100356696".into(),
            "4e18dd181d0a2066".into(),
            true,
            true
        )
    );
    assert_eq!(
        cx.baggage().get("tenant").map(|v| v.to_string()).as_deref(),
        Some("acme&co")
    );
}

#[test]
fn sofatracer_b3_headers_with_baggage() {
    let propagation = Propagation::new([Format::SofaTracer]);
    let cx = propagation.extract(&carrier(&[
        ("X-B3-TraceId", "0ad1348f1403169275002100356696"),
        ("X-B3-SpanId", "0.1.1"),
        ("X-B3-ParentSpanId", "0.1"),
        ("X-B3-Sampled", "false"),
        ("baggage-user", "alice%20b"),
        ("baggage-sys-zone", "gz"),
    ]));
    assert_eq!(
        ids(&cx),
        (
            "000ad1348f1403169275002100356696".into(),
            "b1ecc5b0e1cf206b".into(),
            false,
            true
        )
    );
    assert_eq!(
        cx.baggage().get("user").map(|v| v.to_string()).as_deref(),
        Some("alice b")
    );
    assert_eq!(
        cx.baggage().get("zone").map(|v| v.to_string()).as_deref(),
        Some("gz")
    );
    // A load-test id (suffix T) maps like its base id; one that is not hex is hashed,
    // deterministically.
    assert_eq!(
        sofa::sofa_trace_id("0ad1348f1403169275002100356696T"),
        sofa::sofa_trace_id("0ad1348f1403169275002100356696")
    );
    let hashed = sofa::sofa_trace_id("not-hex-0ad1348f14031692750021003566960000").unwrap();
    assert_eq!(
        hashed,
        sofa::sofa_trace_id("not-hex-0ad1348f14031692750021003566960000").unwrap()
    );
    assert_ne!(hashed, TraceId::INVALID);
}

#[test]
fn composite_takes_the_first_valid_format_and_merges_baggage() {
    let propagation = Propagation::parse("tracecontext, baggage, b3multi, sofatracer").unwrap();
    assert_eq!(
        propagation.formats(),
        &[
            Format::TraceContext,
            Format::Baggage,
            Format::B3Multi,
            Format::SofaTracer
        ]
    );
    let both = carrier(&[
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ("baggage", "a=1"),
        ("baggage-b", "2"),
    ]);
    let cx = propagation.extract(&both);
    assert_eq!(ids(&cx).0, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        cx.baggage().get("a").map(|v| v.to_string()).as_deref(),
        Some("1")
    );
    assert_eq!(
        cx.baggage().get("b").map(|v| v.to_string()).as_deref(),
        Some("2")
    );
    // Only B3: B3 it is.
    let cx = propagation.extract(&carrier(&[
        ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ("X-B3-Sampled", "1"),
    ]));
    assert_eq!(ids(&cx).0, "80f198ee56343ba864fe8b2a57d3eff7");
    // Injection writes every format.
    let mut headers = HashMap::new();
    propagation.inject(
        &local("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", true),
        &mut headers,
    );
    for header in ["traceparent", "x-b3-traceid", "sftc_head"] {
        assert!(
            headers.contains_key(header),
            "{header} missing from {headers:?}"
        );
    }
    assert!(Propagation::parse("tracecontext,jaegerx").is_err());
}

#[test]
fn garbage_headers_give_no_parent_and_never_panic() {
    let propagation = Propagation::parse("tracecontext,baggage,b3,b3multi,sofatracer").unwrap();
    let long = "f".repeat(100_000);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("traceparent", "garbage")],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )],
        vec![("b3", "xyz-abc-1")],
        vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7")],
        vec![
            ("X-B3-TraceId", "00000000000000000000000000000000"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ],
        vec![("sftc_head", "&&&==&")],
        vec![("sftc_head", "spid=0.1&sample=true")],
        vec![("b3", long.as_str())],
        vec![("traceparent", long.as_str())],
    ];
    for case in cases {
        let cx = propagation.extract(&carrier(&case));
        assert!(!cx.span().span_context().is_valid(), "{case:?}");
    }
    // A span id that is not 16 hex digits is garbage to B3 (SOFATracer's ids are dotted
    // strings, so it accepts one).
    let b3 = Propagation::new([Format::B3Single, Format::B3Multi]);
    let cx = b3.extract(&carrier(&[
        ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-SpanId", "zz"),
    ]));
    assert!(!cx.span().span_context().is_valid());
    // Percent sequences cut short or around multi-byte characters are kept as they are.
    let cx = propagation.extract(&carrier(&[("sftc_head", "tcid=abc&k=%e9%&v=%€x&")]));
    assert!(cx.span().span_context().is_valid());
    assert_eq!(
        cx.baggage().get("v").map(|v| v.to_string()).as_deref(),
        Some("%€x")
    );
}

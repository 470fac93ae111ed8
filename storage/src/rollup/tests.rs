use super::*;
use crate::span_batch::{DedicatedAttributes, SpanBatchBuilder, SpanFields};

const MINUTE: u64 = 60_000_000_000;
const T0: u64 = 1_795_288_800_000_000_000;

struct S<'a> {
    trace: u8,
    span: u8,
    parent: Option<u8>,
    service: &'a str,
    name: &'a str,
    kind: SpanKind,
    start: u64,
    duration: u64,
    error: bool,
    attrs: DedicatedAttributes<'a>,
}

fn span<'a>(service: &'a str, name: &'a str, kind: SpanKind) -> S<'a> {
    S {
        trace: 1,
        span: 1,
        parent: None,
        service,
        name,
        kind,
        start: T0,
        duration: 1_000_000,
        error: false,
        attrs: DedicatedAttributes::default(),
    }
}

fn batch(spans: &[S<'_>]) -> RecordBatch {
    let mut b = SpanBatchBuilder::new();
    for s in spans {
        b.begin_span(&SpanFields {
            trace_id: [s.trace; 16],
            span_id: [s.span; 8],
            parent_span_id: s.parent.map(|p| [p; 8]),
            trace_state: "",
            service_name: s.service,
            name: s.name,
            kind: s.kind,
            start_unix_nano: s.start,
            end_unix_nano: s.start + s.duration,
            status_code: if s.error { STATUS_ERROR } else { 0 },
            status_message: "",
            scope_name: "",
            scope_version: "",
        });
        b.finish_span(&s.attrs);
    }
    b.finish().unwrap()
}

fn red_rows(r: &Rollups) -> Vec<(RedKey, Measures)> {
    let mut rows = read_rows::<RedKey>(&r.current().unwrap().span_red.unwrap()).unwrap();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn edge_rows(r: &Rollups) -> Vec<(String, String, NodeKind, u64, u64)> {
    let Some(b) = r.current().unwrap().service_edges else {
        return Vec::new();
    };
    let mut rows: Vec<_> = read_rows::<EdgeKey>(&b)
        .unwrap()
        .into_iter()
        .map(|(k, m)| {
            (
                k.source.to_string(),
                k.target.to_string(),
                k.target_kind,
                m.calls,
                m.errors,
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

#[test]
fn red_counts_per_minute_and_key() {
    let mut r = Rollups::new(&RollupConfig::default());
    let mut a = span("cart", "GET /cart", SpanKind::Server);
    a.duration = 2_000_000;
    let mut b = span("cart", "GET /cart", SpanKind::Server);
    b.start = T0 + 30_000_000_000;
    let mut c = span("cart", "GET /cart", SpanKind::Server);
    c.error = true;
    let mut d = span("cart", "GET /cart", SpanKind::Server);
    d.start = T0 + MINUTE;
    r.observe(&batch(&[a, b, c, d]), Instant::now()).unwrap();
    let rows = red_rows(&r);
    assert_eq!(rows.len(), 3);
    let ok_first_minute = &rows[0];
    assert_eq!(ok_first_minute.0.minute, T0 as i64);
    assert_eq!(ok_first_minute.0.status_code, 0);
    assert_eq!(ok_first_minute.1.calls, 2);
    assert_eq!(ok_first_minute.1.duration_sum_nano, 3_000_000);
    let sealed = r.seal().unwrap();
    assert!(sealed.span_red.is_some());
    assert!(r.current().unwrap().span_red.is_none());
}

#[test]
fn calls_pair_across_batches_and_name_databases_and_queues() {
    let mut r = Rollups::new(&RollupConfig::default());
    let now = Instant::now();
    // The server half arrives first, in its own batch.
    let mut server = span("cart", "GET /cart", SpanKind::Server);
    server.span = 2;
    server.parent = Some(1);
    server.error = true;
    server.duration = 400_000;
    r.observe(&batch(&[server]), now).unwrap();
    assert!(edge_rows(&r).is_empty());
    let client = span("frontend", "GET", SpanKind::Client);
    let mut db = span("cart", "SELECT", SpanKind::Client);
    db.span = 3;
    db.attrs.db_system = Some("postgresql");
    let mut produce = span("cart", "orders publish", SpanKind::Producer);
    produce.span = 4;
    produce.attrs.messaging_system = Some("kafka");
    produce.attrs.messaging_destination = Some("orders");
    let mut consume = span("fulfillment", "orders process", SpanKind::Consumer);
    consume.span = 5;
    consume.parent = Some(4);
    consume.attrs.messaging_system = Some("kafka");
    consume.attrs.messaging_destination = Some("orders");
    r.observe(&batch(&[client, db, produce, consume]), now)
        .unwrap();
    assert_eq!(
        edge_rows(&r),
        vec![
            ("cart".into(), "orders".into(), NodeKind::Messaging, 1, 0),
            ("cart".into(), "postgresql".into(), NodeKind::Database, 1, 0),
            ("frontend".into(), "cart".into(), NodeKind::Service, 1, 1),
            (
                "orders".into(),
                "fulfillment".into(),
                NodeKind::Service,
                1,
                0
            ),
        ]
    );
    assert_eq!(r.counters().halves_pending, 0);
    // The callee's side: the server's own time where its half came, the caller's otherwise.
    let b = r.current().unwrap().service_edges.unwrap();
    let sides: Vec<(String, i64, i64)> = read_rows::<EdgeKey>(&b)
        .unwrap()
        .into_iter()
        .map(|(k, m)| {
            (
                k.target.to_string(),
                m.duration_sum_nano,
                m.server_duration_sum_nano,
            )
        })
        .collect();
    assert!(sides.contains(&("cart".into(), 1_000_000, 400_000)));
    assert!(sides.contains(&("postgresql".into(), 1_000_000, 1_000_000)));
}

#[test]
fn unanswered_calls_fall_back_to_their_named_target() {
    let config = RollupConfig {
        edge_wait: Duration::from_secs(5),
        ..RollupConfig::default()
    };
    let mut r = Rollups::new(&config);
    let now = Instant::now();
    let mut stripe = span("payments", "POST", SpanKind::Client);
    stripe.attrs.server_address = Some("api.stripe.com");
    let mut lost = span("payments", "GET", SpanKind::Client);
    lost.span = 2;
    r.observe(&batch(&[stripe, lost]), now).unwrap();
    assert!(edge_rows(&r).is_empty());
    r.expire(now + Duration::from_secs(5));
    assert_eq!(
        edge_rows(&r),
        vec![(
            "payments".into(),
            "api.stripe.com".into(),
            NodeKind::External,
            1,
            0
        )]
    );
    assert_eq!(r.counters().halves_unpaired, 1);
}

#[test]
fn series_past_the_cap_fold_into_other() {
    let config = RollupConfig {
        max_series_per_hour: 2,
        ..RollupConfig::default()
    };
    let mut r = Rollups::new(&config);
    let first: Vec<S<'_>> = ["/a", "/b"]
        .iter()
        .map(|n| span("cart", n, SpanKind::Server))
        .collect();
    r.observe(&batch(&first), Instant::now()).unwrap();
    let over: Vec<S<'_>> = ["/c", "/d"]
        .iter()
        .map(|n| span("cart", n, SpanKind::Server))
        .chain([span("auth", "/login", SpanKind::Server)])
        .collect();
    r.observe(&batch(&over), Instant::now()).unwrap();
    let rows = red_rows(&r);
    let total: u64 = rows.iter().map(|(_, m)| m.calls).sum();
    assert_eq!(total, 5, "nothing is lost, only folded");
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(r.counters().spans_folded, 3);
    assert!(rows
        .iter()
        .any(|(k, m)| &*k.service == "cart" && &*k.operation == OTHER && m.calls == 2));
    assert!(rows
        .iter()
        .any(|(k, _)| &*k.service == OTHER && &*k.operation == OTHER));
}

#[test]
fn load_test_traffic_is_counted_apart() {
    let mut r = Rollups::new(&RollupConfig::default());
    let now = Instant::now();
    let regular = span("cart", "GET /cart", SpanKind::Server);
    let mut shadow = span("cart", "GET /cart", SpanKind::Server);
    shadow.trace = 2;
    shadow.attrs.observe("mark", crate::AttrValue::Str("T"));
    // A shadow call: the client says so, the server (called with the same baggage) too.
    let mut client = span("frontend", "GET", SpanKind::Client);
    client.trace = 3;
    client.attrs.observe("mark", crate::AttrValue::Str("T"));
    let mut server = span("cart", "GET /cart", SpanKind::Server);
    server.trace = 3;
    server.span = 2;
    server.parent = Some(1);
    r.observe(&batch(&[regular, shadow, client, server]), now)
        .unwrap();
    let rows = red_rows(&r);
    let calls = |load_test: bool| -> u64 {
        rows.iter()
            .filter(|(k, _)| &*k.service == "cart" && k.load_test == load_test)
            .map(|(_, m)| m.calls)
            .sum()
    };
    assert_eq!((calls(false), calls(true)), (2, 1));
    let b = r.current().unwrap().service_edges.unwrap();
    let edges = read_rows::<EdgeKey>(&b).unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert!(edges[0].0.load_test, "either half marks the call");
    // Read back, the flag survives; a batch without the column (an older file) reads false.
    let red = r.current().unwrap().span_red.unwrap();
    let back = read_rows::<RedKey>(&red).unwrap();
    assert_eq!(back.iter().filter(|(k, _)| k.load_test).count(), 2);
    let index = red.schema().index_of(table::col::LOAD_TEST).unwrap();
    let mut older = red.clone();
    older.remove_column(index);
    assert!(read_rows::<RedKey>(&older)
        .unwrap()
        .iter()
        .all(|(k, _)| !k.load_test));
}

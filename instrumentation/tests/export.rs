//! The exporters against a real OTLP/gRPC receiver: exact metric values over OTLP, and
//! behaviour when the collector is down and when it comes back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{string_attr, Receiver};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use sightline_instrument::metrics::{Id, Priority, Registry};
use sightline_instrument::Builder;

/// The latest exported value of each (metric name, tags) pair.
fn latest_values(receiver: &Receiver) -> BTreeMap<(String, String), f64> {
    let mut values = BTreeMap::new();
    for request in receiver.metric_requests() {
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for m in &scope.metrics {
                    let points = match &m.data {
                        Some(metric::Data::Sum(sum)) => {
                            assert!(sum.is_monotonic, "{} is a counter", m.name);
                            sum.data_points.clone()
                        }
                        Some(metric::Data::Gauge(gauge)) => gauge.data_points.clone(),
                        _ => continue,
                    };
                    for point in points {
                        let tags: Vec<String> = point
                            .attributes
                            .iter()
                            .map(|kv| {
                                format!(
                                    "{}={}",
                                    kv.key,
                                    string_attr(std::slice::from_ref(kv), &kv.key)
                                        .unwrap_or_default()
                                )
                            })
                            .collect();
                        let value = match point.value {
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            Some(number_data_point::Value::AsDouble(d)) => d,
                            None => continue,
                        };
                        values.insert((m.name.clone(), tags.join(",")), value);
                    }
                }
            }
        }
    }
    values
}

#[test]
fn metrics_over_otlp_equal_the_registry_exactly() {
    let receiver = Receiver::start();
    let registry = Registry::new();
    let guard = Builder::new("metrics-test")
        .endpoint(receiver.endpoint())
        .registry(registry.clone())
        .without_tracing_subscriber()
        .metric_step(Priority::High, Duration::from_millis(200))
        .metric_step(Priority::Normal, Duration::from_millis(300))
        .init()
        .unwrap();
    let ok = registry.counter_with(
        Id::new("payments").with_tag("outcome", "ok"),
        Priority::High,
    );
    ok.add(2);
    ok.inc();
    registry
        .counter_with(
            Id::new("payments").with_tag("outcome", "failed"),
            Priority::High,
        )
        .inc();
    let latency = registry.timer(Id::new("payments.latency"));
    for ms in [10, 20, 70] {
        latency.record(Duration::from_millis(ms));
    }
    let amount = registry.summary(Id::new("payments.amount"));
    amount.record(12.5);
    amount.record(400.0);
    registry.gauge_with(Id::new("payments.in_flight"), Priority::High, || 3.0);
    let pool = registry.mixin(Id::new("pool").with_tag("name", "io"));
    pool.counter("tasks").add(9);
    pool.gauge("threads", || 4.0);

    let key = |name: &str, tags: &str| (name.to_string(), tags.to_string());
    let expected: BTreeMap<_, _> = [
        (key("payments", "outcome=failed"), 1.0),
        (key("payments", "outcome=ok"), 3.0),
        (key("payments.in_flight", ""), 3.0),
        (key("payments.latency.count", ""), 3.0),
        (key("payments.latency.total_time", ""), 0.1),
        (key("payments.latency.max", ""), 0.07),
        (key("payments.amount.count", ""), 2.0),
        (key("payments.amount.total_amount", ""), 412.5),
        (key("payments.amount.max", ""), 400.0),
        (key("pool.tasks", "name=io"), 9.0),
        (key("pool.threads", "name=io"), 4.0),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = latest_values(&receiver);
    while expected.iter().any(|(k, _)| !got.contains_key(k)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        got = latest_values(&receiver);
    }
    for (k, v) in &expected {
        assert_eq!(got.get(k), Some(v), "{k:?} in {got:#?}");
    }
    // The same numbers in the Prometheus exposition.
    let text = registry.render(sightline_instrument::metrics::Format::Prometheus);
    for line in [
        "payments_total{outcome=\"ok\"} 3",
        "payments_total{outcome=\"failed\"} 1",
        "payments_latency_seconds_count 3",
        "payments_latency_seconds_sum 0.1",
        "payments_latency_seconds_max 0.07",
        "payments_amount_sum 412.5",
        "payments_amount_count 2",
        "payments_in_flight 3",
        "pool_tasks_total{name=\"io\"} 9",
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "{line} missing from\n{text}"
        );
    }
    // The high-priority stream is exported more often than the normal one.
    let count_of = |name: &str| {
        receiver
            .metric_requests()
            .iter()
            .filter(|r| {
                r.resource_metrics.iter().any(|rm| {
                    rm.scope_metrics
                        .iter()
                        .any(|sm| sm.metrics.iter().any(|m| m.name == name))
                })
            })
            .count()
    };
    std::thread::sleep(Duration::from_millis(1300));
    assert!(
        count_of("payments") > count_of("payments.amount.count"),
        "high priority every 200 ms, normal every 300 ms"
    );
    drop(guard);
    receiver.stop();
}

#[test]
fn collector_down_never_blocks_counts_drops_and_recovers() {
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let guard = Builder::new("offline")
        .endpoint(format!("http://{addr}"))
        .without_metrics()
        .without_tracing_subscriber()
        .max_queue(100)
        .max_batch(50)
        .batch_delay(Duration::from_millis(50))
        .export_timeout(Duration::from_secs(1))
        .init()
        .unwrap();
    let tracer = guard.tracer().clone();
    for i in 0..2_000 {
        tracer
            .span("offline work")
            .tag("i", i as i64)
            .start()
            .finish();
    }
    let stats = guard.stats();
    assert!(stats.dropped() >= 1_700, "dropped {}", stats.dropped());
    assert_eq!(stats.exported(), 0);
    let _ = guard.flush();
    assert!(stats.failed() > 0, "exports were tried and failed");
    assert_eq!(stats.dropped() + stats.failed() + stats.exported(), 2_000);

    // The collector comes back on the same address: new spans go through.
    let receiver = Receiver::start_on(addr);
    for i in 0..10 {
        tracer
            .span("back online")
            .tag("i", i as i64)
            .start()
            .finish();
    }
    guard.flush().expect("flush once the collector is back");
    let spans =
        receiver.wait_spans(|s| s.iter().filter(|(_, s)| s.name == "back online").count() == 10);
    assert_eq!(
        spans
            .iter()
            .filter(|(_, s)| s.name == "back online")
            .count(),
        10
    );
    assert!(spans.iter().all(|(service, _)| service == "offline"));
    assert!(stats.exported() >= 10);
    drop(guard);
    receiver.stop();
}

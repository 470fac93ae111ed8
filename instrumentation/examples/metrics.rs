//! Metrics 2.0 with the registry: counters, timers, distribution summaries, gauges and a
//! mixin, exported over OTLP and as Prometheus text.
//!
//! ```sh
//! cargo run -p sightline-instrument --example metrics
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sightline_instrument::metrics::{Format, Id, Priority};
use sightline_instrument::Builder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = Builder::new("metrics-example").init()?;
    let registry = guard.registry();

    // A counter per outcome; high priority: exported every 2 s.
    let ok = registry.counter_with(
        Id::new("payments").with_tag("outcome", "ok"),
        Priority::High,
    );
    let failed = registry.counter(Id::new("payments").with_tag("outcome", "failed"));
    // How long payments take, and how much they are for.
    let latency = registry.timer(Id::new("payments.latency"));
    let amount = registry.summary(Id::new("payments.amount").with_tag("currency", "EUR"));
    // A gauge reads its value when metrics are exported.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let reading = in_flight.clone();
    registry.gauge(Id::new("payments.in_flight"), move || {
        reading.load(Ordering::Relaxed) as f64
    });
    // A mixin: several measures of one thing under one Id.
    let pool = registry.mixin(Id::new("worker.pool").with_tag("name", "payments"));
    let pool_tasks = pool.counter("tasks");
    pool.gauge("threads", || 4.0);

    for cents in [1250_u32, 990, 40_000] {
        in_flight.fetch_add(1, Ordering::Relaxed);
        latency.time(|| std::thread::sleep(Duration::from_millis(3)));
        amount.record(f64::from(cents) / 100.0);
        pool_tasks.inc();
        if cents > 10_000 {
            failed.inc();
        } else {
            ok.inc();
        }
        in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    print!("{}", registry.render(Format::Prometheus));
    Ok(())
}

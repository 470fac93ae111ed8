//! Exports a [`Registry`] over OTLP metrics, one OpenTelemetry meter provider per
//! priority, each with its own export step.
//!
//! The registry stays the source of truth; each stream (a family, or a mixin's measure,
//! at one priority) is an observable instrument whose callback reads the registry's
//! meters when the provider collects, so exported values equal the registry's exactly.
//! A counter `n` is the monotonic sum `n`; a timer `n` is `n.count`, `n.total_time` and
//! `n.max` (seconds); a distribution summary `n` is `n.count`, `n.total_amount` and
//! `n.max`; a gauge is a gauge; a mixin's measure `m` is exported as `n.m`.

use std::sync::{Arc, Weak};

use opentelemetry::metrics::{Meter as OtelMeter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use super::meters::{Meter, MeterKind};
use super::{Inner, Priority, Registry, Series, SeriesMeter, Stream};

/// Starts exporting `registry` through `providers` (indexed by [`Priority::index`]).
pub(crate) fn export(registry: &Registry, providers: &[SdkMeterProvider; 3]) {
    let meters: [OtelMeter; 3] = [
        providers[0].meter(crate::tracer::SCOPE),
        providers[1].meter(crate::tracer::SCOPE),
        providers[2].meter(crate::tracer::SCOPE),
    ];
    let weak = Arc::downgrade(&registry.inner);
    registry.watch_streams(Arc::new(move |stream: &Stream| {
        register(
            &meters[stream.priority.index()],
            weak.clone(),
            stream.clone(),
        );
    }));
}

/// The meter a series holds for `stream`.
fn leaf(series: &Series, stream: &Stream) -> Option<Meter> {
    match (&series.meter, &stream.measure) {
        (SeriesMeter::Single(meter), None) => Some(meter.clone()),
        (SeriesMeter::Mixin(mixin), Some(measure)) => mixin
            .measures()
            .into_iter()
            .find(|(name, _)| name == measure)
            .map(|(_, meter)| meter),
        _ => None,
    }
}

/// Calls `observe` for each series of the stream that is still registered.
fn each(registry: &Weak<Inner>, stream: &Stream, mut observe: impl FnMut(&Meter, &Series)) {
    let Some(inner) = registry.upgrade() else {
        return;
    };
    for series in (Registry { inner }).family_series(&stream.family, stream.priority) {
        if let Some(meter) = leaf(&series, stream) {
            observe(&meter, &series);
        }
    }
}

fn register(meter: &OtelMeter, registry: Weak<Inner>, stream: Stream) {
    let name = match &stream.measure {
        Some(measure) => format!("{}.{measure}", stream.family),
        None => stream.family.to_string(),
    };
    match stream.kind {
        MeterKind::Counter => {
            let (r, s) = (registry, stream);
            meter
                .u64_observable_counter(name)
                .with_callback(move |obs| {
                    each(&r, &s, |m, series| {
                        if let Meter::Counter(c) = m {
                            obs.observe(c.count(), &series.attributes);
                        }
                    })
                })
                .build();
        }
        MeterKind::Gauge => {
            let (r, s) = (registry, stream);
            meter
                .f64_observable_gauge(name)
                .with_callback(move |obs| {
                    each(&r, &s, |m, series| {
                        if let Meter::Gauge(g) = m {
                            obs.observe(g.value(), &series.attributes);
                        }
                    })
                })
                .build();
        }
        MeterKind::Timer | MeterKind::Summary => {
            let timer = stream.kind == MeterKind::Timer;
            let (total, unit) = if timer {
                ("total_time", "s")
            } else {
                ("total_amount", "")
            };
            // (count, total, max) of a timer (in seconds) or a summary.
            let read = |m: &Meter| match m {
                Meter::Timer(t) => {
                    let s = t.snapshot();
                    Some((s.count, s.total.as_secs_f64(), s.max.as_secs_f64()))
                }
                Meter::Summary(d) => {
                    let s = d.snapshot();
                    Some((s.count, s.total, s.max))
                }
                _ => None,
            };
            let (r, s) = (registry.clone(), stream.clone());
            meter
                .u64_observable_counter(format!("{name}.count"))
                .with_callback(move |obs| {
                    each(&r, &s, |m, series| {
                        if let Some((count, _, _)) = read(m) {
                            obs.observe(count, &series.attributes);
                        }
                    })
                })
                .build();
            let (r, s) = (registry.clone(), stream.clone());
            meter
                .f64_observable_counter(format!("{name}.{total}"))
                .with_unit(unit)
                .with_callback(move |obs| {
                    each(&r, &s, |m, series| {
                        if let Some((_, total, _)) = read(m) {
                            obs.observe(total, &series.attributes);
                        }
                    })
                })
                .build();
            let (r, s) = (registry, stream);
            meter
                .f64_observable_gauge(format!("{name}.max"))
                .with_unit(unit)
                .with_callback(move |obs| {
                    each(&r, &s, |m, series| {
                        if let Some((_, _, max)) = read(m) {
                            obs.observe(max, &series.attributes);
                        }
                    })
                })
                .build();
        }
        MeterKind::Mixin => {}
    }
}

/// The default export step of each priority, overridable per priority.
pub(crate) fn steps(overrides: &[Option<std::time::Duration>; 3]) -> [std::time::Duration; 3] {
    let mut steps = Priority::ALL.map(Priority::default_step);
    for (step, over) in steps.iter_mut().zip(overrides) {
        if let Some(over) = over {
            *step = *over;
        }
    }
    steps
}

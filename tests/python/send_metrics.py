"""Sends metrics with the official OpenTelemetry Python SDK and its OTLP exporters.

Usage: send_metrics.py {grpc|http} ENDPOINT SERVICE {cumulative|delta}

Records a fixed set of measurements on a counter, an up-down counter, a histogram, a histogram
viewed as an exponential histogram and an observable gauge, exporting twice (so that delta
temporality has two points to accumulate), then prints what was recorded as JSON so the test
can compare it with what Sightline stored.
"""

import json
import sys

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import (
    ExponentialBucketHistogramAggregation,
    ExplicitBucketHistogramAggregation,
    View,
)
from opentelemetry.metrics import Observation
from opentelemetry.sdk.resources import Resource


def exporter(protocol, endpoint, temporality):
    preferred = {
        Counter: temporality,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        Histogram: temporality,
        ObservableCounter: temporality,
        ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=True, preferred_temporality=preferred)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, preferred_temporality=preferred)


def main():
    protocol, endpoint, service, temporality_name = sys.argv[1:5]
    temporality = (
        AggregationTemporality.DELTA
        if temporality_name == "delta"
        else AggregationTemporality.CUMULATIVE
    )
    reader = PeriodicExportingMetricReader(
        exporter(protocol, endpoint, temporality), export_interval_millis=3_600_000
    )
    views = [
        View(
            instrument_name="request.duration",
            aggregation=ExplicitBucketHistogramAggregation(boundaries=[0.1, 0.5, 1.0]),
        ),
        View(
            instrument_name="payload.size",
            aggregation=ExponentialBucketHistogramAggregation(max_size=20),
        ),
    ]
    provider = MeterProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.namespace": "shop",
                "service.instance.id": "pod-1",
                "host.name": "py-host",
            }
        ),
        metric_readers=[reader],
        views=views,
    )
    meter = provider.get_meter("py-metrics", "1.0")
    orders = meter.create_counter("orders", unit="{order}", description="orders placed")
    in_flight = meter.create_up_down_counter("requests.in_flight")
    duration = meter.create_histogram("request.duration", unit="s")
    size = meter.create_histogram("payload.size", unit="By")
    temperature = [21.5]
    meter.create_observable_gauge(
        "room.temperature",
        callbacks=[lambda _options: [Observation(temperature[0], {"room": "lab"})]],
        unit="Cel",
    )

    orders.add(3, {"region": "eu"})
    orders.add(2, {"region": "us"})
    in_flight.add(5)
    in_flight.add(-2)
    for v in [0.05, 0.3, 0.7, 2.0]:
        duration.record(v, {"route": "/a"})
    for v in [1, 3, 100, 1000]:
        size.record(v)
    reader.force_flush()

    orders.add(4, {"region": "eu"})
    in_flight.add(1)
    duration.record(0.2, {"route": "/a"})
    temperature[0] = 22.25
    reader.force_flush()
    provider.shutdown()
    json.dump(
        {
            "orders_eu": 7,
            "orders_us": 2,
            "in_flight": 4,
            "duration_count": 5,
            "duration_sum": 0.05 + 0.3 + 0.7 + 2.0 + 0.2,
            "duration_buckets": {"0.1": 1, "0.5": 3, "1": 4, "+Inf": 5},
            "size_count": 4,
            "size_sum": 1104,
            "temperature": 22.25,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()

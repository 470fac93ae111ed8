"""Sends traces to Sightline with the official OpenTelemetry Python SDK and prints, as JSON, what
it sent, so the Rust test can compare it with what was stored.

usage: send_traces.py grpc|http|zipkin ENDPOINT SERVICE

`zipkin` sends with `opentelemetry-exporter-zipkin-json` (Zipkin v2 JSON) to ENDPOINT, the full
URL of a Zipkin span intake.
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags


def exporter(protocol, endpoint):
    if protocol == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter(endpoint=endpoint)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from grpc import Compression

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=Compression.Gzip)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http import Compression

    return OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip)


def main():
    protocol, endpoint, service = sys.argv[1:4]
    provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": "py-host"}))
    provider.add_span_processor(BatchSpanProcessor(exporter(protocol, endpoint)))
    tracer = provider.get_tracer("py-test", "3.1.4")

    linked = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
    )
    sent = []
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        root.set_attribute("http.route", "/orders")
        root.set_attribute("http.response.status_code", 201)
        for n in range(3):
            with tracer.start_as_current_span(
                "INSERT orders", kind=SpanKind.CLIENT, links=[Link(linked, {"why": "batch"})]
            ) as child:
                child.set_attribute("db.system", "postgresql")
                child.set_attribute("n", n)
                child.set_attribute("ratio", 0.5)
                child.set_attribute("ok", n != 2)
                child.set_attribute("tags", ["a", "b"])
                child.set_attribute("ints", [1, 2])
                child.add_event("row written", {"rows": n + 1})
                if n == 2:
                    child.set_status(Status(StatusCode.ERROR, "duplicate key"))
                sent.append(child.get_span_context().span_id)
        sent.append(root.get_span_context().span_id)
        trace_id = root.get_span_context().trace_id
    provider.force_flush()
    provider.shutdown()
    print(json.dumps({"trace_id": f"{trace_id:032x}", "span_ids": [f"{s:016x}" for s in sent]}))


if __name__ == "__main__":
    main()

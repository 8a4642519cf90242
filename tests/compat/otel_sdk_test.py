#!/usr/bin/env python3
"""Acceptance: the official OpenTelemetry Python SDK, unchanged, exporting to `trellis server`.

For each of its two OTLP exporters, OTLP/HTTP protobuf (to the `--otlp` listener) and OTLP/gRPC
(to `--otlp-grpc`), both gzip-compressed as a production setup would, a "frontend" service opens
a server span and a client span for its call, a "backend" service continues the trace (the
context handed over as W3C `traceparent`, as over HTTP) with its own server span. The spans are
then found through Jaeger's `/api/traces` search by service and operation, with the right
parent/child references and process service names, and the dependency graph shows the call.

Run through `tests/compat/run.sh`, or directly with a venv that has requirements.txt and
TRELLIS_BIN pointing at the binary.
"""

from __future__ import annotations

import sys
import traceback
from importlib.metadata import version

import grpc
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from trellis_proc import Trellis, wait_until


def provider(service: str, exporter: SpanExporter) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.2.3"}))
    p.add_span_processor(BatchSpanProcessor(exporter))
    return p


def export_trace(protocol: str, frontend_exporter: SpanExporter, backend_exporter: SpanExporter) -> dict[str, str]:
    """Records one two-service trace through the SDK and flushes it; returns its ids (hex)."""
    frontend = provider(f"compat-{protocol}-frontend", frontend_exporter)
    backend = provider(f"compat-{protocol}-backend", backend_exporter)
    ids: dict[str, str] = {}
    tracer = frontend.get_tracer("compat.frontend")
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.route", "/checkout")
        root.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("POST /charge", kind=SpanKind.CLIENT) as client:
            client.set_attribute("server.address", "backend")
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            # The backend, in "another process", picks the context up from the headers.
            ctx = TraceContextTextMapPropagator().extract(carrier)
            with backend.get_tracer("compat.backend").start_as_current_span(
                "POST /charge", context=ctx, kind=SpanKind.SERVER
            ) as server:
                server.set_attribute("http.response.status_code", 502)
                server.add_event("card declined", {"attempt": 1})
                server.set_status(Status(StatusCode.ERROR, "upstream refused"))
                ids["server"] = format(server.get_span_context().span_id, "016x")
            ids["client"] = format(client.get_span_context().span_id, "016x")
        ids["root"] = format(root.get_span_context().span_id, "016x")
        ids["trace"] = format(root.get_span_context().trace_id, "032x")
    for p in (frontend, backend):
        assert p.force_flush(10_000), f"{protocol}: the SDK could not flush its spans"
        p.shutdown()
    return ids


def check_found(t: Trellis, protocol: str, ids: dict[str, str]) -> None:
    api = t.url
    fe, be = f"compat-{protocol}-frontend", f"compat-{protocol}-backend"

    def search() -> list[dict]:
        r = requests.get(
            f"{api}/api/traces",
            params={"service": fe, "operation": "GET /checkout", "lookback": "1h", "limit": 20},
            timeout=10,
        )
        r.raise_for_status()
        found = [tr for tr in r.json()["data"] if tr["traceID"] == ids["trace"]]
        # Both services' spans, which come by separate exports.
        return found if found and len(found[0]["spans"]) == 3 else []

    trace_json = wait_until(f"{protocol}: the trace found by /api/traces search", search)[0]
    spans = {s["spanID"]: s for s in trace_json["spans"]}
    assert set(spans) == {ids["root"], ids["client"], ids["server"]}, spans.keys()
    services = {s["spanID"]: trace_json["processes"][s["processID"]]["serviceName"] for s in spans.values()}
    assert services == {ids["root"]: fe, ids["client"]: fe, ids["server"]: be}, services

    def parent(span_id: str) -> str | None:
        refs = [r for r in spans[span_id]["references"] if r["refType"] == "CHILD_OF"]
        return refs[0]["spanID"] if refs else None

    assert parent(ids["root"]) is None
    assert parent(ids["client"]) == ids["root"]
    assert parent(ids["server"]) == ids["client"]
    server = spans[ids["server"]]
    assert server["operationName"] == "POST /charge"
    tags = {tag["key"]: tag["value"] for tag in server["tags"]}
    assert tags.get("span.kind") == "server", tags
    assert tags.get("error") is True, tags
    assert tags.get("http.response.status_code") == 502, tags
    assert [log["fields"][0]["value"] for log in server["logs"]] == ["card declined"], server["logs"]

    # Search by the backend service, its operation and a tag finds the same trace.
    r = requests.get(
        f"{api}/api/traces",
        params={"service": be, "operation": "POST /charge", "tags": '{"error":"true"}', "lookback": "1h"},
        timeout=10,
    )
    r.raise_for_status()
    assert [tr["traceID"] for tr in r.json()["data"]] == [ids["trace"]], r.json()

    # The call shows in both dependency graphs: Jaeger's and Trellis's with statistics.
    deps = requests.get(f"{api}/api/dependencies", timeout=10).json()["data"]
    assert {"parent": fe, "child": be, "callCount": 1} in deps, deps
    graph = requests.get(f"{api}/v1/trellis/traces/dependencies", params={"lookback": "1h"}, timeout=10).json()
    edge = [d for d in graph["dependencies"] if d["parent"] == fe and d["child"] == be]
    assert edge and edge[0]["callCount"] == 1 and edge[0]["errorRate"] == 1.0, graph
    print(f"ok   {protocol}: trace {ids['trace']} found with its 3 spans, parent/child and services")


def main() -> int:
    print(
        "opentelemetry-sdk", version("opentelemetry-sdk"),
        "| exporter-otlp-proto-http", version("opentelemetry-exporter-otlp-proto-http"),
        "| exporter-otlp-proto-grpc", version("opentelemetry-exporter-otlp-proto-grpc"),
    )
    failed = 0
    with Trellis(node_name="compat-otel") as t:
        otlp = t.listeners.get("OTLP")
        otlp_grpc = t.listeners.get("OTLP/gRPC")
        if not otlp or not otlp_grpc:
            print(f"FAIL trellis did not print both OTLP listeners: {t.listeners}\n" + "\n".join(t.output))
            return 1
        cases = {
            "http": lambda: HttpExporter(
                endpoint=f"http://{otlp}/v1/traces", compression=HttpCompression.Gzip, timeout=10
            ),
            "grpc": lambda: GrpcExporter(
                endpoint=f"http://{otlp_grpc}", insecure=True, compression=grpc.Compression.Gzip, timeout=10
            ),
        }
        for protocol, exporter in cases.items():
            try:
                ids = export_trace(protocol, exporter(), exporter())
                check_found(t, protocol, ids)
            except Exception:  # noqa: BLE001 - report every failure, then fail the run
                failed += 1
                print(f"FAIL {protocol}:")
                traceback.print_exc()
        metrics = requests.get(f"{t.url}/metrics", timeout=10).text
        for protocol in cases:
            line = f'trellis_otlp_spans_received_total{{protocol="{protocol}"}} 3'
            if line not in metrics.splitlines():
                failed += 1
                print(f"FAIL /metrics lacks {line!r}")
    print("otel sdk compat: " + ("all passed" if not failed else f"{failed} failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

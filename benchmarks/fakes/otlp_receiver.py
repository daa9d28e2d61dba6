"""A small OTLP/HTTP trace receiver on loopback: collects the spans exporters send it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.fakes.server import bind_socket, make_server, start_serving

__all__ = ["ReceivedSpan", "Receiver", "run_otlp_receiver"]


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    attributes: dict[str, object]


@dataclass
class Receiver:
    endpoint: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = ""
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        service = attribute.value.string_value
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex(),
                                service=service,
                                attributes={a.key: _value(a.value) for a in span.attributes},
                            )
                        )


def _value(value: object) -> object:
    for kind in ("string_value", "int_value", "double_value", "bool_value"):
        if value.HasField(kind):  # type: ignore[attr-defined]
            return getattr(value, kind)
    return None


@contextmanager
def run_otlp_receiver() -> Iterator[Receiver]:
    """Serves ``POST /v1/traces`` on its own thread (the exporters are other processes)."""
    receiver = Receiver()

    async def traces(request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        receiver.add(message)
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    sock = bind_socket()
    host, port = sock.getsockname()[:2]
    receiver.endpoint = f"http://{host}:{port}/v1/traces"
    server = make_server(app, configure_logging=False)
    ready = threading.Event()

    async def serve() -> None:
        task = await start_serving(server, sock)
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

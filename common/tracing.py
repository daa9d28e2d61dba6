"""OpenTelemetry tracing for every voicebots process, configured by the standard OTEL_* variables.

``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (OTLP over HTTP/protobuf, endpoint from
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console``, or
``none`` (the default: tracing off, and the API's no-op tracer costs next to nothing).
``OTEL_SERVICE_NAME`` overrides each process's service name.

A call is one trace: signaling's request span travels to the spawner as a W3C ``traceparent``
header, and on to the bot inside the ``assign`` message, where the bot's ``call`` span (and
pipecat's conversation, turn, stt, llm and tts spans under it) continue it.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from common.env import Environ
from common.settings import OTEL_TRACES_EXPORTER

__all__ = ["Tracing", "extract", "inject"]


class Tracing:
    """The tracer provider of one process; :meth:`shutdown` flushes what is buffered."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @classmethod
    def setup(cls, service_name: str, environ: Environ) -> Tracing:
        exporter_name = OTEL_TRACES_EXPORTER.read(environ)
        if exporter_name == "none":
            return cls(None)
        exporter: SpanExporter
        if exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # reads its OTEL_EXPORTER_OTLP_* settings itself
        else:
            exporter = ConsoleSpanExporter()
        # OpenTelemetry's own variable; the resource given here would override the SDK's read.
        name = environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        return cls(provider)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None


def inject(ctx: Context | None = None) -> dict[str, str]:
    """The current (or given) trace context as W3C headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx or context.get_current())
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(carrier or {}))

"""A FastAPI app that traces itself (an SDK TracerProvider, contrib's FastAPIInstrumentor) and
has no line of otel-kit: `otel-kit run` measures it. Every finished span is written by a real
SDK span exporter as one JSON line to spans.jsonl in the working directory (every worker
appends), so a test compares the exemplars Prometheus stored with the spans the app had.
GET /slow takes 0.3 s and answers its span's trace id and the worker's PID; GET /dependencies
makes a SQL statement (SQLite), a Redis command (on REDIS_PORT) and an outbound httpx call (to
this app) inside its server span and answers that span's trace id."""

import asyncio
import json
import os
from typing import Any

import httpx
import redis
import sqlalchemy
from fastapi import FastAPI, Request
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


def _line(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return (
        json.dumps(
            {
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "kind": span.kind.name,
                "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
                "route": (span.attributes or {}).get("http.route"),
                "pid": os.getpid(),
            }
        )
        + "\n"
    )


provider = TracerProvider()
spans = open("spans.jsonl", "a")  # noqa: SIM115 - the exporter's for the process's life
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=spans, formatter=_line)))
trace.set_tracer_provider(provider)

app = FastAPI()


@app.get("/slow")
async def slow() -> dict[str, Any]:
    await asyncio.sleep(0.3)
    context = trace.get_current_span().get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "pid": os.getpid()}


engine = sqlalchemy.create_engine("sqlite:///traced.db")


@app.get("/dependencies")
async def dependencies(request: Request) -> dict[str, Any]:
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT 1"))
    redis.Redis(port=int(os.environ["REDIS_PORT"])).get("traced")
    async with httpx.AsyncClient() as client:
        await client.get(f"{request.base_url}items/1")
    context = trace.get_current_span().get_span_context()
    return {"trace_id": f"{context.trace_id:032x}", "pid": os.getpid()}


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id, "pid": os.getpid()}


FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

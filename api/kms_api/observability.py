"""Prometheus metrics and structured JSON access logs (no tokens, passwords or query secrets)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("kms_api_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "kms_api_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CACHED = Gauge("kms_api_cached_objects", "Objects in the watch cache", ["resource"])
RELISTS = Gauge(
    "kms_api_cache_lists", "Full LISTs done by the watch cache (start, 410 Gone, errors)", ["resource"]
)
LOGINS = Counter("kms_api_logins_total", "Login attempts", ["result"])

access = logging.getLogger("kms_api.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # health probes would log every call


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - t0
            route = _route_of(request)
            REQUESTS.labels(request.method, route, str(status)).inc()
            LATENCY.labels(request.method, route).observe(elapsed)
            access.info(
                "request",
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.url.path,  # never the query string: it could carry secrets
                        "route": route,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                        "client": request.client.host if request.client else None,
                        "user": getattr(request.state, "user", None),
                    }
                },
            )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        ctx = app.state.ctx
        for store in ctx.cr.stores:
            CACHED.labels(store.what).set(len(store))
            RELISTS.labels(store.what).set(store.relists)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""One error shape for every 4xx: {"detail": ..., "field": ...}; apiserver errors mapped onto it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kms_crds.kube import KubeError

log = logging.getLogger("kms_api.errors")


class Problem(Exception):
    """Raise from anywhere below a router to answer with an error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers, self.extra = status, detail, field, headers, extra


def body(detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "field": field, **extra}


def field_of(loc: tuple | list) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie", "form"):
        parts = parts[1:]
    return ".".join(parts) or None


def from_kube(e: KubeError, what: str = "") -> Problem:
    """Map an apiserver answer to a facade answer (never a 5xx for the client's own mistakes)."""
    if e.status == 404:
        return Problem(404, f"{what} not found" if what else e.message)
    if e.status == 409:
        return Problem(409, e.message)
    if e.status in (400, 422):
        field = None
        if e.causes:
            raw = e.causes[0].get("field") or ""
            field = raw.removeprefix("spec.").replace("metadata.name", "id").replace("metadata.", "") or None
        return Problem(422, e.message, field)
    if e.status == 403:
        log.error("the facade's service account is not allowed to do this: %s", e)
        return Problem(503, "the facade is not allowed to do this in the cluster (RBAC)")
    # the cause goes to the log only: it names the apiserver's address and the facade's request paths
    log.warning("Kubernetes API call failed: %s", e)
    why = "unreachable or no answer in time" if e.status == 0 else f"HTTP {e.status}"
    if e.reason == "TooManyPending":
        why = "too many calls waiting for it"
    return Problem(
        503, f"the Kubernetes API is unavailable ({why}); try again later", headers={"Retry-After": "5"}
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, e: Problem) -> JSONResponse:
        return JSONResponse(body(e.detail, e.field, **(e.extra or {})), e.status, headers=e.headers)

    @app.exception_handler(KubeError)
    async def _kube(_: Request, e: KubeError) -> JSONResponse:
        p = from_kube(e)
        return JSONResponse(body(p.detail, p.field), p.status, headers=p.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {}
        field = field_of(first.get("loc", ()))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            msg = f"unknown field {field!r}"
        detail = f"{field}: {msg}" if field else msg
        return JSONResponse(body(detail, field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(body(str(e.detail)), e.status_code, headers=getattr(e, "headers", None))

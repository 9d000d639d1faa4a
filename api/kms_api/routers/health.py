"""GET /health: the facade and its dependencies, checked concurrently with bounded timeouts."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kms_crds.kube import KubeError

from .. import __version__
from ..deps import Context, Ctx
from ..models import Component, HealthReport
from ..views import condition

log = logging.getLogger("kms_api.health")
router = APIRouter(tags=["health"])


async def _bounded(coro, name: str, timeout: float) -> Component:
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        return Component(name=name, status="down", detail=f"no answer within {timeout:.1f}s")
    except Exception as e:
        return Component(name=name, status="down", detail=f"{type(e).__name__}: {e}"[:300])


async def check_kubernetes(ctx: Context) -> Component:
    t = ctx.settings.health_timeout
    try:
        status, _ = await asyncio.to_thread(
            ctx.cr.kube.request, "GET", "/readyz", timeout=(t, t), limited=False
        )
    except KubeError as e:  # the cause names the apiserver's address: logged, not shown (public route)
        log.warning("health: %s", e)
        return Component(
            name="kubernetes", status="down", detail="apiserver unreachable or no answer in time"
        )
    if status == 200:
        return Component(name="kubernetes", status="ok", detail="apiserver /readyz ok")
    return Component(name="kubernetes", status="down", detail=f"apiserver /readyz: HTTP {status}")


async def check_operator(ctx: Context) -> Component:
    url = ctx.settings.operator_health_url
    if not url:
        return Component(name="operator", status="unknown", detail="KMS_OPERATOR_HEALTH_URL not set")
    async with httpx.AsyncClient(timeout=ctx.settings.health_timeout) as client:
        r = await client.get(url)
    if r.status_code == 200:
        return Component(name="operator", status="ok", detail="liveness endpoint ok")
    return Component(name="operator", status="down", detail=f"liveness endpoint: HTTP {r.status_code}")


def check_cache(ctx: Context) -> Component:
    unsynced = [s.what for s in ctx.cr.stores if not s.synced.is_set()]
    if unsynced:
        return Component(name="cache", status="down", detail="not listed yet: " + ", ".join(unsynced))
    quiet = max(time.monotonic() - s.last_event for s in ctx.cr.stores)
    return Component(
        name="cache",
        status="ok",
        detail=f"{len(ctx.cr.datasets)} datasets, {len(ctx.cr.jobs)} jobs; last event {quiet:.0f}s ago",
    )


def check_services(ctx: Context) -> list[Component]:
    out = []
    for svc in sorted(ctx.cr.live(ctx.cr.services), key=lambda o: o["metadata"]["name"]):
        ready = condition(svc, "Ready")
        state = "ok" if ready.get("status") == "True" else "degraded"
        detail = f"{ready.get('reason') or 'NotReconciled'}: {ready.get('message') or ''}".strip(": ")
        out.append(Component(name=f"mapservice/{svc['metadata']['name']}", status=state, detail=detail))
        tiles = (svc.get("status") or {}).get("tileCache")
        if tiles:  # its tile cache, when it has one: ready pods of the MapCache Deployment
            ready_pods = tiles.get("readyReplicas") or 0
            out.append(
                Component(
                    name=f"tilecache/{svc['metadata']['name']}",
                    status="ok" if ready_pods else "degraded",
                    detail=f"{ready_pods} ready, {tiles.get('tilesets', 0)} tilesets",
                )
            )
    return out


def overall(components: list[Component]) -> str:
    by_name = {c.name: c.status for c in components}
    if by_name.get("kubernetes") == "down" or by_name.get("cache") == "down":
        return "down"
    if any(c.status in ("down", "degraded") for c in components):
        return "degraded"
    return "ok"


@router.get(
    "/health",
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "The facade cannot serve (apiserver down)."}},
    summary="Health of the facade and its dependencies",
)
async def health(ctx: Ctx) -> JSONResponse:
    t = ctx.settings.health_timeout + 0.3
    kube, operator = await asyncio.gather(
        _bounded(check_kubernetes(ctx), "kubernetes", t), _bounded(check_operator(ctx), "operator", t)
    )
    components = [kube, operator, check_cache(ctx), *check_services(ctx)]
    report = HealthReport(status=overall(components), version=__version__, components=components)
    code = 503 if report.status == "down" else 200
    return JSONResponse(report.model_dump(by_alias=True, mode="json"), code)

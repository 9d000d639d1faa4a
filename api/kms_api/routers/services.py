"""MapService routes (read only): list and detail from the watch cache, and the live mapfile from
the ConfigMap the service's status names (read from the apiserver; its name carries the mapfile's
hash and the object is immutable, so a bounded cache keyed by name never goes stale)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from kms_crds.configmap_files import read_mapfile

from .. import views
from ..deps import Context, Ctx, ViewerUser
from ..errors import Problem
from ..models import ErrorBody, ServiceDetail, ServicePage

router = APIRouter(prefix="/services", tags=["services"])
ServiceName = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
NOT_FOUND = {404: {"model": ErrorBody, "description": "No such service."}}
_MAPFILES: OrderedDict[tuple[str, str], str] = OrderedDict()
_LOCK = threading.Lock()
MAPFILE_ENTRIES = 16
MAPFILE_CACHED_MAX = 1 << 20  # larger mapfiles (thousands of layers) are read each time


def _service(ctx: Context, name: str) -> dict:
    obj = ctx.cr.service(name)
    if obj is None:
        raise Problem(404, f"service {name!r} not found", "name")
    return obj


def _protocols(ctx: Context, obj: dict) -> set[str]:
    """The OGC protocols the datasets in the service's live mapfile offer."""
    out: set[str] = set()
    for name in (obj.get("status") or {}).get("datasets") or []:
        ds = ctx.cr.dataset(name)
        out.update(str(p) for p in ((ds or {}).get("spec") or {}).get("protocols") or ["WMS"])
    return out


@router.get("", response_model=ServicePage, summary="List MapServices (from the watch cache)")
def list_services(
    _: ViewerUser,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    q: Annotated[str | None, Query(max_length=200, description="Search in name and title.")] = None,
) -> dict:
    objs = sorted(ctx.cr.live(ctx.cr.services), key=lambda o: o["metadata"]["name"])
    items = [views.service_item(o) for o in objs]
    if q:
        needle = q.lower()
        items = [i for i in items if needle in f"{i['name']}\n{i['title'] or ''}".lower()]
    return {"total": len(items), "limit": limit, "offset": offset, "items": items[offset : offset + limit]}


@router.get("/{name}", response_model=ServiceDetail, responses=NOT_FOUND, summary="One MapService")
def get_service(name: ServiceName, _: ViewerUser, ctx: Ctx) -> dict:
    obj = _service(ctx, name)
    return views.service_detail(obj, _protocols(ctx, obj))


@router.get(
    "/{name}/mapfile",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The mapfile."},
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "No mapfile is live yet (or it was just replaced)."},
    },
    summary="The mapfile the service serves now",
)
def get_mapfile(name: ServiceName, _: ViewerUser, ctx: Ctx) -> PlainTextResponse:
    obj = _service(ctx, name)
    status = obj.get("status") or {}
    cm_name, uid = status.get("configMap"), obj["metadata"].get("uid") or ""
    if not cm_name:
        raise Problem(409, f"service {name!r} has no mapfile yet", "name")
    headers = {"X-Mapfile-Hash": str(status.get("mapfileHash") or ""), "X-Config-Map": cm_name}
    with _LOCK:
        text = _MAPFILES.get((cm_name, uid))
        if text is not None:
            _MAPFILES.move_to_end((cm_name, uid))
    if text is None:
        cm = ctx.cr.configmap(cm_name)
        owners = {r.get("uid") for r in ((cm or {}).get("metadata") or {}).get("ownerReferences") or []}
        if cm is None or uid not in owners:  # pruned after a newer rollout, or not this service's
            raise Problem(409, f"the mapfile ConfigMap {cm_name!r} of {name!r} is gone; retry", "name")
        try:
            text = read_mapfile(cm)
        except (ValueError, OSError) as e:
            text, reason = None, str(e)
        else:
            reason = "no service.map"
        if text is None:
            raise Problem(409, f"the ConfigMap {cm_name!r} holds no readable mapfile ({reason})", "name")
        with _LOCK:
            if len(text) <= MAPFILE_CACHED_MAX:
                _MAPFILES[(cm_name, uid)] = text
            while len(_MAPFILES) > MAPFILE_ENTRIES:
                _MAPFILES.popitem(last=False)
    return PlainTextResponse(text, headers=headers)
